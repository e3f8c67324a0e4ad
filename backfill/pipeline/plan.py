"""From classified rows to the send plan: dedupe, order, and count everything.

Dedupe key ``(entityId, env, build_id)``: one run that deployed to staging and
then production is two events; the same run exported twice is one. Of rows
sharing a key, the row from the source listed first in the config wins; within
one source, the latest timestamp (a re-run's final outcome), then the later
row. Send order: timestamp, then entityId, env, build_id. Both choices are
total orders, so the same inputs always give the same plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from backfill.columns import EVENT_COLUMNS, EVENT_KEY, REVIEW_EXTRA_COLUMNS, ROW
from backfill.pipeline.normalize import CLASS, REASON, SOURCE_INDEX
from backfill.pipeline.timestamps import TS

COUNT_COLUMNS = ("read", "skipped", "rejected", "duplicates", "events")


@dataclass(frozen=True)
class Plan:
    """What a run would send, and an account of every row it read."""

    events: pl.DataFrame  # send order; EVENT_COLUMNS, source, original_env, _ts
    rejects: pl.DataFrame  # source, row, reason, then the raw event fields
    skips: pl.DataFrame  # source, reason, rows
    counts: pl.DataFrame  # source, read, skipped, rejected, duplicates, events (config order)


def make_plan(classified: pl.DataFrame, sources: Sequence[str]) -> Plan:
    candidates = classified.filter(pl.col(CLASS) == "event")
    kept = (
        candidates.sort([SOURCE_INDEX, TS, ROW], descending=[False, True, True])
        .unique(subset=list(EVENT_KEY), keep="first", maintain_order=True)
        .sort([TS, *(name for name in EVENT_KEY)])
    )
    rejects = classified.filter(pl.col(CLASS) == "reject").select(
        "source", ROW, pl.col(REASON).alias("reason"), pl.col("_raw").struct.unnest()
    )
    skips = (
        classified.filter(pl.col(CLASS) == "skip")
        .group_by("source", REASON, maintain_order=True)
        .agg(pl.len().alias("rows"))
        .rename({REASON: "reason"})
    )
    return Plan(
        events=kept.select(*EVENT_COLUMNS, *REVIEW_EXTRA_COLUMNS, TS),
        rejects=rejects,
        skips=skips,
        counts=_counts(classified, kept, sources),
    )


def _counts(classified: pl.DataFrame, kept: pl.DataFrame, sources: Sequence[str]) -> pl.DataFrame:
    per_class = classified.group_by("source").agg(
        pl.len().alias("read"),
        (pl.col(CLASS) == "skip").sum().alias("skipped"),
        (pl.col(CLASS) == "reject").sum().alias("rejected"),
        (pl.col(CLASS) == "event").sum().alias("_candidates"),
    )
    per_kept = kept.group_by("source").agg(pl.len().alias("events"))
    order = pl.DataFrame({"source": list(sources)}, schema={"source": pl.String})
    return (
        order.join(per_class, on="source", how="left")
        .join(per_kept, on="source", how="left")
        .fill_null(0)
        .with_columns((pl.col("_candidates") - pl.col("events")).alias("duplicates"))
        .select("source", *(pl.col(name).cast(pl.Int64) for name in COUNT_COLUMNS))
    )
