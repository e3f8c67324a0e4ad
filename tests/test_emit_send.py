"""backfill emit against the real local receiver: fail-open, one answer decides, and the ledger remembers."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner, Result
from helpers import FIXTURES, WriteFile
from receivers import KEY, LocalReceiver, start_receiver

from backfill.cli import main
from backfill.errors import EXIT_AUTH, EXIT_INCOMPLETE, EXIT_OK

# A real run of panjf2000/ants in tests/fixtures/ci/github_actions_runs_panjf2000_ants.json.
RUN = {"id": "2983238245", "head_sha": "06e6934c35c336b1a2bd3005fb21dc3914a45747", "actor": "panjf2000"}
GITHUB = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_RUN_ID": RUN["id"],
    "GITHUB_RUN_ATTEMPT": "1",
    "GITHUB_JOB": "deploy",
    "GITHUB_SHA": RUN["head_sha"],
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "panjf2000/ants",
    "GITHUB_ACTOR": RUN["actor"],
    "GITHUB_EVENT_NAME": "schedule",
    "GITHUB_WORKFLOW": "CodeQL",
}
_CI_PREFIXES = ("GITHUB_", "GITLAB_", "CI_", "CIRCLE", "BUILD_", "SYSTEM_", "BITBUCKET_", "BUILDKITE", "JENKINS_")
_CI_NAMES = {"TF_BUILD", "JOB_NAME", "GIT_COMMIT", "BUILDKITE", "CIRCLECI"}


@pytest.fixture(autouse=True)
def _no_ci_of_our_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests say which CI they are in: none of the machine's own CI or backfill variables leak in."""
    for name in list(os.environ):
        if name.startswith((*_CI_PREFIXES, "BACKFILL_", "DEVGRID_")) or name in _CI_NAMES:
            monkeypatch.delenv(name)


