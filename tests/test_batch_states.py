"""The batch protocol as a pure function, and the crash argument it supports, checked without HTTP."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import get_args

import pytest

from backfill.errors import StateError
from backfill.model import EventKey
from backfill.state.rules import BatchEvent, BatchStatus, BatchTransitionError, batch_after, outcome_unknown
from backfill.state.store import OutgoingBatch, Store

EVENTS: tuple[BatchEvent, ...] = get_args(BatchEvent)


def _paths(length: int) -> list[tuple[BatchStatus, tuple[BatchEvent, ...]]]:
    """Every sequence of events the protocol allows, up to ``length``, with where it ends."""
    found = []
    for size in range(length + 1):
        for events in itertools.product(EVENTS, repeat=size):
            status = BatchStatus()
            try:
                for event in events:
                    status = batch_after(status, event)
            except BatchTransitionError:
                continue
            found.append((status, events))
    return found


def test_settled_states_are_final() -> None:
    for status, _ in _paths(4):
        if status.state != "pending":
            for event in EVENTS:
                with pytest.raises(BatchTransitionError):
                    batch_after(status, event)


def test_a_batch_that_may_be_stored_is_never_released_and_an_answer_needs_a_post() -> None:
    paths = _paths(5)
    assert {status.state for status, _ in paths} == {"pending", "answered", "split", "released"}
    for status, events in paths:
        if "maybe-stored" in events:
            assert status.state != "released"
        if status.state == "answered":
            assert "posted" in events


@pytest.mark.parametrize("same_boot", [True, False])
def test_a_crash_at_any_point_leaves_every_batch_that_went_out_flagged_on_the_next_run(same_boot: bool) -> None:
    """Kill the run after any prefix of events: the next run resends what is pending and flags
    it possibly duplicated whenever a POST may have gone out, on this boot or after a restart."""
    for status, events in _paths(4):
        if status.state != "pending":
            continue  # settled before the crash: nothing to resend
        went_out = status.posts > 0
        flagged = outcome_unknown(status.posts, "boot-1", "boot-1" if same_boot else "boot-2")
        if went_out:
            assert flagged, events
        elif same_boot:
            assert not flagged, events  # written ahead, never posted: known unsent on the same boot
        else:
            assert flagged, events  # the first posted mark is not flushed: a machine crash may lose it


def _batch(build_id: str) -> OutgoingBatch:
    return OutgoingBatch(
        body="{}",
        keys=(EventKey("shop", "production", build_id),),
        timestamps=("2025-01-01T00:00:00Z",),
        sources=("s",),
    )


def test_the_state_file_refuses_to_settle_a_batch_twice(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.db", create=True)
    assert store is not None
    destination = store.resolve_destination("https://devgrid.test", "account")
    run = store.start_run(destination.id, "https://devgrid.test", "boot-1")
    released, answered = store.write_ahead(run, destination.id, [_batch("1"), _batch("2")])
    store.release(released)
    store.mark_posted(answered)
    store.record_answer(answered)
    with pytest.raises(StateError, match=f"batch {released} is not pending, so it cannot be answered"):
        store.record_answer(released)
    with pytest.raises(StateError, match=f"batch {answered} is not pending, so it cannot be released"):
        store.release(answered)
    assert dict(store.known_keys(destination.id, _keys()).select("build_id", "ledger_state").iter_rows()) == {
        "2": "sent"
    }
    store.close()


def _keys():  # type: ignore[no-untyped-def]
    import polars as pl

    return pl.DataFrame({"entityId": ["shop", "shop"], "env": ["production", "production"], "build_id": ["1", "2"]})
