"""Sending to the real local receiver (`backfill serve` in a subprocess): the promises of a real run."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import WriteFile, source_block
from receivers import KEY, LocalReceiver, start_receiver

from backfill.cli import main
from backfill.errors import EXIT_AUTH, EXIT_INCOMPLETE, EXIT_LOCKED, EXIT_OK, EXIT_STATE, EXIT_USAGE
from backfill.state.lock import StateLock

HEADER = "id,updated_at,conclusion,environment,head_sha,app\n"


def runs(first: int, count: int, app: str = "shop") -> str:
    return "".join(
        f"{i},2025-01-{1 + i // 100:02d}T{i % 24:02d}:{i % 60:02d}:00Z,success,production,sha{i},{app}\n"
        for i in range(first, first + count)
    )


def cli(*args: str, key: str | None = KEY) -> Result:
    env = {"DEVGRID_API_KEY": key} if key is not None else {"DEVGRID_API_KEY": ""}
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def config(write: WriteFile, **keys: object) -> Path:
    keys.setdefault("entity_id", None)
    keys.setdefault("entity_column", "app")
    return write("backfill.toml", source_block("runs", "runs.csv", **keys))


def send(path: Path, receiver: LocalReceiver, *extra: str, key: str | None = KEY) -> tuple[Result, dict]:
    result = cli("run", "-c", str(path), "--url", receiver.url, "--json", *extra, key=key)
    return result, json.loads(result.stdout) if result.stdout.strip() else {}


def status(path: Path, destination: int = 0) -> dict:
    """What `backfill status --json` says of one destination (the first, unless told)."""
    result = cli("status", "-c", str(path), "--json")
    assert result.exit_code == EXIT_OK, result.output
    return dict(json.loads(result.stdout)["destinations"][destination])


def test_a_run_sends_every_event_once_oldest_first_and_a_rerun_sends_nothing(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    write("runs.csv", HEADER + runs(0, 40))
    path = config(write)
    result, summary = send(path, receiver)
    assert result.exit_code == EXIT_OK, result.output
    assert summary["delivery"]["sent"] == 40 and summary["delivery"]["left_to_send"] == 0
    received = [event["event"] for event in receiver.events()]
    assert [event["attributes"]["build_id"] for event in received] == [
        str(i) for i in sorted(range(40), key=lambda i: (1 + i // 100, i % 24, i % 60, str(i)))
    ]
    assert [event["timestamp"] for event in received] == sorted(event["timestamp"] for event in received)
    assert received[0] == {
        "type": "event-deploy",
        "timestamp": "2025-01-01T00:00:00Z",
        "entityId": "shop",
        "attributes": {"env": "production", "status": "success", "build_id": "0", "build_commit_sha": "sha0"},
    }

    result, summary = send(path, receiver)
    assert result.exit_code == EXIT_OK
    assert summary["delivery"] | {"run_id": 0, "seconds": 0} == summary["delivery"] | {
        "run_id": 0,
        "seconds": 0,
        "sent": 0,
        "already_sent": 40,
        "to_send": 0,
    }
    assert len(receiver.events()) == 40 and receiver.duplicates() == []
    # Request bodies are kept only while their batch is pending.
    db = sqlite3.connect(path.parent / ".backfill" / "state.db")
    assert db.execute("SELECT count(*) FROM outgoing").fetchone() == (0,)
    db.close()


def test_a_catch_up_run_sends_only_what_is_new(write: WriteFile, receiver: LocalReceiver) -> None:
    write("runs.csv", HEADER + runs(0, 20))
    path = config(write)
    assert send(path, receiver)[0].exit_code == EXIT_OK
    write("runs.csv", HEADER + runs(0, 20) + runs(20, 7))
    result, summary = send(path, receiver)
    assert result.exit_code == EXIT_OK
    assert (summary["delivery"]["sent"], summary["delivery"]["already_sent"]) == (7, 20)
    assert len(receiver.events()) == 27 and receiver.duplicates() == []
    assert status(path)["sources"][0]["cursor"] == "2025-01-01T23:23:00Z"


def test_a_refused_key_stops_at_once_and_names_the_variable(write: WriteFile, receiver: LocalReceiver) -> None:
    write("runs.csv", HEADER + runs(0, 40))
    path = config(write)
    result, summary = send(path, receiver, key="not-the-key")
    assert result.exit_code == EXIT_AUTH
    assert summary["delivery"]["stopped"] == (
        "DevGrid refused the API key (401: Unauthorized); check the key in $DEVGRID_API_KEY"
    )
    assert summary["delivery"]["sent"] == 0 and summary["delivery"]["left_to_send"] == 40
    report = status(path)
    assert report["sources"][0]["sent"] == 0 and report["pending_batches"] == []
    assert report["runs"][0]["outcome"] == "auth-refused"
    assert receiver.events() == []


@pytest.mark.parametrize("in_flight", ["1", "4"])
def test_an_entity_devgrid_does_not_know_is_refused_inside_a_201_and_its_other_events_are_held(
    write: WriteFile, tmp_path: Path, in_flight: str
) -> None:
    # DevGrid answers 201 for an unknown entity, with the event in "failures": that event is not sent.
    write("runs.csv", HEADER + runs(0, 7) + runs(7, 1, app="ghost") + runs(8, 7) + runs(100, 30, app="ghost"))
    path = config(write)
    # One batch in flight sends in review order, so ghost's first event shares a batch with shop's; with
    # streams side by side, ghost's first batch is 15 of its own events, all refused.
    refused = 1 if in_flight == "1" else 15
    for receiver in start_receiver(tmp_path, "--entity", "shop"):
        result, summary = send(path, receiver, "--in-flight", in_flight)
        assert result.exit_code == EXIT_INCOMPLETE
        delivery = summary["delivery"]
        assert (delivery["sent"], delivery["rejected_by_devgrid"], delivery["held"]) == (14, refused, 31 - refused)
        assert delivery["rejected_events"][0] == {
            "entity_id": "ghost",
            "env": "production",
            "build_id": "7",
            "message": "Entity not found",
        }
        assert delivery["unknown_entities"] == [
            {"entityId": "ghost", "reason": "Entity not found", "held": 31 - refused}
        ]
        assert "DevGrid does not know entity 'ghost' (Entity not found): its other events are not sent" in (
            result.stderr
        )
        # Only the first batch carried ghost's events: the rest were never sent.
        received = [event["event"]["entityId"] for event in receiver.events()]
        assert received == ["shop"] * 14
        report = status(path)
        states = [(event["build_id"], event["state"]) for event in report["refused_events"]]
        assert sorted(build_id for build_id, _ in states) == sorted(str(i) for i in [7, *range(100, 130)])
        assert [state for _, state in states].count("refused") == refused and ("7", "refused") in states
        assert report["runs"][0]["outcome"] == "refused-events"
        # Known refusals are not planned again, unless asked.
        result, summary = send(path, receiver)
        assert (result.exit_code, summary["delivery"]["to_send"]) == (EXIT_OK, 0)
        result, summary = send(path, receiver, "--retry-rejected", "--in-flight", in_flight)
        assert (result.exit_code, summary["delivery"]["to_send"]) == (EXIT_INCOMPLETE, 31)
        # One batch of ghost's events is refused again; the 16 after it are held again, not sent.
        assert (summary["delivery"]["rejected_by_devgrid"], summary["delivery"]["held"]) == (15, 16)
        # Once the entity exists, --retry-rejected sends them all, in order.
        receiver.entities("shop", "ghost")
        result, summary = send(path, receiver, "--retry-rejected")
        assert result.exit_code == EXIT_OK, result.output
        assert summary["delivery"]["sent"] == 31
        ghost = [event["event"] for event in receiver.events() if event["event"]["entityId"] == "ghost"]
        assert sorted((event["attributes"]["build_id"] for event in ghost), key=int) == [
            "7",
            *(str(i) for i in range(100, 130)),
        ]
        assert [event["timestamp"] for event in ghost] == sorted(event["timestamp"] for event in ghost)
        assert receiver.duplicates() == []


def test_429_and_500_are_retried_and_a_lost_answer_is_flagged(write: WriteFile, receiver: LocalReceiver) -> None:
    write("runs.csv", HEADER + runs(0, 30))
    path = config(write)
    receiver.faults(script=[{"status": 429, "retry_after": 0}, {"status": 503}, {"drop": "after_store"}])
    result, summary = send(path, receiver)
    assert result.exit_code == EXIT_OK, result.output
    assert summary["delivery"]["sent"] == 30
    flagged = {event["build_id"] for event in summary["delivery"]["possibly_duplicated_events"]}
    duplicated = {duplicate["build_id"] for duplicate in receiver.duplicates()}
    assert duplicated and duplicated <= flagged and len(flagged) == 15


def test_a_second_run_on_the_same_state_is_refused(write: WriteFile, receiver: LocalReceiver) -> None:
    write("runs.csv", HEADER + runs(0, 5))
    path = config(write)
    with StateLock(path.parent / ".backfill" / "state.db"):
        result, _ = send(path, receiver)
    assert result.exit_code == EXIT_LOCKED
    assert "error: another backfill run is using" in result.stderr
    assert receiver.events() == []


def test_a_corrupt_state_file_is_refused_and_kept(write: WriteFile, receiver: LocalReceiver) -> None:
    write("runs.csv", HEADER + runs(0, 5))
    state = write(".backfill/state.db", b"\x00garbage\x00" * 512)
    digest = hashlib.sha256(state.read_bytes()).hexdigest()
    path = config(write)
    result, _ = send(path, receiver)
    assert result.exit_code == EXIT_STATE
    assert result.stderr.startswith(f"error: {state}: is not a readable backfill state file")
    assert hashlib.sha256(state.read_bytes()).hexdigest() == digest
    assert cli("run", "-c", str(path), "--dry-run", str(path.parent / "r.csv")).exit_code == EXIT_STATE


def test_plain_http_to_another_machine_and_a_missing_key_are_refused(write: WriteFile) -> None:
    write("runs.csv", HEADER + runs(0, 5))
    path = config(write)
    result = cli("run", "-c", str(path), "--url", "http://devgrid.example.com")
    assert result.exit_code == EXIT_USAGE
    assert "is plain http on another machine" in result.stderr and "--allow-http" in result.stderr
    result = cli("run", "-c", str(path), key=None)
    assert result.exit_code == EXIT_USAGE
    assert result.stderr == (
        "error: the DevGrid API key is not set: export DEVGRID_API_KEY=<your key> "
        "(the variable is named by [devgrid] api_key_env)\n"
    )
    assert not (path.parent / ".backfill").exists()


def test_the_key_is_in_no_file_and_no_output(write: WriteFile, tmp_path: Path, receiver: LocalReceiver) -> None:
    write("runs.csv", HEADER + runs(0, 20))
    path = config(write)
    outputs = [send(path, receiver, key="wrong-" + KEY)[0], send(path, receiver)[0]]
    receiver.faults(script=[{"status": 500}])
    write("runs.csv", HEADER + runs(0, 25))
    outputs.append(send(path, receiver)[0])
    outputs.append(cli("run", "-c", str(path), "--dry-run", str(tmp_path / "review.csv")))
    outputs.append(cli("status", "-c", str(path)))
    for result in outputs:
        assert KEY not in result.output
    files = [file for file in tmp_path.rglob("*") if file.is_file()]
    assert any(file.name == "state.db" for file in files)
    for file in files:
        assert KEY.encode() not in file.read_bytes(), file


def test_a_dry_run_with_a_state_file_marks_new_and_sent(
    write: WriteFile, tmp_path: Path, receiver: LocalReceiver
) -> None:
    write("runs.csv", HEADER + runs(0, 10))
    path = config(write)
    send(path, receiver)
    write("runs.csv", HEADER + runs(0, 13))
    review = tmp_path / "review.csv"
    result = cli("run", "-c", str(path), "--dry-run", str(review), "--json", "--url", receiver.url)
    assert json.loads(result.stdout)["ledger"] == {"destination": receiver.url, "new": 3, "sent": 10}
    lines = review.read_text(encoding="utf-8").splitlines()
    assert lines[0].endswith(",source,original_env,state")
    assert [line.rsplit(",", 1)[1] for line in lines[1:]].count("new") == 3


def test_since_and_until_bound_a_run(write: WriteFile, receiver: LocalReceiver) -> None:
    write("runs.csv", HEADER + runs(0, 24))
    path = config(write)
    result, summary = send(path, receiver, "--since", "2025-01-01T05:00:00", "--until", "2025-01-01T10:00:00Z")
    assert result.exit_code == EXIT_OK
    assert (summary["delivery"]["sent"], summary["delivery"]["outside_window"]) == (5, 19)


def test_status_and_rewind(write: WriteFile, receiver: LocalReceiver) -> None:
    assert "does not exist yet" in cli("status", "-c", str(config(write))).stderr
    assert json.loads(cli("status", "-c", str(config(write)), "--json").stdout)["destinations"] == []
    write("runs.csv", HEADER + runs(0, 5))
    path = config(write)
    send(path, receiver)
    report = status(path)
    assert report["sources"] == [
        {
            "source": "runs",
            "cursor": "2025-01-01T04:04:00Z",
            "sent": 5,
            "pending": 0,
            "refused": 0,
            "held": 0,
            "possibly_duplicated": 0,
            "unconfirmed": 0,
        }
    ]
    assert report["entities"] == [
        {
            "entityId": "shop",
            "env": "production",
            "first": "2025-01-01T00:00:00Z",
            "last": "2025-01-01T04:04:00Z",
            "sent": 5,
        }
    ]
    assert report["runs"][0]["outcome"] == "done" and report["runs"][0]["sent"] == 5
    result = cli("rewind", "-c", str(path), "runs", "--to", "2025-01-01")
    assert result.exit_code == EXIT_OK
    assert status(path)["sources"][0]["cursor"] == "2025-01-01T00:00:00Z"
    assert cli("rewind", "-c", str(path), "runs").exit_code == EXIT_OK
    assert status(path)["sources"][0]["cursor"] is None
    result = cli("rewind", "-c", str(path), "nope")
    assert result.exit_code == EXIT_USAGE and "no source named 'nope'; the sources are: runs" in result.stderr
    # Rewinding never makes a run send twice.
    assert send(path, receiver)[1]["delivery"]["sent"] == 0


@pytest.mark.parametrize("keys", [{"batch_size": 4}])
def test_batch_size_from_the_config(write: WriteFile, receiver: LocalReceiver, keys: dict[str, int]) -> None:
    write("runs.csv", HEADER + runs(0, 10))
    write(
        "backfill.toml",
        f"[devgrid]\nbatch_size = {keys['batch_size']}\n"
        + source_block("runs", "runs.csv", entity_id=None, entity_column="app"),
    )
    result, _ = send(Path(write("runs.csv", HEADER + runs(0, 10)).parent / "backfill.toml"), receiver)
    assert result.exit_code == EXIT_OK
    received_at = [event["received_at"] for event in receiver.events()]
    assert len(set(received_at)) == 3  # 4 + 4 + 2


def test_require_state_refuses_a_run_whose_state_was_lost(write: WriteFile, receiver: LocalReceiver) -> None:
    write("runs.csv", HEADER + runs(0, 5))
    path = config(write)
    result, _ = send(path, receiver, "--require-state")
    assert result.exit_code == EXIT_STATE
    assert "does not exist, and --require-state says it must" in result.stderr
    assert receiver.events() == []
    assert send(path, receiver)[0].exit_code == EXIT_OK
    assert send(path, receiver, "--require-state")[0].exit_code == EXIT_OK


def test_a_201_whose_body_says_nothing_is_counted_and_listed_as_unconfirmed(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    write("runs.csv", HEADER + runs(0, 20))
    path = config(write)
    receiver.faults(script=[{"answer": {"message": "Event(s) successfully received"}}])
    result, summary = send(path, receiver)
    assert result.exit_code == EXIT_OK
    assert (summary["delivery"]["sent"], summary["delivery"]["unconfirmed"]) == (20, 15)
    assert len(summary["delivery"]["unconfirmed_events"]) == 15
    assert len(status(path)["unconfirmed"]) == 15
    assert len(receiver.events()) == 20


def test_a_cursor_stays_at_an_event_refused_by_an_earlier_run(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", HEADER + runs(0, 7) + runs(7, 1, app="ghost") + runs(8, 7))
    path = config(write)
    for receiver in start_receiver(tmp_path, "--entity", "shop"):
        assert send(path, receiver)[0].exit_code == EXIT_INCOMPLETE
        assert status(path)["sources"][0]["cursor"] == "2025-01-01T07:07:00Z"  # held at ghost's refused event
        write("runs.csv", HEADER + runs(0, 7) + runs(7, 1, app="ghost") + runs(8, 7) + runs(100, 5))
        result, summary = send(path, receiver)
        assert (result.exit_code, summary["delivery"]["sent"]) == (EXIT_OK, 5)
        # The refusal is still in the ledger: a later --retry-rejected must read it again.
        assert status(path)["sources"][0]["cursor"] == "2025-01-01T07:07:00Z"