def emit(*args: str, environ: dict[str, str] | None = None, key: str = KEY) -> Result:
    env = {**(environ if environ is not None else GITHUB), "DEVGRID_API_KEY": key}
    result = CliRunner().invoke(main, ["emit", *args], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def state_config(write: WriteFile, source: str = "", *, create_state: bool = True) -> Path:
    """A config with a state file (created, as the baseline run or backfill init does)."""
    path = write("backfill.toml", f'[state]\npath = "state.db"\n{source}')
    if create_state:
        assert CliRunner().invoke(main, ["init", "-c", str(path)]).exit_code == EXIT_OK
    return path


CATCH_UP_SOURCE = f"""
[[sources]]
name = "ants-runs"
type = "ci-export"
path = "{FIXTURES / "ci" / "github_actions_runs_panjf2000_ants.json"}"
preset = "github-actions"
entity_id = "ants"
env = "production"
match = {{ name = "CodeQL" }}
"""


# -- sending, and DevGrid's answer deciding -----------------------------------------------------


def test_emit_sends_the_event_and_says_so(receiver: LocalReceiver) -> None:
    result = emit("--entity", "ants", "--env", "production", "--status-from-exit", "0", "--url", receiver.url)
    assert result.exit_code == EXIT_OK, result.output
    assert "sent ants/production/2983238245" in result.stderr
    (received,) = [item["event"] for item in receiver.events()]
    assert received["entityId"] == "ants"
    assert received["attributes"] == {
        "env": "production",
        "status": "success",
        "build_id": RUN["id"],
        "build_commit_sha": RUN["head_sha"],
        "build_url": f"https://github.com/panjf2000/ants/actions/runs/{RUN['id']}",
        "description": "CodeQL",
        "initiator": RUN["actor"],
    }


def test_status_from_a_failed_deploys_exit_code_is_failed(receiver: LocalReceiver) -> None:
    result = emit("--entity", "ants", "--env", "production", "--status-from-exit", "2", "--url", receiver.url)
    assert result.exit_code == EXIT_OK, result.output
    assert receiver.events()[0]["event"]["attributes"]["status"] == "failed"


def test_settings_come_from_backfill_and_devgrid_variables(receiver: LocalReceiver) -> None:
    environ = {**GITHUB, "DEVGRID_ENTITY_ID": "ants", "BACKFILL_ENV": "prod", "BACKFILL_STATUS": "success"}
    result = emit("--url", receiver.url, environ=environ)
    assert result.exit_code == EXIT_OK, result.output
    event = receiver.events()[0]["event"]
    assert (event["entityId"], event["attributes"]["env"]) == ("ants", "production")
    # A flag wins over its variable.
    result = emit("--url", receiver.url, "--entity", "other", environ={**environ, "BACKFILL_BUILD_ID": "b-2"})
    assert result.exit_code == EXIT_OK, result.output
    assert receiver.events()[1]["event"]["entityId"] == "other"
    assert receiver.events()[1]["event"]["attributes"]["build_id"] == "b-2"


def test_a_refusal_by_devgrid_is_a_warning_never_a_success(tmp_path: Path) -> None:
    for receiver in start_receiver(tmp_path, "--entity", "known-app"):
        result = emit("--entity", "ants", "--env", "production", "--status", "success", "--url", receiver.url)
        assert result.exit_code == EXIT_OK
        assert "warning: DevGrid refused ants/production/2983238245" in result.stderr
        assert "entity not found" in result.stderr.lower()
        assert "sent ants" not in result.stderr
        strict = emit(
            "--entity", "ants", "--env", "production", "--status", "success", "--url", receiver.url, "--strict"
        )
        assert strict.exit_code == EXIT_INCOMPLETE
        assert "error: DevGrid refused" in strict.stderr


def test_dry_run_prints_the_event_and_sends_nothing(receiver: LocalReceiver) -> None:
    result = emit("--entity", "ants", "--env", "production", "--status", "success", "--url", receiver.url, "--dry-run")
    assert result.exit_code == EXIT_OK, result.output
    event = json.loads(result.stdout)
    assert event["type"] == "event-deploy" and event["attributes"]["build_id"] == RUN["id"]
    assert receiver.events() == []


def test_dry_run_needs_no_api_key() -> None:
    result = emit("--entity", "ants", "--env", "production", "--status", "success", "--dry-run", key="")
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout)["entityId"] == "ants"


def test_json_output_says_what_became_of_the_event(receiver: LocalReceiver) -> None:
    result = emit("--entity", "ants", "--env", "production", "--status", "success", "--url", receiver.url, "--json")
    data = json.loads(result.stdout)
    assert data["schema_version"] == 1 and data["command"] == "emit"
    assert data["result"] == "sent" and data["event"]["attributes"]["build_id"] == RUN["id"]
    refused = emit("--env", "production", "--status", "success", "--url", receiver.url, "--json")
    data = json.loads(refused.stdout)
    assert data["result"] == "not-sent" and "missing entityId" in data["error"]["message"]


# -- fail-open ---------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_devgrid_is_a_warning_and_exit_0() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = emit("--entity", "ants", "--env", "production", "--status", "success", "--url", url, "--deadline", "3")
    assert result.exit_code == EXIT_OK
    assert result.stderr.count("warning:") == 1 and "was not sent" in result.stderr
    assert "sent ants" not in result.stderr
    strict = emit(
        "--entity", "ants", "--env", "production", "--status", "success", "--url", url, "--deadline", "3", "--strict"
    )
    assert strict.exit_code == EXIT_INCOMPLETE


def test_a_missing_api_key_is_a_warning_and_exit_0(receiver: LocalReceiver) -> None:
    result = emit("--entity", "ants", "--env", "production", "--status", "success", "--url", receiver.url, key="")
    assert result.exit_code == EXIT_OK
    assert "warning:" in result.stderr and "DEVGRID_API_KEY" in result.stderr
    assert receiver.events() == []


