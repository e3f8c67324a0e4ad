"""Sending events: batches, retries, and the write-ahead protocol.

For every batch, in send order:

1. the batch and its events are written to the state file as *pending*, and
   that write reaches the disk, before anything is sent;
2. the batch is POSTed; transient failures (connection errors, timeouts, 429,
   5xx) are retried with exponential backoff and full jitter, honouring
   Retry-After, within ``max_attempts`` and ``max_wait``;
3. the answer is recorded: 201 marks the events *sent*; 400 splits the batch in
   halves until the events DevGrid refuses are found, and records them with
   DevGrid's message; 413 halves the batch size for the rest of the run;
   401/403 stops at once with nothing marked sent.

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
from collections.abc import Callable
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

from backfill.devgrid import DevGridClient, Refused, body_of, events_json, key_of
from backfill.errors import AuthError, DeliveryError, TerminalDeliveryError, TransientDeliveryError
from backfill.state.rules import outcome_unknown
from backfill.state.store import EventKey, OutgoingBatch, Store, current_boot_id

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
    possibly_duplicated: list[EventKey] = field(default_factory=list)
    left_to_send: int = 0
    stopped: DeliveryError | None = None


class GaveUp(TransientDeliveryError):
    """Retries ran out; ``uncertain`` if any attempt may have been stored."""


class Delivery:
    def __init__(
        self,
        store: Store,
        client: DevGridClient,
        *,
        run_id: int,
        batch_size: int,
        policy: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
        progress: Callable[[int], None] = lambda events: None,
        notice: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._store = store
        self._client = client
        self._run_id = run_id
        self.batch_size = batch_size
        self._policy = policy
        self._sleep = sleep
        self._progress = progress
        self._notice = notice
        self.report = DeliveryReport()
        self._maybe_stored = False
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
        boot = current_boot_id()
        for pending in self._store.pending_batches():
            events = json.loads(pending.body)["events"]
            batch = OutgoingBatch(
                body=pending.body,
                keys=tuple(key_of(event) for event in events),
                timestamps=tuple(event["timestamp"] for event in events),
                sources=("",) * len(events),
            )
            unknown = outcome_unknown(pending.posted, pending.boot_id, boot)
            self._notice(
                f"batch {pending.id} of run {pending.run_id} was "
                + (
                    "sent but never answered: sending its events again (possibly duplicated)"
                    if unknown
                    else "written but never sent: sending it now"
                )
            )
            self._deliver(pending.id, batch, uncertain=unknown)

    def send(self, events: pl.DataFrame) -> None:
        """Send events (review columns, in send order). Stops at the first failure it cannot pass."""
        texts = events_json(events)
        keys = [EventKey(*row) for row in events.select("entityId", "env", "build_id").iter_rows()]
        timestamps = events.get_column("timestamp").to_list()
        sources = events.get_column("source").to_list()
        # Everything alive now lives through the loop; without this, every full collection
        # walks it all again, and the pauses cost a quarter of the sending rate.
        gc.freeze()
        try:
            self._send(texts, keys, timestamps, sources)
        finally:
            gc.unfreeze()

    def _send(self, texts: list[str], keys: list[EventKey], timestamps: list[str], sources: list[str]) -> None:
        start = 0
        while start < len(texts):
            # The size is read for every group: a 413 shrinks it for the rest of the run.
            group = []
            for _ in range(WRITE_AHEAD):
                end = min(start + self.batch_size, len(texts))
                if start >= end:
                    break
                group.append(
                    OutgoingBatch(
                        body=body_of(texts[start:end]),
                        keys=tuple(keys[start:end]),
                        timestamps=tuple(timestamps[start:end]),
                        sources=tuple(sources[start:end]),
                    )
                )
                start = end
            batch_ids = self._store.write_ahead(self._run_id, group)
            for index, (batch_id, batch) in enumerate(zip(batch_ids, group, strict=True)):
                try:
                    self._deliver(batch_id, batch, uncertain=False)
                except DeliveryError as exc:
                    self.report.stopped = exc
                    for unsent_id, unsent in zip(batch_ids[index + 1 :], group[index + 1 :], strict=True):
                        # Written ahead but never posted: certainly not stored.
                        self._store.release(unsent_id)
                        self.report.left_to_send += len(unsent.keys)
                    self.report.left_to_send += len(texts) - start
                    return

    # -- one batch ---------------------------------------------------------------------------

    def _deliver(self, batch_id: int, batch: OutgoingBatch, *, uncertain: bool) -> None:
        self._store.mark_posted(batch_id)
        try:
            refused, maybe_stored = self._post(batch.body)
        except AuthError:
            self._store.release(batch_id)
            self.report.left_to_send += len(batch.keys)
            raise
        except GaveUp as exc:
            if uncertain or exc.uncertain:
                # It may have been stored: leave it pending for the next run to settle.
                self._notice(f"batch {batch_id} stays pending: its outcome is unknown")
            else:
                self._store.release(batch_id)
            self.report.left_to_send += len(batch.keys)
            raise
        except TerminalDeliveryError:
            self._store.release(batch_id)
            self.report.left_to_send += len(batch.keys)
            raise
        uncertain = uncertain or maybe_stored
        if refused is None:
            self._store.mark_sent(batch_id, uncertain)
            self.report.sent += len(batch.keys)
            if uncertain:
                self.report.possibly_duplicated.extend(batch.keys)
            self._progress(len(batch.keys))
        elif refused.status == 413 and len(batch.keys) > 1:
            self.batch_size = max(1, len(batch.keys) // 2)
            self._notice(f"DevGrid answered 413 for {len(batch.keys)} events: sending {self.batch_size} at a time")
            self._split(batch_id, batch, self.batch_size, uncertain)
        elif len(batch.keys) > 1:
            self._split(batch_id, batch, (len(batch.keys) + 1) // 2, uncertain)
        else:
            self._store.mark_rejected(batch_id, refused.message)
            self.report.rejected.append((batch.keys[0], refused.message))
            self._progress(1)

    def _split(self, batch_id: int, batch: OutgoingBatch, size: int, uncertain: bool) -> None:
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
        part_ids = self._store.split(batch_id, self._run_id, parts)
        for index, (part_id, part) in enumerate(zip(part_ids, parts, strict=True)):
            try:
                self._deliver(part_id, part, uncertain=uncertain)
            except DeliveryError:
                # The parts not tried stay pending, never posted: the next run sends them.
                self.report.left_to_send += sum(len(rest.keys) for rest in parts[index + 1 :])
                raise

    def _post(self, body: str) -> tuple[Refused | None, bool]:
        """POST with retries; returns DevGrid's refusal (or None) and whether a retried attempt may have stored."""
        self._maybe_stored = False
        try:
            return self._retrying(self._attempt, body), self._maybe_stored
        except TransientDeliveryError as exc:
            attempts = self._retrying.statistics.get("attempt_number", 1)
            raise GaveUp(
                f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}: {exc}",
                uncertain=self._maybe_stored,
            ) from None

    def _attempt(self, body: str) -> Refused | None:
        try:
            return self._client.post(body)
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
