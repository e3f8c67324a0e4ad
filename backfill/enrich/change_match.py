"""The matching rules, as polars joins: which change request each deployment belongs to.

Rule 1, exact id: a field of the change equals a field of the event
(``correlation_id = "build_id"``), compared trimmed and case-insensitively; a
change whose service maps to an entity matches only that entity's events.
Rule 2, time window: for events rule 1 did not decide, a change of the same
service (``cmdb_ci`` mapped to ``entityId``) whose window contains the
deployment's time, both ends included.

Each rule gives an event exactly one change or none: where it finds several,
the event gets none and the candidates are reported. The window rule counts
candidates without pairing every event with every change: the number of
windows containing an instant is (starts at or before it) - (ends before it),
and where that is one, the difference of the running sums of the changes'
indexes names it.
"""

from __future__ import annotations

import polars as pl

from backfill.enrich.changes import END, ENTITY, NUMBER, START, exact_key, key_column
from backfill.model import TS

INDEX = "_i"
RULE = "change_id_rule"
CANDIDATES = "_candidates"
MATCH_SCHEMA: dict[str, pl.DataType] = {
    INDEX: pl.UInt32(),
    NUMBER: pl.String(),
    RULE: pl.String(),
    CANDIDATES: pl.List(pl.String()),
}


def match(events: pl.DataFrame, changes: pl.DataFrame, exact: dict[str, str], window: bool) -> pl.DataFrame:
    """One row per event that a rule decided: its change number (null when ambiguous), the rule, the candidates.

    ``events`` has INDEX, entityId, TS and the event fields ``exact`` names.
    """
    decided = exact_matches(events, changes, exact)
    if window:
        rest = events.join(decided.select(INDEX), on=INDEX, how="anti")
        decided = pl.concat([decided, window_matches(rest, changes)], how="vertical")
    return decided


def exact_matches(events: pl.DataFrame, changes: pl.DataFrame, exact: dict[str, str]) -> pl.DataFrame:
    pairs = []
    for order, (change_field, event_field) in enumerate(exact.items()):
        keys = changes.select(NUMBER, ENTITY, pl.col(key_column(change_field)).alias("_key")).drop_nulls("_key")
        found = (
            events.select(INDEX, "entityId", exact_key(pl.col(event_field)).alias("_key"))
            .drop_nulls("_key")
            .join(keys, on="_key")
            .filter(pl.col(ENTITY).is_null() | (pl.col(ENTITY) == pl.col("entityId")))
            .select(
                INDEX,
                NUMBER,
                pl.lit(order, dtype=pl.UInt32).alias("_order"),
                pl.lit(f"exact {change_field}").alias(RULE),
            )
        )
        pairs.append(found)
    if not pairs:
        return pl.DataFrame(schema=MATCH_SCHEMA)
    return _decide(pl.concat(pairs, how="vertical"))


def _decide(found: pl.DataFrame) -> pl.DataFrame:
    """Per event: the one change the rule found, or none and the candidates."""
    per_event = (
        found.sort(INDEX, "_order", NUMBER)
        .group_by(INDEX, maintain_order=True)
        .agg(pl.col(NUMBER).unique(maintain_order=True).alias(CANDIDATES), pl.col(RULE).first())
    )
    one = pl.col(CANDIDATES).list.len() == 1
    return per_event.select(
        INDEX,
        pl.when(one).then(pl.col(CANDIDATES).list.first()).alias(NUMBER),
        RULE,
        pl.when(~one).then(pl.col(CANDIDATES)).alias(CANDIDATES),
    )


def window_matches(events: pl.DataFrame, changes: pl.DataFrame) -> pl.DataFrame:
    windows = (
        changes.filter(pl.col(ENTITY).is_not_null() & pl.col(START).is_not_null())
        .select(ENTITY, START, END, NUMBER)
        .sort(ENTITY, START, NUMBER)
        .with_row_index("_k")
        .with_columns(pl.col("_k").cast(pl.Int64))
    )
    if windows.is_empty() or events.is_empty():
        return pl.DataFrame(schema=MATCH_SCHEMA)

    def running(at: str) -> pl.DataFrame:
        # Per entity and instant: how many windows start (or end) at or before it, and the sum of their indexes.
        return (
            windows.group_by(ENTITY, pl.col(at).alias("_at"))
            .agg(pl.len().cast(pl.Int64).alias("_n"), pl.col("_k").sum().alias("_sum"))
            .sort(ENTITY, "_at")
            .with_columns(pl.col("_n").cum_sum().over(ENTITY), pl.col("_sum").cum_sum().over(ENTITY))
            .sort("_at")
        )

    # Both sides are sorted on the instant just above; polars cannot check that within "by" groups.
    starts = running(START)
    # A window that ends one microsecond before an instant has ended before it; one that ends at it has not.
    ends = running(END).with_columns(pl.col("_at") + pl.duration(microseconds=1))
    located = (
        events.select(INDEX, "entityId", TS)
        .filter(pl.col("entityId").is_in(windows.get_column(ENTITY).unique().implode()))
        .sort(TS)
        .join_asof(
            starts,
            left_on=TS,
            right_on="_at",
            by_left="entityId",
            by_right=ENTITY,
            strategy="backward",
            check_sortedness=False,
        )
        .drop("_at")
        .join_asof(
            ends,
            left_on=TS,
            right_on="_at",
            by_left="entityId",
            by_right=ENTITY,
            strategy="backward",
            suffix="_end",
            check_sortedness=False,
        )
        .select(
            INDEX,
            "entityId",
            TS,
            (pl.col("_n").fill_null(0) - pl.col("_n_end").fill_null(0)).alias("_count"),
            (pl.col("_sum").fill_null(0) - pl.col("_sum_end").fill_null(0)).alias("_k"),
        )
        .filter(pl.col("_count") > 0)
    )
    single = (
        located.filter(pl.col("_count") == 1)
        .join(windows.select("_k", NUMBER), on="_k")
        .select(INDEX, NUMBER, pl.lit("window").alias(RULE), pl.lit(None, dtype=pl.List(pl.String)).alias(CANDIDATES))
    )
    # Only the ambiguous few are paired with their entity's windows, to name the candidates.
    several = (
        located.filter(pl.col("_count") > 1)
        .join(windows, left_on="entityId", right_on=ENTITY)
        .filter((pl.col(START) <= pl.col(TS)) & (pl.col(TS) <= pl.col(END)))
        .sort(INDEX, START, NUMBER)
        .group_by(INDEX, maintain_order=True)
        .agg(pl.col(NUMBER).alias(CANDIDATES))
        .select(INDEX, pl.lit(None, dtype=pl.String).alias(NUMBER), pl.lit("window").alias(RULE), CANDIDATES)
    )
    return pl.concat([single.cast(pl.Schema(MATCH_SCHEMA)), several.cast(pl.Schema(MATCH_SCHEMA))], how="vertical")
