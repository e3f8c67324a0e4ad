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
from backfill.model import (
    ATTRIBUTE_COLUMNS,
    ENRICHED_COLUMNS,
    EVENT_COLUMNS,
    EVENT_KEY,
    REVIEW_EXTRA_COLUMNS,
    ROW,
    TS,
    starting_like_a_formula,
)
from backfill.normalize.classify import RAW_KEPT, SOURCE_INDEX, TIMESTAMP_FORMAT, Normalization
from backfill.normalize.verdicts import REJECT_FIRST, VERDICT, Verdict, reason
from backfill.plan.keys import may_repeat
from backfill.plan.rollbacks import IsAncestor, infer_rollbacks, rollback_marks
from backfill.plan.spill import ROLLBACKS_SCHEMA, SPILL_ROW, Spill, SpilledEvents, in_order

COUNT_COLUMNS = ("read", "skipped", "rejected", "duplicates", "events")
POSITION = "_i"  # a classified row's position, sources in config order
# The classified columns whose rows the plan gathers into events (the others it filters and counts).
GATHERED_COLUMNS = (*EVENT_COLUMNS, *REVIEW_EXTRA_COLUMNS, TS)
# What a spilled plan's events carry besides TS and SPILL_ROW: the key, and what the summary reads.
SPILLED_EVENT_COLUMNS = (
    "entityId",
    "env",
    "status",
    "build_id",
    "build_commit_sha",
    "change_id",
    "source",
    "original_env",
)


@dataclass(frozen=True)
class Plan:
    """What a run would send, and an account of every row it read."""

    events: pl.DataFrame  # send order; EVENT_COLUMNS, source, original_env, (change_id_rule,) _ts
    rejects: pl.DataFrame  # source, row, reason, then the event fields as read
    skips: pl.DataFrame  # source, reason, rows
    skipped: pl.DataFrame  # source, row, reason, then the event fields as read (one row per skipped row)
    counts: pl.DataFrame  # source, read, skipped, rejected, duplicates, events (config order)
    # Planned from rows spilled to disk: events then hold SPILLED_EVENT_COLUMNS, TS and SPILL_ROW only.
    spilled: SpilledEvents | None = None
    # The events' text columns in which some classified row starts like a formula (so may an event);
    # None: not known, the review checks the events themselves.
    formula_columns: frozenset[str] | None = None


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
    winners = _winners(classified.lazy().with_row_index(POSITION))
    # Columns an enrichment adds (which rule set change_id) travel with their events.
    enriched = [name for name in ENRICHED_COLUMNS if name in classified.columns]
    event_columns = [*EVENT_COLUMNS, *REVIEW_EXTRA_COLUMNS, *enriched]
    # Checked on the rows in the order they were read, before the events are gathered: reading
    # gathered text jumps around memory, and several times more slowly.
    formula_columns = _may_start_formula(classified, event_columns)
    kept = classified.select(*event_columns, TS)[winners].with_columns(
        pl.col(TS).dt.strftime(TIMESTAMP_FORMAT).alias("timestamp")
    )
    if rules.infer_rollbacks:
        kept = infer_rollbacks(kept, ancestry or {})
    rejects, skipped, skips = _not_events(classified.lazy(), rules)
    return Plan(
        events=kept,
        rejects=rejects,
        skips=skips,
        skipped=skipped,
        counts=_counts(classified.lazy(), kept, sources),
        formula_columns=formula_columns,
    )


