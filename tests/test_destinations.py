"""One ledger per destination: a rehearsal never changes what a real run sends, and a new key needs a word."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from helpers import WriteFile
from receivers import KEY, LocalReceiver, start_receiver
from test_send import HEADER, cli, config, runs, send, status

from backfill.errors import EXIT_AUTH, EXIT_OK, EXIT_STATE
from backfill.state.destination import account_of, normalize_url
from backfill.state.store import Store


def test_a_rehearsal_does_not_hide_history_from_the_real_run(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", HEADER + runs(0, 20))
    path = config(write)
    (tmp_path / "rehearsal").mkdir()
    (tmp_path / "real").mkdir()
    for rehearsal in start_receiver(tmp_path / "rehearsal"):
        assert send(path, rehearsal)[1]["delivery"]["sent"] == 20
    for real in start_receiver(tmp_path / "real"):
        result, summary = send(path, real)
        assert result.exit_code == EXIT_OK
        assert (summary["delivery"]["sent"], summary["delivery"]["already_sent"]) == (20, 0)
        assert summary["delivery"]["destination"] == real.url
        assert len(real.events()) == 20
        report = json.loads(cli("status", "-c", str(path), "--json").stdout)
        assert [destination["url"] for destination in report["destinations"]] == [rehearsal.url, real.url]
        assert all(destination["sources"][0]["sent"] == 20 for destination in report["destinations"])
        # The same URL written another way is the same destination.
        result, summary = send(
            path, LocalReceiver(real.url.upper().replace("HTTP://", "http://") + "/events/", real.process)
        )
        assert (summary["delivery"]["sent"], summary["delivery"]["already_sent"]) == (0, 20)


def test_another_key_for_a_known_url_must_be_named_same_account_or_new_account(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    write("runs.csv", HEADER + runs(0, 10))
    path = config(write)
    # A first try with a key DevGrid refuses leaves nothing to protect: the right key needs no word.
    assert send(path, receiver, key="mistyped-" + KEY)[0].exit_code == EXIT_AUTH
    assert send(path, receiver)[0].exit_code == EXIT_OK
    rotated = "rotated-" + KEY
    result = cli("run", "-c", str(path), "--url", receiver.url, key=rotated)
    assert result.exit_code == EXIT_STATE
    assert "holds events sent to" in result.stderr and "--key-changed same-account" in result.stderr
    assert rotated not in result.output
    # A rotated key of the same account: nothing is sent again.
    result = cli("run", "-c", str(path), "--url", receiver.url, "--key-changed", "same-account", "--json", key=KEY)
    assert result.exit_code == EXIT_OK
    assert json.loads(result.stdout)["delivery"]["already_sent"] == 10
    assert len(receiver.events()) == 10
    # A key of another account at the same URL: that account's ledger starts empty.
    other = "other-account-" + KEY
    result = cli("run", "-c", str(path), "--url", receiver.url, "--key-changed", "new-account", "--json", key=other)
    assert json.loads(result.stdout)["delivery"]["to_send"] == 10  # (the receiver refuses it: another key)
    assert other not in result.output and KEY not in result.output


def test_the_account_fingerprint_is_keyed_and_short() -> None:
    salt = b"s" * 16
    fingerprint = account_of(KEY, salt)
    assert len(fingerprint) == 16 and fingerprint != account_of(KEY, b"t" * 16)
    assert fingerprint not in hashlib.sha256(KEY.encode()).hexdigest()
    assert normalize_url("HTTPS://Prod.API.devgrid.io:443/events/") == "https://prod.api.devgrid.io"
    assert normalize_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert normalize_url("https://example.com/devgrid/events") == "https://example.com/devgrid"


# Version 1 of the state file, as earlier releases wrote it: one ledger for every URL.
_VERSION_1 = """
PRAGMA application_id = 1111903308; PRAGMA user_version = 1;
CREATE TABLE runs (id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, outcome TEXT NOT NULL,
    url TEXT NOT NULL, boot_id TEXT, planned INTEGER NOT NULL DEFAULT 0, sent INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0, possibly_duplicated INTEGER NOT NULL DEFAULT 0,
    left_to_send INTEGER NOT NULL DEFAULT 0, message TEXT);
CREATE TABLE batches (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs (id),
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'refused', 'rejected', 'released')),
    events INTEGER NOT NULL, posted INTEGER NOT NULL DEFAULT 0, possibly_duplicated INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, settled_at TEXT, body TEXT);
CREATE TABLE ledger (entity_id TEXT NOT NULL, env TEXT NOT NULL, build_id TEXT NOT NULL,
    batch_id INTEGER NOT NULL REFERENCES batches (id), timestamp TEXT NOT NULL, source TEXT NOT NULL, message TEXT,
    PRIMARY KEY (entity_id, env, build_id)) WITHOUT ROWID;
