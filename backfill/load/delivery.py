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

Batches are written ahead several at a time (one disk flush for
:data:`WRITE_AHEAD` batches), and each is marked *posted* just before its POST;
a batch's answer is committed together with that mark for the next batch (one
commit per batch, of the batch's own row), never later than anything that
waits; its events' ledger rows follow in bulk, in the next write ahead (see
:mod:`backfill.state.store`). A crash at any
instant leaves pending at most the batches in flight and those written ahead;
the next run sends them again first (:meth:`Delivery.settle`), and counts as
possibly duplicated the events of those that may have been stored. No other
event is ever sent twice.

Several batches fly at once (``in_flight``): each (entityId, env) stream keeps
one in flight, oldest first, unless ``same_stream``; one thread per batch does
the POST and its retries, and everything else (the state file, the report,
cutting batches) runs holding one lock. A 429 holds back every batch's next
attempt; a stop lets the batches on the wire finish and starts no other.
"""

from __future__ import annotations

import gc
import json
import threading
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

from backfill.errors import DeliveryError, GaveUp, Interrupted, Throttled, TransientDeliveryError
from backfill.interrupts import Interrupts
from backfill.load.batches import Cutter, Lane
from backfill.load.client import Answer, DevGridClient, Refused, body_of, events_json, is_unknown_entity, key_of
from backfill.model import EventKey
from backfill.state.rules import outcome_unknown
from backfill.state.store import OutgoingBatch, Store

# Batches written ahead per disk flush. Fewer flushes, but after a machine restart (which may lose
# the commits made since the last flush) every batch written ahead since then counts as possibly
# duplicated: a group, or two where several streams fly at once.
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


class _Stopped(DeliveryError):
    """Another batch stopped the run while this one waited to be tried again."""

    def __init__(self, message: str, *, uncertain: bool) -> None:
        super().__init__(message)
        self.uncertain = uncertain


@dataclass
class _Flight:
    batch_id: int
    indexes: list[int]
    batch: OutgoingBatch
    lane: Lane | None  # the stream kept to one batch in flight; None when batches of a stream may fly together


@dataclass
class _Sending:
    """The batches of one send between the cutter and DevGrid's answers (guarded by the delivery's lock)."""

    stream: _Stream
    cutter: Cutter
    held: dict[int, str]
    waiting: list[_Flight] = field(default_factory=list)  # written ahead, not posted yet
    flying: set[Lane] = field(default_factory=set)
    stopping: bool = False
    failure: BaseException | None = None
    running: int = 0  # threads still taking batches
    cut_size: int = 15  # the batch size the batches written ahead were cut at, at most


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
        in_flight: int = 1,
        same_stream: bool = False,
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
        self._notice_to = notice
        self._interrupts = interrupts or Interrupts()
        self._in_flight = in_flight
        self._same_stream = same_stream
        self.report = DeliveryReport()
        # Everything but the POSTs and the waits between them runs holding this lock: the
        # state file, the report and the window are touched by one thread at a time.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._saying = threading.Lock()
        self._wake = threading.Event()  # set when the run stops: waits for a retry end at once
        self._stopping = False
        self._local = threading.local()  # per batch being posted: was it attempted, may it be stored
        # A rate limit slows the whole window: no attempt starts before this (time.monotonic()).
        self._not_before = 0.0
        self._limited_by: threading.Thread | None = None
        self._backoff = wait_random_exponential(multiplier=policy.backoff, max=policy.max_backoff)
        self._retrying = Retrying(
            stop=stop_after_attempt(policy.max_attempts) | stop_before_delay(policy.max_wait),
            wait=self._wait,
            retry=retry_if_exception_type(TransientDeliveryError),
            sleep=self._pause,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    # -- the two entry points ----------------------------------------------------------------

    def settle(self) -> None:
        """Send again every batch an earlier run left pending; flag it if it may have been stored."""
        with self._lock:
            try:
                self._settle()
            finally:
                self._store.flush()

    def _settle(self) -> None:
        for pending in self._store.pending_batches(self._destination_id):
            events = json.loads(pending.body)["events"]
            keys = tuple(key_of(event) for event in events)
            batch = OutgoingBatch(
                body=pending.body,
                keys=keys,
                timestamps=tuple(event["timestamp"] for event in events),
                sources=tuple(pending.sources.get(key, "") for key in keys),
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
        per_stream = self._in_flight > 1 and not self._same_stream
        lanes = [(key.entity_id, key.env) for key in stream.keys]
        window = _Sending(
            stream=stream, cutter=Cutter(lanes, per_stream=per_stream), held=held, cut_size=self.batch_size
        )
        # One thread per batch that can fly: per stream, no more than there are streams.
        threads = min(self._in_flight, len(set(lanes))) if per_stream else self._in_flight
        if threads <= 1:
            # One batch at a time, in this thread: a signal stops the POST in flight at once.
            self._work(window)
        else:
            self._fly(window, threads)
        if window.failure is not None:
            # The state file could not be written: the run stops as it is, nothing more recorded.
            raise window.failure
        with self._lock:
            for flight in window.waiting:
                # Written ahead but never posted: certainly not stored.
                self._store.release(flight.batch_id)
                self.report.left_to_send += len(flight.indexes)
            window.waiting.clear()
            if self.report.stopped is not None:
                self.report.left_to_send += window.cutter.left()

    def _fly(self, window: _Sending, threads: int) -> None:
        """Several batches in flight: one thread per batch, this one waiting for a signal."""
        workers = [
            threading.Thread(target=self._work, args=(window,), name=f"backfill-send-{number}", daemon=True)
            for number in range(threads)
        ]
        window.running = len(workers)
        for worker in workers:
            worker.start()
        try:
            with self._interrupts.anywhere():
                # Holding no lock, so that a signal may stop this wait at any instant.
                while window.running:
                    time.sleep(0.02)
        except BaseException as exc:
            # The batches in flight get their answers recorded; no new one starts, no retry waits on.
            # (Anything else, such as a KeyboardInterrupt where no Interrupts are installed, stops the
            # same way, and is raised once no thread uses the state file any more.)
            with self._lock:
                if self.report.stopped is None and isinstance(exc, Interrupted):
                    self.report.stopped = exc
                self._stop(window)
                while window.running:
                    self._changed.wait()
            if not isinstance(exc, Interrupted):
                raise
        for worker in workers:
            worker.join()

    def _stop(self, window: _Sending) -> None:
        window.stopping = True
        self._stopping = True
        self._wake.set()
        self._changed.notify_all()

    def _work(self, window: _Sending) -> None:
        """Take batches and deliver them until the send is done or stopped."""
        with self._lock:
            try:
                self._deliver_all(window)
                self._store.flush()
            except BaseException as exc:
                # A state write failed: every thread stops, the caller raises it.
                window.failure = window.failure or exc
                self._stop(window)
            finally:
                window.running -= 1
                self._changed.notify_all()

    def _deliver_all(self, window: _Sending) -> None:
        while (flight := self._take(window)) is not None:
            try:
                new_unknown = self._deliver(flight.batch_id, flight.batch, uncertain=False)
            except (DeliveryError, Interrupted) as exc:
                if self.report.stopped is None:
                    self.report.stopped = exc
                self._stop(window)
                return
            finally:
                if flight.lane is not None:
                    window.flying.discard(flight.lane)
                self._changed.notify_all()
            if new_unknown:
                self._take_back(window, new_unknown)
            if self.batch_size < window.cut_size:
                # A 413 halved the size: the batches written ahead at the old size are cut again, not
                # each sent to meet a 413 of its own.
                window.cut_size = self.batch_size
                self._cut_again(window, lambda flight: len(flight.indexes) > self.batch_size)

    def _take(self, window: _Sending) -> _Flight | None:
        """The next batch to POST, written ahead; None once there is nothing left for this thread."""
        while True:
            if window.stopping:
                return None
            if self._interrupts.signum is not None:
                self.report.stopped = self.report.stopped or Interrupted(self._interrupts.signum)
                self._stop(window)
                return None
            for position, flight in enumerate(window.waiting):
                if flight.lane is None or flight.lane not in window.flying:
                    del window.waiting[position]
                    if flight.lane is not None:
                        window.flying.add(flight.lane)
                    return flight
            if window.cutter.exhausted():
                if not window.waiting:
                    return None
            elif idle := self._idle_streams(window):
                # A stream with nothing in flight and nothing written ahead: its batches next.
                self._write_ahead(window, only=idle)
                continue
            elif len(window.waiting) < max(WRITE_AHEAD, 2 * self._in_flight):
                self._write_ahead(window)
                continue
            # Every batch written ahead belongs to a stream that has one in flight. No answer
            # waits for a later commit while this thread waits.
            self._store.flush()
            self._changed.wait()

    def _idle_streams(self, window: _Sending) -> set[Lane]:
        """Per stream: the streams with events left to cut but no batch in flight or written ahead."""
        if not window.cutter.per_stream:
            return set()
        ahead = {flight.lane for flight in window.waiting}
        return window.cutter.lanes_left() - window.flying - ahead

    def _write_ahead(self, window: _Sending, only: set[Lane] | None = None) -> None:
        def unknown(entity: str) -> str | None:
            return self.report.unknown_entities.get(entity)

        # The size is read for every group: a 413 shrinks it for the rest of the run.
        group = window.cutter.cut(WRITE_AHEAD, self.batch_size, unknown, window.held, only)
        if not group:
            return
        batches = [window.stream.batch(indexes) for indexes in group]
        batch_ids = self._store.write_ahead(self._run_id, self._destination_id, batches)
        per_stream = window.cutter.per_stream
        window.waiting.extend(
            _Flight(batch_id, indexes, batch, window.cutter.lane_of(indexes[0]) if per_stream else None)
            for batch_id, indexes, batch in zip(batch_ids, group, batches, strict=True)
        )

    def _take_back(self, window: _Sending, entities: set[str]) -> None:
        """Batches written ahead with events of entities DevGrid does not know: cut again without them."""
        keys = window.stream.keys
        self._cut_again(window, lambda flight: any(keys[index].entity_id in entities for index in flight.indexes))

    def _cut_again(self, window: _Sending, affected_by: Callable[[_Flight], bool]) -> None:
        """Release the batches written ahead that ``affected_by`` names, and give their events back to be cut again."""
        affected = [position for position, flight in enumerate(window.waiting) if affected_by(flight)]
        if not affected:
            return
        # To keep the order, every batch after the first affected one is cut again: in send order all of
        # them, per stream those of the affected batches' streams.
        if window.cutter.per_stream:
            lanes = {window.waiting[position].lane for position in affected}
            released = [flight for flight in window.waiting if flight.lane in lanes]
        else:
            released = window.waiting[affected[0] :]
        for flight in released:
            self._store.release(flight.batch_id)
            window.cutter.give_back(flight.indexes)
        gone = {flight.batch_id for flight in released}
        window.waiting[:] = [flight for flight in window.waiting if flight.batch_id not in gone]

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
        self._local.attempted = False
        try:
            answer, maybe_stored = self._unlocked_post(batch.body, len(batch.keys))
        except (DeliveryError, Interrupted) as exc:
            # A batch an earlier POST may have stored stays pending whatever this attempt met, for
            # the next run to settle; only one certainly never stored is released, its events forgotten.
            if uncertain or (isinstance(exc, GaveUp | _Stopped) and exc.uncertain):
                self._notice(f"batch {batch_id} stays pending: its outcome is unknown")
            elif isinstance(exc, Interrupted) and self._local.attempted:
                self._notice(f"batch {batch_id} stays pending: it was being sent when the run was interrupted")
            else:
                self._store.release(batch_id)
            self.report.left_to_send += len(batch.keys)
            raise
        uncertain = uncertain or maybe_stored
        if isinstance(answer, Answer):
            return self._record(batch_id, batch, answer, uncertain)
        if answer.status == 413 and len(batch.keys) > 1:
            # Never larger again: a batch cut before a smaller size was learnt may meet its 413 after.
            self.batch_size = min(self.batch_size, max(1, len(batch.keys) // 2))
            self._notice(f"DevGrid answered 413 for {len(batch.keys)} events: sending {self.batch_size} at a time")
            return self._split(batch_id, batch, self.batch_size, uncertain)
        if len(batch.keys) > 1:
            return self._split(batch_id, batch, (len(batch.keys) + 1) // 2, uncertain)
        return self._record(batch_id, batch, Answer(refused=((0, answer.message),)), uncertain)

    def _record(self, batch_id: int, batch: OutgoingBatch, answer: Answer, uncertain: bool) -> set[str]:
        refused = [(batch.keys[index], reason) for index, reason in answer.refused]
        # Committed with the next write (as a rule the next POST's mark): one commit per batch, not two.
        self._store.record_answer(
            batch_id, refused, possibly_duplicated=uncertain, unconfirmed=answer.unconfirmed, later=True
        )
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

    def _unlocked_post(self, body: str, count: int) -> tuple[Answer | Refused, bool]:
        """The POST and its retries, with the lock free for the other batches in flight."""
        self._lock.release()
        try:
            if threading.current_thread() is threading.main_thread():
                # Nothing here needs finishing: a signal may stop it at any instant.
                with self._interrupts.anywhere():
                    return self._post(body, count)
            return self._post(body, count)
        finally:
            self._lock.acquire()

    def _post(self, body: str, count: int) -> tuple[Answer | Refused, bool]:
        """POST with retries; returns DevGrid's answer and whether a retried attempt may have stored."""
        self._local.maybe_stored = False
        retrying = self._retrying.copy()
        try:
            return retrying(self._attempt, body, count), self._local.maybe_stored
        except TransientDeliveryError as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise GaveUp(
                f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}: {exc}",
                uncertain=self._local.maybe_stored,
            ) from None

    def _attempt(self, body: str, count: int) -> Answer | Refused:
        self._hold_back()
        if self._stopping:
            raise _Stopped("the run stopped before this batch was tried again", uncertain=self._local.maybe_stored)
        self._local.attempted = True
        try:
            return self._client.post(body, count)
        except TransientDeliveryError as exc:
            self._local.maybe_stored = self._local.maybe_stored or exc.uncertain
            raise

    def _hold_back(self) -> None:
        """Wait out a rate limit another batch met: DevGrid asked the whole sender to slow down."""
        if self._limited_by is threading.current_thread():
            return  # this batch's own retry already waited for it
        remaining = self._not_before - time.monotonic()
        if remaining > 0:
            self._pause(remaining)

    def _pause(self, seconds: float) -> None:
        if self._sleep is time.sleep:
            # Ends at once when the run stops; a signal still reaches the main thread.
            self._wake.wait(seconds)
        else:
            self._sleep(seconds)

    def _wait(self, state: RetryCallState) -> float:
        """Retry-After when DevGrid sent one, else exponential backoff with full jitter."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientDeliveryError) and error.retry_after is not None:
            return error.retry_after
        return float(self._backoff(state))

    def _before_sleep(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, Throttled) or (isinstance(error, TransientDeliveryError) and error.retry_after):
            with self._saying:
                until = time.monotonic() + state.upcoming_sleep
                if until > self._not_before:
                    self._not_before = until
                    self._limited_by = threading.current_thread()
        attempts = f"attempt {state.attempt_number} of {self._policy.max_attempts}"
        self._notice(f"{error}; {attempts}, retrying in {state.upcoming_sleep:.1f} s")

    def _notice(self, message: str) -> None:
        with self._saying:
            self._notice_to(message)
