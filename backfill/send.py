"""A real run: lock the state, settle what an earlier run left open, plan, send, checkpoint.

The order matters. Batches an earlier run left pending are settled before
anything new is planned, so that the plan sees them as sent; new events are
those whose key the ledger does not hold; cursors move only when every
planned event was delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import polars as pl

from backfill.config import Config
from backfill.devgrid import DevGridClient
from backfill.errors import AuthError, DeliveryError
from backfill.extractors import REGISTRY
from backfill.loader import Delivery, DeliveryReport, RetryPolicy
from backfill.run import RunPlan, Step, no_progress, plan_run
from backfill.state.lock import StateLock
from backfill.state.rules import advanced_cursors, incremental_since, mark_known, within
from backfill.state.store import Store, current_boot_id


@dataclass(frozen=True)
class SendOptions:
    url: str
    api_key: str
    since: datetime | None = None
    until: datetime | None = None
    retry_rejected: bool = False


@dataclass
class SendResult:
    run: RunPlan
    run_id: int
    to_send: int
    already_sent: int
    outside_window: int
    delivery: DeliveryReport
    settled: DeliveryReport = field(default_factory=DeliveryReport)
    send_seconds: float = 0.0

    @property
    def stopped(self) -> DeliveryError | None:
        return self.settled.stopped or self.delivery.stopped


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
) -> SendResult:
    """Plan and deliver. Raises StateError/StateLockedError before sending anything it cannot track."""
    state_path = Path(config.state.path)
    devgrid = DevGridClient(client, options.url, options.api_key, config.devgrid.api_key_env)
    policy = RetryPolicy(max_attempts=config.devgrid.max_attempts, max_wait=config.devgrid.max_wait)
    with StateLock(state_path):
        store = Store.open(state_path, create=True)
        assert store is not None
        try:
            run_id = store.start_run(options.url, current_boot_id())

            def delivery() -> Delivery:
                return Delivery(
                    store,
                    devgrid,
                    run_id=run_id,
                    batch_size=config.devgrid.batch_size,
                    policy=policy,
                    sleep=sleep,
                    progress=progress,
                    notice=notice,
                )

            settling = delivery()
            with step("settling batches an earlier run left open"):
                try:
                    settling.settle()
                except DeliveryError as exc:
                    settling.report.stopped = exc
            if options.retry_rejected:
                store.forget_rejected()

            cursors = store.cursors()
            run = plan_run(
                config,
                now=now,
                step=step,
                reading_from=_reading_from(config, cursors, options.since),
                sleep=sleep,
                notice=notice,
            )
            in_window = within(run.plan.events, options.since, options.until)
            marked = mark_known(in_window, store.known_keys(in_window))
            new = marked.filter(pl.col("state") == "new")
            result = SendResult(
                run=run,
                run_id=run_id,
                to_send=new.height,
                already_sent=marked.height - new.height,
                outside_window=run.plan.events.height - in_window.height,
                delivery=DeliveryReport(),
                settled=settling.report,
            )
            if settling.report.stopped is None:
                sending = delivery()
                start_bar(new.height)
                started = time.perf_counter()
                sending.send(new)
                result.send_seconds = time.perf_counter() - started
                result.delivery = sending.report
                if sending.report.stopped is None and not run.failures:
                    store.set_cursors(advanced_cursors(marked, cursors))
            else:
                result.delivery.left_to_send = new.height
            store.forget_bodies()
            store.finish_run(run_id, _outcome(result), _counts(result), str(result.stopped) if result.stopped else None)
            return result
        finally:
            store.close()


def _reading_from(
    config: Config, cursors: Mapping[str, datetime], since: datetime | None
) -> dict[str, datetime | None]:
    lookback = timedelta(days=config.state.lookback_days)
    return {
        source.name: incremental_since(cursors.get(source.name), lookback, since)
        for source in config.sources
        if REGISTRY[source.type].incremental
    }


def _outcome(result: SendResult) -> str:
    stopped = result.stopped
    if isinstance(stopped, AuthError):
        return "auth-refused"
    if stopped is not None:
        return "incomplete"
    if result.delivery.rejected or result.settled.rejected:
        return "refused-events"
    return "done"


def _counts(result: SendResult) -> dict[str, int]:
    both = (result.settled, result.delivery)
    return {
        "planned": result.to_send,
        "sent": sum(report.sent for report in both),
        "rejected": sum(len(report.rejected) for report in both),
        "possibly_duplicated": sum(len(report.possibly_duplicated) for report in both),
        "left_to_send": sum(report.left_to_send for report in both),
    }
