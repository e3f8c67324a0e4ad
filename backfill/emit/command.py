"""The ``backfill emit`` command: parse, build the event, send it fail-open, say what became of it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from backfill import logs
from backfill.emit.ci_names import ALIASES, NAMES
from backfill.errors import EXIT_OK, EXIT_SIGINT, BackfillError, ConfigError
from backfill.json_output import SCHEMA_VERSION, echo_json
from backfill.settings_env import CONFIG_VARIABLE, find_config

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from backfill.config import Config
    from backfill.emit.deliver import Outcome, Target
    from backfill.emit.event import BuiltEvent

F = TypeVar("F", bound=Callable[..., Any])


def _twins(name: str, devgrid: str | None = None) -> list[str]:
    return [f"BACKFILL_{name}", *([f"DEVGRID_{devgrid}"] if devgrid else [])]


def _value(name: str, help_text: str, devgrid: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    envvar = _twins(name.upper().replace("-", "_"), devgrid)
    return click.option(f"--{name}", envvar=envvar, show_envvar=True, help=help_text, **kwargs)


@click.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    envvar=CONFIG_VARIABLE,
    show_envvar=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The TOML config file (default: ./backfill.toml if it exists). Optional for emit: without it, "
    "DevGrid's defaults apply and nothing is recorded in a state file.",
)
@click.option(
    "--ci",
    type=click.Choice([*NAMES, *ALIASES], case_sensitive=False),
    envvar="BACKFILL_CI",
    show_envvar=True,
    help="The CI system whose variables to read (default: detected; none: a run outside CI).",
)
@_value("entity", "The DevGrid entity id (default: the matching source's entity_id).", "ENTITY_ID")
@_value("env", "The environment deployed to (production, staging...; aliases such as prod are mapped).", "ENV")
@_value("status", "The deployment's outcome.", "STATUS", type=click.Choice(["success", "failed"]))
@click.option(
    "--status-from-exit",
    "exit_status",
    type=int,
    envvar="BACKFILL_STATUS_FROM_EXIT",
    show_envvar=True,
    help="The deploy step's exit code: 0 is success, anything else failed (instead of --status).",
)
@_value("build-id", "The build id (default: the CI system's run id, as a backfill of its runs reads it).", "BUILD_ID")
@_value("commit", "The commit deployed: a SHA, or a name git resolves here (default: from the CI).", "COMMIT_SHA")
@_value("build-url", "The run's web page (default: from the CI).", "BUILD_URL")
@_value("initiator", "Who started the deployment (default: from the CI).", "INITIATOR")
@_value("description", "A line about the deployment (default: from the CI).", "DESCRIPTION")
@_value("change-id", "The change request id (ServiceNow CHG...), for CFR and MTTR.", "CHANGE_ID")
@_value("deployment-type", "hotfix, rollback... (default: from the source's hotfix_pattern).", "DEPLOYMENT_TYPE")
@_value("timestamp", "When it was deployed, ISO 8601 (default: now).", "TIMESTAMP")
@_value("source", "The config's source whose runs this is (default: the one ci-export source of this CI).")
@_value("url", "Send to this DevGrid URL instead of [devgrid] url.", "URL")
@click.option(
    "--repo",
    "repo",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="BACKFILL_REPO",
    show_envvar=True,
    help="The checked-out repository, to resolve commits with git (default: the current folder).",
)
@click.option(
    "--deadline",
    type=click.FloatRange(min=1, max=600),
    default=30.0,  # backfill.emit.deliver.DEFAULT_DEADLINE
    show_default=True,
    envvar="BACKFILL_DEADLINE",
    show_envvar=True,
    help="Seconds for the whole send; past it, a warning and exit 0.",
)
@click.option(
    "--strict",
    is_flag=True,
    envvar="BACKFILL_STRICT",
    show_envvar=True,
    help="Exit non-zero when the event is not sent (the default never fails the pipeline).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    envvar="BACKFILL_EMIT_DRY_RUN",
    show_envvar=True,
    help="Print the event's JSON on stdout and send nothing.",
)
@click.option("--allow-http", is_flag=True, envvar="BACKFILL_ALLOW_HTTP", show_envvar=True, help="Allow plain http://.")
@click.option(
    "--json", "as_json", is_flag=True, envvar="BACKFILL_JSON", show_envvar=True, help="Print the result as JSON."
)
def emit(
    config_path: Path | None,
    ci: str | None,
    exit_status: int | None,
    repo: Path | None,
    deadline: float,
    strict: bool,
    dry_run: bool,
    allow_http: bool,
    as_json: bool,
    url: str | None,
    source: str | None,
    **values: str | None,
) -> None:
    """Send this deployment's event to DevGrid, from inside the pipeline that made it.

    Run it after the deploy step, whatever the step's outcome (GitHub Actions:
    if: always()). The CI system is found from its variables, and the build id,
    commit, build URL, initiator and description are read from them; a flag or
    its variable overrides each. The event is built by the rules a backfill
    uses, with the same key, and recorded in the state file when [state] is
    configured, so that no later catch-up run sends it again.

    It never fails the pipeline: a problem is a warning and exit 0, unless
    --strict. The whole send ends within --deadline seconds.

    Example:

        backfill emit --env production --status-from-exit $?

        DEVGRID_API_KEY=... backfill emit -c backfill.toml --env production --status success
    """
    from backfill.emit.deliver import Outcome, deliver

    try:
        event, state_path, target, notes, config = _prepare(
            config_path, ci, exit_status, repo, url, source, allow_http, dry_run, values
        )
    except BackfillError as exc:
        _finish(Outcome("not-sent", str(exc), exit_code=exc.exit_code), None, strict, as_json, [])
        return
    if dry_run:
        for note in notes:
            logs.say("info", note, label="note")
        if as_json:
            echo_json(_json(Outcome("dry-run", "nothing sent (--dry-run)"), event))
        else:
            echo_json(event.as_dict())
        return
    assert target is not None
    try:
        outcome = deliver(
            event,
            target,
            state_path,
            deadline=deadline,
            notice=lambda message: logs.say("info", message, label="note"),
            remote=_remote(config),
        )
    except KeyboardInterrupt:
        logs.say("error", "interrupted by Ctrl-C (SIGINT); the event may or may not be sent", label="stopped")
        sys.exit(EXIT_SIGINT)
    _finish(outcome, event, strict, as_json, notes)


def _prepare(
    config_path: Path | None,
    ci: str | None,
    exit_status: int | None,
    repo: Path | None,
    url: str | None,
    source_name: str | None,
    allow_http: bool,
    dry_run: bool,
    values: dict[str, str | None],
) -> tuple[BuiltEvent, Path | None, Target | None, list[str], Config | None]:
    from backfill.config import DevGrid, Normalize, load_config
    from backfill.emit.ci_systems import detect
    from backfill.emit.commits import WorkingCopy, resolve_commit
    from backfill.emit.deliver import Target
    from backfill.emit.event import Given, build_event, matching_source
    from backfill.secrets import api_key, check_url

    path = find_config(config_path, required=False)
    config = load_config(path) if path is not None else None
    devgrid = config.devgrid if config is not None else DevGrid()
    settings = config.normalize if config is not None else Normalize()
    if values.get("status") is not None and exit_status is not None:
        raise ConfigError("give --status or --status-from-exit, not both")
    status = values.get("status")
    if exit_status is not None:
        status = "success" if exit_status == 0 else "failed"
    system = detect(os.environ, ci)
    copy = WorkingCopy(repo)
    facts = system.facts(os.environ, copy)
    logs.say("debug", f"CI system: {system.label}" + ("" if ci else " (detected from its variables)"))
    for name in ("build_id", "build_url", "initiator", "description"):
        logs.say("debug", f"{system.label} says {name} = {getattr(facts, name)!r}")
    logs.say("debug", f"{system.label} says build_commit_sha = {facts.commit.sha!r}")
    commit_note = None
    commit = values.get("commit")
    if commit is not None:
        resolved = resolve_commit(commit, "--commit", copy)
        commit, commit_note = resolved.sha or "", resolved.note
    source = matching_source(config.sources if config is not None else [], system.preset, source_name)
    given = Given(
        entity=values.get("entity"),
        env=values.get("env"),
        status=status,
        build_id=values.get("build_id"),
        commit=commit,
        build_url=values.get("build_url"),
        initiator=values.get("initiator"),
        description=values.get("description"),
        change_id=values.get("change_id"),
        deployment_type=values.get("deployment_type"),
        timestamp=values.get("timestamp"),
    )
    event = build_event(facts, given, settings, source, commit_note=commit_note)
    logs.say("debug", f"source: {event.source}; key: {event.key.entity_id}/{event.key.env}/{event.key.build_id}")
    notes = [f"{system.label}: {note}" for note in event.notes]
    if config is None:
        notes.append(
            "no config: the event is not recorded in a state file, so a catch-up run over this history "
            "would not know it was sent (see the README: live events)"
        )
    if dry_run:
        return event, None, None, notes, config
    target_url = (url or devgrid.url).rstrip("/")
    check_url(target_url, allow_http=allow_http)
    key_file = Path(devgrid.api_key_file) if devgrid.api_key_file else None
    key = api_key(devgrid.api_key_env, key_file, os.environ)
    target = Target(
        url=target_url,
        api_key=key,
        api_key_env=devgrid.api_key_env,
        timeout=devgrid.timeout,
        max_attempts=devgrid.max_attempts,
    )
    state_path = Path(config.state.path) if config is not None else None
    remote_held = config is not None and config.state.url is not None  # the working copy comes from the bucket
    if state_path is not None and not remote_held and not state_path.is_file():
        # Creating it here would let a scheduled run with --require-state start over a lost state, and send
        # all history again: the event is sent, but only a state that exists records it.
        notes.append(
            f"{state_path} does not exist: the event is sent without being recorded (the baseline run or "
            "backfill init creates the state file)"
        )
        state_path = None
    return event, state_path, target, notes, config


def _remote(config: Config | None) -> Callable[[], AbstractContextManager[object]] | None:
    """With ``[state] url``: the state object held (locked, downloaded, then uploaded) while the event is recorded."""
    if config is None or config.state.url is None:
        return None
    from backfill.state.remote import remote_state

    return lambda: remote_state(config, lambda message: logs.say("info", message, label="note"))


def _finish(outcome: Outcome, event: BuiltEvent | None, strict: bool, as_json: bool, notes: list[str]) -> None:
    for note in notes:
        logs.say("info", note, label="note")
    if outcome.ok:
        logs.say("info", outcome.message, result=outcome.result)
    elif strict:
        logs.say("error", outcome.message, result=outcome.result, exit_code=outcome.exit_code)
    else:
        logs.say(
            "warning", f"{outcome.message} (the pipeline goes on; --strict makes this fail)", result=outcome.result
        )
    if as_json:
        echo_json(_json(outcome, event))
    code = EXIT_OK if outcome.ok or not strict else outcome.exit_code
    # A send abandoned at the deadline is a daemon thread: the process leaves without waiting for it
    # (the state file is written ahead, so a send cut off anywhere is settled by the next run).
    sys.exit(code)


def _json(outcome: Outcome, event: BuiltEvent | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command": "emit",
        "ok": outcome.ok or outcome.result == "dry-run",
        "result": outcome.result,
        "message": outcome.message,
        "recorded": outcome.recorded,
        "possibly_duplicated": outcome.possibly_duplicated,
        "event": event.as_dict() if event is not None else None,
    }
    if not outcome.ok and outcome.result != "dry-run":
        data["error"] = {"message": outcome.message, "exit_code": outcome.exit_code}
    return data
