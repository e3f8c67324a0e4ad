"""How backfill speaks on stderr: ``-q`` / ``-v``, and ``--log-format json`` for machines.

stdout carries only what a command produces (``--json``, a review written to
``-``, emit's event); everything said along the way goes to stderr, at one of
four levels:

- error and warning: always shown;
- info (notices, the summary tables): hidden by ``-q``;
- debug (each step as it starts, the values emit found and where): shown by ``-v``.

With ``--log-format json`` every message is one JSON object on its own line,
``{"time": ..., "level": ..., "message": ...}`` and fields of its own (an
error's ``exit_code``, the summary's facts), and no table or progress
display is drawn. Messages never contain a secret: they are the same
sentences the text format prints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

S = TypeVar("S", bound=Mapping[str, Any])  # a summary, typed or not

LEVELS = ("error", "warning", "info", "debug")
_STYLES = {"error": "red", "warning": "yellow"}


class LogSettings:
    """What -q, -v and --log-format asked for."""

    def __init__(self, quiet: bool = False, verbose: bool = False, json: bool = False) -> None:
        self.quiet, self.verbose, self.json = quiet, verbose, json

    def shows(self, level: str) -> bool:
        if level in ("error", "warning"):
            return True
        if level == "info":
            return not self.quiet
        return self.verbose and not self.quiet


# Set from every command's -q / -v / --log-format as it is parsed (once per invocation).
current = LogSettings()


def _set(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if field == "log_format":
            current.json = value == "json"
        else:
            setattr(current, field, bool(value))

    return callback


def add_log_options(group: click.Group) -> None:
    """Give every command of ``group`` -q, -v and --log-format (before the env twins are added)."""
    for command in group.commands.values():
        if any(isinstance(param, click.Option) and "--quiet" in param.opts for param in command.params):
            continue
        command.params += [
            click.Option(
                ["-q", "--quiet"],
                is_flag=True,
                expose_value=False,
                is_eager=True,
                callback=_set("quiet"),
                help="Say only warnings and errors on stderr.",
            ),
            click.Option(
                ["-v", "--verbose"],
                is_flag=True,
                expose_value=False,
                is_eager=True,
                callback=_set("verbose"),
                help="Also say each step as it starts, and the details behind a result.",
            ),
            click.Option(
                ["--log-format"],
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
                expose_value=False,
                is_eager=True,
                callback=_set("log_format"),
                help="How stderr speaks: text for people, json for machines (one object per line).",
            ),
        ]


def say(level: str, message: str, console: Console | None = None, *, label: str | None = None, **fields: Any) -> None:
    """One message at ``level``: ``label: message`` (label: the level; info: no label), or one JSON line."""
    if not current.shows(level):
        return
    if current.json:
        import json
        from datetime import UTC, datetime

        record = {"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "level": level, "message": message}
        sys.stderr.write(json.dumps({**record, **fields}, default=str) + "\n")
        sys.stderr.flush()
        return
    label = label or (None if level in ("info", "debug") else level)
    if console is None:
        click.echo(f"{label}: {message}" if label else message, err=True)
        return
    from rich.markup import escape

    if label:
        style = _STYLES.get(level, "bold")
        console.print(f"[{style}]{label}:[/{style}] {escape(message)}", highlight=False, soft_wrap=True)
    else:
        console.print(f"[dim]{escape(message)}[/dim]", highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    """A console on stderr; in a pipe or CI log, wide enough that tables do not wrap; silent when asked."""
    from rich.console import Console

    quiet = current.quiet or current.json
    console = Console(stderr=True, quiet=quiet)
    return console if console.is_terminal else Console(stderr=True, width=160, quiet=quiet)


def report(summary: S, render: Callable[[S, Console], None], console: Console) -> None:
    """A summary for people: the tables as text, one ``summary`` record as JSON; -q keeps its warnings only."""
    if current.json:
        say("info", "summary", summary=summary)
    elif not current.quiet:
        render(summary, console)
        return
    for warning in summary.get("warnings", []):
        say("warning", warning)
    for error in summary.get("errors", []):
        say("error", error)


def traced(step: Callable[[str], AbstractContextManager[object]]) -> Callable[[str], AbstractContextManager[object]]:
    """``step`` that also says (at debug) each step as it starts, for logs where no spinner is drawn."""

    @contextmanager
    def saying(description: str) -> Iterator[None]:
        say("debug", description)
        with step(description):
            yield

    return saying
