"""The command line: parse, call the library, print, and map errors to exit codes.

Exit codes (also in the README): 0 done; 1 a source could not be read; 2 bad
command line or config; 3 events left unsent or refused by DevGrid; 4 DevGrid
refused the API key; 5 another run holds the state file; 6 the state file
cannot be used; 7 a source failed for a reason that may pass (retry later);
130 / 143 interrupted by Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from backfill import __version__, logs
from backfill.emit.command import emit as emit_command
from backfill.errors import (
    EXIT_OK,
    EXIT_SIGINT,
    BackfillError,
    ConfigError,
    Interrupted,
)
from backfill.json_output import echo_json, error_document, run_document, status_document
from backfill.settings_env import CONFIG_VARIABLE, add_env_twins
from backfill.settings_env import config_path as find_config_path

# polars, pydantic, rich and httpx are imported by the commands that use them, so that
# `backfill --help` (and a mistake on the command line) answers at once.
if TYPE_CHECKING:
    import socketserver
    from datetime import datetime

    from rich.console import Console

    from backfill.config import Config
    from backfill.report.summary import RunSummary
    from backfill.state.store import KeyChange

F = TypeVar("F", bound=Callable[..., Any])


def _load_config(path: Path | None) -> Config:
    """The config at ``-c``, else ``$BACKFILL_CONFIG``, else ./backfill.toml, validated."""
    found = find_config_path(path)  # a missing config is said before anything heavy is imported
    from backfill.config import load_config

    return load_config(found)


@contextmanager
def _loading() -> Iterator[None]:
    """Import a command's modules and read the config with the cyclic garbage collector paused.

    What they create (modules, classes, the config's models) lives as long as
    the process: collecting would only walk it again and again, a tenth of a
    small run's time. Frozen once loaded, it stays out of later collections.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _errors_to_exit_codes(command: F) -> F:
    """Turn a BackfillError into its message on stderr and its exit code; no traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # With --dry-run -, stdout belongs to the review: no JSON document goes there, not even an error.
        as_json = bool(kwargs.get("as_json")) and str(kwargs.get("dry_run")) != "-"
        try:
            return command(*args, **kwargs)
        except BackfillError as exc:
            _fail(command.__name__, str(exc), exc.exit_code, type(exc).__name__, as_json, "error")
        except Interrupted as exc:
            _fail(command.__name__, str(exc), exc.exit_code, "Interrupted", as_json, "stopped")
        except KeyboardInterrupt:
            _fail(command.__name__, "interrupted by Ctrl-C (SIGINT)", EXIT_SIGINT, "Interrupted", as_json, "stopped")

    return wrapper  # type: ignore[return-value]


def _fail(command: str, message: str, exit_code: int, kind: str, as_json: bool, label: str) -> None:
    """The error on stderr, one line each (and with --json, as one JSON document on stdout); then exit."""
    for line in message.splitlines():
        logs.say("error", line, label=label, exit_code=exit_code)
    if label == "error":
        from backfill.report.github import report_error_to_github

        report_error_to_github(message, os.environ)  # on GitHub Actions: an annotation, and outputs that say so
    if as_json:
        echo_json(error_document(command, message, exit_code, kind))
    sys.exit(exit_code)


def _instant(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    from backfill.model import instant

    try:
        return instant(value)
    except ValueError:
        raise ConfigError(f"{option} '{value}' is not an ISO 8601 date or time, such as 2025-01-31") from None


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    envvar=CONFIG_VARIABLE,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The TOML config file (default: ./backfill.toml).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


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
    type=click.Path(path_type=Path, allow_dash=True),
    help="Send nothing: write the events that would be sent to this CSV (- for stdout), and rejected rows beside it.",
)
@json_option
@click.option("--url", help="Send to this DevGrid URL instead of [devgrid] url (a local receiver, the dev API).")
@click.option("--since", help="Only events at or after this time (ISO 8601; UTC unless it has an offset).")
@click.option("--until", help="Only events before this time (ISO 8601; UTC unless it has an offset).")
@click.option(
    "--allow-http",
    is_flag=True,
    help="Allow plain http:// to a host other than this machine, for DevGrid and for every source's token.",
)
@click.option("--retry-rejected", is_flag=True, help="Plan the events DevGrid refused before again.")
@click.option(
    "--require-state",
    is_flag=True,
    help="Refuse to run when the state file is missing (for scheduled runs: a lost state would resend history).",
)
@click.option(
    "--key-changed",
    "key_change",
    type=click.Choice(["same-account", "new-account"]),
    help="The state knows this URL with another API key: say whether this key is for the same DevGrid account.",
)
@click.option(
    "--in-flight",
    type=click.IntRange(1, 32),
    help="Batches POSTed at once (default: [delivery] in_flight, 4): one per (entityId, env) stream at a time "
    "unless [delivery] same_stream is true.",
)
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(path_type=Path),
    help="Where to write the rows rejected (default: REVIEW.rejects.csv beside the review with --dry-run, "
    "rejects.csv beside the state file otherwise).",
)
@_errors_to_exit_codes
def run(
    config_path: Path | None,
    dry_run: Path | None,
    as_json: bool,
    url: str | None,
    since: str | None,
    until: str | None,
    allow_http: bool,
    retry_rejected: bool,
    require_state: bool,
    key_change: str | None,
    in_flight: int | None,
    rejects_path: Path | None,
) -> None:
    """Read every source, normalize and dedupe the deployments, and send the new ones to DevGrid.

    Events go oldest first, in batches of at most 15. Every event sent is
    recorded in the state file, so a second run sends only what is new, and a
    run that was interrupted resumes where it stopped.

    With --dry-run, nothing is sent and no state is written: the review CSV
    holds every event exactly as it would be sent, in send order (with a state
    column, new or sent, when a state file exists), and REVIEW.rejects.csv
    holds every rejected row with its reason. --dry-run - writes the review to
    stdout. No output may name one of the run's inputs, or anything but a file.

    Example:

        backfill run -c configs/demo.toml --dry-run review.csv

        DEVGRID_API_KEY=... backfill run -c configs/shop.toml
    """
    with _loading():
        config = _load_config(config_path)
        from backfill.job import Hooks, RunRequest
        from backfill.job import run as run_backfill
        from backfill.report.progress import Display

    start, end = _window(since, until)
    request = RunRequest(
        review=dry_run,
        rejects=rejects_path,
        json_on_stdout=as_json,
        url=url,
        since=start,
        until=end,
        retry_rejected=retry_rejected,
        require_state=require_state,
        key_change=cast("KeyChange | None", key_change),  # click.Choice allows only those
        allow_http=allow_http,
        in_flight=in_flight,
    )
    console = _stderr_console()
    with Display(console) as display:
        hooks = Hooks(
            step=logs.traced(display.step),
            start_bar=lambda total: display.start_bar("sending", total),
            progress=display.advance,
            notice=lambda message: _notice(console, message),
        )
        result = run_backfill(config, request, hooks=hooks)
        display.stop_bar()
    _report(result.summary, as_json, console, ok=result.exit_code == EXIT_OK)
    sys.exit(result.exit_code)


def _window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    start, end = _instant(since, "--since"), _instant(until, "--until")
    if start is not None and end is not None and start >= end:
        raise ConfigError(
            f"--since {since} is not before --until {until}: no event could be in the window; "
            "give a --since earlier than --until"
        )
    return start, end


@main.command()
@config_option
@click.option(
    "--out",
    "out",
    default=Path("report.html"),
    show_default=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the HTML page.",
)
@json_option
@click.option("--since", help="Measure from this time (ISO 8601; UTC unless it has an offset).")
@click.option("--until", help="Measure until before this time (ISO 8601; UTC unless it has an offset).")
@click.option("--entity", "entities", multiple=True, help="Only this entityId (repeatable).")
@_errors_to_exit_codes
def report(
    config_path: Path, out: Path, as_json: bool, since: str | None, until: str | None, entities: tuple[str, ...]
) -> None:
    """Show the DORA baseline the planned events give, per entity, before anything is sent.

    Plans exactly as run --dry-run does (nothing is sent, no state is
    written), then writes one self-contained HTML page and prints the
    headline: deployment frequency, change lead time (from git), change
    failure rate and recovery time, rework rate, and data quality.

    Example:

        backfill report -c configs/demo.toml --out report.html
    """
    with _loading():
        from backfill.report.build import make_report
        from backfill.report.outputs import check_outputs, run_folders, run_inputs
        from backfill.report.page import write_page
        from backfill.report.progress import Display
        from backfill.report.terminal import render_headline

        config = _load_config(config_path)
    window = _window(since, until)
    page = check_outputs([(out, "the report (--out)")], run_inputs(config), run_folders(config))[0]
    console = _stderr_console()
    with Display(console) as display:
        result = make_report(
            config,
            since=window[0],
            until=window[1],
            entities=entities,
            step=logs.traced(display.step),
            notice=lambda message: _notice(console, message),
        )
        with display.step("writing the page"):
            assert page.target is not None
            write_page(result, page.target)
    if as_json:
        echo_json(result, default=str)
    else:
        render_headline(result, console, str(page.path))
    sys.exit(result["exit_code"])


@main.command()
@config_option
@json_option
@_errors_to_exit_codes
def status(config_path: Path | None, as_json: bool) -> None:
    """Show what the state file knows: cursors, what was sent, the last runs, anything pending or refused.

    Example:

        backfill status -c configs/shop.toml
    """
    from backfill.report.status import render_status, status_of

    report = status_of(_load_config(config_path), lambda message: _notice(_stderr_console(), message))
    if as_json:
        echo_json(status_document(report), default=str)
    elif logs.current.json:
        logs.say("info", "status", status=report)
    elif not logs.current.quiet:
        render_status(report, _stderr_console())


@main.command()
@config_option
@click.argument("source")
@click.option("--to", "to", help="Move the cursor back to this time (ISO 8601). Without it, forget the cursor.")
@_errors_to_exit_codes
def rewind(config_path: Path | None, source: str, to: str | None) -> None:
    """Move a source's cursor back, so that the next run reads its history again from there.

    Events already sent stay in the ledger and are not sent again: rewinding
    only makes a run read more, never send twice. The cursor moves for every
    destination the state file holds.

    Example:

        backfill rewind -c configs/shop.toml shop-releases --to 2025-01-01
    """
    from backfill.state.rewind import rewind_source

    position = _instant(to, "--to")
    rewind_source(
        _load_config(config_path),
        source,
        position,
        lambda message: _notice(_stderr_console(), message),
    )
    where = f"to {position.isoformat()}" if position else "to the beginning"
    logs.say("info", f"{source}: cursor moved {where}")


@main.command()
@config_option
@click.option(
    "--repo",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    help="The git repository whose remote and tags the first config is written from (default: here).",
)
@click.option("--ci-export", "ci_export", type=click.Path(path_type=Path), help="A CI run export to import.")
@click.option("--preset", help="The CI system that wrote --ci-export: a preset's name (backfill presets lists them).")
@click.option("--entity", help="The DevGrid entity id (default: the repository's name).")
@_errors_to_exit_codes
def init(config_path: Path | None, repo: Path, ci_export: Path | None, preset: str | None, entity: str | None) -> None:
    """Write a first config from what the repository shows; once it exists, create the empty state file.

    Without a config: writes one (-c, default ./backfill.toml), commented, from
    the git remote (GitHub or GitLab, owner/repo), the release tags and how they
    are named, and a CI export if given. It never overwrites a file.

    With a config that exists: creates an empty state file, for the first run
    of a scheduled job; refuses if one exists. Scheduled runs pass
    --require-state, so that a lost state file stops them instead of sending
    all history again; their first run needs the state file to exist. An
    existing state file, whatever it holds, is left as it is (exit 6).

    Example:

        backfill init --ci-export runs.json --preset github-actions

        backfill init -c configs/catch-up.toml

        DEVGRID_API_KEY=... backfill run -c configs/catch-up.toml --require-state
    """
    from backfill.extract.exports.presets import PRESETS
    from backfill.init import init_state
    from backfill.settings_env import DEFAULT_CONFIG
    from backfill.starter_config import discover, render, write_new
    from backfill.state.remote import init_remote

    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset '{preset}' is not a preset; use one of: {', '.join(sorted(PRESETS))}")
    path = config_path if config_path is not None and str(config_path).strip() else DEFAULT_CONFIG
    if not path.exists():
        findings = discover(repo)
        write_new(path, render(findings, path.parent, repo, entity=entity, ci_export=ci_export, preset=preset))
        logs.say("info", f"{path}: written; review it, then: backfill run -c {path} --dry-run review.csv")
        return
    if ci_export is not None or preset is not None or entity is not None:
        raise ConfigError(f"{path}: already exists; init never overwrites a file. Give -c another path")
    config = _load_config(path)
    init_remote(config, init_state)
    where = config.state.url or config.state.path
    logs.say("info", f"{where}: created, empty; the next run sends all history, once")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on; 0 picks a free one.")
@click.option(
    "--db",
    "db_path",
    default="devgrid-receiver.db",
    show_default=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="SQLite file for the events received (:memory: keeps nothing).",
)
@click.option("--api-key-env", default="DEVGRID_API_KEY", show_default=True, help="Variable holding the key to expect.")
@click.option("--entity", "entities", multiple=True, help="An entity that exists (repeatable); others are refused.")
@click.option("--error-rate", default=0.0, help="Share of requests answered 500.")
@click.option("--throttle-rate", default=0.0, help="Share of requests answered 429.")
@click.option("--retry-after", default=1.0, help="Retry-After seconds sent with a 429.")
@click.option("--latency-ms", default=0.0, help="Delay before every answer.")
@click.option(
    "--drop-rate", default=0.0, help="Share of requests whose events are stored, then the connection dropped."
)
@click.option("--seed", type=int, help="Seed for the fault draws, to repeat a rehearsal exactly.")
@_errors_to_exit_codes
def serve(
    host: str,
    port: int,
    db_path: Path,
    api_key_env: str,
    entities: tuple[str, ...],
    error_rate: float,
    throttle_rate: float,
    retry_after: float,
    latency_ms: float,
    drop_rate: float,
    seed: int | None,
) -> None:
    """Run a local receiver that answers like DevGrid's events API, to rehearse a backfill.

    It checks what DevGrid checks, stores what it accepts in --db, and can
    inject faults. GET /events lists what it holds, GET /events/duplicates the
    keys it holds more than once; POST /_control/faults changes the faults.

    Example:

        DEVGRID_API_KEY=test backfill serve --port 8080 &
        DEVGRID_API_KEY=test backfill run -c configs/demo.toml --url http://127.0.0.1:8080
    """
    from backfill.rehearse.receiver import EventStore, Faults, Receiver
    from backfill.secrets import check_one_word

    expected = os.environ.get(api_key_env, "").strip()
    if not expected:
        raise ConfigError(f"set ${api_key_env} to the API key the receiver should expect")
    check_one_word(expected, f"${api_key_env}: the API key", "must hold the key alone, on one line")
    faults = Faults(
        error_rate=error_rate,
        throttle_rate=throttle_rate,
        retry_after=retry_after,
        latency_ms=latency_ms,
        drop_after_store_rate=drop_rate,
        seed=seed,
    )
    try:
        store = EventStore(":memory:" if str(db_path) == ":memory:" else db_path)
        server = Receiver((host, port), expected, store, faults, frozenset(entities))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    _serve_until_stopped(server, f"listening on http://{host}:{server.server_port} (events stored in {db_path})")


@main.command()
@click.option(
    "--db",
    "db_path",
    default="devgrid-receiver.db",
    show_default=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The receiver's SQLite file.",
)
@json_option
def received(db_path: Path, as_json: bool) -> None:
    """Show what a local receiver (backfill serve) holds, and the keys it holds more than once.

    Example:

        backfill received --db devgrid-receiver.db
    """
    from backfill.rehearse.receiver import EventStore

    store = EventStore(db_path)
    events, duplicates = store.count(), store.duplicates()
    if as_json:
        echo_json({"events": events, "duplicates": duplicates})
        return
    click.echo(f"{events:,} events received; {len(duplicates):,} keys received more than once")
    for duplicate in duplicates:
        click.echo(
            f"  {duplicate['entityId']}/{duplicate['env']}/{duplicate['build_id']}: {duplicate['copies']} copies"
        )


@main.command()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8181, show_default=True, help="Port to listen on; 0 picks a free one.")
@_errors_to_exit_codes
def replay(folder: Path, host: str, port: int) -> None:
    """Serve recorded GitHub and GitLab API answers, to try the github-* and gitlab-* sources offline.

    FOLDER holds the recordings and a replay.toml that lists them. Point a
    source's base_url (GitHub) or url (GitLab) at this server.

    Example:

        backfill replay sample_data/forges --port 8181 &
        backfill run -c configs/forges.toml --dry-run forges.csv
    """
    from backfill.rehearse.replay import Recordings, ReplayServer

    if not (folder / "replay.toml").is_file():
        raise ConfigError(f"{folder}: has no replay.toml listing its recordings")
    try:
        server = ReplayServer((host, port), Recordings.load(folder))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    _serve_until_stopped(server, f"replaying {folder} on {server.base_url}")


@main.command()
def presets() -> None:
    """List the ci-export presets: the columns each reads and what its status words mean.

    Example:

        backfill presets
    """
    from backfill.extract.exports.presets import PRESETS

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


main.add_command(emit_command)
# Last, so that every command gets -q, -v and --log-format, and every option its BACKFILL_* twin.
logs.add_log_options(main)
add_env_twins(main)


def _serve_until_stopped(server: socketserver.BaseServer, message: str) -> None:
    """Serve until Ctrl-C or SIGTERM, then close the socket."""
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    click.echo(message, err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops a server the way Ctrl-C does (shutdown() from here would deadlock)."""
    raise KeyboardInterrupt


def _notice(console: Console, message: str) -> None:
    """Something said as it happens (a retry, a wait), dimmed, one line."""
    logs.say("info", message, console)


def _stderr_console() -> Console:
    """A console on stderr; in a pipe or CI log, wide enough that tables do not wrap."""
    return logs.stderr_console()


def _report(summary: RunSummary, as_json: bool, console: Console, *, ok: bool) -> None:
    from backfill.report.github import report_to_github

    report_to_github(summary, os.environ)
    if as_json:
        echo_json(run_document(summary, ok), default=str)
    else:
        from backfill.report.summary import render

        logs.report(summary, render, console)
