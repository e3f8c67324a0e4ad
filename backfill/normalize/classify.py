"""The rules that make a raw row a DevGrid event, or say why it is not one.

Every row leaves this step with a verdict: an event, a skip (not a deployment:
cancelled, unfinished, filtered out) or a reject (should be a deployment but
cannot be sent as it is). Nothing is dropped here, so every input row can be
accounted for. The first rule a row breaks decides its verdict, in the order
of :class:`~backfill.normalize.verdicts.Verdict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from backfill.model import EVENT_COLUMNS, PASSED_THROUGH_COLUMNS, RAW_COLUMNS, ROW, TS, Outcome
from backfill.normalize.timestamps import EARLIEST_EPOCH_YEAR, TS_VERDICT, add_timestamp
from backfill.normalize.verdicts import VERDICT, Verdict

SOURCE_INDEX = "_source_index"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Values as read (trimmed), kept for the sentences and the rejects file.
RAW_KEPT = ("_raw_timestamp", "_raw_status", "duration_ms", "skip_reason", "reject_reason")


@dataclass(frozen=True)
class Normalization:
    """The ``[normalize]`` settings, and the instant after which a timestamp is in the future."""

    environments: Sequence[str]
    env_aliases: Mapping[str, str]
    default_timezone: str
    now: datetime
    infer_rollbacks: bool = True
    # An epoch timestamp before this year is a number that is not a deployment time.
    earliest_epoch_year: int = EARLIEST_EPOCH_YEAR


def normalize(
    raw: pl.LazyFrame,
    *,
    source: str,
    source_index: int,
    status_vocab: Mapping[str, Outcome],
    rules: Normalization,
    collected: bool = False,
) -> pl.LazyFrame:
    """Give every row of one source's raw frame a verdict, and normalize the events' fields.

    ``collected``: the result is collected into memory, not streamed to disk, so the
    query may hold every row (the rarer timestamp forms are then read apart).
    """
    # Element by element (when/then, is_in), not replace/replace_strict: those split polars'
    # streaming plan into many phases, and the lookups are a handful of words.
    # Trimmed first, in a step of its own: each value is trimmed once, not once per use.
    trimmed = (pl.col(name).str.strip_chars() for name in RAW_COLUMNS)
    blank_is_null = (_blank_is_null(pl.col(name)).alias(name) for name in RAW_COLUMNS)
    aliases = {key.strip().lower(): value for key, value in rules.env_aliases.items()}
    outcome = _lookup(pl.col("status").fill_null("").str.to_lowercase(), status_vocab, pl.lit(None, dtype=pl.String))
    frame = (
        raw.with_columns(trimmed)
        .with_columns(blank_is_null)
        .with_columns(
            pl.col("timestamp").alias("_raw_timestamp"),
            pl.col("status").alias("_raw_status"),
            pl.lit(source).alias("source"),
            pl.lit(source_index, dtype=pl.UInt16).alias(SOURCE_INDEX),
            pl.col("env").alias("original_env"),
            _lookup(pl.col("env").str.to_lowercase(), aliases, pl.col("env").str.to_lowercase()).alias("env"),
            outcome.alias("status"),
        )
    )
    frame = add_timestamp(frame, rules.default_timezone, rules.now, rules.earliest_epoch_year, apart=collected)

    def code(verdict: Verdict) -> pl.Expr:
        return pl.lit(verdict.value, dtype=pl.UInt8)

    status = pl.col("status")
    verdict = (
        pl.when(pl.col("reject_reason").is_not_null())
        .then(code(Verdict.UNREADABLE_ROW))
        .when(pl.col("skip_reason").is_not_null())
        .then(code(Verdict.FILTERED))
        .when((status == "skip") & pl.col("_raw_status").is_null())
        .then(code(Verdict.NOT_FINISHED))
        .when(status == "skip")
        .then(code(Verdict.NOT_A_DEPLOYMENT))
        .when(status.is_null() & pl.col("_raw_status").is_null())
        .then(code(Verdict.MISSING_STATUS))
        .when(status.is_null())
        .then(code(Verdict.UNKNOWN_STATUS))
        .when(pl.col("entityId").is_null())
        .then(code(Verdict.MISSING_ENTITY))
        .when(pl.col("build_id").is_null())
        .then(code(Verdict.MISSING_BUILD_ID))
        .when(pl.col("env").is_null())
        .then(code(Verdict.MISSING_ENV))
        .when(~pl.col("env").is_in(list(rules.environments)))
        .then(code(Verdict.UNKNOWN_ENV))
        .otherwise(pl.col(TS_VERDICT).fill_null(Verdict.EVENT.value))
    )
    return frame.with_columns(
        verdict.alias(VERDICT),
        # DevGrid receives whole seconds; order and dedupe use what it receives.
        pl.col(TS).dt.truncate("1s").alias(TS),
    ).select(
        # The text form of the timestamp is written by the plan, for the events it keeps.
        pl.lit(None, dtype=pl.String).alias("timestamp"),
        *(name for name in EVENT_COLUMNS if name != "timestamp"),
        "source",
        "original_env",
        ROW,
        SOURCE_INDEX,
        TS,
        VERDICT,
        *RAW_KEPT,
        pl.col(PASSED_THROUGH_COLUMNS),  # untouched, after the others
    )


def _blank_is_null(text: pl.Expr) -> pl.Expr:
    return pl.when(text != "").then(text)


def _lookup(text: pl.Expr, table: Mapping[str, str], otherwise: pl.Expr) -> pl.Expr:
    """``table[text]``, else ``otherwise``: one is_in per value the table gives."""
    keys_by_value: dict[str, list[str]] = {}
    for key, value in table.items():
        keys_by_value.setdefault(value, []).append(key)
    result = otherwise
    for value, keys in reversed(keys_by_value.items()):
        result = pl.when(text.is_in(keys)).then(pl.lit(value, dtype=pl.String)).otherwise(result)
    return result
