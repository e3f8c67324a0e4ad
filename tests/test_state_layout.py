"""The state file's layout: a batch in flight is one row, and files of the earlier layouts carry on.

Version 2 wrote a ledger row per event ahead of its POST and updated it on the answer; version 3
wrote one ``outgoing`` row per batch (its body and its events' keys) and the ledger rows when the
answer came; version 4 records the answer in the batch's row (refusals in ``outgoing.refused``) and
writes the ledger rows later, in bulk. Files of versions 2 and 3 are built here as runs killed with
batches in flight left them, and then used by today's code; so is a version-4 file killed between
an answer and its ledger rows.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from pathlib import Path

import polars as pl
from helpers import WriteFile
from receivers import KEY, LocalReceiver
from test_emit_send import CATCH_UP_SOURCE, emit, state_config
from test_send import HEADER, cli, config, runs, send, status

from backfill.errors import EXIT_OK
from backfill.load.client import body_of, events_json
from backfill.model import EventKey
from backfill.state.destination import account_of, normalize_url
from backfill.state.store import KNOWN_KEYS, OutgoingBatch, Store, current_boot_id

# The tables of state version 2, exactly as that version created them.
_VERSION_2 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE destinations (
    id INTEGER PRIMARY KEY, url TEXT NOT NULL, account TEXT, created_at TEXT NOT NULL, UNIQUE (url, account)
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    destination_id INTEGER NOT NULL REFERENCES destinations (id),
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT NOT NULL,
    url TEXT NOT NULL,
    boot_id TEXT,
    planned INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,
    unconfirmed INTEGER NOT NULL DEFAULT 0,
    possibly_duplicated INTEGER NOT NULL DEFAULT 0,
    left_to_send INTEGER NOT NULL DEFAULT 0,
    message TEXT
);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    state TEXT NOT NULL CHECK (state IN ('pending', 'answered', 'split', 'released')),
    events INTEGER NOT NULL,
    posts INTEGER NOT NULL DEFAULT 0,
    possibly_duplicated INTEGER NOT NULL DEFAULT 0,
    unconfirmed INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    settled_at TEXT,
    body TEXT
);
CREATE INDEX batches_pending ON batches (state) WHERE state = 'pending';
CREATE TABLE ledger (
    destination_id INTEGER NOT NULL REFERENCES destinations (id),
    entity_id TEXT NOT NULL,
    env TEXT NOT NULL,
    build_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'refused', 'held')),
    batch_id INTEGER REFERENCES batches (id),
    timestamp TEXT NOT NULL,
    source TEXT NOT NULL,
    message TEXT,
    PRIMARY KEY (destination_id, entity_id, env, build_id)
) WITHOUT ROWID;
CREATE INDEX ledger_by_batch ON ledger (batch_id);
CREATE TABLE cursors (
    destination_id INTEGER NOT NULL REFERENCES destinations (id),
    source TEXT NOT NULL,
    position TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (destination_id, source)
);
"""


def _stamp(i: int) -> str:
    """The time the test's runs.csv gives build ``i`` (see test_send.runs)."""
    return f"2025-01-{1 + i // 100:02d}T{i % 24:02d}:{i % 60:02d}:00Z"


def _body(builds: range) -> str:
    rows = pl.DataFrame(
        {
            "timestamp": [_stamp(i) for i in builds],
            "entityId": ["shop"] * len(builds),
            "env": ["production"] * len(builds),
            "status": ["success"] * len(builds),
            "build_id": [str(i) for i in builds],
        }
    ).with_columns(
        pl.lit(None, pl.String).alias(name)
        for name in ("build_commit_sha", "change_id", "build_url", "description", "initiator", "deployment_type")
    )
    return body_of(events_json(rows))