CREATE INDEX ledger_by_batch ON ledger (batch_id);
CREATE TABLE cursors (source TEXT PRIMARY KEY, position TEXT NOT NULL, updated_at TEXT NOT NULL);
INSERT INTO runs VALUES (1, '2025-03-01T10:00:00Z', '2025-03-01T10:05:00Z', 'done', 'http://127.0.0.1:8080',
    NULL, 3, 3, 0, 0, 0, NULL);
INSERT INTO runs VALUES (2, '2025-03-02T10:00:00Z', '2025-03-02T10:05:00Z', 'refused-events',
    'https://prod.api.devgrid.io/', NULL, 3, 2, 1, 0, 0, NULL);
INSERT INTO batches VALUES (1, 1, 'sent', 3, 1, 0, '2025-03-01T10:01:00Z', '2025-03-01T10:01:01Z', NULL);
INSERT INTO batches VALUES (2, 2, 'sent', 2, 1, 1, '2025-03-02T10:01:00Z', '2025-03-02T10:01:01Z', NULL);
INSERT INTO batches VALUES (3, 2, 'rejected', 1, 1, 0, '2025-03-02T10:01:00Z', '2025-03-02T10:01:01Z', NULL);
INSERT INTO ledger VALUES ('shop', 'production', '1', 2, '2025-01-01T00:00:00Z', 'runs', NULL);
INSERT INTO ledger VALUES ('shop', 'production', '2', 2, '2025-01-02T00:00:00Z', 'runs', NULL);
INSERT INTO ledger VALUES ('shop', 'production', '3', 3, '2025-01-03T00:00:00Z', 'runs', 'Entity not found');
INSERT INTO cursors VALUES ('runs', '2025-01-02T00:00:00+00:00', '2025-03-02T10:04:59Z');
INSERT INTO cursors VALUES ('tags', '2024-12-01T00:00:00+00:00', '2025-02-01T00:00:00Z');
"""


def _version_1(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(_VERSION_1)
    db.commit()
    db.close()
    return path


def test_a_version_1_state_file_is_read_without_being_written(tmp_path: Path) -> None:
    path = _version_1(tmp_path / "state.db")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    store = Store.open(path, create=False)
    assert store is not None
    try:
        assert [(item.url, item.account) for item in store.destinations()] == [
            ("http://127.0.0.1:8080", None),
            ("https://prod.api.devgrid.io", None),
        ]
    finally:
        store.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_version_1_state_file_migrates_each_event_to_the_url_its_run_recorded(tmp_path: Path) -> None:
    path = _version_1(tmp_path / "state.db")
    store = Store.open(path, create=True)
    assert store is not None
    try:
        rehearsal, real = store.destinations()
        # The ledger rows all came from run 2, to DevGrid; the rehearsal's batch 1 had no rows left.
        assert dict(store.by_source(real.id)["runs"]) | {} == {
            "sent": 2,
            "pending": 0,
            "refused": 1,
            "held": 0,
            "possibly_duplicated": 2,
            "unconfirmed": 0,
        }
        assert store.by_source(rehearsal.id) == {}
        # The cursor moved by run 2 belongs to DevGrid; one no run accounts for is dropped.
        assert list(store.cursors(real.id)) == ["runs"] and store.cursors(rehearsal.id) == {}
        assert store.refused_events(real.id).select("build_id", "state", "message").rows() == [
            ("3", "refused", "Entity not found")
        ]
        # The first run to a URL with a key claims its destination.
        claimed = store.resolve_destination("https://prod.api.devgrid.io/events", "abc")
        assert claimed.id == real.id and claimed.account == "abc"
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (4,)
    assert {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {
        "meta",
        "destinations",
        "runs",
        "batches",
        "outgoing",
        "ledger",
        "cursors",
    }
    db.close()


def test_a_run_over_a_version_1_state_sends_only_what_the_ledger_lacks(
    write: WriteFile, receiver: LocalReceiver
) -> None:
    write("runs.csv", HEADER + runs(0, 5))
    path = config(write)
    state = path.parent / ".backfill" / "state.db"
    state.parent.mkdir()
    _version_1(state)
    db = sqlite3.connect(state)
    db.execute("UPDATE runs SET url = ?", (receiver.url,))
    db.execute("UPDATE ledger SET build_id = CAST(build_id AS INTEGER) - 1")  # builds 0, 1, 2 were sent (2 refused)
    db.commit()
    db.close()
    result, summary = send(path, receiver)
    assert result.exit_code == EXIT_OK, result.output
    assert (summary["delivery"]["already_sent"], summary["delivery"]["sent"]) == (3, 2)
    assert status(path)["sources"][0]["sent"] == 4
