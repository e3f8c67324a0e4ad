"""The command line: parse, call the library, print, and map errors to exit codes.

Exit codes (also in the README):
0 done; 1 a source could not be read or another error; 2 bad command line or
config; 3 events left unsent; 4 DevGrid refused the API key; 5 another run
holds the state file; 6 the state file cannot be used.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from backfill import __version__
from backfill.config import load_config
from backfill.errors import EXIT_ERROR, EXIT_OK, BackfillError
from backfill.progress import Display
from backfill.review import rejects_path_for, write_rejects, write_review
from backfill.run import plan_run
from backfill.summary import build_summary, render

F = TypeVar("F", bound=Callable[..., Any])


def _errors_to_exit_codes(command: F) -> F:
    """Turn a BackfillError into its message on stderr and its exit code; no traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BackfillError as exc:
            for line in str(exc).splitlines():
                click.echo(f"error: {line}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The TOML config file.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="backfill")
def main() -> None:
    """Import past deployments into DevGrid, in order, once.

    Example:

        backfill run -c configs/demo.toml --dry-run review.csv
    """


@main.command()
@config_option
@click.option(
    "--dry-run",
    "dry_run",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Send nothing: write the events that would be sent to this CSV, and rejected rows beside it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout instead of tables.")
@_errors_to_exit_codes
def run(config_path: Path, dry_run: Path | None, as_json: bool) -> None:
    """Read every source, normalize and dedupe the deployments, and send them (or review them).

    With --dry-run, nothing is sent and no state is written: the review CSV holds
    every event exactly as it would be sent, in send order, and REVIEW.rejects.csv
    holds every rejected row with its reason.

    Example:

        backfill run -c configs/demo.toml --dry-run review.csv
    """
    config = load_config(config_path)
    if dry_run is None:
        raise click.UsageError("sending is not available yet; use --dry-run PATH to review the events")
    console = _stderr_console()
    with Display(console) as display:
        result = plan_run(config, step=display.step)
        with display.step("writing the review"):
            rejects_path = rejects_path_for(dry_run)
            write_review(result.plan.events, dry_run)
            write_rejects(result.plan.rejects, rejects_path)
    summary = build_summary(
        result,
        {"mode": "dry-run", "config": str(config.path), "review_csv": str(dry_run), "rejects_csv": str(rejects_path)},
    )
    _report(summary, as_json, console)
    sys.exit(EXIT_ERROR if result.failures else EXIT_OK)


@main.command()
def presets() -> None:
    """List the ci-export presets: the columns each reads and what its status words mean.

    Example:

        backfill presets
    """
    from backfill.extractors.presets import PRESETS

    for preset in PRESETS.values():
        click.echo(f"{preset.name}")
        for field, columns in preset.columns.items():
            click.echo(f"  {field:<17} {' | '.join(columns)}")
        for outcome in ("success", "failed", "skip"):
            words = sorted(word for word, meaning in preset.statuses.items() if meaning == outcome and word)
            click.echo(f"  status {outcome:<10} {', '.join(words)}")
        for note in preset.notes:
            click.echo(f"  note: {note}")
        click.echo()


def _stderr_console() -> Console:
    """A console on stderr; in a pipe or CI log, wide enough that tables do not wrap."""
    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=160)


def _report(summary: dict[str, Any], as_json: bool, console: Console) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        render(summary, console)
