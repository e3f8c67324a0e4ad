"""The state file's tables, how a new file comes into being, and how an older one is brought up to date.

A new state file exists complete or not at all: it is built under a temporary
name in the same folder, flushed, and then linked into place, which fails
rather than overwrite anything that appeared there meanwhile. A kill at any
instant leaves either no state file or a complete one (and perhaps a stray
``.state.db.new-*`` file, which is never read).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path

from backfill.state.destination import normalize_url

APPLICATION_ID = 0x42464C4C  # "BFLL"
SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE destinations (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    account TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (url, account)
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
    settled_at TEXT
);
CREATE INDEX batches_pending ON batches (state) WHERE state = 'pending';
CREATE TABLE outgoing (
    batch_id INTEGER PRIMARY KEY REFERENCES batches (id),
    body TEXT NOT NULL,
    keys TEXT NOT NULL,
    refused TEXT
);
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
CREATE TABLE cursors (
    destination_id INTEGER NOT NULL REFERENCES destinations (id),
    source TEXT NOT NULL,
    position TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (destination_id, source)
);
"""


# Version 2's tables, as version 1's are first brought to (then on to this version).
SCHEMA_2 = """
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE destinations (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    account TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (url, account)
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


def create_file(path: Path) -> None:
    """Build a complete state file at ``path`` (0600), or leave nothing there. Raises OSError, sqlite3.Error."""
    temporary = path.with_name(f".{path.name}.new-{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(descriptor)
    try:
        db = sqlite3.connect(temporary, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(
                f"BEGIN; PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
                f"{SCHEMA} COMMIT;"
            )
            db.execute("INSERT INTO meta (name, value) VALUES ('salt', ?)", (secrets.token_bytes(16),))
        finally:
            db.close()
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.link(temporary, path)  # never replaces a file that is already there
        _sync_folder(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring a state file of an older version up to this one, step by step, in one transaction."""
    steps: list[str] = []
    if version == 1:
        db.create_function("normalize_url", 1, normalize_url, deterministic=True)
        steps += (_RENAME_1, SCHEMA_2.replace("CREATE TABLE meta", "CREATE TABLE IF NOT EXISTS meta"), _COPY_1)
        # The salt in the same transaction: a kill can leave the old file or the new one, never one without it.
        steps.append("INSERT OR IGNORE INTO meta (name, value) VALUES ('salt', randomblob(16));")
    if version <= 2:
        steps.append(_FROM_2)
    if version <= 3:
        steps.append(_FROM_3)
    if steps:
        db.executescript("\n".join(("BEGIN;", *steps, f"PRAGMA user_version = {SCHEMA_VERSION};", "COMMIT;")))


