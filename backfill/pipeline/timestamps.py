"""Turn the many ways exports write time into one UTC instant, in polars.

Accepted: ISO 8601 dates and times with ``T`` or a space, any fraction of a
second, and an offset (``Z``, ``+02:00``, ``+0200``, ``+02``) or none, in
which case ``default_timezone`` applies; and epoch time as a number, whose
unit follows from its size (seconds below 10^11, then milliseconds,
microseconds, nanoseconds). A local time that a daylight-saving change skips
or repeats is rejected rather than guessed. ``duration_ms``, where a source
records start and duration (Jenkins), is added to reach the end of the run.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from backfill.pipeline.verdicts import Verdict

TS = "_ts"  # Datetime(us, UTC), null where the timestamp is unusable
TS_VERDICT = "_ts_verdict"  # why it is unusable (a Verdict), null where it is fine

_ISO = (
    r"(?i)^(\d{4}-\d{2}-\d{2})"  # date
    r"(?:[T ](\d{2}:\d{2})(?::(\d{2}))?(?:[.,](\d{1,9}))?)?"  # time, seconds, fraction
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?$"  # offset
)
_EPOCH = r"^(\d{1,19})(?:\.\d+)?$"
# The form most exports write (GitHub, GitLab, Azure DevOps): read directly, which
# is several times cheaper than the general rules; only the other rows need those.
_COMMON = "%Y-%m-%dT%H:%M:%S%.f%#z"
_INSTANT = "_instant"  # the time as written, in UTC, before duration_ms
_OTHER_FORM = "_other_form"  # the text of rows not in the common form (null elsewhere)
_READABLE = "_readable"  # the text is a time at all (it may still not exist locally)


def add_timestamp(frame: pl.LazyFrame, default_timezone: str, now: datetime) -> pl.LazyFrame:
    """Add ``_ts`` and ``_ts_verdict`` from the raw ``timestamp`` and ``duration_ms`` columns.

    ``now`` must be timezone-aware: anything after it is rejected as in the future.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    raw = pl.col("timestamp")
    common = raw.str.to_datetime(_COMMON, strict=False, time_unit="us", time_zone="UTC")
    frame = frame.with_columns(common.alias(_INSTANT)).with_columns(
        # The general rules skip null cells, so they cost next to nothing on common rows.
        pl.when(pl.col(_INSTANT).is_null()).then(raw).alias(_OTHER_FORM)
    )
    frame = _general(frame, default_timezone)
    duration = pl.col("duration_ms").cast(pl.Float64, strict=False)
    ts = pl.col(_INSTANT) + pl.duration(microseconds=(duration * 1000).round().cast(pl.Int64).fill_null(0))
    frame = frame.with_columns(ts.alias(TS))
    verdict = (
        pl.when(raw.is_null())
        .then(pl.lit(Verdict.MISSING_TIMESTAMP.value))
        .when(~pl.col(_READABLE))
        .then(pl.lit(Verdict.INVALID_TIMESTAMP.value))
        .when(pl.col(TS).is_null())
        .then(pl.lit(Verdict.LOCAL_TIME_GAP.value))
        .when(pl.col("duration_ms").is_not_null() & duration.is_null())
        .then(pl.lit(Verdict.INVALID_DURATION.value))
        .when(pl.col(TS) > pl.lit(now))
        .then(pl.lit(Verdict.FUTURE_TIMESTAMP.value))
    ).cast(pl.UInt8)
    return frame.with_columns(
        verdict.alias(TS_VERDICT),
        pl.when(verdict.is_null()).then(pl.col(TS)).alias(TS),
    ).drop(_INSTANT, _OTHER_FORM, _READABLE)


def _general(frame: pl.LazyFrame, default_timezone: str) -> pl.LazyFrame:
    """Complete ``_instant``, and set ``_readable``, from every accepted form (see the module's docstring)."""
    raw = pl.col(_OTHER_FORM)
    iso = raw.str.extract_groups(_ISO)
    fraction_us = iso.struct.field("4").str.pad_end(6, "0").str.slice(0, 6).cast(pl.Int64)
    frame = frame.with_columns(
        _naive=(
            iso.struct.field("1")
            + " "
            + iso.struct.field("2").fill_null("00:00")
            + ":"
            + iso.struct.field("3").fill_null("00")
        ).str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us")
        + pl.duration(microseconds=fraction_us.fill_null(0)),
        _offset=iso.struct.field("5").str.to_uppercase(),
        _epoch=raw.str.extract(_EPOCH, 1).cast(pl.Int64, strict=False),
    )
    naive, offset, epoch = pl.col("_naive"), pl.col("_offset"), pl.col("_epoch")
    sign = pl.when(offset.str.starts_with("-")).then(-1).otherwise(1)
    digits = offset.str.replace_all(r"[^0-9]", "")
    offset_minutes = (
        pl.when(offset == "Z")
        .then(0)
        .otherwise(
            sign
            * (
                digits.str.slice(0, 2).cast(pl.Int64) * 60
                + digits.str.slice(2, 2).cast(pl.Int64, strict=False).fill_null(0)
            )
        )
    )
    epoch_us = (
        pl.when(epoch < 10**11)
        .then(epoch * 1_000_000)
        .when(epoch < 10**14)
        .then(epoch * 1_000)
        .when(epoch < 10**17)
        .then(epoch)
        .otherwise(epoch // 1_000)
    )
    if default_timezone == "UTC":
        local = naive.dt.replace_time_zone("UTC")
    else:
        local = naive.dt.replace_time_zone(default_timezone, ambiguous="null", non_existent="null")
        local = local.dt.convert_time_zone("UTC")
    instant = (
        pl.when(epoch.is_not_null())
        .then(pl.from_epoch(epoch_us, time_unit="us").dt.replace_time_zone("UTC"))
        .when(offset.is_not_null())
        .then(naive.dt.replace_time_zone("UTC") - pl.duration(minutes=offset_minutes))
        .otherwise(local)
    )
    return frame.with_columns(
        pl.coalesce(pl.col(_INSTANT), instant).alias(_INSTANT),
        (pl.col(_INSTANT).is_not_null() | naive.is_not_null() | epoch.is_not_null()).alias(_READABLE),
    ).drop("_naive", "_offset", "_epoch")
