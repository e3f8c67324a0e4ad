"""Turn the many ways exports write time into one UTC instant, in polars.

Accepted: ISO 8601 dates and times with ``T`` or a space, any fraction of a
second, and an offset (``Z``, ``+02:00``, ``+0200``, ``+02``) or none, in
which case ``default_timezone`` applies; the compact ISO forms (``20230601``,
``20230601T120000Z``, ``20230601120000``); and epoch time as a number, whose
unit follows from its size (seconds below 10^11, then milliseconds,
microseconds, nanoseconds). A leap second (``23:59:60``) is the start of the
next minute, as chrono reads it.

Rejected rather than guessed: a local time that a daylight-saving change
skips or repeats; an offset no place on earth has (beyond -14:00..+14:00, or
minutes of 60 or more); an epoch time before ``earliest_epoch_year`` (a
number that is not a deployment time: ``2023`` is 1970-01-01T00:33:43Z as
epoch seconds); a negative ``duration_ms``. ``duration_ms``, where a source
records start and duration (Jenkins), is added to reach the end of the run.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from backfill.model import TS
from backfill.normalize.verdicts import Verdict

TS_VERDICT = "_ts_verdict"  # why it is unusable (a Verdict), null where it is fine
EARLIEST_EPOCH_YEAR = 2000
MAX_OFFSET_MINUTES = 14 * 60  # Kiribati's +14:00 and Baker Island's -12:00 are the extremes

_ISO = (
    r"(?i)^(\d{4}-\d{2}-\d{2})"  # date
    r"(?:[T ](\d{2}:\d{2})(?::(\d{2}))?(?:[.,](\d{1,9}))?)?"  # time, seconds, fraction
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?$"  # offset
)
# Compact ISO 8601 (basic format): a date of 8 digits, a time of 4 or 6 after a T
# (or 6 straight after the date), then the same fraction and offset as above.
_COMPACT = (
    r"(?i)^(\d{4})(\d{2})(\d{2})"
    r"(?:T?(\d{2})(\d{2})(\d{2})(?:[.,](\d{1,9}))?|T(\d{2})(\d{2}))?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?$"
)
_EPOCH = r"^(\d{1,19})(?:\.\d+)?$"
# The form most exports write (GitHub, GitLab, Azure DevOps): read directly, which
# is several times cheaper than the general rules; only the other rows need those.
_COMMON = "%Y-%m-%dT%H:%M:%S%.f%#z"
# chrono reads any offset below 24 hours; the common path takes only real ones.
_REAL_OFFSET = r"(?i)(?:z|[+-](?:0\d|1[0-3]):?[0-5]\d|[+-]14:?00)$"
_INSTANT = "_instant"  # the time as written, in UTC, before duration_ms
_OTHER_FORM = "_other_form"  # the text of rows not in the common form (null elsewhere)
_READABLE = "_readable"  # the text is a time at all (it may still not exist locally)
_BAD_OFFSET = "_bad_offset"  # the text has an offset no place has
_EPOCH_FORM = "_epoch_form"  # the text is an epoch number


def add_timestamp(
    frame: pl.LazyFrame, default_timezone: str, now: datetime, earliest_epoch_year: int = EARLIEST_EPOCH_YEAR
) -> pl.LazyFrame:
    """Add ``_ts`` and ``_ts_verdict`` from the raw ``timestamp`` and ``duration_ms`` columns.

    ``now`` must be timezone-aware: anything after it is rejected as in the future.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    raw = pl.col("timestamp")
    common = pl.when(raw.str.contains(_REAL_OFFSET)).then(
        raw.str.to_datetime(_COMMON, strict=False, time_unit="us", time_zone="UTC")
    )
    frame = frame.with_columns(common.alias(_INSTANT)).with_columns(
        # The general rules skip null cells, so they cost next to nothing on common rows.
        pl.when(pl.col(_INSTANT).is_null()).then(raw).alias(_OTHER_FORM)
    )
    frame = _general(frame, default_timezone)
    duration = pl.col("duration_ms").cast(pl.Float64, strict=False)
    ts = pl.col(_INSTANT) + pl.duration(microseconds=(duration * 1000).round().cast(pl.Int64).fill_null(0))
    frame = frame.with_columns(ts.alias(TS))
    earliest = datetime(earliest_epoch_year, 1, 1, tzinfo=UTC)
    verdict = (
        pl.when(raw.is_null())
        .then(pl.lit(Verdict.MISSING_TIMESTAMP.value))
        .when(pl.col(_BAD_OFFSET))
        .then(pl.lit(Verdict.IMPOSSIBLE_OFFSET.value))
        .when(~pl.col(_READABLE))
        .then(pl.lit(Verdict.INVALID_TIMESTAMP.value))
        .when(pl.col(TS).is_null())
        .then(pl.lit(Verdict.LOCAL_TIME_GAP.value))
        .when(pl.col("duration_ms").is_not_null() & duration.is_null())
        .then(pl.lit(Verdict.INVALID_DURATION.value))
        .when(duration < 0)
        .then(pl.lit(Verdict.NEGATIVE_DURATION.value))
        .when(pl.col(_EPOCH_FORM) & (pl.col(_INSTANT) < pl.lit(earliest)))
        .then(pl.lit(Verdict.EPOCH_TOO_OLD.value))
        .when(pl.col(TS) > pl.lit(now))
        .then(pl.lit(Verdict.FUTURE_TIMESTAMP.value))
    ).cast(pl.UInt8)
    return frame.with_columns(
        verdict.alias(TS_VERDICT),
        pl.when(verdict.is_null()).then(pl.col(TS)).alias(TS),
    ).drop(_INSTANT, _OTHER_FORM, _READABLE, _BAD_OFFSET, _EPOCH_FORM)