class _Counting(BaseHTTPRequestHandler):
    posts: ClassVar[list[str]] = []
    answer = 401

    def do_POST(self) -> None:
        _Counting.posts.append(self.path)
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(self.answer)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"message": "Unauthorized"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    _Counting.posts = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_401_is_never_retried(refusing_server: str) -> None:
    result = emit("--entity", "ants", "--env", "production", "--status", "success", "--url", refusing_server)
    assert result.exit_code == EXIT_OK
    assert _Counting.posts == ["/events"]
    assert "refused the API key" in result.stderr and KEY not in result.output
    strict = emit(
        "--entity", "ants", "--env", "production", "--status", "success", "--url", refusing_server, "--strict"
    )
    assert strict.exit_code == EXIT_AUTH
    assert _Counting.posts == ["/events", "/events"]


def test_a_devgrid_that_never_answers_is_given_up_at_the_deadline(tmp_path: Path) -> None:
    """A server that drips one byte at a time never times a read out: only the deadline ends the send."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def drip() -> None:
        listener.settimeout(0.2)
        connections = []
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
                connections.append(connection)
                connection.sendall(b"HTTP/1.1 201 Created\r\n")
            except TimeoutError:
                pass
            for connection in connections:
                with contextlib.suppress(OSError):
                    connection.sendall(b"x")
        for connection in connections:
            connection.close()

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "backfill", "emit", "--entity", "ants", "--env", "production"),
                *("--status", "success", "--url", f"http://127.0.0.1:{listener.getsockname()[1]}", "--deadline", "2"),
            ],
            check=False,
            env={**os.environ, **GITHUB, "DEVGRID_API_KEY": KEY},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert done.returncode == EXIT_OK, done.stderr
    assert "warning: no answer from DevGrid within the 2 s deadline" in done.stderr
    assert "sent ants" not in done.stderr


# -- the same event as a backfill, never sent twice ------------------------------------------------------


def test_emit_builds_the_key_and_fields_a_backfill_of_the_same_run_builds(write: WriteFile, tmp_path: Path) -> None:
    path = state_config(write, CATCH_UP_SOURCE)
    live = json.loads(emit("-c", str(path), "--env", "production", "--status", "success", "--dry-run").stdout)
    review = tmp_path / "review.csv"
    result = CliRunner().invoke(main, ["run", "-c", str(path), "--dry-run", str(review)], catch_exceptions=False)
    assert result.exit_code == EXIT_OK, result.output
    import polars as pl

    row = pl.read_csv(review, infer_schema=False).filter(pl.col("build_id") == RUN["id"]).row(0, named=True)
    assert live["entityId"] == row["entityId"] == "ants"
    for name in ("env", "status", "build_id", "build_commit_sha", "build_url", "initiator"):
        assert live["attributes"][name] == row[name], name


def test_an_emitted_event_is_never_sent_again_by_a_catch_up_run(write: WriteFile, receiver: LocalReceiver) -> None:
    path = state_config(write, CATCH_UP_SOURCE)
    result = emit("-c", str(path), "--env", "production", "--status", "success", "--url", receiver.url)
    assert result.exit_code == EXIT_OK, result.output
    assert "sent ants/production/2983238245" in result.stderr
    catch_up = CliRunner().invoke(
        main, ["run", "-c", str(path), "--url", receiver.url, "--json"], env={"DEVGRID_API_KEY": KEY}
    )
    assert catch_up.exit_code == EXIT_OK, catch_up.output
    delivery = json.loads(catch_up.stdout)["delivery"]
    assert delivery["already_sent"] == 1
    assert receiver.duplicates() == []
    build_ids = [item["event"]["attributes"]["build_id"] for item in receiver.events()]
    assert build_ids.count(RUN["id"]) == 1 and len(build_ids) == delivery["sent"] + 1


def test_a_state_file_that_does_not_exist_is_not_created_by_emit(write: WriteFile, receiver: LocalReceiver) -> None:
    # Creating it would let a scheduled run with --require-state start over a lost state and resend history.
    path = state_config(write, CATCH_UP_SOURCE, create_state=False)
    result = emit("-c", str(path), "--env", "production", "--status", "success", "--url", receiver.url)
    assert result.exit_code == EXIT_OK, result.output
    assert "state.db does not exist: the event is sent without being recorded" in result.stderr
    assert "sent ants/production/2983238245" in result.stderr
    assert not (path.parent / "state.db").exists()
    assert len(receiver.events()) == 1


def test_a_retried_emit_sends_nothing_twice(write: WriteFile, receiver: LocalReceiver) -> None:
    path = state_config(write, CATCH_UP_SOURCE)
    args = ("-c", str(path), "--entity", "ants", "--env", "production", "--status", "success", "--url", receiver.url)
    assert emit(*args).exit_code == EXIT_OK
    again = emit(*args)
    assert again.exit_code == EXIT_OK
    assert "already sent" in again.stderr and "not sent again" in again.stderr
    assert len(receiver.events()) == 1
    rerun = emit(*args, environ={**GITHUB, "GITHUB_RUN_ATTEMPT": "2"})
    assert rerun.exit_code == EXIT_OK and "sent ants/production/2983238245-2" in rerun.stderr
    assert len(receiver.events()) == 2


def test_a_catch_up_run_sends_what_emit_could_not(write: WriteFile, receiver: LocalReceiver) -> None:
    path = state_config(write, CATCH_UP_SOURCE)
    url = f"http://127.0.0.1:{_closed_port()}"
    result = emit("-c", str(path), "--env", "production", "--status", "success", "--url", url, "--deadline", "2")
    assert result.exit_code == EXIT_OK and "next catch-up run sends it" in result.stderr
    catch_up = CliRunner().invoke(
        main, ["run", "-c", str(path), "--url", receiver.url, "--json"], env={"DEVGRID_API_KEY": KEY}
    )
    assert catch_up.exit_code == EXIT_OK, catch_up.output
    build_ids = [item["event"]["attributes"]["build_id"] for item in receiver.events()]
    assert build_ids.count(RUN["id"]) == 1


def test_emit_waits_for_a_catch_up_run_holding_the_state_then_gives_up(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    from backfill.state.lock import StateLock

    path = state_config(write, CATCH_UP_SOURCE)
    with StateLock(path.parent / "state.db"):
        result = emit(
            "-c",
            str(path),
            "--entity",
            "ants",
            "--env",
            "production",
            "--status",
            "success",
            "--url",
            receiver.url,
            "--deadline",
            "1",
        )
    assert result.exit_code == EXIT_OK
    assert "stayed busy" in result.stderr and "next catch-up run sends it" in result.stderr
    assert receiver.events() == []


def test_quiet_and_json_logs_keep_the_warning_and_say_it_once(receiver: LocalReceiver) -> None:
    args = ("--entity", "ants", "--env", "nowhere", "--status", "success", "--url", receiver.url)
    quiet = emit(*args, "-q")
    assert quiet.exit_code == EXIT_OK
    assert quiet.stderr.startswith("warning: the event cannot be sent: env 'nowhere' is not one of")
    logged = emit(*args, "--log-format", "json")
    records = [json.loads(line) for line in logged.stderr.splitlines()]
    (record,) = records
    assert record["level"] == "warning" and record["result"] == "not-sent"
    assert record["message"].startswith("the event cannot be sent: env 'nowhere'")
    assert receiver.events() == []


def test_verbose_says_where_each_value_came_from(receiver: LocalReceiver) -> None:
    result = emit("--entity", "ants", "--env", "production", "--status", "success", "--dry-run", "-v")
    assert "CI system: GitHub Actions (detected from its variables)" in result.stderr
    assert "GitHub Actions says build_id = '2983238245'" in result.stderr
