"""The state file: a thin SQLite layer for destinations, the ledger, batches, cursors and runs.

What the tables hold (the rules that use them live in :mod:`backfill.state.rules`):

* ``destinations``: where events went, a normalized DevGrid URL and an account
  fingerprint (:mod:`backfill.state.destination`). Everything below belongs to
  one destination: a rehearsal never changes what a run to DevGrid sends.
* ``ledger``: one row per event key ``(entity_id, env, build_id)`` whose
  outcome is known at that destination (once its batch's answer is recorded,
  written in bulk; see below): ``sent`` (DevGrid listed it in
  ``success``, or answered 201 with a body that could not be matched: then its
  batch is *unconfirmed*), ``refused`` (DevGrid refused it, with DevGrid's
  reason) or ``held`` (never sent, because DevGrid does not know its entity).
* ``batches``: every POST, written (with ``synchronous=FULL``) before it is
  sent: ``pending`` (written, not answered), ``answered``, ``split`` (replaced
  by smaller batches) or ``released`` (certainly never stored; its events were
  forgotten). ``posts`` counts the POSTs of the body that may have reached
  DevGrid; a batch still pending with ``posts > 0`` when a run starts is one
  whose answer never came: it is sent again, and its events are flagged
  possibly duplicated.
* ``outgoing``: the body of a batch, exactly as sent, and its events' keys,
  times and sources (``keys``, JSON), written in the same transaction as the
  batch; once DevGrid answers, which events it refused and why (``refused``,
  JSON, one entry per event, null for a stored one). Kept until the batch's
  events have their ledger rows.
* ``cursors``: per destination and source, how far history has been read.
* ``runs``: one row per run that sends, with its counts and outcome.

An event in flight is one row, its batch's ``outgoing`` row. DevGrid's answer
is recorded in the batch's row alone (and its refusals in ``outgoing``), as a
rule in one commit with the next batch's posted mark; the events' ledger rows
are written later in bulk, with the next write ahead or at the end of the run,
and the ``outgoing`` row is dropped with them. Every reader sees the events of
a pending batch as the ledger's ``pending`` state and those of an answered
batch as ``sent`` or ``refused`` (the view ``unrecorded``, read beside the
ledger), exactly as if each had a row of its own: a kill at any instant changes
nothing anyone reads.

The file is marked as backfill's (``PRAGMA application_id``) and versioned
(``PRAGMA user_version``); a file that is not ours, is empty, corrupt, or comes
from a newer version raises :class:`~backfill.errors.StateError` and is left as
it is. No secret is ever written here.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import polars as pl

from backfill.errors import DestinationError, StateError
from backfill.model import EVENT_KEY, BatchState, EventKey, instant
from backfill.state.destination import normalize_url
from backfill.state.schema import APPLICATION_ID, SCHEMA_VERSION, create_file, migrate

KeyChange = Literal["same-account", "new-account"]


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
    posts: int
    boot_id: str | None
    sources: dict[EventKey, str] = field(default_factory=dict, compare=False)  # each event's source


@dataclass(frozen=True)
class Destination:
    id: int
    url: str
    account: str | None


def _settled(cursor: sqlite3.Cursor, batch_id: int, state: BatchState) -> None:
    """Settled states are final (:func:`backfill.state.rules.batch_after`): only a pending batch settles."""
    if cursor.rowcount != 1:
        raise StateError(
            f"batch {batch_id} is not pending, so it cannot be {state}; the state file was changed meanwhile"
        )


def current_boot_id() -> str | None:
    """This boot of the machine (Linux), or None where that cannot be known."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def state_folder_problem(path: Path) -> str | None:
    """Why backfill cannot write beside the state file, in words, or None."""
    folder = path.parent
    if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"{path}: backfill cannot write in {folder}, the state file's folder (no permission, or a read-only "
            "file system); make it writable, or point [state] path at a folder that is"
        )
    return None


P = ParamSpec("P")
R = TypeVar("R")


