"""The state file kept in object storage: scheduled runs on machines that keep nothing between runs.

Against a real S3-compatible server (moto's server mode) started on 127.0.0.1,
the real CLI runs in subprocesses and sends to the real `backfill serve`. Each
"runner" is its own folder: a fresh runner has no working copy.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, source_block
from receivers import KEY, LocalReceiver
from s3server import BUCKET, SECRET, LocalS3, StallingProxy, start_s3

from backfill.errors import EXIT_LOCKED, EXIT_OK, EXIT_STATE, EXIT_USAGE, StateError, StateLockedError
from backfill.state.remote import RemoteLockLost, RemoteState
from backfill.state.store import Store

STATE_KEY = "shop/state.db"
URL = f"s3://{BUCKET}/{STATE_KEY}"
HEADER = "id,updated_at,conclusion,environment,head_sha\n"


def _rows(first: int, last: int) -> str:
    return "".join(
        f"{index},2025-01-{index:02d}T00:00:00Z,success,production,{index:040x}\n" for index in range(first, last + 1)
    )


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[LocalS3]:
    yield from start_s3(tmp_path / "s3.log")


class Runner:
    """One machine that runs the schedule: its own folder, the shared history export, the shared bucket."""

    def __init__(self, folder: Path, s3: LocalS3, receiver_url: str, lock_seconds: float = 900) -> None:
        self.folder = folder
        self.s3 = s3
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "backfill.toml"
        self.config.write_text(
            f'[devgrid]\nurl = "{receiver_url}"\n\n'
            f'[state]\npath = "work/state.db"\nurl = "{URL}"\nlock_seconds = {lock_seconds}\nupload_seconds = 0\n\n'
            + source_block("runs", "runs.csv"),
            encoding="utf-8",
        )
        self.history(1, 3)

    @property
    def working_copy(self) -> Path:
        return self.folder / "work" / "state.db"

    def history(self, first: int, last: int) -> None:
        (self.folder / "runs.csv").write_text(HEADER + _rows(first, last), encoding="utf-8")

    def environ(self, endpoint: str | None = None) -> dict[str, str]:
        environ = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "GITHUB_"))}
        return {**environ, **self.s3.environ(endpoint), "DEVGRID_API_KEY": KEY}

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "backfill", *args, "-c", str(self.config)]

    def __call__(self, *args: str, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            cwd=self.folder,
            env=self.environ(endpoint),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in result.stderr, result.stderr
        for text in (result.stdout, result.stderr):
            assert SECRET not in text
            assert KEY not in text
        return result

    def start(self, *args: str, endpoint: str | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            cwd=self.folder,
            env=self.environ(endpoint),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def sent(receiver: LocalReceiver) -> list[str]:
    return [str(item["event"]["attributes"]["build_id"]) for item in receiver.events()]  # type: ignore[index]


def remote_ledger(s3: LocalS3, tmp_path: Path) -> list[str]:
    """The build ids the uploaded state records as sent, read from a copy of the object."""
    body = s3.read(STATE_KEY)
    assert body is not None
    copy = tmp_path / "downloaded.db"
    copy.write_bytes(body)
    with sqlite3.connect(copy) as db:
        rows = db.execute("SELECT build_id FROM ledger WHERE state = 'sent' ORDER BY build_id").fetchall()
    return [row[0] for row in rows]


def assert_no_secret(*folders: Path, s3: LocalS3) -> None:
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
    for key in s3.objects():
        body = s3.read(key) or b""
        assert SECRET.encode() not in body and KEY.encode() not in body, key


# -- the server does what the remote state relies on ------------------------------------------------


def test_the_local_server_honours_conditional_writes(s3: LocalS3) -> None:
    client = s3.client()
    etag = client.put_object(Bucket=BUCKET, Key="k", Body=b"1", IfNoneMatch="*")["ETag"]
    with pytest.raises(client.exceptions.ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=BUCKET, Key="k", Body=b"2", IfNoneMatch="*")
    with pytest.raises(client.exceptions.ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=BUCKET, Key="k", Body=b"3", IfMatch='"0123456789abcdef0123456789abcdef"')
    client.put_object(Bucket=BUCKET, Key="k", Body=b"4", IfMatch=etag)
    with pytest.raises(client.exceptions.ClientError, match="PreconditionFailed"):
        client.delete_object(Bucket=BUCKET, Key="k", IfMatch=etag)
    assert s3.read("k") == b"4"


# -- scheduled runs -------------------------------------------------------------------------------------


def test_the_first_run_creates_the_state_in_the_bucket_and_a_fresh_runner_catches_up(
    s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    first = Runner(tmp_path / "runner-1", s3, receiver.url)
    before = first("run", "--require-state")
    assert before.returncode == EXIT_STATE  # no state anywhere: a scheduled run refuses to send all history
    assert sent(receiver) == []
    assert s3.objects() == []

    created = first("init")
    assert created.returncode == EXIT_OK, created.stderr
    assert f"{URL}: created, empty" in created.stderr
    assert s3.objects() == [STATE_KEY]  # and no lock left behind

    result = first("run", "--require-state")
    assert result.returncode == EXIT_OK, result.stderr
    assert sent(receiver) == ["1", "2", "3"]
    assert remote_ledger(s3, tmp_path) == ["1", "2", "3"]
    assert s3.objects() == [STATE_KEY]

    # The next hour, on a machine that keeps nothing: the state comes from the bucket.
    second = Runner(tmp_path / "runner-2", s3, receiver.url)
    second.history(1, 5)
    result = second("run", "--require-state")
    assert result.returncode == EXIT_OK, result.stderr
    assert sent(receiver) == ["1", "2", "3", "4", "5"]
    assert receiver.duplicates() == []
    assert remote_ledger(s3, tmp_path) == ["1", "2", "3", "4", "5"]

    # And back on the first machine, whose working copy is now old: the bucket's state wins.
    first.history(1, 6)
    result = first("run", "--require-state")
    assert result.returncode == EXIT_OK, result.stderr
    assert sent(receiver) == ["1", "2", "3", "4", "5", "6"]
    assert receiver.duplicates() == []
    assert_no_secret(first.folder, second.folder, s3=s3)


def test_init_refuses_a_state_that_exists_in_the_bucket(s3: LocalS3, receiver: LocalReceiver, tmp_path: Path) -> None:
    runner = Runner(tmp_path / "runner", s3, receiver.url)
    assert runner("init").returncode == EXIT_OK
    assert runner("run").returncode == EXIT_OK
    before = s3.read(STATE_KEY)
    elsewhere = Runner(tmp_path / "elsewhere", s3, receiver.url)
    result = elsewhere("init")
    assert result.returncode == EXIT_STATE
    assert f"{URL}: already exists" in result.stderr
    assert s3.read(STATE_KEY) == before
    assert s3.objects() == [STATE_KEY]


def test_a_state_that_was_here_and_is_gone_from_the_bucket_stops_the_run(
    s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    runner = Runner(tmp_path / "runner", s3, receiver.url)
    assert runner("run").returncode == EXIT_OK
    s3.client().delete_object(Bucket=BUCKET, Key=STATE_KEY)
    runner.history(1, 4)
    result = runner("run")
    assert result.returncode == EXIT_STATE
    assert f"{URL}: is gone" in result.stderr
    assert sent(receiver) == ["1", "2", "3"]
    assert s3.objects() == []  # the lock was released


def test_two_runs_at_once_one_is_refused_and_neither_ledger_is_lost(
    s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    slow = Runner(tmp_path / "slow", s3, receiver.url)
    assert slow("init").returncode == EXIT_OK
    receiver.faults(latency_ms=12000)  # longer than the other run takes to start and stop
    running = slow.start("run")
    try:
        deadline = time.monotonic() + 60
        while f"{STATE_KEY}.lock" not in s3.objects():
            assert running.poll() is None, running.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        other = Runner(tmp_path / "other", s3, receiver.url)
        refused = other("run")
        assert refused.returncode == EXIT_LOCKED
        assert refused.stderr.startswith("error: another backfill run holds")
        assert f"{URL}.lock" in refused.stderr
        assert len(refused.stderr.splitlines()) == 1
    finally:
        _, stderr = running.communicate(timeout=120)
    assert running.returncode == EXIT_OK, stderr
    receiver.faults(latency_ms=0)
    assert sent(receiver) == ["1", "2", "3"]

    # Once the first has finished, the other runs from its ledger: nothing twice.
    other.history(1, 4)
    result = other("run")
    assert result.returncode == EXIT_OK, result.stderr
    assert sent(receiver) == ["1", "2", "3", "4"]
    assert receiver.duplicates() == []


def test_a_run_killed_mid_upload_loses_nothing_and_the_next_run_resumes(
    s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    runner = Runner(tmp_path / "runner", s3, receiver.url, lock_seconds=1)
    assert runner("init").returncode == EXIT_OK
    empty = s3.read(STATE_KEY)
    upstream = int(s3.endpoint.rsplit(":", 1)[1])
    proxy = StallingProxy(upstream, re.compile(rb"PUT /[^ ?]*" + re.escape(STATE_KEY.encode()) + rb"[ ?]"))
    try:
        proxy.armed.set()
        running = runner.start("run", endpoint=proxy.endpoint)
        try:
            assert proxy.stalled.wait(timeout=60), running.communicate(timeout=5)
            running.send_signal(signal.SIGKILL)
        finally:
            running.communicate(timeout=30)
    finally:
        proxy.close()
    assert running.returncode == -signal.SIGKILL
    assert sent(receiver) == ["1", "2", "3"]  # sent, recorded in the working copy, never uploaded
    assert s3.read(STATE_KEY) == empty  # the object is the old one, whole: an upload is all or nothing
    assert f"{STATE_KEY}.lock" in s3.objects()  # left behind by the killed run

    # The lock expires by itself; the next run here goes on from the working copy, which holds more.
    deadline = time.monotonic() + 30
    while True:
        result = runner("run")
        if result.returncode != EXIT_LOCKED or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert result.returncode == EXIT_OK, result.stderr
    assert "took over the lock" in result.stderr
    assert "holds more than" in result.stderr
    assert sent(receiver) == ["1", "2", "3"]
    assert receiver.duplicates() == []
    assert remote_ledger(s3, tmp_path) == ["1", "2", "3"]
    assert s3.objects() == [STATE_KEY]

    fresh = Runner(tmp_path / "fresh", s3, receiver.url)
    fresh.history(1, 4)
    assert fresh("run", "--require-state").returncode == EXIT_OK
    assert sent(receiver) == ["1", "2", "3", "4"]
    assert receiver.duplicates() == []


def test_an_existing_local_state_is_the_start_of_the_bucket_s_state(
    s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    runner = Runner(tmp_path / "runner", s3, receiver.url)
    local_only = runner.config.read_text(encoding="utf-8").replace(f'url = "{URL}"\n', "")
    runner.config.write_text(local_only, encoding="utf-8")
    assert runner("run").returncode == EXIT_OK
    assert s3.objects() == []
    runner.config.write_text(local_only.replace("[state]\n", f'[state]\nurl = "{URL}"\n'), encoding="utf-8")
    runner.history(1, 4)
    result = runner("run", "--require-state")
    assert result.returncode == EXIT_OK, result.stderr
    assert "does not exist yet; this run starts from" in result.stderr
    assert sent(receiver) == ["1", "2", "3", "4"]
    assert remote_ledger(s3, tmp_path) == ["1", "2", "3", "4"]


# -- the lock and the conditional writes, one step at a time ----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _remote(s3: LocalS3, folder: Path, clock: Clock, notices: list[str] | None = None) -> RemoteState:
    return RemoteState(
        URL,
        folder / "state.db",
        lock_seconds=60,
        upload_seconds=0,
        client=s3.client(),
        clock=clock,
        notice=(notices if notices is not None else []).append,
        heartbeat=False,
    )


def _with_state(folder: Path) -> None:
    store = Store.open(folder / "state.db", create=True)
    assert store is not None
    store.close()


def test_a_lock_that_expired_is_taken_over_and_the_stalled_run_uploads_nothing(s3: LocalS3, tmp_path: Path) -> None:
    clock = Clock()
    stalled = _remote(s3, tmp_path / "a", clock)
    stalled.__enter__()
    _with_state(tmp_path / "a")
    stalled.upload()
    uploaded = s3.read(STATE_KEY)

    clock.now += 30
    with pytest.raises(StateLockedError, match="another backfill run holds"):
        _remote(s3, tmp_path / "b", clock).__enter__()

    clock.now += 61  # the stalled run did not extend its lock in time
    notices: list[str] = []
    taker = _remote(s3, tmp_path / "b", clock, notices)
    taker.__enter__()
    assert any("took over the lock" in notice for notice in notices)
    assert (tmp_path / "b" / "state.db").read_bytes() == uploaded

    with pytest.raises(RemoteLockLost, match="another run took it over"):
        stalled.upload()
    with pytest.raises(RemoteLockLost):
        stalled.checkpoint()
    stalled.__exit__(None, None, None)  # uploads nothing, deletes nothing of the other's
    assert s3.read(STATE_KEY) == uploaded
    assert f"{STATE_KEY}.lock" in s3.objects()
    lock = json.loads(s3.read(f"{STATE_KEY}.lock") or b"{}")
    assert lock["owner"] == taker.owner

    taker.__exit__(None, None, None)
    assert s3.objects() == [STATE_KEY]


def test_an_upload_never_overwrites_a_state_it_did_not_start_from(s3: LocalS3, tmp_path: Path) -> None:
    clock = Clock()
    run = _remote(s3, tmp_path / "a", clock)
    run.__enter__()
    _with_state(tmp_path / "a")
    run.upload()
    # Someone wrote the object meanwhile, around the lock (another tool, a second schedule with another lock key).
    s3.client().put_object(Bucket=BUCKET, Key=STATE_KEY, Body=b"the other run's ledger")
    store = Store.open(tmp_path / "a" / "state.db", create=False, write=True)
    assert store is not None
    store.start_run(store.resolve_destination("http://127.0.0.1:1", "account").id, "http://127.0.0.1:1", None)
    store.close()
    with pytest.raises(StateError, match="was changed by another run since this one downloaded it"):
        run.upload()
    assert s3.read(STATE_KEY) == b"the other run's ledger"
    run.release()


def test_two_runs_racing_for_an_expired_lock_only_one_gets_it(s3: LocalS3, tmp_path: Path) -> None:
    clock = Clock()
    dead = _remote(s3, tmp_path / "dead", clock)
    dead.acquire()
    clock.now += 120
    first, second = _remote(s3, tmp_path / "one", clock), _remote(s3, tmp_path / "two", clock)
    stale = first._read_lock()
    assert stale[0] is not None
    first.acquire()
    # The other read the same expired lock just before the first took it over: its take-over must fail.
    second._read_lock = lambda: stale  # type: ignore[method-assign]
    with pytest.raises(StateLockedError, match="another backfill run holds"):
        second.acquire()
    assert json.loads(s3.read(f"{STATE_KEY}.lock") or b"{}")["owner"] == first.owner


# -- mistakes, in one line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://bucket/state.db", "must be an s3:// URL"),
        ("s3://bucket-only", "must name a bucket and an object"),
        ("s3://bucket/folder/", "must name a bucket and an object"),
    ],
)
def test_a_wrong_url_is_one_line_naming_the_key(tmp_path: Path, url: str, message: str) -> None:
    config = tmp_path / "backfill.toml"
    config.write_text(f'[state]\nurl = "{url}"\n\n' + source_block("runs", "runs.csv"), encoding="utf-8")
    result = invoke("run", "-c", str(config))
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.startswith("error: ")
    assert "state.url" in result.stderr and message in result.stderr


def test_an_unreachable_endpoint_is_one_line_and_sends_nothing(
    s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    runner = Runner(tmp_path / "runner", s3, receiver.url)
    result = runner("run", endpoint="http://127.0.0.1:9")
    assert result.returncode == EXIT_STATE
    assert result.stderr.startswith(f"error: {URL}.lock: cannot be reached")
    assert "AWS_ENDPOINT_URL" in result.stderr
    assert sent(receiver) == []


def test_missing_credentials_are_named_and_no_secret_is_shown(
    s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    runner = Runner(tmp_path / "runner", s3, receiver.url)
    environ: dict[str, Any] = {
        key: value
        for key, value in runner.environ().items()
        if key not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    result = subprocess.run(
        runner.command("run"), cwd=runner.folder, env=environ, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == EXIT_STATE
    assert "no credentials" in result.stderr
    assert "Traceback" not in result.stderr
    assert sent(receiver) == []


def test_a_checkpoint_uploads_once_the_interval_has_passed(s3: LocalS3, tmp_path: Path) -> None:
    clock = Clock()
    run = RemoteState(
        URL, tmp_path / "state.db", lock_seconds=60, upload_seconds=30, client=s3.client(), clock=clock, heartbeat=False
    )
    run.__enter__()
    _with_state(tmp_path)
    seen: list[int] = []
    after_batch = run.after_each_batch(seen.append)
    after_batch(15)  # the interval counts from the start: first checkpoint uploads
    first = s3.read(STATE_KEY)
    assert first is not None
    store = Store.open(tmp_path / "state.db", create=False, write=True)
    assert store is not None
    store.start_run(store.resolve_destination("http://127.0.0.1:1", "account").id, "http://127.0.0.1:1", None)
    clock.now += 10
    after_batch(15)
    assert s3.read(STATE_KEY) == first  # too soon
    clock.now += 25
    after_batch(15)  # with the store still open: a consistent snapshot of what is committed
    store.close()
    assert s3.read(STATE_KEY) != first
    assert seen == [15, 15, 15]
    run.__exit__(None, None, None)
    assert s3.objects() == [STATE_KEY]


def test_a_working_copy_never_uploaded_is_kept_aside_when_the_object_moved_on(s3: LocalS3, tmp_path: Path) -> None:
    clock = Clock()
    here = _remote(s3, tmp_path / "here", clock)
    here.__enter__()
    _with_state(tmp_path / "here")
    here.upload()
    here.release()
    # This machine records more without uploading it (its upload was refused, say) ...
    store = Store.open(tmp_path / "here" / "state.db", create=False, write=True)
    assert store is not None
    store.start_run(store.resolve_destination("http://127.0.0.1:1", "account").id, "http://127.0.0.1:1", None)
    store.close()
    # ... while a run elsewhere uploads its own.
    elsewhere = _remote(s3, tmp_path / "elsewhere", clock)
    elsewhere.__enter__()
    store = Store.open(tmp_path / "elsewhere" / "state.db", create=False, write=True)
    assert store is not None
    store.resolve_destination("http://127.0.0.1:2", "other")
    store.close()
    elsewhere.__exit__(None, None, None)

    notices: list[str] = []
    again = _remote(s3, tmp_path / "here", clock, notices)
    again.__enter__()
    (aside,) = (tmp_path / "here").glob("state.db.not-uploaded-*")
    assert any(str(aside) in notice for notice in notices)
    assert (tmp_path / "here" / "state.db").read_bytes() == s3.read(STATE_KEY)
    kept = Store.open(aside, create=False)
    assert kept is not None
    assert [item.url for item in kept.destinations()] == ["http://127.0.0.1:1"]
    kept.close()
    again.release()


def test_a_lock_object_backfill_did_not_write_is_left_alone(s3: LocalS3, tmp_path: Path) -> None:
    s3.client().put_object(Bucket=BUCKET, Key=f"{STATE_KEY}.lock", Body=b"someone else's")
    with pytest.raises(StateLockedError, match="is not a lock backfill wrote"):
        _remote(s3, tmp_path, Clock()).__enter__()
    assert s3.read(f"{STATE_KEY}.lock") == b"someone else's"


def test_an_unreachable_store_at_a_checkpoint_is_a_notice_and_the_run_goes_on(s3: LocalS3, tmp_path: Path) -> None:
    clock = Clock()
    notices: list[str] = []
    run = _remote(s3, tmp_path, clock, notices)
    run.__enter__()
    _with_state(tmp_path)
    good = run._client
    run._client = s3.client(endpoint="http://127.0.0.1:9")
    run.checkpoint()  # no exception: the run goes on sending
    assert any("not uploaded at this checkpoint" in notice and "cannot be reached" in notice for notice in notices)
    run._client = good
    run.__exit__(None, None, None)  # the end of the run uploads
    assert s3.read(STATE_KEY) is not None


def test_status_and_a_dry_run_on_a_fresh_runner_read_the_bucket_s_state(
    s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    first = Runner(tmp_path / "runner-1", s3, receiver.url)
    assert first("run").returncode == EXIT_OK
    uploaded = s3.read(STATE_KEY)

    fresh = Runner(tmp_path / "runner-2", s3, receiver.url)
    fresh.history(1, 4)
    review = fresh("run", "--dry-run", "review.csv")
    assert review.returncode == EXIT_OK, review.stderr
    states = [line.rsplit(",", 1)[-1] for line in (fresh.folder / "review.csv").read_text().splitlines()[1:]]
    assert sorted(states) == ["new", "sent", "sent", "sent"]
    status = fresh("status", "--json")
    assert status.returncode == EXIT_OK, status.stderr
    assert [item["url"] for item in json.loads(status.stdout)["destinations"]] == [receiver.url]
    assert s3.read(STATE_KEY) == uploaded  # reading uploads nothing, and takes no lock
    assert s3.objects() == [STATE_KEY]
    assert sent(receiver) == ["1", "2", "3"]


def test_a_dry_run_with_no_state_anywhere_writes_nothing(s3: LocalS3, receiver: LocalReceiver, tmp_path: Path) -> None:
    runner = Runner(tmp_path / "runner", s3, receiver.url)
    result = runner("run", "--dry-run", "review.csv")
    assert result.returncode == EXIT_OK, result.stderr
    assert not (runner.folder / "work").exists()
    assert s3.objects() == []


def test_a_rewind_on_any_runner_moves_the_cursor_in_the_bucket(
    s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    first = Runner(tmp_path / "runner-1", s3, receiver.url)
    assert first("run").returncode == EXIT_OK
    before = s3.read(STATE_KEY)
    other = Runner(tmp_path / "runner-2", s3, receiver.url)
    result = other("rewind", "runs", "--to", "2025-01-02")
    assert result.returncode == EXIT_OK, result.stderr
    assert "cursor moved" in result.stderr
    assert s3.read(STATE_KEY) != before
    assert s3.objects() == [STATE_KEY]
    # The next run anywhere reads from there again, and sends nothing twice.
    again = first("run")
    assert again.returncode == EXIT_OK, again.stderr
    assert sent(receiver) == ["1", "2", "3"]
    assert receiver.duplicates() == []


def test_an_event_emitted_on_a_fresh_runner_is_recorded_in_the_bucket_and_never_sent_again(
    s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    first = Runner(tmp_path / "first", s3, receiver.url)
    assert first("init").returncode == EXIT_OK
    deploy = Runner(tmp_path / "deploy", s3, receiver.url)  # the deploy job's runner: nothing kept locally
    emitted = deploy(
        "emit",
        "--ci",
        "none",
        "--source",
        "runs",
        "--build-id",
        "4",
        "--commit",
        f"{4:040x}",
        "--env",
        "production",
        "--status",
        "success",
        "--url",
        receiver.url,
    )
    assert emitted.returncode == EXIT_OK, emitted.stderr
    assert "sent shop/production/4" in emitted.stderr
    assert remote_ledger(s3, tmp_path) == ["4"]
    later = Runner(tmp_path / "later", s3, receiver.url)  # the scheduled catch-up, on another fresh runner
    later.history(1, 4)
    result = later("run")
    assert result.returncode == EXIT_OK, result.stderr
    assert sorted(sent(receiver)) == ["1", "2", "3", "4"]
    assert receiver.duplicates() == []
    assert s3.objects() == [STATE_KEY]
