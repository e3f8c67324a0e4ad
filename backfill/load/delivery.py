"""Sending events: batches, retries, DevGrid's per-event answers, and the write-ahead protocol.

For every batch, in send order:

1. the batch and its events are written to the state file as *pending*, and
   that write reaches the disk, before anything is sent;
2. the batch is POSTed; transient failures (connection errors, timeouts, 429,
   5xx) are retried with exponential backoff and full jitter, honouring
   Retry-After, within ``max_attempts`` and ``max_wait``;
3. the answer is recorded. A 201 is read event by event: those in ``success``
   are *sent*, those in ``failures`` *refused* with DevGrid's reason (see
   :func:`backfill.load.client.read_answer`). A 400 splits the batch in halves
   until the events DevGrid refuses are found; 413 halves the batch size for the
   rest of the run; 401/403 stops at once with nothing marked sent.

When DevGrid answers "Entity not found" for an entity, the rest of that
entity's events are not sent (they would all be refused): they are recorded as
*held*, and the other entities go on. ``--retry-rejected`` sends them once the
entity exists.

Batches are written ahead a few at a time (one disk flush for
:data:`WRITE_AHEAD` batches), and each is marked *posted* just before its POST.
A crash at any instant leaves pending at most the batch in flight and those
written ahead; the next run sends them again first (:meth:`Delivery.settle`),
and counts as possibly duplicated the events of the one that may have been
stored. No other event is ever sent twice.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from backfill.errors import DeliveryError, GaveUp, Interrupted, TransientDeliveryError
from backfill.interrupts import Interrupts
from backfill.load.client import Answer, DevGridClient, Refused, body_of, events_json, is_unknown_entity, key_of
from backfill.model import EventKey
from backfill.state.rules import outcome_unknown
from backfill.state.store import OutgoingBatch, Store

# Batches written ahead per disk flush: fewer flushes, and at most this many to settle after a crash.
WRITE_AHEAD = 8


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    max_wait: float = 300.0  # seconds of waiting between attempts, per batch
    backoff: float = 0.5  # the first retry waits up to this many seconds, then doubling
    max_backoff: float = 60.0


@dataclass
class DeliveryReport:
    sent: int = 0
    rejected: list[tuple[EventKey, str]] = field(default_factory=list)
    held: list[tuple[EventKey, str]] = field(default_factory=list)
    unknown_entities: dict[str, str] = field(default_factory=dict)
    unconfirmed: list[EventKey] = field(default_factory=list)
    possibly_duplicated: list[EventKey] = field(default_factory=list)
    most_copies: int = 1  # how many times DevGrid may hold a possibly duplicated event, at most
    left_to_send: int = 0
    stopped: DeliveryError | Interrupted | None = None

    def counts(self) -> dict[str, int]:
        """The counts a run records (``backfill status`` shows them)."""
        return {
            "sent": self.sent,
            "rejected": len(self.rejected),
            "held": len(self.held),
            "unconfirmed": len(self.unconfirmed),
            "possibly_duplicated": len(self.possibly_duplicated),
            "left_to_send": self.left_to_send,
        }


@dataclass(frozen=True)
class _Stream:
    """The events of one send, as the columns the batches are cut from."""

    texts: list[str]
    keys: list[EventKey]
    timestamps: list[str]
    sources: list[str]

    def batch(self, indexes: Sequence[int]) -> OutgoingBatch:
        return OutgoingBatch(
            body=body_of([self.texts[index] for index in indexes]),
            keys=tuple(self.keys[index] for index in indexes),
            timestamps=tuple(self.timestamps[index] for index in indexes),
            sources=tuple(self.sources[index] for index in indexes),
        )


class Delivery:
    def __init__(
        self,
        store: Store,
        client: DevGridClient,
        *,
        destination_id: int,
        run_id: int,
        batch_size: int,
        policy: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
        progress: Callable[[int], None] = lambda events: None,
        notice: Callable[[str], None] = lambda message: None,
        interrupts: Interrupts | None = None,
        boot_id: str | None,
    ) -> None:
        """``boot_id`` is this machine's boot (None where unknown): a batch written ahead on another boot
        and never marked posted may have been sent all the same (see :func:`outcome_unknown`)."""
        self._store = store
        self._boot_id = boot_id
        self._client = client
        self._destination_id = destination_id
        self._run_id = run_id
        self.batch_size = batch_size
        self._policy = policy
        self._sleep = sleep
        self._progress = progress
        self._notice = notice
        self._interrupts = interrupts or Interrupts()
        self.report = DeliveryReport()
        self._maybe_stored = False
        self._attempted = False
        self._backoff = wait_random_exponential(multiplier=policy.backoff, max=policy.max_backoff)
        self._retrying = Retrying(
            stop=stop_after_attempt(policy.max_attempts) | stop_before_delay(policy.max_wait),
            wait=self._wait,
            retry=retry_if_exception_type(TransientDeliveryError),
            sleep=sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    # -- the two entry points ----------------------------------------------------------------

    def settle(self) -> None:
        """Send again every batch an earlier run left pending; flag it if it may have been stored."""
        for pending in self._store.pending_batches(self._destination_id):
            events = json.loads(pending.body)["events"]
            batch = OutgoingBatch(
                body=pending.body,
                keys=tuple(key_of(event) for event in events),
                timestamps=tuple(event["timestamp"] for event in events),
                sources=("",) * len(events),
            )
            unknown = outcome_unknown(pending.posts, pending.boot_id, self._boot_id)
            self._notice(
                f"batch {pending.id} of run {pending.run_id} was "
                + (
                    "sent but never answered: sending its events again (possibly duplicated)"
                    if unknown
                    else "written but never sent: sending it now"
                )
            )
            if unknown:
                # Each earlier POST may have been stored; this one makes one copy more.
                self.report.most_copies = max(self.report.most_copies, pending.posts + 1)
            try:
                self._deliver(pending.id, batch, uncertain=unknown, resend=True)
            except (DeliveryError, Interrupted) as exc:
                self.report.stopped = exc
                return

    def send(self, events: pl.DataFrame) -> None:
        """Send events (review columns, in send order). Stops at the first failure it cannot pass."""
        stream = _Stream(
            texts=events_json(events),
            keys=[EventKey(*row) for row in events.select("entityId", "env", "build_id").iter_rows()],
            timestamps=events.get_column("timestamp").to_list(),
            sources=events.get_column("source").to_list(),
        )
        # Everything alive now lives through the loop; without this, every full collection
        # walks it all again, and the pauses cost a quarter of the sending rate.
        gc.freeze()
        held: dict[int, str] = {}
        try:
            self._send(stream, held)
        finally:
            gc.unfreeze()
        # Not after a state write failed: that error stops the run as it is.
        self._hold(stream, held)

    def _send(self, stream: _Stream, held: dict[int, str]) -> None:
        position = 0
        total = len(stream.texts)
        while position < total:
            group, position = self._group(stream, position, held)
            if not group:
                continue
            batches = [stream.batch(indexes) for indexes in group]
            batch_ids = self._store.write_ahead(self._run_id, self._destination_id, batches)
            for index, (batch_id, batch) in enumerate(zip(batch_ids, batches, strict=True)):
                rest = list(zip(batch_ids[index + 1 :], group[index + 1 :], strict=True))
                try:
                    new_unknown = self._deliver(batch_id, batch, uncertain=False)
                except (DeliveryError, Interrupted) as exc:
                    self.report.stopped = exc
                    for unsent_id, indexes in rest:
                        # Written ahead but never posted: certainly not stored.
                        self._store.release(unsent_id)
                        self.report.left_to_send += len(indexes)
                    self.report.left_to_send += total - position
                    return
                if new_unknown and any(stream.keys[i].entity_id in new_unknown for _, indexes in rest for i in indexes):
                    # Those batches hold events DevGrid would refuse: cut them again without them.
                    for unsent_id, _ in rest:
                        self._store.release(unsent_id)
                    position = rest[0][1][0]
                    break

    def _group(self, stream: _Stream, position: int, held: dict[int, str]) -> tuple[list[list[int]], int]:
        """Up to WRITE_AHEAD batches of event indexes from ``position``, leaving out events of unknown entities."""
        group: list[list[int]] = []
        batch: list[int] = []
        total = len(stream.texts)
        # The size is read for every group: a 413 shrinks it for the rest of the run.
        while position < total and len(group) < WRITE_AHEAD:
            entity = stream.keys[position].entity_id
            if entity in self.report.unknown_entities:
                held[position] = self.report.unknown_entities[entity]
            else:
                batch.append(position)
                if len(batch) == self.batch_size:
                    group.append(batch)
                    batch = []
            position += 1
        if batch:
            group.append(batch)
        return group, position

    def _hold(self, stream: _Stream, held: dict[int, str]) -> None:
        """Record the events left out because DevGrid does not know their entity."""
        if not held:
            return
        indexes = sorted(held)
        keys = [stream.keys[index] for index in indexes]
        messages = {
            entity: f"not sent: DevGrid does not know entity '{entity}' ({reason})"
            for entity, reason in self.report.unknown_entities.items()
        }
        for key in keys:
            self.report.held.append((key, messages[key.entity_id]))
        for entity, message in messages.items():
            entity_indexes = [index for index in indexes if stream.keys[index].entity_id == entity]
            self._store.hold(
                self._destination_id,
                [stream.keys[index] for index in entity_indexes],
                [stream.timestamps[index] for index in entity_indexes],
                [stream.sources[index] for index in entity_indexes],
                message,
            )

    # -- one batch ---------------------------------------------------------------------------

    def _deliver(self, batch_id: int, batch: OutgoingBatch, *, uncertain: bool, resend: bool = False) -> set[str]:
        """POST one batch and record DevGrid's answer; returns the entities DevGrid newly said it does not know."""
        self._store.mark_posted(batch_id, durable=resend)
        self._attempted = False
        try:
            with self._interrupts.anywhere():
                answer, maybe_stored = self._post(batch.body, len(batch.keys))
        except (DeliveryError, Interrupted) as exc:
            # A batch an earlier POST may have stored stays pending whatever this attempt met, for
            # the next run to settle; only one certainly never stored is released, its events forgotten.
            if uncertain or (isinstance(exc, GaveUp) and exc.uncertain):
                self._notice(f"batch {batch_id} stays pending: its outcome is unknown")
            elif isinstance(exc, Interrupted) and self._attempted:
                self._notice(f"batch {batch_id} stays pending: it was being sent when the run was interrupted")
            else:
                self._store.release(batch_id)
            self.report.left_to_send += len(batch.keys)
            raise
        uncertain = uncertain or maybe_stored
        if isinstance(answer, Answer):
            return self._record(batch_id, batch, answer, uncertain)
        if answer.status == 413 and len(batch.keys) > 1:
            self.batch_size = max(1, len(batch.keys) // 2)
            self._notice(f"DevGrid answered 413 for {len(batch.keys)} events: sending {self.batch_size} at a time")
            return self._split(batch_id, batch, self.batch_size, uncertain)
        if len(batch.keys) > 1:
            return self._split(batch_id, batch, (len(batch.keys) + 1) // 2, uncertain)
        return self._record(batch_id, batch, Answer(refused=((0, answer.message),)), uncertain)

    def _record(self, batch_id: int, batch: OutgoingBatch, answer: Answer, uncertain: bool) -> set[str]:
        refused = [(batch.keys[index], reason) for index, reason in answer.refused]
        self._store.record_answer(batch_id, refused, possibly_duplicated=uncertain, unconfirmed=answer.unconfirmed)
        refused_at = {index for index, _ in answer.refused}
        sent = [key for index, key in enumerate(batch.keys) if index not in refused_at]
        self.report.sent += len(sent)
        self.report.rejected.extend(refused)
        if uncertain:
            self.report.possibly_duplicated.extend(sent)
            self.report.most_copies = max(self.report.most_copies, 2)
        if answer.unconfirmed:
            self.report.unconfirmed.extend(sent)
        self._progress(len(batch.keys))
        unknown = {
            key.entity_id: reason
            for key, reason in refused
            if is_unknown_entity(reason) and key.entity_id not in self.report.unknown_entities
        }
        for entity, reason in unknown.items():
            self.report.unknown_entities[entity] = reason
            self._notice(
                f"DevGrid does not know entity '{entity}' ({reason}): its other events are not sent. "
                "Create the entity in DevGrid, or fix entity_id / entity_column, then run with --retry-rejected"
            )
        return set(unknown)

    def _split(self, batch_id: int, batch: OutgoingBatch, size: int, uncertain: bool) -> set[str]:
        events = [json.dumps(event, separators=(",", ":")) for event in json.loads(batch.body)["events"]]
        parts = [
            OutgoingBatch(
                body=body_of(events[start : start + size]),
                keys=batch.keys[start : start + size],
                timestamps=batch.timestamps[start : start + size],
                sources=batch.sources[start : start + size],
            )
            for start in range(0, len(events), size)
        ]
        part_ids = self._store.split(batch_id, self._run_id, self._destination_id, parts, maybe_stored=uncertain)
        unknown: set[str] = set()
        for index, (part_id, part) in enumerate(zip(part_ids, parts, strict=True)):
            try:
                unknown |= self._deliver(part_id, part, uncertain=uncertain)
            except (DeliveryError, Interrupted):
                # The parts not tried stay pending, never posted: the next run sends them.
                self.report.left_to_send += sum(len(rest.keys) for rest in parts[index + 1 :])
                raise
        return unknown

    def _post(self, body: str, count: int) -> tuple[Answer | Refused, bool]:
        """POST with retries; returns DevGrid's answer and whether a retried attempt may have stored."""
        self._maybe_stored = False
        try:
            return self._retrying(self._attempt, body, count), self._maybe_stored
        except TransientDeliveryError as exc:
            attempts = self._retrying.statistics.get("attempt_number", 1)
            raise GaveUp(
                f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}: {exc}",
                uncertain=self._maybe_stored,
            ) from None

    def _attempt(self, body: str, count: int) -> Answer | Refused:
        self._attempted = True
        try:
            return self._client.post(body, count)
        except TransientDeliveryError as exc:
            self._maybe_stored = self._maybe_stored or exc.uncertain
            raise

    def _wait(self, state: RetryCallState) -> float:
        """Retry-After when DevGrid sent one, else exponential backoff with full jitter."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientDeliveryError) and error.retry_after is not None:
            return error.retry_after
        return float(self._backoff(state))

    def _before_sleep(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        attempts = f"attempt {state.attempt_number} of {self._policy.max_attempts}"
        self._notice(f"{error}; {attempts}, retrying in {state.upcoming_sleep:.1f} s")