# Version 1 kept one ledger for every URL. Its events belong to the URL their runs recorded; the
# account was not recorded, so the next run to that URL claims it. A cursor belongs to the run that
# moved it (it was written just before that run finished); one no run can be found for is dropped,
# which only makes the next run read more (the ledger absorbs the overlap).
_RENAME_1 = """
ALTER TABLE runs RENAME TO runs_1;
ALTER TABLE batches RENAME TO batches_1;
ALTER TABLE ledger RENAME TO ledger_1;
ALTER TABLE cursors RENAME TO cursors_1;
DROP INDEX IF EXISTS ledger_by_batch;
"""
_COPY_1 = """
INSERT INTO destinations (url, account, created_at)
    SELECT normalize_url(url), NULL, min(started_at) FROM runs_1 GROUP BY normalize_url(url);
INSERT INTO runs (id, destination_id, started_at, finished_at, outcome, url, boot_id, planned, sent, rejected,
                  possibly_duplicated, left_to_send, message)
    SELECT r.id, d.id, r.started_at, r.finished_at, r.outcome, r.url, r.boot_id, r.planned, r.sent, r.rejected,
           r.possibly_duplicated, r.left_to_send, r.message
    FROM runs_1 AS r JOIN destinations AS d ON d.url = normalize_url(r.url);
INSERT INTO batches (id, run_id, state, events, posts, possibly_duplicated, created_at, settled_at, body)
    SELECT id, run_id,
           CASE state WHEN 'sent' THEN 'answered' WHEN 'rejected' THEN 'answered' WHEN 'refused' THEN 'split'
                      ELSE state END,
           events, posted, possibly_duplicated, created_at, settled_at, body
    FROM batches_1;
INSERT INTO ledger (destination_id, entity_id, env, build_id, state, batch_id, timestamp, source, message)
    SELECT r.destination_id, l.entity_id, l.env, l.build_id,
           CASE b.state WHEN 'sent' THEN 'sent' WHEN 'rejected' THEN 'refused' ELSE 'pending' END,
           l.batch_id, l.timestamp, l.source, l.message
    FROM ledger_1 AS l JOIN batches_1 AS b ON b.id = l.batch_id JOIN runs AS r ON r.id = b.run_id
    WHERE b.state <> 'released';
INSERT INTO cursors (destination_id, source, position, updated_at)
    SELECT (SELECT r.destination_id FROM runs AS r
            WHERE r.started_at <= c.updated_at AND (r.finished_at IS NULL OR c.updated_at <= r.finished_at)
            ORDER BY r.id DESC LIMIT 1),
           c.source, c.position, c.updated_at
    FROM cursors_1 AS c WHERE EXISTS (
        SELECT 1 FROM runs AS r
        WHERE r.started_at <= c.updated_at AND (r.finished_at IS NULL OR c.updated_at <= r.finished_at));
DROP TABLE ledger_1;
DROP TABLE cursors_1;
DROP TABLE batches_1;
DROP TABLE runs_1;
"""

# Version 2 wrote a ledger row per event ahead of its POST (state 'pending'), kept the body in the
# batch's row, and updated both on the answer. Version 3 writes ahead one row per batch in
# ``outgoing`` (the body and its events' keys, times and sources), and the ledger rows once, when the
# answer comes; a batch's own row stays small, so that marking it posted or answered rewrites only
# that. A batch version 2 left pending (a run killed with batches in flight) keeps its posts; its
# body and its events' rows move into ``outgoing``, so that it is sent again and recorded exactly
# as the batches version 3 leaves pending. Settled batches' bodies are dropped, as every run ends.
_FROM_2 = """
CREATE TABLE outgoing (
    batch_id INTEGER PRIMARY KEY REFERENCES batches (id),
    body TEXT NOT NULL,
    keys TEXT NOT NULL
);
INSERT INTO outgoing (batch_id, body, keys)
    SELECT b.id, b.body,
           (SELECT json_group_array(json_array(l.entity_id, l.env, l.build_id, l.timestamp, l.source))
            FROM ledger AS l WHERE l.batch_id = b.id AND l.state = 'pending')
    FROM batches AS b WHERE b.state = 'pending' AND b.body IS NOT NULL;
DELETE FROM ledger WHERE state = 'pending' AND batch_id IN (SELECT batch_id FROM outgoing);
DROP INDEX IF EXISTS ledger_by_batch;
ALTER TABLE batches DROP COLUMN body;
"""

# Version 3 wrote an answered batch's ledger rows in the commit that recorded its answer, and kept
# its ``outgoing`` row until the run ended. Version 4 records the answer in the batch's row alone
# (and which events DevGrid refused, with its reasons, in ``outgoing.refused``); the ledger rows
# follow in bulk, with the next write ahead, and the ``outgoing`` row goes with them. An answered
# batch that still has an ``outgoing`` row is one whose ledger rows are not written yet, so the
# settled batches' rows version 3 kept (their ledger rows are written) are dropped.
_FROM_3 = """
DELETE FROM outgoing WHERE batch_id IN (SELECT id FROM batches WHERE state <> 'pending');
ALTER TABLE outgoing ADD COLUMN refused TEXT;
"""
