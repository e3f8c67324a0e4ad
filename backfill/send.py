"""A real run: lock the state, find the destination, settle what an earlier run left open, plan, send, checkpoint.

The order matters. Batches an earlier run left pending are settled before
anything new is planned, so that the plan sees them as sent; new events are
those whose key the destination's ledger does not hold; cursors move only over
history that was delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import polars as pl

from backfill.columns import EVENT_KEY
from backfill.config import Config
from backfill.devgrid import DevGridClient
from backfill.errors import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_OK,
    AuthError,
    DeliveryError,
    Interrupted,
)
from backfill.extractors import REGISTRY
from backfill.interrupts import Interrupts
from backfill.loader import Delivery, DeliveryReport, RetryPolicy
from backfill.run import RunPlan, Step, no_progress, plan_run
from backfill.state.destination import account_of
from backfill.state.lock import StateLock
from backfill.state.rules import advanced_cursors, incremental_since, mark_known, missing_state, within
from backfill.state.store import Destination, EventKey, KeyChange, Store, current_boot_id


@dataclass(frozen=True)
class SendOptions:
    url: str
    api_key: str
    since: datetime | None = None
    until: datetime | None = None
    retry_rejected: bool = False
    require_state: bool = False
    key_change: KeyChange | None = None


@dataclass
class SendResult:
    run: RunPlan
    run_id: int
    destination: Destination
    to_send: int
    already_sent: int
    outside_window: int
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    send_seconds: float = 0.0

    @property
    def stopped(self) -> DeliveryError | Interrupted | None:
        return self.delivery.stopped

    @property
    def outcome(self) -> str:
        stopped = self.stopped
        if isinstance(stopped, Interrupted):
            return "interrupted"
        if isinstance(stopped, AuthError):
            return "auth-refused"
        if stopped is not None or self.delivery.left_to_send:
            return "incomplete"
        if self.delivery.rejected or self.delivery.held:
            return "refused-events"
        return "done"

    @property
    def exit_code(self) -> int:
        stopped = self.stopped
        if isinstance(stopped, Interrupted):
            return stopped.exit_code
        if isinstance(stopped, AuthError):
            return EXIT_AUTH
        if self.outcome != "done":
            return EXIT_INCOMPLETE
        return EXIT_ERROR if self.run.failures else EXIT_OK

    def counts(self) -> dict[str, int]:
        return {"planned": self.to_send, **self.delivery.counts()}


def send_run(
    config: Config,
    options: SendOptions,
    client: httpx.Client,
    *,
    now: datetime | None = None,
    step: Step = no_progress,
    start_bar: Callable[[int], None] = lambda total: None,
    progress: Callable[[int], None] = lambda events: None,
    notice: Callable[[str], None] = lambda message: None,
    sleep: Callable[[float], None] = time.sleep,
    interrupts: Interrupts | None = None,
) -> SendResult:
    """Plan and deliver. Raises StateError/StateLockedError before sending anything it cannot track.

    An interrupt while sending ends the delivery where it is safe and is reported in
    the result; one while reading the sources raises Interrupted once the run is recorded.
    """
    interrupts = interrupts or Interrupts()
    state_path = Path(config.state.path)
    devgrid = DevGridClient(client, options.url, options.api_key, config.devgrid.api_key_env)
    policy = RetryPolicy(max_attempts=config.devgrid.max_attempts, max_wait=config.devgrid.max_wait)
    with StateLock(state_path):
        store = Store.open(state_path, create=not options.require_state, write=True)
        if store is None:
            raise missing_state(state_path)
        try:
            destination = store.resolve_destination(
                options.url, account_of(options.api_key, store.salt), options.key_change
            )
            run_id = store.start_run(destination.id, options.url, current_boot_id())
            delivery = Delivery(
                store,
                devgrid,
                destination_id=destination.id,
                run_id=run_id,
                batch_size=config.devgrid.batch_size,
                policy=policy,
                sleep=sleep,
                progress=progress,
                notice=notice,
                interrupts=interrupts,
                in_flight=config.delivery.in_flight,
                same_stream=config.delivery.same_stream,
            )
            try:
                with step("settling batches an earlier run left open"):
                    delivery.settle()
                if isinstance(delivery.report.stopped, Interrupted):
                    raise delivery.report.stopped
                if options.retry_rejected:
                    store.forget_refused(destination.id)
                cursors = store.cursors(destination.id)
                with interrupts.anywhere():
                    run = plan_run(
                        config,
                        now=now,
                        step=step,
                        reading_from=_reading_from(config, cursors, options.since),
                        sleep=sleep,
                        notice=notice,
                    )
            except Interrupted as exc:
                # Stopped before anything new was sent: the run is recorded, and the signal's exit code follows.
                store.finish_run(run_id, "interrupted", delivery.report.counts(), str(exc))
                raise
            in_window = within(run.plan.events, options.since, options.until)
            known = store.known_keys(destination.id, in_window)
            marked = mark_known(in_window, known)
            new = marked.filter(pl.col("state") == "new")
            result = SendResult(
                run=run,
                run_id=run_id,
                destination=destination,
                to_send=new.height,
                already_sent=marked.height - new.height,
                outside_window=run.plan.events.height - in_window.height,
                delivery=delivery.report,
            )
            if delivery.report.stopped is None:
                start_bar(new.height)
                started = time.perf_counter()
                delivery.send(new)
                result.send_seconds = time.perf_counter() - started
                if delivery.report.stopped is None and not delivery.report.left_to_send and not run.failures:
                    # Refused or held, by this run or an earlier one: the cursor stays at the oldest.
                    undelivered = pl.concat(
                        [
                            _keys_frame([key for key, _ in (*delivery.report.rejected, *delivery.report.held)]),
                            known.filter(pl.col("ledger_state").is_in(["refused", "held"])).select(EVENT_KEY),
                        ]
                    )
                    store.set_cursors(
                        destination.id,
                        advanced_cursors(marked, cursors, marked.join(undelivered, on=list(EVENT_KEY), how="semi")),
                    )
            else:
                delivery.report.left_to_send += new.height
            store.forget_bodies()
            stopped = result.stopped
            store.finish_run(run_id, result.outcome, result.counts(), str(stopped) if stopped else None)
            return result
        finally:
            store.close()


def _keys_frame(keys: list[EventKey]) -> pl.DataFrame:
    return pl.DataFrame(
        [(key.entity_id, key.env, key.build_id) for key in keys],
        schema=dict.fromkeys(EVENT_KEY, pl.String),
        orient="row",
    )


def _reading_from(
    config: Config, cursors: Mapping[str, datetime], since: datetime | None
) -> dict[str, datetime | None]:
    lookback = timedelta(days=config.state.lookback_days)
    return {
        source.name: incremental_since(cursors.get(source.name), lookback, since)
        for source in config.sources
        if REGISTRY[source.type].incremental
    }
