"""The one diff between the plan and a destination's ledger: which planned events are new.

A dry run and a sending run both take it, so that the review shows exactly what
the sending run would send: the events in the run's window (``--since`` /
``--until``) whose key the ledger does not hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from backfill.model import EVENT_KEY, TS

# Ledger states that make an event not new: sent, in flight, refused by DevGrid, or held back
# because DevGrid does not know its entity (--retry-rejected forgets the last two first).
NOT_NEW = ("sent", "pending", "refused", "held")
UNDELIVERED = ("refused", "held")

# The ledger's rows for some keys: EVENT_KEY plus ``ledger_state``.
KnownKeys = Callable[[pl.DataFrame], pl.DataFrame]


@dataclass(frozen=True)
class LedgerDiff:
    """The planned events in the window, each marked ``new`` or ``sent`` (``state``), and what follows."""

    marked: pl.DataFrame
    new: pl.DataFrame  # the marked events that are new, in send order
    already_sent: int
    outside_window: int  # planned events the window left out
    # Keys an earlier run left refused or held: a cursor must not pass them.
    undelivered_before: pl.DataFrame
    # False when no ledger was compared with (no state file): ``state`` says new for all.
    compared: bool


def diff(
    events: pl.DataFrame, since: datetime | None, until: datetime | None, known_keys: KnownKeys | None
) -> LedgerDiff:
    """The window's events against the ledger (``known_keys`` None: there is no ledger yet)."""
    in_window = within(events, since, until)
    known = no_known_keys(in_window) if known_keys is None else known_keys(in_window)
    marked = mark_known(in_window, known)
    # Filtering copies every column: a history none of which was sent needs no copy.
    new = marked if known.height == 0 else marked.filter(pl.col("state") == "new")
    return LedgerDiff(
        marked=marked,
        new=new,
        already_sent=marked.height - new.height,
        outside_window=events.height - in_window.height,
        undelivered_before=known.filter(pl.col("ledger_state").is_in(UNDELIVERED)).select(EVENT_KEY),
        compared=known_keys is not None,
    )


def no_known_keys(events: pl.DataFrame) -> pl.DataFrame:
    """What a ledger that holds none of the events answers."""
    return pl.DataFrame(schema={**dict.fromkeys(EVENT_KEY, pl.String), "ledger_state": pl.String})


def mark_known(events: pl.DataFrame, known: pl.DataFrame) -> pl.DataFrame:
    """Add ``state``: ``sent`` where the ledger holds the key, ``new`` otherwise."""
    held = known.filter(pl.col("ledger_state").is_in(NOT_NEW)).select(*EVENT_KEY, pl.lit("sent").alias("state"))
    if held.height == 0:
        return events.with_columns(pl.lit("new").alias("state"))
    # Joined on the key columns alone, so that the events' other columns are not copied.
    state = events.select(EVENT_KEY).join(held, on=list(EVENT_KEY), how="left", maintain_order="left")
    return events.with_columns(state.get_column("state").fill_null("new"))


def within(events: pl.DataFrame, since: datetime | None, until: datetime | None) -> pl.DataFrame:
    """Events with ``since <= timestamp < until``."""
    if since is None and until is None:
        return events
    keep = pl.lit(True)
    if since is not None:
        keep = keep & (pl.col(TS) >= since)
    if until is not None:
        keep = keep & (pl.col(TS) < until)
    return events.filter(keep)