def _version_2_killed_in_flight(path: Path, url: str) -> None:
    """A version-2 file: builds 0-4 sent; 5-7 POSTed and never answered; 8-9 written ahead, never POSTed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(f"BEGIN; PRAGMA application_id = {0x42464C4C}; PRAGMA user_version = 2; {_VERSION_2} COMMIT;")
    salt = secrets.token_bytes(16)
    db.execute("INSERT INTO meta VALUES ('salt', ?)", (salt,))
    db.execute(
        "INSERT INTO destinations VALUES (1, ?, ?, '2025-03-01T00:00:00Z')", (normalize_url(url), account_of(KEY, salt))
    )
    db.execute(
        "INSERT INTO runs (id, destination_id, started_at, outcome, url, boot_id) "
        "VALUES (1, 1, '2025-03-01T00:00:00Z', 'running', ?, ?)",
        (url, current_boot_id()),
    )
    for batch_id, state, posts, builds in ((1, "answered", 1, range(5)), (2, "pending", 1, range(5, 8))):
        db.execute(
            "INSERT INTO batches (id, run_id, state, events, posts, created_at, body) "
            "VALUES (?, 1, ?, ?, ?, '2025-03-01T00:00:01Z', ?)",
            (batch_id, state, len(builds), posts, _body(builds)),
        )
    db.execute(
        "INSERT INTO batches (id, run_id, state, events, posts, created_at, body) "
        "VALUES (3, 1, 'pending', 2, 0, '2025-03-01T00:00:01Z', ?)",
        (_body(range(8, 10)),),
    )
    for i in range(10):
        batch_id, state = (1, "sent") if i < 5 else ((2, "pending") if i < 8 else (3, "pending"))
        db.execute(
            "INSERT INTO ledger VALUES (1, 'shop', 'production', ?, ?, ?, ?, 'runs', NULL)",
            (str(i), state, batch_id, _stamp(i)),
        )
    db.close()


def _builds(receiver: LocalReceiver) -> list[str]:
    return sorted((str(event["event"]["attributes"]["build_id"]) for event in receiver.events()), key=int)  # type: ignore[index]


def test_a_version_2_file_killed_with_batches_in_flight_reads_them_as_pending_without_being_written(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    path = config(write)
    state = path.parent / ".backfill" / "state.db"
    _version_2_killed_in_flight(state, receiver.url)
    before = hashlib.sha256(state.read_bytes()).hexdigest()
    report = status(path)
    assert hashlib.sha256(state.read_bytes()).hexdigest() == before
    assert {name: report["sources"][0][name] for name in ("sent", "pending")} == {"sent": 5, "pending": 5}
    assert [(batch["id"], batch["events"]) for batch in report["pending_batches"]] == [(2, 3), (3, 2)]
    store = Store.open(state, create=False)
    assert store is not None
    try:
        keys = pl.DataFrame(
            {"entityId": ["shop"] * 11, "env": ["production"] * 11, "build_id": list(map(str, range(11)))}
        )
        known = dict(store.known_keys(1, keys).select("build_id", "ledger_state").iter_rows())
        assert known == {str(i): "sent" if i < 5 else "pending" for i in range(10)}
    finally:
        store.close()


def test_a_version_2_file_killed_with_batches_in_flight_resends_exactly_those_batches(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    write("runs.csv", HEADER + runs(0, 14))
    path = config(write)
    state = path.parent / ".backfill" / "state.db"
    _version_2_killed_in_flight(state, receiver.url)
    result, summary = send(path, receiver)
    assert result.exit_code == EXIT_OK, result.output
    # The two pending batches, then the four new events; the five answered ones never again.
    assert _builds(receiver) == [str(i) for i in range(5, 14)]
    assert (summary["delivery"]["sent"], summary["delivery"]["already_sent"]) == (9, 10)
    report = status(path)
    assert report["pending_batches"] == []
    # Only the batch that was POSTed may be stored twice; the one never POSTed is not flagged.
    assert sorted(event["build_id"] for event in report["possibly_duplicated"]) == ["5", "6", "7"]
    # Every event kept its source: the ledger rows written on the answers are the version-2 rows' own.
    assert {name: report["sources"][0][name] for name in ("source", "sent", "pending")} == {
        "source": "runs",
        "sent": 14,
        "pending": 0,
    }
    db = sqlite3.connect(state)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (4,)
        assert db.execute("SELECT count(*) FROM ledger WHERE state = 'pending'").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM outgoing").fetchone() == (0,)
        assert "body" not in [row[1] for row in db.execute("PRAGMA table_info(batches)")]
    finally:
        db.close()
    assert send(path, receiver)[1]["delivery"]["to_send"] == 0


def _write_ahead(store: Store, url: str, builds: range, *, posted: bool) -> int:
    destination = store.resolve_destination(url, account_of(KEY, store.salt))
    run = store.start_run(destination.id, url, current_boot_id())
    batch = OutgoingBatch(
        body=_body(builds),
        keys=tuple(EventKey("shop", "production", str(i)) for i in builds),
        timestamps=tuple(_stamp(i) for i in builds),
        sources=("runs",) * len(builds),
    )
    [batch_id] = store.write_ahead(run, destination.id, [batch])
    if posted:
        store.mark_posted(batch_id)
    return batch_id


def test_a_batch_in_flight_has_no_ledger_rows_yet_and_every_reader_sees_its_events_pending(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    """What a kill -9 leaves with today's layout: the events only in their batch's outgoing row."""
    write("runs.csv", HEADER + runs(0, 6))
    path = config(write)
    state = path.parent / ".backfill" / "state.db"
    state.parent.mkdir()
    store = Store.open(state, create=True)
    assert store is not None
    _write_ahead(store, receiver.url, range(3), posted=True)
    store.close()
    db = sqlite3.connect(state)
    assert db.execute("SELECT count(*) FROM ledger").fetchone() == (0,)
    assert [json.loads(keys) for (keys,) in db.execute("SELECT keys FROM outgoing")] == [
        [["shop", "production", str(i), _stamp(i), "runs"] for i in range(3)]
    ]
    db.close()
    report = status(path)
    assert (report["sources"][0]["pending"], report["sources"][0]["sent"]) == (3, 0)
    # The dry run's review sees them as not new, as it sees an event already sent.
    review = cli("run", "-c", str(path), "--dry-run", str(path.parent / "review.csv"), "--json", "--url", receiver.url)
    assert json.loads(review.stdout)["ledger"] == {"destination": receiver.url, "new": 3, "sent": 3}
    result, summary = send(path, receiver)
    assert result.exit_code == EXIT_OK, result.output
    assert _builds(receiver) == [str(i) for i in range(6)] and receiver.duplicates() == []
    assert (summary["delivery"]["sent"], summary["delivery"]["possibly_duplicated"]) == (6, 3)
    report = status(path)
    assert (report["sources"][0]["pending"], report["sources"][0]["sent"]) == (0, 6)


def test_a_version_2_batch_and_one_of_todays_both_left_pending_are_both_sent_once_more(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    """Mixed: a file killed under version 2, then opened by today's code, which was killed too."""
    write("runs.csv", HEADER + runs(0, 16))
    path = config(write)
    state = path.parent / ".backfill" / "state.db"
    _version_2_killed_in_flight(state, receiver.url)
    store = Store.open(state, create=True)
    assert store is not None
    # The new batch of builds 10-12, written ahead and never POSTed, next to the two version-2 batches.
    ours = _write_ahead(store, receiver.url, range(10, 13), posted=False)
    assert [batch.id for batch in store.pending_batches()] == [2, 3, ours]
    assert store.by_source(1)["runs"]["pending"] == 8
    store.close()
    result, summary = send(path, receiver)
    assert result.exit_code == EXIT_OK, result.output
    assert _builds(receiver) == [str(i) for i in range(5, 16)] and receiver.duplicates() == []
    assert (summary["delivery"]["sent"], summary["delivery"]["already_sent"]) == (11, 13)
    report = status(path)
    assert report["pending_batches"] == [] and report["sources"][0]["sent"] == 16
    assert sorted(event["build_id"] for event in report["possibly_duplicated"]) == ["5", "6", "7"]


