"""The rules that make a raw row a DevGrid event, or say why it is not one.

Every row leaves this step classified: ``event``, ``skip`` (not a deployment:
cancelled, unfinished, filtered out) or ``reject`` (should be a deployment
but cannot be sent as it is), with the reason. Nothing is dropped here, so
every input row can be accounted for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from backfill.columns import EVENT_COLUMNS, RAW_COLUMNS, ROW
from backfill.extractors.base import Outcome
from backfill.pipeline.timestamps import TS, TS_PROBLEM, add_timestamp

CLASS = "_class"  # "event", "skip" or "reject"
REASON = "_reason"
SOURCE_INDEX = "_source_index"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Rules:
    """The ``[normalize]`` settings, lowercased once."""

    environments: Sequence[str]
    env_aliases: Mapping[str, str]
    default_timezone: str
    now: datetime


def normalize(
    raw: pl.LazyFrame,
    *,
    source: str,
    source_index: int,
    status_vocab: Mapping[str, Outcome],
    rules: Rules,
) -> pl.LazyFrame:
    """Classify every row of one source's raw frame and normalize the events' fields."""
    trimmed = raw.with_columns(
        # The values as read, for the rejects file.
        pl.struct(*EVENT_COLUMNS).alias("_raw"),
    ).with_columns(
        pl.when(pl.col(name).str.strip_chars() != "").then(pl.col(name).str.strip_chars()).alias(name)
        for name in RAW_COLUMNS
    )
    env_key = pl.col("env").str.to_lowercase()
    aliases = {key.strip().lower(): value for key, value in rules.env_aliases.items()}
    outcome = (
        pl.col("status")
        .fill_null("")
        .str.to_lowercase()
        .replace_strict(dict(status_vocab), default=None, return_dtype=pl.String)
    )
    frame = trimmed.with_columns(
        pl.lit(source).alias("source"),
        pl.lit(source_index, dtype=pl.UInt16).alias(SOURCE_INDEX),
        pl.col("env").alias("original_env"),
        env_key.replace(aliases).alias("env"),
        outcome.alias("_outcome"),
    )
    frame = add_timestamp(frame, rules.default_timezone, rules.now)

    status_shown = pl.format("'{}'", pl.col("status"))
    reason = (
        pl.when(pl.col("reject_reason").is_not_null())
        .then(pl.struct(c=pl.lit("reject"), r=pl.col("reject_reason")))
        .when(pl.col("skip_reason").is_not_null())
        .then(pl.struct(c=pl.lit("skip"), r=pl.col("skip_reason")))
        .when((pl.col("_outcome") == "skip") & pl.col("status").is_null())
        .then(pl.struct(c=pl.lit("skip"), r=pl.lit("no status: the run had not finished when it was exported")))
        .when(pl.col("_outcome") == "skip")
        .then(pl.struct(c=pl.lit("skip"), r=pl.format("status {} is not a deployment", status_shown)))
        .when(pl.col("_outcome").is_null() & pl.col("status").is_null())
        .then(pl.struct(c=pl.lit("reject"), r=pl.lit("missing status")))
        .when(pl.col("_outcome").is_null())
        .then(
            pl.struct(
                c=pl.lit("reject"),
                r=pl.format("unknown status {}; say what it means with status_map in this source", status_shown),
            )
        )
        .when(pl.col("entityId").is_null())
        .then(pl.struct(c=pl.lit("reject"), r=pl.lit("missing entityId")))
        .when(pl.col("build_id").is_null())
        .then(pl.struct(c=pl.lit("reject"), r=pl.lit("missing build_id")))
        .when(pl.col("env").is_null())
        .then(pl.struct(c=pl.lit("reject"), r=pl.lit("missing env")))
        .when(~pl.col("env").is_in(list(rules.environments)))
        .then(
            pl.struct(
                c=pl.lit("reject"),
                r=pl.format(
                    "env '{}' is not one of {}; add it to [normalize] environments or env_aliases",
                    pl.col("original_env"),
                    pl.lit(", ".join(rules.environments)),
                ),
            )
        )
        .when(pl.col(TS_PROBLEM).is_not_null())
        .then(pl.struct(c=pl.lit("reject"), r=pl.col(TS_PROBLEM)))
        .otherwise(pl.struct(c=pl.lit("event"), r=pl.lit(None, dtype=pl.String)))
    )
    return (
        frame.with_columns(reason.alias("_verdict"))
        .with_columns(
            pl.col("_verdict").struct.field("c").alias(CLASS),
            pl.col("_verdict").struct.field("r").alias(REASON),
            pl.col("_outcome").alias("status"),
            pl.col(TS).dt.truncate("1s").alias(TS),
        )
        .with_columns(pl.col(TS).dt.strftime(TIMESTAMP_FORMAT).alias("timestamp"))
        .select(
            *EVENT_COLUMNS,
            "source",
            "original_env",
            ROW,
            SOURCE_INDEX,
            TS,
            CLASS,
            REASON,
            "_raw",
        )
    )
