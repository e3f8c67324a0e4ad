"""The state file: a thin SQLite layer for the ledger, batches, cursors and runs.

What the tables hold (the rules that use them live in :mod:`backfill.state.rules`):

* ``ledger``: one row per event key ``(entity_id, env, build_id)`` that was ever
  handed to DevGrid, pointing at the batch that carried it last.
* ``batches``: every POST body, written (with ``synchronous=FULL``) before it is
  sent. Its state is its events' state: ``pending`` (written, not answered),
  ``sent`` (201), ``rejected`` (DevGrid refused its one event; the message is in
  the ledger), ``refused`` (split into smaller batches), ``released`` (certainly
  never stored; its events were forgotten). A batch still ``pending`` when a run
  starts is one whose answer never came: it is sent again, and its events are
  flagged possibly duplicated. ``posted`` is set (without a flush) just before the
  POST: on the same boot, a pending batch never posted is certainly not stored.
* ``cursors``: per source, how far history has been read.
* ``runs``: one row per run that sends, with its counts and outcome.

The file is marked as backfill's (``PRAGMA application_id``) and versioned
(``PRAGMA user_version``); a file that is not ours, is corrupt, or comes from a
newer version raises :class:`~backfill.errors.StateError` and is left as it is.
No secret is ever written here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from backfill.columns import EVENT_KEY
from backfill.errors import StateError

APPLICATION_ID = 0x42464C4C  # "BFLL"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT NOT NULL,
    url TEXT NOT NULL,
    boot_id TEXT,
    planned INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    possibly_duplicated INTEGER NOT NULL DEFAULT 0,
    left_to_send INTEGER NOT NULL DEFAULT 0,
    message TEXT
);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'refused', 'rejected', 'released')),
    events INTEGER NOT NULL,
    posted INTEGER NOT NULL DEFAULT 0,
    possibly_duplicated INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    settled_at TEXT,
    body TEXT
);
CREATE TABLE ledger (
    entity_id TEXT NOT NULL,
    env TEXT NOT NULL,
    build_id TEXT NOT NULL,
    batch_id INTEGER NOT NULL REFERENCES batches (id),
    timestamp TEXT NOT NULL,
    source TEXT NOT NULL,
    message TEXT,
    PRIMARY KEY (entity_id, env, build_id)
) WITHOUT ROWID;
CREATE INDEX ledger_by_batch ON ledger (batch_id);
CREATE TABLE cursors (
    source TEXT PRIMARY KEY,
    position TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class EventKey:
    entity_id: str
    env: str
    build_id: str


@dataclass(frozen=True)
class OutgoingBatch:
    """A POST body, exactly as sent, and for each of its events the key, time and source."""

    body: str
    keys: tuple[EventKey, ...]
    timestamps: tuple[str, ...]
    sources: tuple[str, ...]


@dataclass(frozen=True)
class PendingBatch:
    """A batch whose POST was written ahead but whose answer was never recorded."""

    id: int
    run_id: int
    body: str
    posted: bool
    boot_id: str | None


def current_boot_id() -> str | None:
    """This boot of the machine (Linux), or None where that cannot be known."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Store:
    """An open state file. Writers hold :class:`~backfill.state.lock.StateLock` first."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, create: bool) -> Store | None:
        """Open the state file; create it only when ``create`` (a real run). None if absent."""
        exists = path.exists() and path.stat().st_size > 0
        if not exists and not create:
            return None
        if path.is_dir():
            raise StateError(f"{path}: is a folder; [state] path must name a file")
        if not exists:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot be opened ({exc}); check the path and its permissions") from exc
        store = cls(connection, path)
        try:
            store._check_or_create(exists, writable=create)
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise StateError(
                f"{path}: is not a readable backfill state file ({exc}); it was left untouched. "
                "Restore it from a backup, or point [state] path at a new file"
            ) from exc
        except StateError:
            connection.close()
            raise
        return store

    def _check_or_create(self, exists: bool, *, writable: bool) -> None:
        if exists:
            application_id = self._scalar("PRAGMA application_id")
            version = self._scalar("PRAGMA user_version")
            if application_id != APPLICATION_ID:
                raise StateError(
                    f"{self.path}: is an SQLite file but not a backfill state file; it was left untouched. "
                    "Point [state] path at a new file"
                )
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{self.path}: was written by a newer backfill (state version {version}, this one reads "
                    f"{SCHEMA_VERSION}); upgrade backfill"
                )
            if self._scalar("PRAGMA quick_check") != "ok":
                raise StateError(
                    f"{self.path}: is damaged (SQLite quick_check failed); it was left untouched. "
                    "Restore it from a backup"
                )
        if writable:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
        if not exists:
            # One transaction: a file is either a complete, marked state file or nothing of ours.
            self._db.executescript(
                f"BEGIN; PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
                f"{_SCHEMA} COMMIT;"
            )

    def close(self) -> None:
        self._db.close()

    def _scalar(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        row = self._db.execute(sql, parameters).fetchone()
        return row[0] if row else None

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; ``durable`` makes its commit reach the disk before returning.

        A write that fails (a full disk, a file made read-only) raises StateError:
        the run stops there, and what it already recorded stays consistent.
        """
        try:
            if durable:
                self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StateError(
                f"{self.path}: could not be written ({exc}); the run stopped there. Fix the cause, then run again"
            ) from exc

    # -- ledger and batches ----------------------------------------------------------------

    def known_keys(self, keys: pl.DataFrame) -> pl.DataFrame:
        """The ledger's rows for these keys (entityId, env, build_id), with their ledger_state.

        Looked up through the primary key, so the cost follows the plan, not the ledger:
        a catch-up run of a thousand events costs the same over a ledger of a million.
        """
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (entity_id TEXT, env TEXT, build_id TEXT)")
        self._db.execute("DELETE FROM temp.wanted")
        self._db.executemany("INSERT INTO temp.wanted VALUES (?, ?, ?)", keys.select(EVENT_KEY).iter_rows())
        rows = self._db.execute(
            "SELECT l.entity_id, l.env, l.build_id, b.state FROM temp.wanted AS w "
            "JOIN ledger AS l ON l.entity_id = w.entity_id AND l.env = w.env AND l.build_id = w.build_id "
            "JOIN batches AS b ON b.id = l.batch_id"
        ).fetchall()
        self._db.execute("DELETE FROM temp.wanted")
        return pl.DataFrame(
            rows,
            schema={"entityId": pl.String, "env": pl.String, "build_id": pl.String, "ledger_state": pl.String},
            orient="row",
        )

    def write_ahead(self, run_id: int, batches: Sequence[OutgoingBatch]) -> list[int]:
        """Record batches and their events as pending, durably (one flush for all), before any POST."""
        with self.transaction(durable=True) as db:
            return [self._insert_batch(db, run_id, batch) for batch in batches]

    def mark_posted(self, batch_id: int) -> None:
        """The batch is about to be POSTed (not flushed: it only matters after a process crash)."""
        with self.transaction() as db:
            db.execute("UPDATE batches SET posted = 1 WHERE id = ?", (batch_id,))

    def split(self, batch_id: int, run_id: int, parts: Sequence[OutgoingBatch]) -> list[int]:
        """Replace a refused batch by smaller ones, in one durable write: no event is left behind."""
        with self.transaction(durable=True) as db:
            db.execute(
                "UPDATE batches SET state = 'refused', settled_at = ?, body = NULL WHERE id = ?", (now_text(), batch_id)
            )
            return [self._insert_batch(db, run_id, part) for part in parts]

    def _insert_batch(self, db: sqlite3.Connection, run_id: int, batch: OutgoingBatch) -> int:
        cursor = db.execute(
            "INSERT INTO batches (run_id, state, events, created_at, body) VALUES (?, 'pending', ?, ?, ?)",
            (run_id, len(batch.keys), now_text(), batch.body),
        )
        batch_id = int(cursor.lastrowid or 0)
        db.executemany(
            "INSERT INTO ledger (entity_id, env, build_id, batch_id, timestamp, source) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (entity_id, env, build_id) DO UPDATE SET batch_id = excluded.batch_id, message = NULL",
            [
                (key.entity_id, key.env, key.build_id, batch_id, timestamp, source)
                for key, timestamp, source in zip(batch.keys, batch.timestamps, batch.sources, strict=True)
            ],
        )
        return batch_id

    def mark_sent(self, batch_id: int, possibly_duplicated: bool) -> None:
        with self.transaction() as db:
            # The body stays until forget_bodies(): freeing its pages here would slow every batch.
            db.execute(
                "UPDATE batches SET state = 'sent', settled_at = ?, possibly_duplicated = ? WHERE id = ?",
                (now_text(), int(possibly_duplicated), batch_id),
            )

    def mark_rejected(self, batch_id: int, message: str) -> None:
        """DevGrid refused the batch's one event: keep its message."""
        with self.transaction() as db:
            db.execute(
                "UPDATE batches SET state = 'rejected', settled_at = ?, body = NULL WHERE id = ?",
                (now_text(), batch_id),
            )
            db.execute("UPDATE ledger SET message = ? WHERE batch_id = ?", (message, batch_id))

    def release(self, batch_id: int) -> None:
        """The batch was certainly not stored (never sent, or refused before reading): forget it."""
        with self.transaction() as db:
            db.execute("DELETE FROM ledger WHERE batch_id = ?", (batch_id,))
            db.execute(
                "UPDATE batches SET state = 'released', settled_at = ?, body = NULL WHERE id = ?",
                (now_text(), batch_id),
            )

    def forget_bodies(self) -> None:
        """Drop the bodies of settled batches: only a pending batch's body can be needed again."""
        with self.transaction() as db:
            db.execute("UPDATE batches SET body = NULL WHERE state <> 'pending' AND body IS NOT NULL")

    def pending_batches(self) -> list[PendingBatch]:
        rows = self._db.execute(
            "SELECT b.id, b.run_id, b.body, b.posted, r.boot_id FROM batches AS b JOIN runs AS r ON r.id = b.run_id "
            "WHERE b.state = 'pending' ORDER BY b.id"
        ).fetchall()
        return [
            PendingBatch(id=row[0], run_id=row[1], body=row[2], posted=bool(row[3]), boot_id=row[4]) for row in rows
        ]

    def rejected_events(self) -> pl.DataFrame:
        rows = self._db.execute(
            "SELECT l.entity_id, l.env, l.build_id, l.timestamp, l.source, b.settled_at, l.message FROM ledger AS l "
            "JOIN batches AS b ON b.id = l.batch_id WHERE b.state = 'rejected' "
            "ORDER BY l.timestamp, l.entity_id, l.env, l.build_id"
        ).fetchall()
        return pl.DataFrame(
            rows,
            schema=dict.fromkeys(("entityId", "env", "build_id", "timestamp", "source", "at", "message"), pl.String),
            orient="row",
        )

    def forget_rejected(self) -> int:
        """Let events DevGrid refused be planned again (after the data was fixed)."""
        with self.transaction() as db:
            return db.execute(
                "DELETE FROM ledger WHERE batch_id IN (SELECT id FROM batches WHERE state = 'rejected')"
            ).rowcount

    # -- cursors -----------------------------------------------------------------------------

    def cursors(self) -> dict[str, datetime]:
        rows = self._db.execute("SELECT source, position FROM cursors").fetchall()
        return {source: datetime.fromisoformat(position) for source, position in rows}

    def set_cursors(self, positions: dict[str, datetime]) -> None:
        at = now_text()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO cursors (source, position, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (source) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                [(source, position.isoformat(), at) for source, position in positions.items()],
            )

    def rewind(self, source: str, position: datetime | None) -> None:
        with self.transaction() as db:
            if position is None:
                db.execute("DELETE FROM cursors WHERE source = ?", (source,))
            else:
                db.execute(
                    "INSERT INTO cursors (source, position, updated_at) VALUES (?, ?, ?) ON CONFLICT (source) "
                    "DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                    (source, position.isoformat(), now_text()),
                )

    # -- runs and reports --------------------------------------------------------------------

    def start_run(self, url: str, boot_id: str | None) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (started_at, outcome, url, boot_id) VALUES (?, 'running', ?, ?)",
                (now_text(), url, boot_id),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, outcome: str, counts: dict[str, int], message: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, planned = ?, sent = ?, rejected = ?, "
                "possibly_duplicated = ?, left_to_send = ?, message = ? WHERE id = ?",
                (
                    now_text(),
                    outcome,
                    counts.get("planned", 0),
                    counts.get("sent", 0),
                    counts.get("rejected", 0),
                    counts.get("possibly_duplicated", 0),
                    counts.get("left_to_send", 0),
                    message,
                    run_id,
                ),
            )

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        cursor = self._db.execute(
            "SELECT id, started_at, finished_at, outcome, url, planned, sent, rejected, possibly_duplicated, "
            "left_to_send, message FROM runs ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def sent_by_source(self) -> dict[str, dict[str, int]]:
        rows = self._db.execute(
            "SELECT l.source, b.state, count(*), sum(b.possibly_duplicated) FROM ledger AS l "
            "JOIN batches AS b ON b.id = l.batch_id GROUP BY l.source, b.state"
        ).fetchall()
        result: dict[str, dict[str, int]] = {}
        for source, state, count, flagged in rows:
            entry = result.setdefault(source, {"sent": 0, "pending": 0, "rejected": 0, "possibly_duplicated": 0})
            entry[state] = count
            entry["possibly_duplicated"] += flagged or 0
        return result

    def sent_ranges(self) -> list[dict[str, Any]]:
        cursor = self._db.execute(
            "SELECT l.entity_id, l.env, min(l.timestamp), max(l.timestamp), count(*) FROM ledger AS l "
            "JOIN batches AS b ON b.id = l.batch_id WHERE b.state = 'sent' "
            "GROUP BY l.entity_id, l.env ORDER BY l.entity_id, l.env"
        )
        return [
            {"entityId": entity, "env": env, "first": first, "last": last, "sent": count}
            for entity, env, first, last, count in cursor.fetchall()
        ]

    def possibly_duplicated(self) -> list[EventKey]:
        rows = self._db.execute(
            "SELECT l.entity_id, l.env, l.build_id FROM ledger AS l JOIN batches AS b ON b.id = l.batch_id "
            "WHERE b.possibly_duplicated = 1 ORDER BY l.timestamp, l.entity_id, l.env, l.build_id"
        ).fetchall()
        return [EventKey(*row) for row in rows]