def _reads(method: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], R]:
    """A read that meets a damaged page is a StateError naming the file, never a traceback.

    Opening checks the file's header and schema, not every page (that would cost a
    read of the whole history on every run); SQLite finds a damaged page when a
    statement touches it, and writes report it through :meth:`Store.transaction`.
    """

    @wraps(method)
    def reading(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(store, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"{store.path}: could not be read ({exc}); it was left untouched. "
                "Run backfill status to check it; restore it from a backup if it is damaged"
            ) from exc

    return reading


class Store:
    """An open state file. Writers hold :class:`~backfill.state.lock.StateLock` first."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        # Writes that go with the next transaction, whatever it is (see record_answer's ``later``).
        self._later: list[Callable[[sqlite3.Connection], None]] = []

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, create: bool, write: bool = False, verify: bool = False) -> Store | None:
        """Open the state file to write (``create``: made if absent; ``write``: only if it exists) or to read.

        None if it is absent and not created. A file opened only to read is never
        written: one from an older version is brought up to date in memory.
        ``verify`` reads every page (SQLite's quick_check), as ``backfill status`` does.
        """
        path = path.resolve()
        if path.is_dir():
            raise StateError(f"{path}: is a folder; [state] path must name a file")
        if not path.exists():
            if not create:
                return None
            _create(path)
        elif path.stat().st_size == 0:
            raise StateError(
                f"{path}: is empty, so it is not a backfill state file; it was left untouched. "
                "Restore it from a backup, or remove it to start a new state (the next run then sends all history)"
            )
        writable = create or write
        connection = _connect(path, writable=writable)
        store = cls(connection, path)
        try:
            store._check(writable=writable, verify=verify)
        except sqlite3.DatabaseError as exc:
            store.close()
            raise _open_error(path, exc, writable=writable) from exc
        except BaseException:
            store.close()
            raise
        return store

    def _check(self, *, writable: bool, verify: bool) -> None:
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
        self._scalar("SELECT count(*) FROM sqlite_master")  # the schema pages, at least, must read
        if verify and self._scalar("PRAGMA quick_check") != "ok":
            raise StateError(
                f"{self.path}: is damaged (SQLite quick_check failed); it was left untouched. Restore it from a backup"
            )
        if writable:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
        if version < SCHEMA_VERSION:
            if not writable:
                memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                self._db.backup(memory)
                self._db.close()
                self._db = memory
            migrate(self._db, version)
        self._db.execute(_UNRECORDED)

    def close(self) -> None:
        self._db.close()

    @property
    @_reads
    def salt(self) -> bytes:
        value = self._scalar("SELECT value FROM meta WHERE name = 'salt'")
        if not isinstance(value, bytes):
            raise StateError(
                f"{self.path}: is missing its account salt; it was left untouched. Restore it from a backup"
            )
        return value

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
            try:
                self._db.execute("BEGIN IMMEDIATE")
                later, self._later = self._later, []
                try:
                    for write in later:
                        write(self._db)
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    self._later = later + self._later
                    raise
                else:
                    self._db.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StateError(_write_problem(self.path, exc)) from exc

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads that all see one moment of the file, whatever a run writes to it meanwhile."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    # -- destinations ----------------------------------------------------------------------

    @_reads
    def destinations(self) -> list[Destination]:
        rows = self._db.execute("SELECT id, url, account FROM destinations ORDER BY id").fetchall()
        return [Destination(*row) for row in rows]

    def find_destination(self, url: str, account: str | None) -> Destination | None:
        """The destination a run to ``url`` with this account would use (any account if None and only one)."""
        url = normalize_url(url)
        candidates = [item for item in self.destinations() if item.url == url]
        if account is not None:
            exact = [item for item in candidates if item.account in (account, None)]
            return exact[0] if exact else None
        return candidates[0] if len(candidates) == 1 else None

    def resolve_destination(self, url: str, account: str, key_change: KeyChange | None = None) -> Destination:
        """The destination for this URL and account, made on first use. A new key for a known URL needs a word."""
        url = normalize_url(url)
        same_url = [item for item in self.destinations() if item.url == url]
        for item in same_url:
            if item.account == account:
                return item
        # A destination whose ledger is empty (a run whose key DevGrid refused) is anyone's to claim.
        unclaimed = [item for item in same_url if item.account is None or not self._holds_events(item.id)]
        others = [item for item in same_url if item not in unclaimed]
        with self.transaction() as db:
            if unclaimed:
                db.execute("UPDATE destinations SET account = ? WHERE id = ?", (account, unclaimed[0].id))
                return Destination(unclaimed[0].id, url, account)
            if others and key_change is None:
                raise DestinationError(
                    f"{self.path}: holds events sent to {url} with another API key. If this key belongs to the "
                    "same DevGrid account (a rotated key), run again with --key-changed same-account; if it is "
                    "another account, with --key-changed new-account (all history is then sent to it)"
                )
            if others and key_change == "same-account":
                if len(others) > 1:
                    raise DestinationError(
                        f"{self.path}: holds events sent to {url} with {len(others)} other API keys; "
                        "--key-changed same-account cannot tell which account this key belongs to"
                    )
                db.execute("UPDATE destinations SET account = ? WHERE id = ?", (account, others[0].id))
                return Destination(others[0].id, url, account)
            cursor = db.execute(
                "INSERT INTO destinations (url, account, created_at) VALUES (?, ?, ?)", (url, account, now_text())
            )
            return Destination(int(cursor.lastrowid or 0), url, account)

    @_reads
    def _holds_events(self, destination_id: int) -> bool:
        return self._scalar(_HOLDS_EVENTS, (destination_id, destination_id)) is not None

    # -- ledger and batches ----------------------------------------------------------------

    @_reads
    def known_keys(self, destination_id: int, keys: pl.DataFrame) -> pl.DataFrame:
        """The ledger's rows for these keys (entityId, env, build_id), with their ledger_state.

        Looked up through the primary key, so the cost follows the plan, not the ledger:
        a catch-up run of a thousand events costs the same over a ledger of a million.
        """
        self._db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS wanted (entity_id TEXT, env TEXT, build_id TEXT, "
            "PRIMARY KEY (entity_id, env, build_id)) WITHOUT ROWID"
        )
        self._db.execute("DELETE FROM temp.wanted")
        self._db.executemany("INSERT OR IGNORE INTO temp.wanted VALUES (?, ?, ?)", keys.select(EVENT_KEY).iter_rows())
        rows = self._db.execute(KNOWN_KEYS, (destination_id, destination_id)).fetchall()
        self._db.execute("DELETE FROM temp.wanted")
        schema = {"entityId": pl.String, "env": pl.String, "build_id": pl.String, "ledger_state": pl.String}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def write_ahead(self, run_id: int, destination_id: int, batches: Sequence[OutgoingBatch]) -> list[int]:
        """Record batches and their events as pending, durably (one flush for all), before any POST.

        The same flush writes the ledger rows of the batches answered since the last one.
        """
        with self.transaction(durable=True) as db:
            _write_ledger_rows(db)
            return [self._insert_batch(db, run_id, batch) for batch in batches]

    def mark_posted(self, batch_id: int, *, durable: bool = False) -> None:
        """The batch is about to be POSTed once more.

        For a first POST the mark is not flushed (it only matters after a process
        crash, and the boot id covers a machine crash). A batch sent again after an
        answer that never came is marked durably, so that a state file that can no
        longer be written stops the run before the body goes out another time.
        """
        with self.transaction(durable=durable) as db:
            db.execute("UPDATE batches SET posts = posts + 1 WHERE id = ?", (batch_id,))

    def split(
        self,
        batch_id: int,
        run_id: int,
        destination_id: int,
        parts: Sequence[OutgoingBatch],
        *,
        maybe_stored: bool = False,
    ) -> list[int]:
        """Replace a refused batch by smaller ones, in one durable write: no event is left behind.

        Parts of a batch an earlier POST may have stored count as posted already, so
        that a part left pending is settled as possibly duplicated.
        """
        with self.transaction(durable=True) as db:
            _settled(
                db.execute(
                    "UPDATE batches SET state = 'split', settled_at = ? WHERE id = ? AND state = 'pending'",
                    (now_text(), batch_id),
                ),
                batch_id,
                "split",
            )
            db.execute("DELETE FROM outgoing WHERE batch_id = ?", (batch_id,))
            ids = [self._insert_batch(db, run_id, part) for part in parts]
            if maybe_stored:
                db.executemany("UPDATE batches SET posts = 1 WHERE id = ?", [(part_id,) for part_id in ids])
        return ids

    @staticmethod
    def _insert_batch(db: sqlite3.Connection, run_id: int, batch: OutgoingBatch) -> int:
        """One row for the batch and its events; the events' ledger rows wait for the answer."""
        events = [
            (key.entity_id, key.env, key.build_id, timestamp, source)
            for key, timestamp, source in zip(batch.keys, batch.timestamps, batch.sources, strict=True)
        ]
        cursor = db.execute(
            "INSERT INTO batches (run_id, state, events, created_at) VALUES (?, 'pending', ?, ?)",
            (run_id, len(events), now_text()),
        )
        batch_id = int(cursor.lastrowid or 0)
        db.execute(
            "INSERT INTO outgoing (batch_id, body, keys) VALUES (?, ?, ?)",
            (batch_id, batch.body, json.dumps(events, separators=(",", ":"))),
        )
        return batch_id

    def record_answer(
        self,
        batch_id: int,
        refused: Sequence[tuple[EventKey, str]] = (),
        *,
        possibly_duplicated: bool = False,
        unconfirmed: bool = False,
        later: bool = False,
    ) -> None:
        """DevGrid answered the batch: its events are sent, except those it refused (with its reason).

        ``later`` writes it with the next transaction (the mark of the next batch's POST, as a
        rule), one commit for the two: the caller makes sure nothing waits in between
        (:meth:`flush`), so that a crash loses no more answers than it would otherwise.
        """

        def write(db: sqlite3.Connection) -> None:
            _settled(
                db.execute(
                    "UPDATE batches SET state = 'answered', settled_at = ?, possibly_duplicated = ?, unconfirmed = ? "
                    "WHERE id = ? AND state = 'pending'",
                    (now_text(), int(possibly_duplicated), int(unconfirmed), batch_id),
                ),
                batch_id,
                "answered",
            )
            if refused:
                _record_refusals(db, batch_id, refused)

        if later:
            self._later.append(write)
            return
        with self.transaction() as db:
            write(db)

    def flush(self) -> None:
        """Commit the writes left for the next transaction, if any."""
        if self._later:
            with self.transaction():
                pass

    def hold(
        self,
        destination_id: int,
        keys: Sequence[EventKey],
        timestamps: Sequence[str],
        sources: Sequence[str],
        message: str,
    ) -> None:
        """Record events never sent because DevGrid does not know their entity (``--retry-rejected`` sends them)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO ledger (destination_id, entity_id, env, build_id, state, batch_id, timestamp, source, "
                "message) VALUES (?, ?, ?, ?, 'held', NULL, ?, ?, ?) "
                "ON CONFLICT (destination_id, entity_id, env, build_id) "
                "DO UPDATE SET state = 'held', batch_id = NULL, message = excluded.message",
                [
                    (destination_id, key.entity_id, key.env, key.build_id, timestamp, source, message)
                    for key, timestamp, source in zip(keys, timestamps, sources, strict=True)
                ],
            )

    def release(self, batch_id: int) -> None:
        """The batch was certainly not stored (never sent, or refused before reading): forget it."""
        with self.transaction() as db:
            # Its events have no ledger row yet: with the batch, they are forgotten.
            _settled(
                db.execute(
                    "UPDATE batches SET state = 'released', settled_at = ? WHERE id = ? AND state = 'pending'",
                    (now_text(), batch_id),
                ),
                batch_id,
                "released",
            )
            db.execute("DELETE FROM outgoing WHERE batch_id = ?", (batch_id,))

    def write_ledger_rows(self) -> None:
        """Write the ledger rows of every answered batch (and drop their bodies), as a run ends."""
        with self.transaction() as db:
            _write_ledger_rows(db)

    @_reads
    def pending_batches(self, destination_id: int | None = None) -> list[PendingBatch]:
        rows = self._db.execute(
            "SELECT b.id, b.run_id, o.body, b.posts, r.boot_id, o.keys FROM batches AS b "
            "JOIN runs AS r ON r.id = b.run_id JOIN outgoing AS o ON o.batch_id = b.id "
            "WHERE b.state = 'pending' AND (? IS NULL OR r.destination_id = ?) ORDER BY b.id",
            (destination_id, destination_id),
        ).fetchall()
        return [
            PendingBatch(
                id=row[0],
                run_id=row[1],
                body=row[2],
                posts=row[3],
                boot_id=row[4],
                sources={EventKey(*event[:3]): event[4] for event in json.loads(row[5] or "[]")},
            )
            for row in rows
        ]

    @_reads
    def refused_events(self, destination_id: int) -> pl.DataFrame:
        """Events DevGrid refused, and those held back because it does not know their entity."""
        rows = self._db.execute(_REFUSED_EVENTS, (destination_id, destination_id)).fetchall()
        return pl.DataFrame(
            rows,
            schema=dict.fromkeys(("entityId", "env", "build_id", "timestamp", "source", "state", "message"), pl.String),
            orient="row",
        )

    def forget_refused(self, destination_id: int) -> int:
        """Let events DevGrid refused (or that were held back) be planned again, after the cause was fixed."""
        with self.transaction() as db:
            _write_ledger_rows(db)
            return db.execute(
                "DELETE FROM ledger WHERE destination_id = ? AND state IN ('refused', 'held')", (destination_id,)
            ).rowcount

    # -- cursors -----------------------------------------------------------------------------

    @_reads
    def cursors(self, destination_id: int) -> dict[str, datetime]:
        rows = self._db.execute(
            "SELECT source, position FROM cursors WHERE destination_id = ?", (destination_id,)
        ).fetchall()
        return {source: instant(position) for source, position in rows}

    def set_cursors(self, destination_id: int, positions: dict[str, datetime]) -> None:
        at = now_text()
        with self.transaction() as db:
            db.executemany(
                _SET_CURSOR,
                [(destination_id, source, position.isoformat(), at) for source, position in positions.items()],
            )

    def rewind(self, source: str, position: datetime | None, destination_ids: Sequence[int]) -> None:
        with self.transaction() as db:
            for destination_id in destination_ids:
                if position is None:
                    db.execute("DELETE FROM cursors WHERE destination_id = ? AND source = ?", (destination_id, source))
                else:
                    db.execute(_SET_CURSOR, (destination_id, source, position.isoformat(), now_text()))

    # -- runs and reports --------------------------------------------------------------------

    def start_run(self, destination_id: int, url: str, boot_id: str | None) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (destination_id, started_at, outcome, url, boot_id) VALUES (?, ?, 'running', ?, ?)",
                (destination_id, now_text(), url, boot_id),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, outcome: str, counts: dict[str, int], message: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, message = ?, planned = ?, sent = ?, rejected = ?, "
                "held = ?, unconfirmed = ?, possibly_duplicated = ?, left_to_send = ? WHERE id = ?",
                (
                    now_text(),
                    outcome,
                    message,
                    *(counts.get(name, 0) for name in RUN_COUNTS),
                    run_id,
                ),
            )

    @_reads
    def recent_runs(self, destination_id: int, limit: int = 10) -> list[dict[str, Any]]:
        cursor = self._db.execute(
            "SELECT id, started_at, finished_at, outcome, url, planned, sent, rejected, held, unconfirmed, "
            "possibly_duplicated, left_to_send, message FROM runs WHERE destination_id = ? ORDER BY id DESC LIMIT ?",
            (destination_id, limit),
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @_reads
    def by_source(self, destination_id: int) -> dict[str, dict[str, int]]:
        rows = self._db.execute(_BY_SOURCE, (destination_id, destination_id)).fetchall()
        result: dict[str, dict[str, int]] = {}
        for source, state, count, flagged, unconfirmed in rows:
            entry = result.setdefault(source, dict.fromkeys(SOURCE_COUNTS, 0))
            entry[state] = count
            if state == "sent":
                entry["possibly_duplicated"] += flagged
                entry["unconfirmed"] += unconfirmed
        return result

    @_reads
    def sent_ranges(self, destination_id: int) -> list[dict[str, Any]]:
        cursor = self._db.execute(_SENT_RANGES, (destination_id, destination_id))
        return [
            {"entityId": entity, "env": env, "first": first, "last": last, "sent": count}
            for entity, env, first, last, count in cursor.fetchall()
        ]

    @_reads
    def flagged(self, destination_id: int, flag: Literal["possibly_duplicated", "unconfirmed"]) -> list[EventKey]:
        """Sent events whose batch carries the flag: possibly stored twice, or sent on an answer not understood."""
        rows = self._db.execute(_FLAGGED[flag], (destination_id, destination_id)).fetchall()
        return [EventKey(*row) for row in rows]


# The events of the batches whose ledger rows are not written yet, as ledger rows: ``pending`` while
# the batch is, then ``sent`` or ``refused`` (with DevGrid's reason) as its answer says. A view of
# this connection alone (in ``temp``, so that opening a file to read writes nothing); every reader
# reads it beside the ledger (:func:`_combined`). The few ``outgoing`` rows are read first: CROSS
# JOIN keeps SQLite from walking every batch ever sent.
_UNRECORDED = """CREATE TEMP VIEW IF NOT EXISTS unrecorded AS
    SELECT r.destination_id AS destination_id,
           json_extract(e.value, '$[0]') AS entity_id,
           json_extract(e.value, '$[1]') AS env,
           json_extract(e.value, '$[2]') AS build_id,
           CASE WHEN b.state = 'pending' THEN 'pending'
                WHEN json_extract(o.refused, '$[' || e.key || ']') IS NULL THEN 'sent'
                ELSE 'refused' END AS state,
           b.id AS batch_id,
           json_extract(e.value, '$[3]') AS timestamp,
           json_extract(e.value, '$[4]') AS source,
           json_extract(o.refused, '$[' || e.key || ']') AS message
    FROM main.outgoing AS o CROSS JOIN main.batches AS b ON b.id = o.batch_id
         CROSS JOIN main.runs AS r ON r.id = b.run_id CROSS JOIN json_each(o.keys) AS e
    WHERE b.state IN ('pending', 'answered')"""
# The ledger's rows for the wanted keys, then the events of batches whose ledger rows are not
# written yet (an event is planned only when the ledger holds no row for it, so these have none):
# one statement, so that a run writing its ledger rows meanwhile cannot hide a key from both.
# CROSS JOIN: the planned keys first, each looked up in the ledger, never the ledger walked for them.
KNOWN_KEYS = (
    "SELECT l.entity_id, l.env, l.build_id, l.state FROM temp.wanted AS w CROSS JOIN ledger AS l "
    "ON l.destination_id = ? AND l.entity_id = w.entity_id AND l.env = w.env AND l.build_id = w.build_id "
    "UNION ALL "
    "SELECT DISTINCT u.entity_id, u.env, u.build_id, u.state FROM temp.unrecorded AS u "
    "CROSS JOIN temp.wanted AS w ON w.entity_id = u.entity_id AND w.env = u.env AND w.build_id = u.build_id "
    "WHERE u.destination_id = ?"
)
# A key is sent only when the ledger holds no row for it (--retry-rejected forgets refused and held
# ones first); should one be there all the same, the answer, being the newer outcome, replaces it.
_WRITE_LEDGER_ROWS = (
    "INSERT INTO ledger (destination_id, entity_id, env, build_id, state, batch_id, timestamp, source, message) "
    "SELECT destination_id, entity_id, env, build_id, state, batch_id, timestamp, source, message "
    "FROM temp.unrecorded WHERE state <> 'pending' "
    "ON CONFLICT (destination_id, entity_id, env, build_id) DO UPDATE SET "
    "state = excluded.state, batch_id = excluded.batch_id, timestamp = excluded.timestamp, "
    "source = excluded.source, message = excluded.message"
)


def _write_ledger_rows(db: sqlite3.Connection) -> None:
    """The ledger rows of every answered batch, in bulk; the ``outgoing`` rows they came from go with them."""
    db.execute(_WRITE_LEDGER_ROWS)
    db.execute(
        "DELETE FROM outgoing WHERE batch_id IN "
        "(SELECT DISTINCT batch_id FROM temp.unrecorded WHERE state <> 'pending')"
    )


def _record_refusals(db: sqlite3.Connection, batch_id: int, refused: Sequence[tuple[EventKey, str]]) -> None:
    """Which events of the batch DevGrid refused, and why: one entry per event, in the batch's order."""
    row = db.execute("SELECT keys FROM outgoing WHERE batch_id = ?", (batch_id,)).fetchone()
    if row is None:
        raise StateError(f"batch {batch_id} has no events recorded to answer for; the state file was changed meanwhile")
    (keys,) = row
    reasons = {(key.entity_id, key.env, key.build_id): message for key, message in refused}
    entries = [reasons.get((event[0], event[1], event[2])) for event in json.loads(keys)]
    db.execute("UPDATE outgoing SET refused = ? WHERE batch_id = ?", (json.dumps(entries), batch_id))


_SET_CURSOR = (
    "INSERT INTO cursors (destination_id, source, position, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (destination_id, source) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at"
)
RUN_COUNTS = ("planned", "sent", "rejected", "held", "unconfirmed", "possibly_duplicated", "left_to_send")


def _combined(outer: str, part: str) -> str:
    """``outer`` over ``{parts}``: ``part`` over the ledger's rows, and then over those not written yet.

    Each part keeps its own plan (a view over both would make SQLite copy a million-row
    ledger before grouping it); ``outer`` combines the parts' rows.
    """
    parts = " UNION ALL ".join(part.replace("{rows}", rows) for rows in ("main.ledger", "temp.unrecorded"))
    return outer.replace("{parts}", parts)


_HOLDS_EVENTS = _combined("SELECT 1 FROM ({parts}) LIMIT 1", "SELECT 1 FROM {rows} WHERE destination_id = ?")
_REFUSED_EVENTS = _combined(
    "SELECT entity_id, env, build_id, timestamp, source, state, message FROM ({parts}) "
    "ORDER BY timestamp, entity_id, env, build_id",
    "SELECT entity_id, env, build_id, timestamp, source, state, message FROM {rows} "
    "WHERE destination_id = ? AND state IN ('refused', 'held')",
)
_BY_SOURCE = _combined(
    "SELECT source, state, sum(events), sum(flagged), sum(unconfirmed) FROM ({parts}) GROUP BY source, state",
    "SELECT l.source AS source, l.state AS state, count(*) AS events, "
    "coalesce(sum(b.possibly_duplicated), 0) AS flagged, coalesce(sum(b.unconfirmed), 0) AS unconfirmed "
    "FROM {rows} AS l LEFT JOIN batches AS b ON b.id = l.batch_id WHERE l.destination_id = ? "
    "GROUP BY l.source, l.state",
)
_SENT_RANGES = _combined(
    "SELECT entity_id, env, min(first), max(last), sum(sent) FROM ({parts}) "
    "GROUP BY entity_id, env ORDER BY entity_id, env",
    "SELECT entity_id, env, min(timestamp) AS first, max(timestamp) AS last, count(*) AS sent FROM {rows} "
    "WHERE destination_id = ? AND state = 'sent' GROUP BY entity_id, env",
)
_FLAGGED = {
    flag: _combined(
        "SELECT entity_id, env, build_id FROM ({parts}) ORDER BY timestamp, entity_id, env, build_id",
        "SELECT l.entity_id AS entity_id, l.env AS env, l.build_id AS build_id, l.timestamp AS timestamp "
        "FROM {rows} AS l CROSS JOIN batches AS b ON b.id = l.batch_id "
        "WHERE l.destination_id = ? AND l.state = 'sent' AND b.{flag} = 1",
    ).replace("{flag}", flag)
    for flag in ("possibly_duplicated", "unconfirmed")
}
SOURCE_COUNTS = ("sent", "pending", "refused", "held", "possibly_duplicated", "unconfirmed")


def _create(path: Path) -> None:
    problem = state_folder_problem(path)
    if problem:
        raise StateError(problem)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_file(path)
    except FileExistsError:
        return  # made meanwhile by another process: it is opened and checked like any other
    except (OSError, sqlite3.Error) as exc:
        raise StateError(
            state_folder_problem(path) or f"{path}: could not be created ({_reason(exc)}); check the folder"
        ) from exc


def _connect(path: Path, *, writable: bool) -> sqlite3.Connection:
    try:
        if writable:
            return sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        # Reading never writes; where the folder cannot be written (no -wal/-shm files can be made
        # there), the file is read as it is on disk.
        immutable = "&immutable=1" if state_folder_problem(path) else ""
        return sqlite3.connect(
            f"{path.as_uri()}?mode=ro{immutable}", uri=True, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StateError(
            state_folder_problem(path) or f"{path}: cannot be opened ({exc}); check the path and its permissions"
        ) from exc


def _open_error(path: Path, exc: sqlite3.DatabaseError, *, writable: bool) -> StateError:
    if _is_damage(exc):
        return StateError(
            f"{path}: is not a readable backfill state file ({exc}); it was left untouched. "
            "Restore it from a backup, or point [state] path at a new file"
        )
    return StateError(_write_problem(path, exc) if writable else f"{path}: cannot be read ({exc})")


def _is_damage(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in str(exc)


def _write_problem(path: Path, exc: sqlite3.Error) -> str:
    """What stops backfill writing the state file, in words that point at the cause."""
    name = getattr(exc, "sqlite_errorname", "")
    # SQLite says "disk I/O error" when a write to the -wal or -shm file finds no space.
    if name == "SQLITE_FULL" or (name.startswith("SQLITE_IOERR") and _free_bytes(path.parent) < 1 << 20):
        return f"{path}: the disk that holds it is full; free some space there, then run again"
    return state_folder_problem(path) or (
        f"{path}: could not be written ({exc}); the run stopped there. Fix the cause, then run again"
    )


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno) if exc.errno != errno.EEXIST else "it exists"
    return str(exc)