def test_a_released_batch_leaves_nothing_of_its_events_behind(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.db", create=True)
    assert store is not None
    try:
        batch_id = _write_ahead(store, "http://127.0.0.1:9", range(2), posted=False)
        keys = pl.DataFrame({"entityId": ["shop"] * 2, "env": ["production"] * 2, "build_id": ["0", "1"]})
        assert store.known_keys(1, keys).get_column("ledger_state").to_list() == ["pending", "pending"]
        store.release(batch_id)
        assert store.known_keys(1, keys).height == 0 and store.by_source(1) == {}
        assert store.pending_batches() == []
    finally:
        store.close()


def _answered_not_recorded(state: Path, url: str) -> None:
    """What a kill -9 leaves between an answer and its ledger rows: builds 0-3 answered, 1 and 3 refused."""
    state.parent.mkdir(parents=True, exist_ok=True)
    store = Store.open(state, create=True)
    assert store is not None
    try:
        batch_id = _write_ahead(store, url, range(4), posted=True)
        refused = [
            (EventKey("shop", "production", "1"), "invalid status"),
            (EventKey("shop", "production", "3"), "bad"),
        ]
        store.record_answer(batch_id, refused, possibly_duplicated=True)
    finally:
        store.close()


def test_an_answered_batch_whose_ledger_rows_are_not_written_reads_as_sent_and_refused_everywhere(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    write("runs.csv", HEADER + runs(0, 6))
    path = config(write)
    state = path.parent / ".backfill" / "state.db"
    _answered_not_recorded(state, receiver.url)
    db = sqlite3.connect(state)
    assert db.execute("SELECT count(*) FROM ledger").fetchone() == (0,)
    assert db.execute("SELECT state FROM batches").fetchall() == [("answered",)]
    assert [json.loads(refused) for (refused,) in db.execute("SELECT refused FROM outgoing")] == [
        [None, "invalid status", None, "bad"]
    ]
    db.close()
    before = hashlib.sha256(state.read_bytes()).hexdigest()
    report = status(path)
    assert hashlib.sha256(state.read_bytes()).hexdigest() == before  # reading writes nothing
    source = report["sources"][0]
    assert {name: source[name] for name in ("sent", "refused", "pending", "possibly_duplicated")} == {
        "sent": 2,
        "refused": 2,
        "pending": 0,
        "possibly_duplicated": 2,
    }
    assert [(event["build_id"], event["state"], event["message"]) for event in report["refused_events"]] == [
        ("1", "refused", "invalid status"),
        ("3", "refused", "bad"),
    ]
    assert [event["build_id"] for event in report["possibly_duplicated"]] == ["0", "2"]
    assert [(entity["entityId"], entity["sent"]) for entity in report["entities"]] == [("shop", 2)]
    assert report["pending_batches"] == []
    review = cli("run", "-c", str(path), "--dry-run", str(path.parent / "review.csv"), "--json", "--url", receiver.url)
    assert json.loads(review.stdout)["ledger"]["new"] == 2
    # A run sends only builds 4 and 5, and the answered batch's ledger rows are written on the way.
    result, summary = send(path, receiver)
    assert result.exit_code == EXIT_OK, result.output
    assert _builds(receiver) == ["4", "5"]
    assert summary["delivery"]["sent"] == 2
    db = sqlite3.connect(state)
    try:
        assert db.execute("SELECT count(*) FROM outgoing").fetchone() == (0,)
        rows = db.execute("SELECT build_id, state, message FROM ledger ORDER BY CAST(build_id AS INTEGER)").fetchall()
        assert rows[:4] == [
            ("0", "sent", None),
            ("1", "refused", "invalid status"),
            ("2", "sent", None),
            ("3", "refused", "bad"),
        ]
    finally:
        db.close()
    assert status(path)["refused_events"] == report["refused_events"]


def test_refused_events_whose_ledger_rows_are_not_written_are_sent_again_with_retry_rejected(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    write("runs.csv", HEADER + runs(0, 4))
    path = config(write)
    state = path.parent / ".backfill" / "state.db"
    _answered_not_recorded(state, receiver.url)
    result, summary = send(path, receiver, "--retry-rejected")
    assert result.exit_code == EXIT_OK, result.output
    assert _builds(receiver) == ["1", "3"] and summary["delivery"]["sent"] == 2
    report = status(path)
    assert report["refused_events"] == [] and report["sources"][0]["sent"] == 4


def _version_3_killed_in_flight(path: Path, url: str) -> None:
    """A version-3 file: builds 0-4 answered (ledger rows written, outgoing row kept, as version 3 did
    until the run ended), 5-7 POSTed and never answered. Version 3's tables are version 4's without
    ``outgoing.refused``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = Store.open(path, create=True)
    assert store is not None
    try:
        answered = _write_ahead(store, url, range(5), posted=True)
        _write_ahead(store, url, range(5, 8), posted=True)
    finally:
        store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "BEGIN; ALTER TABLE outgoing DROP COLUMN refused; PRAGMA user_version = 3; "
        f"UPDATE batches SET state = 'answered' WHERE id = {answered}; COMMIT;"
    )
    for i in range(5):
        db.execute(
            "INSERT INTO ledger VALUES (1, 'shop', 'production', ?, 'sent', ?, ?, 'runs', NULL)",
            (str(i), answered, _stamp(i)),
        )
    db.close()


def test_a_version_3_file_killed_with_a_batch_in_flight_counts_each_event_once_and_resends_only_that_batch(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    write("runs.csv", HEADER + runs(0, 10))
    path = config(write)
    state = path.parent / ".backfill" / "state.db"
    _version_3_killed_in_flight(state, receiver.url)
    report = status(path)
    assert {name: report["sources"][0][name] for name in ("sent", "pending")} == {"sent": 5, "pending": 3}
    assert [(batch["id"], batch["events"]) for batch in report["pending_batches"]] == [(2, 3)]
    result, summary = send(path, receiver)
    assert result.exit_code == EXIT_OK, result.output
    assert _builds(receiver) == [str(i) for i in range(5, 10)]
    assert (summary["delivery"]["sent"], summary["delivery"]["already_sent"]) == (5, 8)
    report = status(path)
    assert report["sources"][0]["sent"] == 10 and report["pending_batches"] == []
    assert sorted(event["build_id"] for event in report["possibly_duplicated"]) == ["5", "6", "7"]
    db = sqlite3.connect(state)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (4,)
        assert db.execute("SELECT count(*) FROM ledger").fetchone() == (10,)
        assert db.execute("SELECT count(*) FROM outgoing").fetchone() == (0,)
    finally:
        db.close()


def test_a_write_ahead_writes_the_ledger_rows_of_the_batches_answered_before_it(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.db", create=True)
    assert store is not None
    try:
        first = _write_ahead(store, "http://127.0.0.1:9", range(3), posted=True)
        store.record_answer(first, [(EventKey("shop", "production", "1"), "invalid status")], later=True)
        second = _write_ahead(store, "http://127.0.0.1:9", range(3, 5), posted=False)
        db = sqlite3.connect(tmp_path / "state.db")
        try:
            # The answer went with the second write ahead, and so did its events' rows; the outgoing row is gone.
            assert db.execute("SELECT build_id, state, message FROM ledger ORDER BY build_id").fetchall() == [
                ("0", "sent", None),
                ("1", "refused", "invalid status"),
                ("2", "sent", None),
            ]
            assert db.execute("SELECT batch_id FROM outgoing").fetchall() == [(second,)]
        finally:
            db.close()
    finally:
        store.close()


def test_every_key_is_known_once_whether_in_the_ledger_in_flight_or_answered(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.db", create=True)
    assert store is not None
    url = "http://127.0.0.1:9"
    try:
        recorded = _write_ahead(store, url, range(2), posted=True)
        store.record_answer(recorded)
        answered = _write_ahead(store, url, range(2, 4), posted=True)  # writes the first batch's rows
        store.record_answer(answered, [(EventKey("shop", "production", "3"), "bad")])
        _write_ahead(store, url, range(4, 6), posted=True)  # writes the second's; this one stays in flight
        answered = _write_ahead(store, url, range(6, 8), posted=True)
        store.record_answer(answered)  # answered, its rows not written yet
        # Keys asked for twice, and one no batch holds.
        builds = [str(i) for i in (*range(9), 0, 7)]
        keys = pl.DataFrame(
            {"entityId": ["shop"] * len(builds), "env": ["production"] * len(builds), "build_id": builds}
        )
        known = store.known_keys(1, keys)
        assert known.height == known.unique(["entityId", "env", "build_id"]).height == 8
        assert dict(known.select("build_id", "ledger_state").iter_rows()) == {
            "0": "sent",
            "1": "sent",
            "2": "sent",
            "3": "refused",
            "4": "pending",
            "5": "pending",
            "6": "sent",
            "7": "sent",
        }
        # Another destination sees none of it.
        other = store.resolve_destination("http://127.0.0.1:10", account_of(KEY, store.salt))
        assert store.known_keys(other.id, keys).height == 0
        assert store.by_source(other.id) == {} and store.sent_ranges(other.id) == []
        assert store.by_source(1)["runs"] == {
            "sent": 5,
            "pending": 2,
            "refused": 1,
            "held": 0,
            "possibly_duplicated": 0,
            "unconfirmed": 0,
        }
    finally:
        store.close()


def test_emit_knows_an_event_whose_answer_came_but_whose_ledger_row_is_not_written(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    path = state_config(write, CATCH_UP_SOURCE)
    args = ("-c", str(path), "--entity", "ants", "--env", "production", "--status", "success", "--url", receiver.url)
    assert emit(*args).exit_code == EXIT_OK
    # As a kill between the answer and the ledger rows leaves it: the event only in its answered batch's row.
    db = sqlite3.connect(path.parent / "state.db", isolation_level=None)
    row = db.execute("SELECT entity_id, env, build_id, timestamp, source, batch_id FROM ledger").fetchone()
    db.execute("DELETE FROM ledger")
    db.execute("UPDATE batches SET state = 'answered' WHERE id = ?", (row[5],))
    db.execute(
        "INSERT OR REPLACE INTO outgoing (batch_id, body, keys) VALUES (?, '{}', ?)", (row[5], json.dumps([row[:5]]))
    )
    db.close()
    again = emit(*args)
    assert again.exit_code == EXIT_OK
    assert "already sent" in again.stderr and len(receiver.events()) == 1


def test_known_keys_look_each_planned_key_up_in_the_ledger_and_never_walk_it(tmp_path: Path) -> None:
    """A catch-up run's lookup costs what the plan holds, not what the ledger does."""
    store = Store.open(tmp_path / "state.db", create=True)
    assert store is not None
    try:
        for builds in (range(0, 15), range(15, 30)):
            store.record_answer(_write_ahead(store, "http://127.0.0.1:9", builds, posted=True))
        store.write_ledger_rows()
        keys = pl.DataFrame({"entityId": ["shop"] * 3, "env": ["production"] * 3, "build_id": ["1", "29", "x"]})
        assert store.known_keys(1, keys).height == 2
        plan = [row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + KNOWN_KEYS, (1, 1))]
    finally:
        store.close()
    ledger_part = plan[: plan.index("UNION ALL")]
    assert "SEARCH l USING PRIMARY KEY (destination_id=? AND entity_id=? AND env=? AND build_id=?)" in ledger_part
    assert not any(step.startswith("SCAN l") or "(destination_id=?)" in step for step in ledger_part), plan
