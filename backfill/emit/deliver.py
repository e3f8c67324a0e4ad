"""Sending one live event: fail-open, within a total deadline, recorded like a backfill's.

DevGrid's guide insists that a notification never fails a deployment, so a
failure here is a warning and exit 0, unless ``--strict`` asks for its exit
code. Whatever happens, the whole send ends within the deadline (30 s by
default): requests time out within what is left, retries stop before they
would pass it, and a send still busy at the deadline is abandoned. A 401/403
is never retried (retrying cannot fix a key). Success is said only when DevGrid
answered that it stored the event.

The event goes through the same :class:`~backfill.load.delivery.Delivery` as a
backfill's batches: written ahead to a state file, then POSTed, then
DevGrid's per-event answer recorded. With ``[state]`` configured that is the
team's state file, so the event joins the ledger and a later catch-up run
over the same history knows it was sent (same key) and does not send it
again; an event that could not be sent is not in the ledger, and the next
catch-up run sends it. Without a state file, a throwaway one is used.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from backfill.emit.event import BuiltEvent
from backfill.errors import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    AuthError,
    BackfillError,
    DeliveryError,
    Interrupted,
    StateLockedError,
)
from backfill.load.client import DevGridClient
from backfill.load.delivery import Delivery, RetryPolicy
from backfill.state.destination import account_of
from backfill.state.lock import StateLock
from backfill.state.store import Store, current_boot_id

DEFAULT_DEADLINE = 30.0  # seconds, for the whole send
_LOCK_POLL = 0.25  # seconds between tries while a catch-up run holds the state file
_GRACE = 2.0  # seconds past the deadline before a send that will not end is abandoned

Result = Literal["sent", "already-sent", "refused", "not-sent", "dry-run"]


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str
    api_key_env: str
    timeout: float = 30.0  # per request, cut to what is left of the deadline
    max_attempts: int = 6


@dataclass
class Outcome:
    result: Result
    message: str
    exit_code: int = EXIT_OK  # what --strict exits with
    recorded: bool = False  # the event is in the team's state file
    possibly_duplicated: bool = False
    abandoned: bool = False  # the send was still busy at the deadline

    @property
    def ok(self) -> bool:
        return self.result in ("sent", "already-sent")


def deliver(
    event: BuiltEvent,
    target: Target,
    state_path: Path | None,
    *,
    deadline: float = DEFAULT_DEADLINE,
    notice: Callable[[str], None] = lambda message: None,
    sleep: Callable[[float], None] = time.sleep,
    remote: Callable[[], AbstractContextManager[object]] | None = None,
) -> Outcome:
    """Send ``event`` and say what became of it; never raises for a delivery problem.

    ``remote`` holds the state kept in object storage (``[state] url``) while the event is
    recorded: downloaded under its lock first, uploaded after.
    """
    started = time.monotonic()
    box: list[Outcome] = []

    def work() -> None:
        try:
            box.append(_deliver(event, target, state_path, started + deadline, notice, sleep, remote))
        except BackfillError as exc:
            box.append(Outcome("not-sent", str(exc), exit_code=exc.exit_code))
        except Interrupted as exc:
            box.append(Outcome("not-sent", str(exc), exit_code=exc.exit_code))

    worker = threading.Thread(target=work, name="emit", daemon=True)
    worker.start()
    worker.join(deadline + _GRACE)
    if box:
        return box[0]
    return Outcome(
        "not-sent",
        f"no answer from DevGrid within the {deadline:g} s deadline; the event may or may not be stored "
        "(a catch-up run settles it)",
        exit_code=EXIT_INCOMPLETE,
        possibly_duplicated=True,
        abandoned=True,
    )


def _deliver(
    event: BuiltEvent,
    target: Target,
    state_path: Path | None,
    ends_at: float,
    notice: Callable[[str], None],
    sleep: Callable[[float], None],
    remote: Callable[[], AbstractContextManager[object]] | None = None,
) -> Outcome:
    if state_path is None:
        with tempfile.TemporaryDirectory(prefix="backfill-emit-") as folder:
            return _send(event, target, Path(folder) / "state.db", ends_at, notice, sleep, shared=False)
    lock = StateLock(state_path)
    while True:
        try:
            lock.__enter__()
            break
        except StateLockedError:
            # A catch-up run is using the state: wait for it, within the deadline.
            if time.monotonic() + _LOCK_POLL >= ends_at:
                raise StateLockedError(
                    f"{state_path} stayed busy (another backfill run holds it) until the deadline; the event "
                    "was not sent, and the next catch-up run sends it"
                ) from None
            sleep(_LOCK_POLL)
    try:
        with remote() if remote is not None else nullcontext():
            if not state_path.is_file():
                # No state in object storage yet: emit never starts one (a lost state must stop the next run).
                notice(f"{state_path}: no state yet; the event is sent without being recorded")
                with tempfile.TemporaryDirectory(prefix="backfill-emit-") as folder:
                    return _send(event, target, Path(folder) / "state.db", ends_at, notice, sleep, shared=False)
            return _send(event, target, state_path, ends_at, notice, sleep, shared=True)
    finally:
        lock.__exit__(None, None, None)


def _send(
    event: BuiltEvent,
    target: Target,
    state_path: Path,
    ends_at: float,
    notice: Callable[[str], None],
    sleep: Callable[[float], None],
    *,
    shared: bool,
) -> Outcome:
    store = Store.open(state_path, create=True, write=True)
    assert store is not None
    try:
        destination = store.resolve_destination(target.url, account_of(target.api_key, store.salt))
        known = store.known_keys(destination.id, event.row)
        if known.height:
            return _known(event, known.item(0, "ledger_state"), state_path)
        remaining = max(ends_at - time.monotonic(), 0.1)
        run_id = store.start_run(destination.id, target.url, current_boot_id())
        with httpx.Client(timeout=min(target.timeout, remaining), follow_redirects=False) as client:
            delivery = Delivery(
                store,
                DevGridClient(client, target.url, target.api_key, target.api_key_env),
                destination_id=destination.id,
                run_id=run_id,
                batch_size=1,
                policy=RetryPolicy(max_attempts=target.max_attempts, max_wait=remaining),
                sleep=sleep,
                notice=notice,
                boot_id=current_boot_id(),
            )
            delivery.send(event.row)
        report = delivery.report
        # A batch left pending is one whose POST may have been stored: its answer never came.
        maybe_stored = any(batch.run_id == run_id for batch in store.pending_batches(destination.id))
        outcome = _outcome(event, report.stopped, report.sent, report.rejected, shared, maybe_stored)
        outcome.possibly_duplicated = bool(report.possibly_duplicated) or maybe_stored
        store.write_ledger_rows()
        counts = report.counts()
        store.finish_run(
            run_id, _run_outcome(outcome), {"planned": 1, **counts}, None if outcome.ok else outcome.message
        )
        return outcome
    finally:
        store.close()


def _known(event: BuiltEvent, state: str, state_path: Path) -> Outcome:
    key = f"{event.key.entity_id}/{event.key.env}/{event.key.build_id}"
    if state in ("sent", "pending"):
        waiting = " (its answer never came; the next catch-up run settles it)" if state == "pending" else ""
        return Outcome("already-sent", f"{key}: already sent, per {state_path}{waiting}; not sent again", recorded=True)
    return Outcome(
        "refused",
        f"{key}: DevGrid refused this event before ({state}, per {state_path}); see backfill status, fix the "
        "cause, then run backfill run --retry-rejected",
        exit_code=EXIT_INCOMPLETE,
        recorded=True,
    )


def _outcome(
    event: BuiltEvent,
    stopped: DeliveryError | Interrupted | None,
    sent: int,
    rejected: Sequence[tuple[object, str]],
    shared: bool,
    maybe_stored: bool = False,
) -> Outcome:
    key = f"{event.key.entity_id}/{event.key.env}/{event.key.build_id}"
    if rejected:
        return Outcome(
            "refused", f"DevGrid refused {key}: {rejected[0][1]}", exit_code=EXIT_INCOMPLETE, recorded=shared
        )
    if stopped is not None:
        later = " The next catch-up run sends it." if shared and not isinstance(stopped, AuthError) else ""
        if maybe_stored:
            later = (
                " DevGrid may have stored it all the same; the next catch-up run settles it."
                if shared
                else " DevGrid may have stored it all the same."
            )
        return Outcome("not-sent", f"{key} was not sent: {stopped}.{later}", exit_code=stopped.exit_code)
    if sent:
        return Outcome("sent", f"sent {key}", recorded=shared)
    return Outcome("not-sent", f"{key} was not sent", exit_code=EXIT_INCOMPLETE)


def _run_outcome(outcome: Outcome) -> str:
    return {"sent": "done", "refused": "refused-events", "already-sent": "done"}.get(outcome.result, "incomplete")
