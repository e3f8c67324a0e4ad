"""Why a row is not an event: a small code per row, and the sentence for it.

The hot path computes only the code (a number), so a million good rows cost
nothing here; the sentences are built for skipped and rejected rows alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

import polars as pl

VERDICT = "_verdict"


class Verdict(IntEnum):
    EVENT = 0
    # Not a deployment: counted as skipped.
    FILTERED = 10
    NOT_FINISHED = 11
    NOT_A_DEPLOYMENT = 12
    # Should be a deployment but cannot be sent as it is: rejected.
    UNREADABLE_ROW = 20
    MISSING_STATUS = 21
    UNKNOWN_STATUS = 22
    MISSING_ENTITY = 23
    MISSING_BUILD_ID = 24
    MISSING_ENV = 25
    UNKNOWN_ENV = 26
    MISSING_TIMESTAMP = 27
    INVALID_TIMESTAMP = 28
    LOCAL_TIME_GAP = 29
    INVALID_DURATION = 30
    FUTURE_TIMESTAMP = 31
    IMPOSSIBLE_OFFSET = 32
    NEGATIVE_DURATION = 33
    EPOCH_TOO_OLD = 34


REJECT_FIRST = Verdict.UNREADABLE_ROW


def reason(environments: Sequence[str], default_timezone: str) -> pl.Expr:
    """The sentence for each verdict, from the row's raw values (see normalize)."""
    status = pl.format("'{}'", pl.col("_raw_status"))
    timestamp = pl.format("'{}'", pl.col("_raw_timestamp"))
    sentences: list[tuple[Verdict, pl.Expr]] = [
        (Verdict.FILTERED, pl.col("skip_reason")),
        (Verdict.NOT_FINISHED, pl.lit("no status: the run had not finished when it was exported")),
        (Verdict.NOT_A_DEPLOYMENT, pl.format("status {} is not a deployment", status)),
        (Verdict.UNREADABLE_ROW, pl.col("reject_reason")),
        (Verdict.MISSING_STATUS, pl.lit("missing status")),
        (
            Verdict.UNKNOWN_STATUS,
            pl.format("unknown status {}; say what it means with status_map in this source", status),
        ),
        (Verdict.MISSING_ENTITY, pl.lit("missing entityId")),
        (Verdict.MISSING_BUILD_ID, pl.lit("missing build_id")),
        (Verdict.MISSING_ENV, pl.lit("missing env")),
        (
            Verdict.UNKNOWN_ENV,
            pl.format(
                "env '{}' is not one of {}; add it to [normalize] environments or env_aliases",
                pl.col("original_env"),
                pl.lit(", ".join(environments)),
            ),
        ),
        (Verdict.MISSING_TIMESTAMP, pl.lit("missing timestamp")),
        (Verdict.INVALID_TIMESTAMP, pl.format("timestamp {} is not a valid ISO 8601 or epoch time", timestamp)),
        (
            Verdict.LOCAL_TIME_GAP,
            pl.format(
                "timestamp {} does not exist or is ambiguous in {} (a daylight-saving change); give it an offset",
                timestamp,
                pl.lit(default_timezone),
            ),
        ),
        (
            Verdict.INVALID_DURATION,
            pl.format("duration_ms '{}' is not a number of milliseconds", pl.col("duration_ms")),
        ),
        (Verdict.FUTURE_TIMESTAMP, pl.format("timestamp {} is in the future", timestamp)),
        (
            Verdict.IMPOSSIBLE_OFFSET,
            pl.format("timestamp {} has an offset no place has (they run from -14:00 to +14:00)", timestamp),
        ),
        (
            Verdict.NEGATIVE_DURATION,
            pl.format("duration_ms '{}' is negative; a run cannot end before it starts", pl.col("duration_ms")),
        ),
        (
            Verdict.EPOCH_TOO_OLD,
            pl.format(
                "timestamp {} read as epoch time falls before [normalize] earliest_epoch_year (2000 unless set), "
                "too old for a deployment; check the column, or lower earliest_epoch_year",
                timestamp,
            ),
        ),
    ]
    code = pl.col(VERDICT)
    return pl.coalesce([pl.when(code == verdict).then(sentence) for verdict, sentence in sentences])
