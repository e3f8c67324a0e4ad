"""A sending run's hold on the state: lock it, find the destination, settle what an earlier run left open,
send the new events, move the cursors, record the run.

The order matters. Batches an earlier run left pending are settled before
anything new is planned (:meth:`SendSession.open`), so that the plan sees them
as sent; new events are those whose key the destination's ledger does not hold
(:mod:`backfill.plan.ledger`); cursors move only over history that was delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from types import TracebackType

import httpx
import polars as pl

from backfill.config import Config
from backfill.errors import EXIT_AUTH, EXIT_INCOMPLETE, EXIT_OK, AuthError, DeliveryError, Interrupted
from backfill.extract import REGISTRY
from backfill.interrupts import Interrupts
from backfill.load.client import DevGridClient
from backfill.load.delivery import Delivery, DeliveryReport, RetryPolicy
from backfill.model import EVENT_KEY, EventKey, RunOutcome
from backfill.plan.ledger import KnownKeys, LedgerDiff
from backfill.state.destination import account_of
from backfill.state.lock import StateLock
from backfill.state.remote import remote_state
from backfill.state.rules import advanced_cursors, incremental_since, missing_state
from backfill.state.store import Destination, KeyChange, Store, current_boot_id


@dataclass(frozen=True)
class SendOptions:
    url: str
    api_key: str
    since: datetime | None = None
    until: datetime | None = None
    retry_rejected: bool = False
    require_state: bool = False
    key_change: KeyChange | None = None
    in_flight: int | None = None  # --in-flight: instead of [delivery] in_flight
    # This machine's boot (Linux), for telling a batch certainly never posted from one that may have been.
    boot_id: str | None = field(default_factory=current_boot_id)


@dataclass
class SendResult:
    """What a sending run did: the ledger diff it sent from, and DevGrid's answers."""

    run_id: int
    destination: Destination
    to_send: int = 0
    already_sent: int = 0
    outside_window: int = 0
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    send_seconds: float = 0.0

    @property
    def stopped(self) -> DeliveryError | Interrupted | None:
        return self.delivery.stopped

    @property
    def outcome(self) -> RunOutcome:
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
        """The delivery's exit code (0 when every event went; the run adds its sources' failures)."""
        stopped = self.stopped
        if isinstance(stopped, Interrupted):
            return stopped.exit_code
        if isinstance(stopped, AuthError):
            return EXIT_AUTH
        return EXIT_OK if self.outcome == "done" else EXIT_INCOMPLETE

    def counts(self) -> dict[str, int]:
        return {"planned": self.to_send, **self.delivery.counts()}