def make_spilled_plan(
    spill: Spill,
    sources: Sequence[str],
    rules: Normalization,
    ancestry: Mapping[str, IsAncestor] | None = None,
) -> Plan:
    """The plan :func:`make_plan` makes, from rows spilled to disk; its events carry only what planning reads.

    The review takes the other fields from the spill (:func:`backfill.plan.spill.review_slices`).
    """
    rows = spill.scan()
    winners = _winners(rows.rename({SPILL_ROW: POSITION}))
    set_or_not = {f"_has_{name}": pl.col(name).is_not_null() for name in ("deployment_type", "description")}
    # Fetched in spill order, then put in send order (the fetched frame is handed over, not kept).
    events = in_order(
        rows.filter(pl.col(SPILL_ROW).is_in(winners.implode()))
        .select(*SPILLED_EVENT_COLUMNS, TS, SPILL_ROW, **set_or_not)
        .collect(),
        (winners.rank("ordinal") - 1).cast(pl.UInt32),
    )
    rollbacks = pl.DataFrame(schema=ROLLBACKS_SCHEMA)
    if rules.infer_rollbacks:
        # Only whether deployment_type and description are set matters to the rules.
        marks = rollback_marks(
            events.with_columns(
                pl.when(pl.col(f"_has_{name}")).then(pl.lit("")).alias(name)
                for name in ("deployment_type", "description")
            ),
            ancestry or {},
        )
        rollbacks = marks.select(
            events.get_column(SPILL_ROW).gather(marks.get_column("_position")), "_rollback_to", _marked=pl.lit(True)
        )
    rejects, skipped, skips = _not_events(rows, rules)
    return Plan(
        events=events.drop(*set_or_not),
        rejects=rejects,
        skips=skips,
        skipped=skipped,
        counts=_counts(rows, events, sources),
        spilled=SpilledEvents(spill, rollbacks),
    )


def _may_start_formula(classified: pl.DataFrame, columns: Sequence[str]) -> frozenset[str]:
    """The text columns of ``columns`` in which some row starts like a spreadsheet formula.

    Rollback inference only writes text that starts with a letter, so the events'
    cells that start like a formula are among these rows'.
    """
    return starting_like_a_formula(classified, [name for name in columns if classified.schema[name] == pl.String])


def _winners(rows: pl.LazyFrame) -> pl.Series:
    """The positions of the events to send, in send order: one per key (see the module's rules)."""
    is_event = pl.col(VERDICT) == Verdict.EVENT
    # Choose winners on a narrow frame, then take their rows once: moving every column is slow.
    candidates = rows.filter(is_event).select(*EVENT_KEY, SOURCE_INDEX, TS, ROW, POSITION).collect()
    # Most keys occur once; only the rows whose key may repeat are ranked.
    repeated = may_repeat(candidates, EVENT_KEY)
    best_of_repeated = (
        candidates.filter(repeated)
        .sort([SOURCE_INDEX, TS, ROW], descending=[False, True, True])
        .unique(subset=list(EVENT_KEY), keep="first", maintain_order=True)
        .get_column(POSITION)
    )
    winners = candidates.filter(~repeated | candidates.get_column(POSITION).is_in(best_of_repeated.implode()))
    # Sorted as positions: the key columns are read, not moved.
    return winners.get_column(POSITION).gather(winners.select(pl.arg_sort_by([TS, *EVENT_KEY])).to_series())


def _not_events(rows: pl.LazyFrame, rules: Normalization) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The rows that are not events, with the reason: rejects, skipped rows, and skips counted by reason."""
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
    verdict = pl.col(VERDICT)

    def read(which: pl.Expr) -> pl.DataFrame:
        # Each set read by itself, with only the columns the sentences and the files need: they can be many rows.
        return (
            rows.filter(which)
            .select("source", ROW, "entityId", "original_env", *ATTRIBUTE_COLUMNS, VERDICT, *RAW_KEPT)
            .collect()
            .with_columns(reason(rules.environments, rules.default_timezone).alias("reason"))
            .select(*as_read)
        )

    rejects = read(verdict >= REJECT_FIRST)
    skipped = read((verdict != Verdict.EVENT) & (verdict < REJECT_FIRST))
    skips = skipped.group_by("source", "reason", maintain_order=True).agg(pl.len().alias("rows"))
    return rejects, skipped, skips


def _counts(classified: pl.LazyFrame, kept: pl.DataFrame, sources: Sequence[str]) -> pl.DataFrame:
    verdict = pl.col(VERDICT)
    per_source = (
        classified.group_by("source")
        .agg(
            pl.len().alias("read"),
            ((verdict > Verdict.EVENT) & (verdict < REJECT_FIRST)).sum().alias("skipped"),
            (verdict >= REJECT_FIRST).sum().alias("rejected"),
            (verdict == Verdict.EVENT).sum().alias("_candidates"),
        )
        .collect()
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
