"""The resume rules, as plain functions over frames and values (no I/O).

* Each destination (DevGrid URL and account) has a ledger of its own.
* An event whose key the ledger holds (sent, in flight, refused by DevGrid, or
  held back because DevGrid does not know its entity) is not new: it is never
  planned again, unless ``--retry-rejected`` forgets the refused and held ones.
* A batch moves through :func:`batch_after`: written ahead as ``pending``, POSTed
  (each POST counted), then settled for good as ``answered``, ``split`` (into
  smaller pending batches) or ``released`` (certainly never stored: forgotten).
  A batch DevGrid may hold is never released.
* A batch found pending when a run starts was written but never answered: it
  is sent again first. Its events count as possibly duplicated unless it was
  certainly never POSTed (see :func:`outcome_unknown`).
* A source that reads incrementally starts from ``cursor - lookback``; the
  ledger absorbs the overlap.
* A cursor moves to the newest event a source delivered, and only forward; it
  never passes an event of that source that DevGrid refused or that was held
  back, so that a later ``--retry-rejected`` reads it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl

from backfill.errors import StateError
from backfill.model import TS, BatchState

# What can happen to a pending batch: a POST goes out; its answer is lost or ambiguous (DevGrid
# may hold it); DevGrid answers; it is split to find what DevGrid refuses; it is released.
BatchEvent = Literal["posted", "maybe-stored", "answered", "split", "released"]


@dataclass(frozen=True)
class BatchStatus:
    state: BatchState = "pending"
    posts: int = 0
    maybe_stored: bool = False


class BatchTransitionError(ValueError):
    """A transition the protocol forbids: a bug, never a user's mistake."""


def batch_after(batch: BatchStatus, event: BatchEvent) -> BatchStatus:
    """The batch state machine. Settled states are final; an answer needs a POST; a batch
    DevGrid may hold is never released (its events would be planned, and sent, again)."""
    if batch.state != "pending":
        raise BatchTransitionError(f"a batch already {batch.state} cannot be {event}")
    if event == "posted":
        return replace(batch, posts=batch.posts + 1)
    if event == "maybe-stored":
        if batch.posts == 0:
            raise BatchTransitionError("a batch never POSTed cannot have been stored")
        return replace(batch, maybe_stored=True)
    if event == "answered":
        if batch.posts == 0:
            raise BatchTransitionError("a batch never POSTed cannot be answered")
        return replace(batch, state="answered")
    if event == "released":
        if batch.maybe_stored:
            raise BatchTransitionError("a batch DevGrid may hold cannot be released")
        return replace(batch, state="released")
    return replace(batch, state="split")


def missing_state(path: Path) -> StateError:
    """``--require-state`` and no state file: a run now would send all history again."""
    return StateError(
        f"{path}: does not exist, and --require-state says it must: without it this run would "
        "send all history again. Restore the state file; only if nothing was ever sent from this config, "
        "create it with backfill init -c CONFIG"
    )


def outcome_unknown(posts: int, written_on_boot: str | None, current_boot: str | None) -> bool:
    """Whether a pending batch may have been stored.

    The first "posted" mark is written without a flush: after a process crash it
    is reliable, after a machine crash it may be lost. So a batch that was never
    posted is known to be unsent only on the same boot.
    """
    return posts > 0 or written_on_boot is None or written_on_boot != current_boot


def incremental_since(cursor: datetime | None, lookback: timedelta, since: datetime | None) -> datetime | None:
    """Where an incremental source starts reading: an explicit --since wins, else cursor - lookback."""
    if since is not None:
        return since
    return cursor - lookback if cursor is not None else None


def advanced_cursors(
    delivered: pl.DataFrame, current: Mapping[str, datetime], undelivered: pl.DataFrame | None = None
) -> dict[str, datetime]:
    """Per source, the newest delivered timestamp, never earlier than the cursor already held.

    ``undelivered`` (events DevGrid refused or that were held back) holds a
    source's cursor at its oldest such event.
    """
    newest = dict(delivered.group_by("source").agg(pl.col(TS).max()).iter_rows())
    if undelivered is not None:
        for source, oldest in undelivered.group_by("source").agg(pl.col(TS).min()).iter_rows():
            if source in newest and oldest < newest[source]:
                newest[source] = oldest
    result = {}
    for source, position in newest.items():
        held = current.get(source)
        result[source] = position if held is None or position > held else held
    return result
