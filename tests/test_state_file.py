"""The state file as a file: complete or absent, never overwritten, locked by what it is, private, and
honest about a full disk or a read-only folder."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import WriteFile, source_block
from mounts import fill, read_only, small_disk
from receivers import KEY, LocalReceiver
from test_send import HEADER, cli, runs, send

from backfill.errors import EXIT_LOCKED, EXIT_OK, EXIT_STATE
from backfill.load.client import body_of, events_json
from backfill.model import EventKey
from backfill.state.destination import account_of
from backfill.state.lock import StateLock
from backfill.state.store import OutgoingBatch, Store, current_boot_id


def _config(write: WriteFile, state: str = ".backfill/state.db") -> Path:
    return write(
        "backfill.toml",
        f'[state]\npath = "{state}"\n' + source_block("runs", "runs.csv", entity_id=None, entity_column="app"),
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_empty_state_file_is_refused_everywhere_and_left_as_it_is(
    write: WriteFile, receiver: LocalReceiver, tmp_path: Path
) -> None:
    write("runs.csv", HEADER + runs(0, 5))
    path = _config(write)
    state = write(".backfill/state.db", b"")
    for arguments in (
        ("run", "-c", str(path), "--url", receiver.url),
        ("run", "-c", str(path), "--url", receiver.url, "--require-state"),
        ("run", "-c", str(path), "--dry-run", str(tmp_path / "review.csv")),
        ("status", "-c", str(path)),
    ):
        result = cli(*arguments)
        assert result.exit_code == EXIT_STATE, arguments
        assert result.stderr.startswith(f"error: {state}: is empty, so it is not a backfill state file")
    assert state.read_bytes() == b""
    assert receiver.events() == []


def test_a_state_file_is_created_complete_or_not_at_all_even_under_kill_9(tmp_path: Path) -> None:
    """Create state files one after another in a child process, kill it at once, and look at what is left."""
    folder = tmp_path / "states"
    folder.mkdir()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib\n"
            "from backfill.state.schema import create_file\n"
            "folder = pathlib.Path(sys.argv[1])\n"
            "for i in range(100000):\n"
            "    create_file(folder / f'state{i}.db')\n"
            "    print(i, flush=True)\n",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    for kill in range(3):
        child.stdout.readline()  # it has made at least one file
        time.sleep(0.05 * kill)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    made = sorted(folder.glob("state*.db"))
    assert made
    for state in made:
        store = Store.open(state, create=False)  # every file there is complete and ours
        assert store is not None, state
        store.close()
    # What a kill mid-creation leaves is at most a temporary file, which nothing reads...
    leftovers = [file for file in folder.iterdir() if not file.name.startswith("state")]
    assert all(file.name.startswith(".state") and ".new-" in file.name for file in leftovers), leftovers
    # ...and which does not stop the next creation.
    (folder / ".fresh.db.new-deadbeef").write_bytes(b"SQLite format 3\0" + b"\0" * 100)
    store = Store.open(folder / "fresh.db", create=True)
    assert store is not None
    store.close()


def test_the_state_file_its_folder_and_its_lock_are_private(
    write: WriteFile, receiver: LocalReceiver, tmp_path: Path
) -> None:
    write("runs.csv", HEADER + runs(0, 5))
    path = _config(write)
    os.umask(0o022)
    assert send(path, receiver)[0].exit_code == EXIT_OK
    folder = tmp_path / ".backfill"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("state.db", "state.db.lock"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name


def test_two_runs_reaching_one_state_file_through_a_symlink_are_one_at_a_time(
    write: WriteFile, receiver: LocalReceiver, tmp_path: Path
) -> None:
    write("runs.csv", HEADER + runs(0, 5))
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via-folder").symlink_to(real)
    assert send(_config(write, "real/state.db"), receiver)[0].exit_code == EXIT_OK
    (tmp_path / "via-file.db").symlink_to(real / "state.db")
    write("runs.csv", HEADER + runs(0, 9))
    with StateLock(real / "state.db"):
        for state in ("via-folder/state.db", "via-file.db", "real/../real/state.db"):
            result, _ = send(_config(write, state), receiver)
            assert result.exit_code == EXIT_LOCKED, state
    assert len(receiver.events()) == 5
    result, summary = send(_config(write, "via-file.db"), receiver)
    assert (result.exit_code, summary["delivery"]["sent"], summary["delivery"]["already_sent"]) == (EXIT_OK, 4, 5)


def _pending_batch(state: Path, url: str, count: int = 15) -> None:
    """What a run leaves when it died after POSTing a batch and before recording the answer."""
    import polars as pl

    store = Store.open(state, create=True)
    assert store is not None
    destination = store.resolve_destination(url, account_of(KEY, store.salt))
    run = store.start_run(destination.id, url, current_boot_id())
    rows = pl.DataFrame(
        {
            "timestamp": [f"2025-01-01T00:00:{i:02d}Z" for i in range(count)],
            "entityId": ["shop"] * count,
            "env": ["production"] * count,
            "status": ["success"] * count,
            "build_id": [str(i) for i in range(count)],
        }
    ).with_columns(
        pl.lit(None, pl.String).alias(name)
        for name in ("build_commit_sha", "change_id", "build_url", "description", "initiator", "deployment_type")
    )
    batch = OutgoingBatch(
        body=body_of(events_json(rows)),
        keys=tuple(EventKey("shop", "production", str(i)) for i in range(count)),
        timestamps=tuple(rows.get_column("timestamp").to_list()),
        sources=("runs",) * count,
    )
    [batch_id] = store.write_ahead(run, destination.id, [batch])
    store.mark_posted(batch_id)
    store.close()


def test_on_a_full_disk_a_batch_in_doubt_is_not_sent_again_and_again(
    write: WriteFile, receiver: LocalReceiver, tmp_path: Path
) -> None:
    write("runs.csv", HEADER + runs(100, 3))
    with small_disk(tmp_path / "disk", 1024) as disk:
        state = disk / "state.db"
        _pending_batch(state, receiver.url)
        filler = fill(disk)
        path = _config(write, "disk/state.db")
        for _ in range(3):
            result = cli("run", "-c", str(path), "--url", receiver.url)
            assert result.exit_code == EXIT_STATE, result.output
            assert "the disk that holds it is full; free some space there" in result.stderr
        assert receiver.events() == []  # the batch in doubt never went out while its mark could not be kept
        filler.unlink()
        result, summary = send(path, receiver)
        assert result.exit_code == EXIT_OK, result.output
        assert summary["delivery"]["possibly_duplicated"] == 15
        assert len(receiver.events()) == 15 + 3 and receiver.duplicates() == []


def test_a_read_only_state_folder_is_named_as_such_and_reading_still_works(
    write: WriteFile, receiver: LocalReceiver, tmp_path: Path
) -> None:
    write("runs.csv", HEADER + runs(0, 5))
    path = _config(write)
    assert send(path, receiver)[0].exit_code == EXIT_OK
    folder = tmp_path / ".backfill"
    digest = _digest(folder / "state.db")
    write("runs.csv", HEADER + runs(0, 8))
    with read_only(folder):
        result = cli("run", "-c", str(path), "--url", receiver.url)
        assert result.exit_code == EXIT_STATE
        assert result.stderr == (
            f"error: {folder / 'state.db'}: backfill cannot write in {folder}, the state file's folder (no "
            "permission, or a read-only file system); make it writable, or point [state] path at a folder that is\n"
        )
        report = json.loads(cli("status", "-c", str(path), "--json").stdout)
        assert report["destinations"][0]["sources"][0]["sent"] == 5
        result = cli("run", "-c", str(path), "--url", receiver.url, "--dry-run", str(tmp_path / "review.csv"), "--json")
        assert result.exit_code == EXIT_OK, result.output
        assert json.loads(result.stdout)["ledger"]["new"] == 3
    assert _digest(folder / "state.db") == digest
    assert len(receiver.events()) == 5


@pytest.mark.parametrize("state", ["missing/state.db"])
def test_require_state_names_a_state_file_that_is_not_there(
    write: WriteFile, receiver: LocalReceiver, state: str
) -> None:
    write("runs.csv", HEADER + runs(0, 2))
    result, _ = send(_config(write, state), receiver, "--require-state")
    assert result.exit_code == EXIT_STATE
    assert "does not exist, and --require-state says it must" in result.stderr


def test_a_damaged_state_file_is_found_by_status_and_stops_a_run_without_a_traceback(
    write: WriteFile, receiver: LocalReceiver, tmp_path: Path
) -> None:
    write("runs.csv", HEADER + runs(0, 300))
    path = _config(write)
    assert send(path, receiver)[0].exit_code == EXIT_OK
    state = tmp_path / ".backfill" / "state.db"
    data = bytearray(state.read_bytes())
    page = 4096
    data[2 * page :] = b"\xff" * (len(data) - 2 * page)  # every page but the first two: the header and schema stay
    state.write_bytes(bytes(data))
    digest = _digest(state)
    result = cli("status", "-c", str(path))
    assert result.exit_code == EXIT_STATE
    assert result.stderr.startswith(
        f"error: {state}: is not a readable backfill state file (database disk image is malformed); "
        "it was left untouched. Restore it from a backup"
    )
    result = cli("run", "-c", str(path), "--url", receiver.url)
    assert result.exit_code == EXIT_STATE
    assert result.stderr.startswith(f"error: {state}: could not be read (")
    assert _digest(state) == digest
    assert len(receiver.events()) == 300
