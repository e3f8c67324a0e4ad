"""ServiceNow's dates as UTC instants, by the normalizer's rules (time zone and daylight saving).

A date without an offset is read in the entry's ``timezone``; a local time
that a daylight-saving change skips or repeats is refused, not guessed, as
:mod:`backfill.normalize.timestamps` does for deployments.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from backfill.model import TS
from backfill.normalize.timestamps import TS_VERDICT, add_timestamp
from backfill.normalize.verdicts import Verdict

# Dates in change requests may lie ahead (a scheduled window): nothing is "in the future" here.
_NO_FUTURE = datetime(9000, 1, 1, tzinfo=UTC)


def instant_column(field: str) -> str:
    return f"_{field}_utc"


def problem_column(field: str) -> str:
    return f"_{field}_problem"


def add_instants(frame: pl.LazyFrame, fields: list[str], timezone: str) -> pl.LazyFrame:
    """For each field: its UTC instant, and a sentence where the text is not a usable time."""
    for field in fields:
        read = add_timestamp(
            frame.with_columns(pl.col(field).alias("timestamp"), pl.lit(None, dtype=pl.String).alias("duration_ms")),
            timezone,
            _NO_FUTURE,
            earliest_epoch_year=1970,
        )
        value = pl.format("{} '{}'", pl.lit(field), pl.col(field))
        verdict = pl.col(TS_VERDICT)
        problem = (
            pl.when(verdict.is_null() | (verdict == Verdict.MISSING_TIMESTAMP.value))
            .then(pl.lit(None, dtype=pl.String))
            .when(verdict == Verdict.LOCAL_TIME_GAP.value)
            .then(
                pl.format(
                    "{} does not exist or occurs twice in {} (a daylight-saving change); export the dates in UTC",
                    value,
                    pl.lit(timezone),
                )
            )
            .when(verdict == Verdict.IMPOSSIBLE_OFFSET.value)
            .then(pl.format("{} has a UTC offset no place has", value))
            .otherwise(pl.format("{} is not a date and time (such as 2025-01-15 14:30:00)", value))
        )
        frame = read.with_columns(pl.col(TS).alias(instant_column(field)), problem.alias(problem_column(field))).drop(
            "timestamp", "duration_ms", TS, TS_VERDICT
        )
    return frame
