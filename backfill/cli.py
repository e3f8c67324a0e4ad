"""The command line: parse, call the library, print, and map errors to exit codes.

Exit codes (also in the README): 0 done; 1 a source could not be read; 2 bad
command line or config; 3 events left unsent or refused by DevGrid; 4 DevGrid
refused the API key; 5 another run holds the state file; 6 the state file
cannot be used; 130 / 143 interrupted by Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from backfill import __version__
from backfill.errors import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_SIGINT,
    BackfillError,
    ConfigError,
    Interrupted,
    StateError,
)

# polars, pydantic, rich and httpx are imported by the commands that use them, so that
# `backfill --help` (and a mistake on the command line) answers at once.
if TYPE_CHECKING:
    import socketserver

    from rich.console import Console

    from backfill.config import Config
    from backfill.outputs import RunOutputs
    from backfill.state.store import Destination, KeyChange, Store

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
        except Interrupted as exc:
            click.echo(f"stopped: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("stopped: interrupted by Ctrl-C (SIGINT)", err=True)
            sys.exit(EXIT_SIGINT)

    return wrapper  # type: ignore[return-value]


def _instant(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} '{value}' is not an ISO 8601 date or time, such as 2025-01-31") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The TOML config file.",
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
    config_path: Path,
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
    from backfill.config import allowing_plain_http, load_config
    from backfill.outputs import run_outputs

    config = load_config(config_path)
    if allow_http:
        config = allowing_plain_http(config)
    if in_flight is not None:
        config = config.model_copy(update={"delivery": config.delivery.model_copy(update={"in_flight": in_flight})})
    window = _window(since, until)
    if dry_run is None:
        from backfill.state.store import state_folder_problem

        # A sending run writes beside its state file first of all: say so before any output is checked.
        problem = state_folder_problem(Path(config.state.path).resolve())
        if problem:
            raise StateError(problem)
    outputs = run_outputs(config, dry_run, rejects_path, as_json=as_json)
    console = _stderr_console()
    if outputs.review is not None:
        _review(config, outputs, url, window, require_state, as_json, console)
    else:
        _send(config, url, window, allow_http, retry_rejected, require_state, key_change, outputs, as_json, console)


def _window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    start, end = _instant(since, "--since"), _instant(until, "--until")
    if start is not None and end is not None and start >= end:
        raise ConfigError(
            f"--since {since} is not before --until {until}: no event could be in the window; "
            "give a --since earlier than --until"
        )
    return start, end


def _review(
    config: Config,
    outputs: RunOutputs,
    url: str | None,
    window: tuple[datetime | None, datetime | None],
    require_state: bool,
    as_json: bool,
    console: Console,
) -> None:
    import polars as pl

    from backfill.progress import Display
    from backfill.review import write_rejects, write_review, write_review_to_stdout, write_skipped
    from backfill.run import plan_run
    from backfill.state.rules import mark_known, missing_state, within
    from backfill.state.store import Store
    from backfill.summary import build_summary

    store = Store.open(Path(config.state.path), create=False)
    if store is None and require_state:
        raise missing_state(Path(config.state.path))
    review, rejects, skipped = outputs.review, outputs.rejects, outputs.skipped
    assert review is not None
    try:
        destination = _review_destination(config, store, url)
        with Display(console) as display:
            result = plan_run(config, step=display.step, notice=lambda message: _notice(console, message))
            events = within(result.plan.events, *window)
            extra: dict[str, Any] = {}
            if store is not None:
                if destination is not None:
                    events = mark_known(events, store.known_keys(destination.id, events))
                else:
                    events = events.with_columns(state=pl.lit("new"))
                counts = dict(events.get_column("state").value_counts().iter_rows())
                extra["ledger"] = {
                    "destination": destination.url if destination else None,
                    "new": counts.get("new", 0),
                    "sent": counts.get("sent", 0),
                }
            with display.step("writing the review"):
                if review.target is None:
                    write_review_to_stdout(events)
                else:
                    write_review(events, review.target)
                if rejects is not None:
                    write_rejects(result.plan.rejects, rejects.target or rejects.path)
                if skipped is not None:
                    write_skipped(result.plan.skipped, skipped.target or skipped.path)
    finally:
        if store is not None:
            store.close()
    summary = build_summary(
        result,
        {
            "mode": "dry-run",
            "config": str(config.path),
            "review_csv": str(review.path),
            "rejects_csv": str(rejects.path) if rejects is not None else None,
            "skipped_csv": str(skipped.path) if skipped is not None else None,
            **extra,
        },
        window,
    )
    _report(summary, as_json, console)
    sys.exit(EXIT_ERROR if result.failures else EXIT_OK)


def _review_destination(config: Config, store: Store | None, url: str | None) -> Destination | None:
    """The destination whose ledger a dry run compares with: that of the run it previews.

    Without the API key in the environment, a URL known with one account only is enough.
    """
    from backfill.secrets import optional_api_key
    from backfill.state.destination import account_of

    if store is None:
        return None
    key_file = Path(config.devgrid.api_key_file) if config.devgrid.api_key_file else None
    key = optional_api_key(config.devgrid.api_key_env, key_file, os.environ)
    return store.find_destination(url or config.devgrid.url, account_of(key, store.salt) if key else None)


def _send(
    config: Config,
    url: str | None,
    window: tuple[datetime | None, datetime | None],
    allow_http: bool,
    retry_rejected: bool,
    require_state: bool,
    key_change: str | None,
    outputs: RunOutputs,
    as_json: bool,
    console: Console,
) -> None:
    import httpx

    from backfill.interrupts import Interrupts
    from backfill.progress import Display
    from backfill.review import write_rejects
    from backfill.secrets import api_key, check_url
    from backfill.send import SendOptions, send_run
    from backfill.summary import build_summary, delivery_summary

    target = (url or config.devgrid.url).rstrip("/")
    check_url(target, allow_http=allow_http)
    key_file = Path(config.devgrid.api_key_file) if config.devgrid.api_key_file else None
    options = SendOptions(
        url=target,
        api_key=api_key(config.devgrid.api_key_env, key_file, os.environ),
        since=window[0],
        until=window[1],
        retry_rejected=retry_rejected,
        require_state=require_state,
        key_change=cast("KeyChange | None", key_change),  # click.Choice allows only those
    )

    with (
        Interrupts() as interrupts,
        httpx.Client(timeout=config.devgrid.timeout, follow_redirects=False) as client,
        Display(console) as display,
    ):
        result = send_run(
            config,
            options,
            client,
            step=display.step,
            start_bar=lambda total: display.start_bar("sending", total),
            progress=display.advance,
            notice=lambda message: _notice(console, message),
            interrupts=interrupts,
        )
        display.stop_bar()
    rejects = outputs.rejects
    assert rejects is not None
    write_rejects(result.run.plan.rejects, rejects.target or rejects.path)
    delivery = delivery_summary(result)
    summary = build_summary(
        result.run,
        {
            "mode": "send",
            "config": str(config.path),
            "url": target,
            "rejects_csv": str(rejects.path),
            "delivery": delivery,
        },
        window,
    )
    _report(summary, as_json, console)
    sys.exit(result.exit_code)


@main.command()
@config_option
@json_option
@_errors_to_exit_codes
def status(config_path: Path, as_json: bool) -> None:
    """Show what the state file knows: cursors, what was sent, the last runs, anything pending or refused.

    Example:

        backfill status -c configs/shop.toml
    """
    from backfill.config import load_config
    from backfill.state.store import Store
    from backfill.status import render_status, status_report

    config = load_config(config_path)
    store = Store.open(Path(config.state.path), create=False, verify=True)
    try:
        report = status_report(config, store)
    finally:
        if store is not None:
            store.close()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        render_status(report, _stderr_console())


@main.command()
@config_option
@click.argument("source")
@click.option("--to", "to", help="Move the cursor back to this time (ISO 8601). Without it, forget the cursor.")
@_errors_to_exit_codes
def rewind(config_path: Path, source: str, to: str | None) -> None:
    """Move a source's cursor back, so that the next run reads its history again from there.

    Events already sent stay in the ledger and are not sent again: rewinding
    only makes a run read more, never send twice. The cursor moves for every
    destination the state file holds.

    Example:

        backfill rewind -c configs/shop.toml shop-releases --to 2025-01-01
    """
    from backfill.config import load_config
    from backfill.state.lock import StateLock
    from backfill.state.store import Store

    config = load_config(config_path)
    if source not in {item.name for item in config.sources}:
        names = ", ".join(item.name for item in config.sources)
        raise ConfigError(f"{config.path}: no source named '{source}'; the sources are: {names}")
    position = _instant(to, "--to")
    state_path = Path(config.state.path)
    with StateLock(state_path):
        store = Store.open(state_path, create=False, write=True)
        if store is None:
            raise StateError(f"{state_path}: does not exist yet; there is no cursor to rewind")
        try:
            store.rewind(source, position, [item.id for item in store.destinations()])
        finally:
            store.close()
    where = f"to {position.isoformat()}" if position else "to the beginning"
    click.echo(f"{source}: cursor moved {where}", err=True)


@main.command()
@config_option
@_errors_to_exit_codes
def init(config_path: Path) -> None:
    """Create an empty state file, for the first run of a scheduled job; refuse if one exists.

    Scheduled runs pass --require-state, so that a lost state file stops them
    instead of sending all history again. Their first run needs the state file
    to exist: create it with init, and the next run sends all history, once.
    An existing state file, whatever it holds, is left as it is (exit 6).

    Example:

        backfill init -c configs/catch-up.toml

        DEVGRID_API_KEY=... backfill run -c configs/catch-up.toml --require-state
    """
    from backfill.config import load_config
    from backfill.init import init_state

    config = load_config(config_path)
    init_state(Path(config.state.path))
    click.echo(f"{config.state.path}: created, empty; the next run sends all history, once", err=True)


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
    from backfill.receiver import EventStore, Faults, Receiver
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
    from backfill.receiver import EventStore

    store = EventStore(db_path)
    events, duplicates = store.count(), store.duplicates()
    if as_json:
        click.echo(json.dumps({"events": events, "duplicates": duplicates}, indent=2))
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
    from backfill.replay import Recordings, ReplayServer

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


def _serve_until_stopped(server: socketserver.BaseServer, message: str) -> None:
    """Serve until Ctrl-C or SIGTERM, then close the socket."""
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
    from rich.markup import escape

    console.print(f"[dim]{escape(message)}[/dim]", highlight=False, soft_wrap=True)


def _stderr_console() -> Console:
    """A console on stderr; in a pipe or CI log, wide enough that tables do not wrap."""
    from rich.console import Console

    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=160)


def _report(summary: dict[str, Any], as_json: bool, console: Console) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    from backfill.summary import render

    render(summary, console)
