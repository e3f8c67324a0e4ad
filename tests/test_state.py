"""The state file: refused when it is not ours, one run at a time, and the resume rules."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from mounts import read_only

from backfill.errors import StateError, StateLockedError
from backfill.model import TS
from backfill.plan.ledger import mark_known, within
from backfill.state.lock import StateLock
from backfill.state.rules import advanced_cursors, incremental_since, outcome_unknown
from backfill.state.store import SCHEMA_VERSION, Store


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_new_state_file_is_created_only_for_a_real_run(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.db"
    assert Store.open(path, create=False) is None
    assert not path.exists()
    store = Store.open(path, create=True)
    assert store is not None
    store.close()
    reopened = Store.open(path, create=False)
    assert reopened is not None
    reopened.close()


def test_an_sqlite_file_that_is_not_ours_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()
    before = _digest(path)
    with pytest.raises(StateError) as error:
        Store.open(path, create=True)
    assert str(error.value) == (
        f"{path}: is an SQLite file but not a backfill state file; it was left untouched. "
        "Point [state] path at a new file"
    )
    assert _digest(path) == before


def test_a_corrupt_state_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    before = _digest(path)
    with pytest.raises(StateError, match=r"is not a readable backfill state file .* it was left untouched"):
        Store.open(path, create=True)
    assert _digest(path) == before


def test_a_state_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store.open(path, create=True)
    assert store is not None
    store.close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StateError, match=rf"written by a newer backfill \(state version {SCHEMA_VERSION + 1}"):
        Store.open(path, create=False)


def test_one_run_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateLock(path), pytest.raises(StateLockedError) as error, StateLock(path):
        pass
    assert "another backfill run is using" in str(error.value)
    with StateLock(path):  # released
        pass


def test_a_lock_left_by_a_killed_run_is_not_obeyed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from backfill.state.lock import StateLock\nimport time, pathlib\n"
            f"with StateLock(pathlib.Path({str(path)!r})):\n    print('held', flush=True)\n    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(StateLockedError), StateLock(path):
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        deadline = time.monotonic() + 5
        while True:
            try:
                with StateLock(path):
                    break
            except StateLockedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait(timeout=10)
        assert holder.stdout is not None
        holder.stdout.close()


def _plan(*build_ids: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "entityId": ["shop"] * len(build_ids),
            "env": ["production"] * len(build_ids),
            "build_id": list(build_ids),
            "source": ["a" if int(build) % 2 else "b" for build in build_ids],
            TS: [datetime(2025, 1, int(build), tzinfo=UTC) for build in build_ids],
        }
    )


def test_mark_known() -> None:
    known = pl.DataFrame(
        {
            "entityId": ["shop"] * 4,
            "env": ["production"] * 4,
            "build_id": ["1", "2", "3", "4"],
            "ledger_state": ["sent", "pending", "refused", "held"],
        }
    )
    marked = mark_known(_plan("1", "2", "3", "4", "5"), known)
    assert marked.select("build_id", "state").rows() == [
        ("1", "sent"),
        ("2", "sent"),
        ("3", "sent"),
        ("4", "sent"),
        ("5", "new"),
    ]


def test_within_since_and_until() -> None:
    plan = _plan("1", "2", "3", "4")
    since, until = datetime(2025, 1, 2, tzinfo=UTC), datetime(2025, 1, 4, tzinfo=UTC)
    assert within(plan, since, until).get_column("build_id").to_list() == ["2", "3"]
    assert within(plan, None, None).height == 4


def test_incremental_since() -> None:
    cursor = datetime(2025, 1, 10, tzinfo=UTC)
    assert incremental_since(cursor, timedelta(days=3), None) == datetime(2025, 1, 7, tzinfo=UTC)
    assert incremental_since(None, timedelta(days=3), None) is None
    assert incremental_since(cursor, timedelta(days=3), datetime(2024, 1, 1, tzinfo=UTC)) == datetime(
        2024, 1, 1, tzinfo=UTC
    )


def test_cursors_only_move_forward() -> None:
    held = {"a": datetime(2025, 1, 2, tzinfo=UTC), "b": datetime(2025, 2, 1, tzinfo=UTC)}
    assert advanced_cursors(_plan("1", "2", "3", "4"), held) == {
        "a": datetime(2025, 1, 3, tzinfo=UTC),
        "b": datetime(2025, 2, 1, tzinfo=UTC),
    }


def test_a_cursor_never_passes_an_event_that_was_refused_or_held() -> None:
    plan = _plan("1", "2", "3", "4", "5", "6")
    undelivered = plan.filter(pl.col("build_id").is_in(["3", "6"]))
    assert advanced_cursors(plan, {}, undelivered) == {
        "a": datetime(2025, 1, 3, tzinfo=UTC),  # 1, 3, 5 delivered but 3 refused: held at 3, read again next time
        "b": datetime(2025, 1, 6, tzinfo=UTC),  # 6 is its newest: not past it either
    }


def test_outcome_unknown() -> None:
    assert outcome_unknown(posts=1, written_on_boot="x", current_boot="x")
    assert not outcome_unknown(posts=0, written_on_boot="x", current_boot="x")
    assert outcome_unknown(posts=0, written_on_boot="x", current_boot="y")
    assert outcome_unknown(posts=0, written_on_boot=None, current_boot=None)


def test_a_state_file_the_file_system_will_not_let_us_write_is_a_state_error(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    store = Store.open(folder / "state.db", create=True, write=True)
    assert store is not None
    destination = store.resolve_destination("https://devgrid.test", "account")
    store.close()
    with read_only(folder), pytest.raises(StateError) as refused:
        reopened = Store.open(folder / "state.db", create=False, write=True)
        assert reopened is not None
        try:
            reopened.start_run(destination.id, "https://devgrid.test", None)
        finally:
            reopened.close()
    message = str(refused.value)
    assert message.startswith(f"{folder / 'state.db'}: ") and "read-only" in message, message
    again = Store.open(folder / "state.db", create=False, write=True)  # writable again: nothing was lost
    assert again is not None and again.start_run(destination.id, "https://devgrid.test", None) == 1
    again.close()
