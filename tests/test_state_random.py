"""The state file against a model of it: random writes, kills between any two, every reader checked.

Each history writes batches ahead for two destinations, posts and answers them (DevGrid storing
some events and refusing others, the answer committed at once or with the next write, as a run
does), splits, releases and holds, writes the ledger rows in bulk or not, and is killed at random:
the store is dropped without a flush, so an answer left for the next write is lost, as a kill -9
loses it. After every step a store opened only to read must see exactly the model: each key's
state in the ledger the plan reads, the counts status shows, the refusals with their reasons; and
no key is ever in the ledger and in a batch's row at once.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from backfill.model import EventKey
from backfill.state.destination import account_of
from backfill.state.store import OutgoingBatch, Store

URLS = ("http://127.0.0.1:9", "http://127.0.0.1:10")


class _History:
    """One random history and the model of what the state file must say."""

    def __init__(self, path: Path, seed: int) -> None:
        self.path = path
        self.random = random.Random(seed)
        self.store = self._open()
        self.destinations = [self.store.resolve_destination(url, account_of("key", self.store.salt)).id for url in URLS]
        self.runs = {d: self.store.start_run(d, URLS[i], None) for i, d in enumerate(self.destinations)}
        self.expected: dict[tuple[int, str], tuple[str, str | None]] = {}  # (destination, build) -> state, message
        self.pending: dict[int, tuple[int, list[str]]] = {}  # batch id -> destination, builds
        self.answers_not_committed: list[tuple[int, dict[str, tuple[str, str | None]]]] = []
        self.next_build = 0

    def _open(self) -> Store:
        store = Store.open(self.path, create=True)
        assert store is not None
        return store

    def _committed(self) -> None:
        """The store committed a transaction: answers left for it are now written."""
        for batch_id, states in self.answers_not_committed:
            destination, _ = self.pending.pop(batch_id)
            for build, state in states.items():
                self.expected[(destination, build)] = state
        self.answers_not_committed.clear()

    def _batch(self, builds: list[str]) -> OutgoingBatch:
        body = json.dumps({"events": [{"attributes": {"build_id": build}} for build in builds]})
        return OutgoingBatch(
            body=body,
            keys=tuple(EventKey("shop", "production", build) for build in builds),
            timestamps=tuple(f"2025-01-01T00:00:{int(build) % 60:02d}Z" for build in builds),
            sources=tuple(self.random.choice(("runs", "tags")) for _ in builds),
        )

    def _answerable(self) -> list[int]:
        waiting = {batch_id for batch_id, _ in self.answers_not_committed}
        return [batch_id for batch_id in self.pending if batch_id not in waiting]

    def step(self) -> None:
        choice = self.random.random()
        answerable = self._answerable()
        if choice < 0.25 or not answerable:
            destination = self.random.choice(self.destinations)
            groups = []
            for _ in range(self.random.randint(1, 3)):
                count = self.random.randint(1, 4)
                groups.append([str(self.next_build + i) for i in range(count)])
                self.next_build += count
            ids = self.store.write_ahead(self.runs[destination], destination, [self._batch(g) for g in groups])
            self._committed()
            for batch_id, builds in zip(ids, groups, strict=True):
                self.pending[batch_id] = (destination, builds)
                for build in builds:
                    self.expected[(destination, build)] = ("pending", None)
        elif choice < 0.6:
            batch_id = self.random.choice(answerable)
            destination, builds = self.pending[batch_id]
            self.store.mark_posted(batch_id)
            self._committed()
            refused = {build: f"reason {build}" for build in builds if self.random.random() < 0.3}
            states = {build: ("refused", refused[build]) if build in refused else ("sent", None) for build in builds}
            later = self.random.random() < 0.7
            self.store.record_answer(
                batch_id, [(EventKey("shop", "production", b), m) for b, m in refused.items()], later=later
            )
            self.answers_not_committed.append((batch_id, states))
            if not later:
                self._committed()
        elif choice < 0.7:
            batch_id = self.random.choice(answerable)
            destination, builds = self.pending[batch_id]
            if len(builds) < 2:
                return
            cut = self.random.randint(1, len(builds) - 1)
            parts = [builds[:cut], builds[cut:]]
            ids = self.store.split(
                batch_id, self.runs[destination], destination, [self._batch(p) for p in parts], maybe_stored=True
            )
            self._committed()
            del self.pending[batch_id]
            self.pending.update(zip(ids, ((destination, p) for p in parts), strict=True))
        elif choice < 0.78:
            batch_id = self.random.choice(answerable)
            destination, builds = self.pending[batch_id]
            self.store.release(batch_id)
            self._committed()
            del self.pending[batch_id]
            for build in builds:
                del self.expected[(destination, build)]
        elif choice < 0.88:
            self.store.write_ledger_rows()
            self._committed()
        else:
            # kill -9: what was left for the next transaction is lost; the batch stays pending.
            self.store.close()
            self.answers_not_committed.clear()
            self.store = self._open()

    def check(self) -> None:
        reader = Store.open(self.path, create=False)
        assert reader is not None
        try:
            for destination in self.destinations:
                self._check_destination(reader, destination)
        finally:
            reader.close()
        db = sqlite3.connect(self.path)
        try:
            in_ledger = set(db.execute("SELECT destination_id, build_id FROM ledger").fetchall())
            in_batches = [
                (destination, event[2])
                for destination, keys in db.execute(
                    "SELECT r.destination_id, o.keys FROM outgoing AS o JOIN batches AS b ON b.id = o.batch_id "
                    "JOIN runs AS r ON r.id = b.run_id WHERE b.state IN ('pending', 'answered')"
                )
                for event in json.loads(keys)
            ]
        finally:
            db.close()
        assert len(in_batches) == len(set(in_batches)), "a key in two batches' rows"
        assert not in_ledger & set(in_batches), "a key in the ledger and in a batch's row"

    def _check_destination(self, reader: Store, destination: int) -> None:
        mine = {build: state for (d, build), state in self.expected.items() if d == destination}
        builds = [str(i) for i in range(self.next_build + 2)]
        keys = pl.DataFrame(
            {"entityId": ["shop"] * len(builds), "env": ["production"] * len(builds), "build_id": builds}
        )
        known = dict(reader.known_keys(destination, keys).select("build_id", "ledger_state").iter_rows())
        assert known == {build: state for build, (state, _) in mine.items()}
        counts = {state: 0 for state in ("sent", "pending", "refused")}
        for state, _ in mine.values():
            counts[state] += 1
        totals = {state: 0 for state in counts}
        for per_source in reader.by_source(destination).values():
            for state in totals:
                totals[state] += per_source[state]
        assert totals == counts
        refused = reader.refused_events(destination)
        assert dict(refused.select("build_id", "message").iter_rows()) == {
            build: message for build, (state, message) in mine.items() if state == "refused"
        }
        assert sum(entity["sent"] for entity in reader.sent_ranges(destination)) == counts["sent"]
        pending = {build for batch in reader.pending_batches(destination) for build in _builds_of(batch.body)}
        assert pending == {build for build, (state, _) in mine.items() if state == "pending"}


def _builds_of(body: str) -> list[str]:
    return [event["attributes"]["build_id"] for event in json.loads(body)["events"]]


@pytest.mark.parametrize("seed", range(25))
def test_every_reader_agrees_with_the_model_whatever_is_killed_where(tmp_path: Path, seed: int) -> None:
    history = _History(tmp_path / "state.db", seed)
    try:
        for _ in range(40):
            history.step()
            history.check()
    finally:
        history.store.close()
