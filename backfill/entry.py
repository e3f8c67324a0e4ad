"""The ``backfill`` command as installed: the group, which imports the commands (:mod:`backfill.cli`) to run one.

``backfill --help`` and ``backfill --version`` answer from this module and
click alone, without building every command and its options. The help's list
of commands is written from the first paragraph of each command's help, kept
here (a test holds them equal to the commands' own); anything else (a
command, its --help, a mistake in its name) goes to the commands themselves,
so that ``backfill`` and :data:`backfill.cli.main` behave alike.
"""

from __future__ import annotations

import os
import sys
from gettext import gettext
from typing import TYPE_CHECKING, Any

import click
from click import formatting

from backfill import __version__

if TYPE_CHECKING:
    from collections.abc import MutableMapping

# Each command's summary: the first paragraph of its help, as `backfill --help` lists it.
SUMMARIES = {
    "emit": "Send this deployment's event to DevGrid, from inside the pipeline that made it.",
    "init": "Write a first config from what the repository shows; once it exists, create the empty state file.",
    "presets": "List the ci-export presets: the columns each reads and what its status words mean.",
    "received": "Show what a local receiver (backfill serve) holds, and the keys it holds more than once.",
    "replay": "Serve recorded GitHub and GitLab API answers, to try the github-* and gitlab-* sources offline.",
    "report": "Show the DORA baseline the planned events give, per entity, before anything is sent.",
    "rewind": "Move a source's cursor back, so that the next run reads its history again from there.",
    "run": "Read every source, normalize and dedupe the deployments, and send the new ones to DevGrid.",
    "serve": "Run a local receiver that answers like DevGrid's events API, to rehearse a backfill.",
    "status": "Show what the state file knows: cursors, what was sent, the last runs, anything pending or refused.",
}


class _Commands(click.Group):
    """A group whose commands are imported when one is asked for, not to list them."""

    @property
    def commands(self) -> MutableMapping[str, click.Command]:
        from backfill.cli import main as every_command

        return every_command.commands

    @commands.setter
    def commands(self, value: Any) -> None:
        """click.Group sets an empty table of its own: backfill.cli holds the real one."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        # The help's width, as click would work it out, without importing shutil (and its compression modules).
        if parent is None and "terminal_width" not in extra and formatting.FORCED_WIDTH is None:
            extra["terminal_width"] = help_width()
        return super().make_context(info_name, args, parent, **extra)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUMMARIES)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click lists commands (their short help, cut to the width), from the summaries."""
        limit = formatter.width - 6 - max(len(name) for name in SUMMARIES)
        rows = [
            (name, click.Command(name, help=SUMMARIES[name]).get_short_help_str(limit)) for name in sorted(SUMMARIES)
        ]
        with formatter.section(gettext("Commands")):
            formatter.write_dl(rows)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="backfill")
def main() -> None:
    """Import past deployments into DevGrid, in order, once.

    Example:

        backfill run -c configs/demo.toml --dry-run review.csv
    """


def help_width() -> int:
    """click's help width: the terminal's columns (shutil.get_terminal_size's rules), at most 80, less 2; 50 or more."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__
        try:
            columns = (os.get_terminal_size(stdout.fileno()).columns if stdout is not None else 0) or 80
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(min(columns, 80) - 2, 50)