class SendSession:
    """The state file held for one sending run, from the lock to the run's record."""

    def __init__(
        self,
        config: Config,
        options: SendOptions,
        client: httpx.Client,
        *,
        notice: Callable[[str], None] = lambda message: None,
        progress: Callable[[int], None] = lambda events: None,
        sleep: Callable[[float], None] = time.sleep,
        interrupts: Interrupts | None = None,
    ) -> None:
        self._config = config
        self._options = options
        self._client = client
        self._notice = notice
        self._progress = progress
        self._sleep = sleep
        self._interrupts = interrupts or Interrupts()
        self._held = ExitStack()  # the lock, the remote state (with [state] url), the store: closed in reverse
        self._store: Store | None = None
        self._delivery: Delivery | None = None
        self.result: SendResult | None = None
        self.cursors: dict[str, datetime] = {}
        # The destination's ledger rows for some events (backfill.plan.ledger.KnownKeys), once settled.
        self.known_keys: KnownKeys | None = None

    # -- opening: lock, destination, the run's record, settling -----------------------------

    def __enter__(self) -> SendSession:
        """Lock and open the state; raises StateError/StateLockedError before anything is sent.

        With ``[state] url``, the state object is downloaded under its lock first, uploaded after
        each checkpoint interval and when the session closes (:mod:`backfill.state.remote`).
        """
        state_path = Path(self._config.state.path)
        try:
            self._held.enter_context(StateLock(state_path))
            remote = self._held.enter_context(remote_state(self._config, self._notice))
            if remote is not None:
                self._progress = remote.after_each_batch(self._progress, commit=self._flush)
            store = Store.open(state_path, create=not self._options.require_state, write=True)
            if store is None:
                raise missing_state(state_path)
            self._store = store
            self._held.callback(store.close)
            options = self._options
            destination = store.resolve_destination(
                options.url, account_of(options.api_key, store.salt), options.key_change
            )
            run_id = store.start_run(destination.id, options.url, options.boot_id)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        devgrid = DevGridClient(self._client, options.url, options.api_key, self._config.devgrid.api_key_env)
        policy = RetryPolicy(max_attempts=self._config.devgrid.max_attempts, max_wait=self._config.devgrid.max_wait)
        self._delivery = Delivery(
            store,
            devgrid,
            destination_id=destination.id,
            run_id=run_id,
            batch_size=self._config.devgrid.batch_size,
            policy=policy,
            sleep=self._sleep,
            progress=self._progress,
            notice=self._notice,
            interrupts=self._interrupts,
            in_flight=options.in_flight or self._config.delivery.in_flight,
            same_stream=self._config.delivery.same_stream,
            boot_id=options.boot_id,
        )
        self.result = SendResult(run_id=run_id, destination=destination, delivery=self._delivery.report)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._held.__exit__(kind, error, traceback)

    def settle(self) -> None:
        """Send again what an earlier run left pending, then read the cursors the plan starts from.

        Raises Interrupted if Ctrl-C or SIGTERM stopped the settling (see :meth:`interrupted`).
        """
        store, delivery, result = self._parts()
        delivery.settle()
        if isinstance(delivery.report.stopped, Interrupted):
            raise delivery.report.stopped
        if self._options.retry_rejected:
            store.forget_refused(result.destination.id)
        self.cursors = store.cursors(result.destination.id)
        self.known_keys = partial(store.known_keys, result.destination.id)

    def interrupted(self, signal: Interrupted) -> None:
        """Stopped before anything new was sent: record the run as interrupted."""
        store, delivery, result = self._parts()
        store.finish_run(result.run_id, "interrupted", delivery.report.counts(), str(signal))

    def reading_from(self, since: datetime | None) -> dict[str, datetime | None]:
        """Per incremental source, where its reading may start: the cursor less the lookback, or --since."""
        lookback = timedelta(days=self._config.state.lookback_days)
        return {
            source.name: incremental_since(self.cursors.get(source.name), lookback, since)
            for source in self._config.sources
            if REGISTRY[source.type].incremental
        }

    # -- sending --------------------------------------------------------------------------------

    def send(
        self, diff: LedgerDiff, *, sources_complete: bool, start_bar: Callable[[int], None] = lambda total: None
    ) -> SendResult:
        """Send the diff's new events, oldest first; move the cursors if all history got through; record the run."""
        store, delivery, result = self._parts()
        new = diff.new
        result.to_send = new.height
        result.already_sent = diff.already_sent
        result.outside_window = diff.outside_window
        if delivery.report.stopped is None:
            start_bar(new.height)
            started = time.perf_counter()
            delivery.send(new)
            result.send_seconds = time.perf_counter() - started
            report = delivery.report
            if report.stopped is None and not report.left_to_send and sources_complete:
                # Refused or held, by this run or an earlier one: the cursor stays at the oldest.
                undelivered = pl.concat(
                    [_keys_frame([key for key, _ in (*report.rejected, *report.held)]), diff.undelivered_before]
                )
                marked = diff.marked
                held_back = marked.join(undelivered, on=list(EVENT_KEY), how="semi")
                store.set_cursors(result.destination.id, advanced_cursors(marked, self.cursors, held_back))
        else:
            delivery.report.left_to_send += new.height
        store.write_ledger_rows()
        stopped = result.stopped
        store.finish_run(result.run_id, result.outcome, result.counts(), str(stopped) if stopped else None)
        return result

    def _flush(self) -> None:
        if self._store is not None:
            self._store.flush()

    def _parts(self) -> tuple[Store, Delivery, SendResult]:
        assert self._store is not None and self._delivery is not None and self.result is not None, "not opened"
        return self._store, self._delivery, self.result


def _keys_frame(keys: list[EventKey]) -> pl.DataFrame:
    return pl.DataFrame(
        [(key.entity_id, key.env, key.build_id) for key in keys],
        schema=dict.fromkeys(EVENT_KEY, pl.String),
        orient="row",
    )
