"""From classified rows to the send plan: dedupe, order, and count everything.

Dedupe key ``(entityId, env, build_id)``: one run that deployed to staging and
then production is two events; the same run exported twice is one. Of rows
sharing a key, the row from the source listed first in the config wins; within
one source, the latest timestamp (a re-run's final outcome), then the later
row. Send order: timestamp, then entityId, env, build_id. Both are total
orders, so the same inputs always give the same plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from backfill.enrich import Enrichment
from backfill.errors import EXIT_ERROR, EXIT_OK, EXIT_SOURCE_RETRY, SourceError
from backfill.model import ATTRIBUTE_COLUMNS, ENRICHED_COLUMNS, EVENT_COLUMNS, EVENT_KEY, REVIEW_EXTRA_COLUMNS, ROW, TS
from backfill.normalize.classify import SOURCE_INDEX, TIMESTAMP_FORMAT, Normalization
from backfill.normalize.verdicts import REJECT_FIRST, VERDICT, Verdict, reason
from backfill.plan.rollbacks import IsAncestor, infer_rollbacks

COUNT_COLUMNS = ("read", "skipped", "rejected", "duplicates", "events")


@dataclass(frozen=True)
class Plan:
    """What a run would send, and an account of every row it read."""

    events: pl.DataFrame  # send order; EVENT_COLUMNS, source, original_env, (change_id_rule,) _ts
    rejects: pl.DataFrame  # source, row, reason, then the event fields as read
    skips: pl.DataFrame  # source, reason, rows
    skipped: pl.DataFrame  # source, row, reason, then the event fields as read (one row per skipped row)
    counts: pl.DataFrame  # source, read, skipped, rejected, duplicates, events (config order)


@dataclass
class RunPlan:
    """A plan plus what went wrong on the way: sources that failed, and warnings."""

    plan: Plan
    failures: list[SourceError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # What the [[enrich]] entries matched, rejected and linked.
    enrichment: Enrichment = field(default_factory=Enrichment)

    @property
    def exit_code(self) -> int:
        """0; else 7 when every failed source may pass by itself (a scheduler may retry), 1 otherwise."""
        if not self.failures:
            return EXIT_OK
        return EXIT_SOURCE_RETRY if all(failure.transient for failure in self.failures) else EXIT_ERROR


def make_plan(
    classified: pl.DataFrame,
    sources: Sequence[str],
    rules: Normalization,
    ancestry: Mapping[str, IsAncestor] | None = None,
) -> Plan:
    is_event = pl.col(VERDICT) == Verdict.EVENT
    # Choose winners on a narrow frame, then take their rows once: moving every column is slow.
    # Most keys occur once; only the rows whose key repeats need ranking.
    candidates = (
        classified.lazy()
        .select(*EVENT_KEY, SOURCE_INDEX, TS, ROW, VERDICT, pl.int_range(pl.len(), dtype=pl.UInt32).alias("_i"))
        .filter(is_event)
        .with_columns((pl.len().over(EVENT_KEY) > 1).alias("_repeated"))
        .collect()
    )
    best_of_repeated = (
        candidates.filter("_repeated")
        .sort([SOURCE_INDEX, TS, ROW], descending=[False, True, True])
        .unique(subset=list(EVENT_KEY), keep="first", maintain_order=True)
    )
    winners = (
        pl.concat([candidates.filter(~pl.col("_repeated")), best_of_repeated]).sort([TS, *EVENT_KEY]).get_column("_i")
    )
    # Columns an enrichment adds (which rule set change_id) travel with their events.
    enriched = [name for name in ENRICHED_COLUMNS if name in classified.columns]
    kept = classified.select(*EVENT_COLUMNS, *REVIEW_EXTRA_COLUMNS, *enriched, TS)[winners].with_columns(
        pl.col(TS).dt.strftime(TIMESTAMP_FORMAT).alias("timestamp")
    )
    if rules.infer_rollbacks:
        kept = infer_rollbacks(kept, ancestry or {})
    others = classified.filter(~is_event).with_columns(
        reason(rules.environments, rules.default_timezone).alias("reason")
    )
    as_read = (
        "source",
        ROW,
        "reason",
        pl.col("_raw_timestamp").alias("timestamp"),
        "entityId",
        pl.col("original_env").alias("env"),
        pl.col("_raw_status").alias("status"),
        *ATTRIBUTE_COLUMNS,
    )
    rejects = others.filter(pl.col(VERDICT) >= REJECT_FIRST).select(*as_read)
    skipped = others.filter(pl.col(VERDICT) < REJECT_FIRST).select(*as_read)
    skips = skipped.group_by("source", "reason", maintain_order=True).agg(pl.len().alias("rows"))
    return Plan(
        events=kept,
        rejects=rejects,
        skips=skips,
        skipped=skipped,
        counts=_counts(classified, kept, sources),
    )


def _counts(classified: pl.DataFrame, kept: pl.DataFrame, sources: Sequence[str]) -> pl.DataFrame:
    verdict = pl.col(VERDICT)
    per_source = classified.group_by("source").agg(
        pl.len().alias("read"),
        ((verdict > Verdict.EVENT) & (verdict < REJECT_FIRST)).sum().alias("skipped"),
        (verdict >= REJECT_FIRST).sum().alias("rejected"),
        (verdict == Verdict.EVENT).sum().alias("_candidates"),
    )
    per_kept = kept.group_by("source").agg(pl.len().alias("events"))
    order = pl.DataFrame({"source": list(sources)}, schema={"source": pl.String})
    return (
        order.join(per_source, on="source", how="left")
        .join(per_kept, on="source", how="left")
        .fill_null(0)
        .with_columns((pl.col("_candidates") - pl.col("events")).alias("duplicates"))
        .select("source", *(pl.col(name).cast(pl.Int64) for name in COUNT_COLUMNS))
    )