def _general(frame: pl.LazyFrame, default_timezone: str) -> pl.LazyFrame:
    """Complete ``_instant``, and set ``_readable``, from every accepted form (see the module's docstring)."""
    raw = pl.col(_OTHER_FORM)
    iso = raw.str.extract_groups(_ISO)
    compact = raw.str.extract_groups(_COMPACT)

    def part(iso_group: str, *compact_groups: str) -> pl.Expr:
        return pl.coalesce(iso.struct.field(iso_group), *(compact.struct.field(group) for group in compact_groups))

    date = pl.coalesce(
        iso.struct.field("1"),
        compact.struct.field("1") + "-" + compact.struct.field("2") + "-" + compact.struct.field("3"),
    )
    hours_minutes = pl.coalesce(
        iso.struct.field("2"),
        compact.struct.field("4") + ":" + compact.struct.field("5"),
        compact.struct.field("8") + ":" + compact.struct.field("9"),
    )
    seconds = part("3", "6").cast(pl.Int64, strict=False)
    # A leap second is the start of the next minute.
    leap = seconds == 60
    fraction_us = part("4", "7").str.pad_end(6, "0").str.slice(0, 6).cast(pl.Int64)
    frame = frame.with_columns(
        _naive=(
            date
            + " "
            + hours_minutes.fill_null("00:00")
            + ":"
            + pl.when(leap).then(pl.lit("59")).otherwise(seconds.cast(pl.String).str.zfill(2)).fill_null("00")
        ).str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us")
        + pl.duration(microseconds=fraction_us.fill_null(0) + pl.when(leap).then(1_000_000).otherwise(0)),
        _offset=part("5", "10").str.to_uppercase(),
        # Eight digits are a compact date (20230601), never 1970-08-23 in epoch seconds.
        _epoch=pl.when(compact.struct.field("1").is_null())
        .then(raw.str.extract(_EPOCH, 1))
        .cast(pl.Int64, strict=False),
    )
    naive, offset, epoch = pl.col("_naive"), pl.col("_offset"), pl.col("_epoch")
    sign = pl.when(offset.str.starts_with("-")).then(-1).otherwise(1)
    digits = offset.str.replace_all(r"[^0-9]", "")
    offset_hours = digits.str.slice(0, 2).cast(pl.Int64, strict=False).fill_null(0)
    offset_part = digits.str.slice(2, 2).cast(pl.Int64, strict=False).fill_null(0)
    offset_minutes = pl.when(offset == "Z").then(0).otherwise(sign * (offset_hours * 60 + offset_part))
    bad_offset = (offset != "Z") & ((offset_part >= 60) | ((offset_hours * 60 + offset_part) > MAX_OFFSET_MINUTES))
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
        (naive.is_not_null() & bad_offset.fill_null(False)).alias(_BAD_OFFSET),
        epoch.is_not_null().alias(_EPOCH_FORM),
    ).drop("_naive", "_offset", "_epoch")
