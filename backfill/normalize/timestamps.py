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
# The shapes most exports write, read with integer arithmetic (parsing text as time is
# the costly part): whole seconds with Z, with a +hh:mm offset or with none, and epoch
# seconds or milliseconds. Eight digits are a compact date, so epoch numbers of that
# length, and of more than 13 digits, take the rules below; so does any row of these
# shapes whose date, time or offset does not exist.
_PLAIN = r"^(?:\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:Z|[+-]\d{2}:\d{2})?|\d{1,7}|\d{9,13})$"
_PLAIN_LOCAL, _PLAIN_UTC, _PLAIN_OFFSET = 19, 20, 25  # the lengths of those shapes
_PLAIN_EPOCH = 13  # at most this many digits
# The next form most exports write (fractions, other offsets): read directly, which
# is several times cheaper than the general rules; only the other rows need those.
_COMMON = "%Y-%m-%dT%H:%M:%S%.f%#z"
# chrono reads any offset below 24 hours; the common path takes only real ones.
_REAL_OFFSET = r"(?i)(?:z|[+-](?:0\d|1[0-3]):?[0-5]\d|[+-]14:?00)$"
_INSTANT = "_instant"  # the time as written, in UTC, before duration_ms
_PLAIN_EPOCH_FORM = "_plain_epoch_form"  # the text is an epoch number read by the plain rules
_OTHER_FORM = "_other_form"  # the text of rows not in the common form (null elsewhere)
_READABLE = "_readable"  # the text is a time at all (it may still not exist locally)
_BAD_OFFSET = "_bad_offset"  # the text has an offset no place has
_EPOCH_FORM = "_epoch_form"  # the text is an epoch number


def add_timestamp(
    frame: pl.LazyFrame,
    default_timezone: str,
    now: datetime,
    earliest_epoch_year: int = EARLIEST_EPOCH_YEAR,
    *,
    plain_shapes: bool = True,
    apart: bool = False,
) -> pl.LazyFrame:
    """Add ``_ts`` and ``_ts_verdict`` from the raw ``timestamp`` and ``duration_ms`` columns.

    ``now`` must be timezone-aware: anything after it is rejected as in the future.
    ``plain_shapes=False`` reads every row by the general rules, which give the
    plain shapes the same instants, only more slowly. ``apart=True`` runs the
    general rules on the rows that need them alone and joins their answers back:
    the rules are many steps, each costing about as much on a null cell as on a
    text, so that is much cheaper where few rows need them; but the query then
    holds every row until the join, so it is for frames collected into memory.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    raw = pl.col("timestamp")
    if plain_shapes:
        frame = _plain(frame, default_timezone)
    else:
        frame = frame.with_columns(
            pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias(_INSTANT), pl.lit(False).alias(_PLAIN_EPOCH_FORM)
        )
    # The rules below skip null cells, so they cost next to nothing on the rows read already.
    rest = pl.when(pl.col(_INSTANT).is_null()).then(raw)
    common = pl.when(rest.str.contains(_REAL_OFFSET)).then(
        rest.str.to_datetime(_COMMON, strict=False, time_unit="us", time_zone="UTC")
    )
    frame = frame.with_columns(pl.coalesce(pl.col(_INSTANT), common).alias(_INSTANT)).with_columns(
        pl.when(pl.col(_INSTANT).is_null()).then(raw).alias(_OTHER_FORM)
    )
    frame = _general_apart(frame, default_timezone) if apart else _general(frame, default_timezone)
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
        .when((pl.col(_EPOCH_FORM) | pl.col(_PLAIN_EPOCH_FORM)) & (pl.col(_INSTANT) < pl.lit(earliest)))
        .then(pl.lit(Verdict.EPOCH_TOO_OLD.value))
        .when(pl.col(TS) > pl.lit(now))
        .then(pl.lit(Verdict.FUTURE_TIMESTAMP.value))
    ).cast(pl.UInt8)
    return frame.with_columns(
        verdict.alias(TS_VERDICT),
        pl.when(verdict.is_null()).then(pl.col(TS)).alias(TS),
    ).drop(_INSTANT, _PLAIN_EPOCH_FORM, _OTHER_FORM, _READABLE, _BAD_OFFSET, _EPOCH_FORM)


def _plain(frame: pl.LazyFrame, default_timezone: str) -> pl.LazyFrame:
    """Add ``_instant`` for each row in one of the plain shapes (null elsewhere), and whether it is an epoch number.

    Exactly what the rules below give those rows: a date, time or offset that does
    not exist, or a local time a clock change skips or repeats, is null here and
    left to them. The parts are columns of their own, so that each is read once.
    """
    raw = pl.col("timestamp")

    def number(start: int, digits: int) -> pl.Expr:
        return raw.str.slice(start, digits).cast(pl.Int64, strict=False)

    parts = {
        "_length": raw.str.len_bytes(),
        "_shaped": raw.str.contains(_PLAIN),
        "_year": number(0, 4),
        "_month": number(5, 2),
        "_day": number(8, 2),
        "_hour": number(11, 2),
        "_minute": number(14, 2),
        "_second": number(17, 2),
        "_offset_sign": pl.when(raw.str.slice(19, 1) == "-").then(-1).otherwise(1),
        "_offset_hours": number(20, 2),
        "_offset_minutes": number(23, 2),
        "_epoch_number": raw.cast(pl.Int64, strict=False),
    }
    length, shaped = pl.col("_length"), pl.col("_shaped")
    year, month, day = pl.col("_year"), pl.col("_month"), pl.col("_day")
    hour, minute, second = pl.col("_hour"), pl.col("_minute"), pl.col("_second")
    offset_hours, offset_minutes = pl.col("_offset_hours"), pl.col("_offset_minutes")
    leap_year = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_days = (
        pl.when(month == 2)
        .then(pl.when(leap_year).then(28 + 1).otherwise(28))
        .when((month == 4) | (month == 6) | (month == 9) | (month == 11))
        .then(30)
        .otherwise(31)
    )
    # A leap second (60) is left to the rules below, which read it as chrono does.
    exists = month.is_between(1, 12) & day.is_between(1, month_days) & (hour <= 23) & (minute <= 59) & (second <= 59)
    days = _days_from_civil(year, month, day)
    # The offsets chrono reads on the common path (see _REAL_OFFSET).
    real_offset = ((offset_hours <= 13) & (offset_minutes <= 59)) | ((offset_hours == 14) & (offset_minutes == 0))
    frame = frame.with_columns(**parts).with_columns(
        _is_epoch=shaped & (length <= _PLAIN_EPOCH),
        _naive_us=pl.when(shaped & exists).then((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000_000),
        _offset_us=pl.when(real_offset).then(
            pl.col("_offset_sign") * (offset_hours * 60 + offset_minutes) * 60_000_000
        ),
    )
    naive_us, epoch = pl.col("_naive_us"), pl.col("_epoch_number")
    naive = naive_us.cast(pl.Datetime("us"))
    if default_timezone == "UTC":
        local = naive.dt.replace_time_zone("UTC")
    else:
        local = naive.dt.replace_time_zone(default_timezone, ambiguous="null", non_existent="null")
        local = local.dt.convert_time_zone("UTC")
    epoch_us = pl.when(epoch < 10**11).then(epoch * 1_000_000).otherwise(epoch * 1_000)
    instant = (
        pl.when(pl.col("_is_epoch"))
        .then(epoch_us)
        .when(length == _PLAIN_UTC)
        .then(naive_us)
        .when(length == _PLAIN_OFFSET)
        .then(naive_us - pl.col("_offset_us"))
    )
    return frame.with_columns(
        pl.when(length == _PLAIN_LOCAL)
        .then(local)
        .otherwise(instant.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
        .alias(_INSTANT),
        pl.col("_is_epoch").alias(_PLAIN_EPOCH_FORM),
    ).drop(*parts, "_is_epoch", "_naive_us", "_offset_us")


def _days_from_civil(year: pl.Expr, month: pl.Expr, day: pl.Expr) -> pl.Expr:
    """Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's ``days_from_civil``)."""
    shifted = year - (month <= 2).cast(pl.Int64)
    era = shifted.floordiv(400)
    year_of_era = shifted - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2).floordiv(5) + day - 1
    day_of_era = year_of_era * 365 + year_of_era.floordiv(4) - year_of_era.floordiv(100) + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _general_apart(frame: pl.LazyFrame, default_timezone: str) -> pl.LazyFrame:
    """What :func:`_general` adds, from the rules run on the rows whose text is in none of the cheaper forms.

    The rows are collected here, the rules run on those few rows alone, and their
    answers are put back in place (a join on a row number would cost more than
    the rules saved). The rules are elementwise, so each row gets what running
    them on every row gives it; the others get what the rules give a null text.
    """
    rows = frame.collect()
    others = rows.get_column(_OTHER_FORM).is_not_null().arg_true()
    answers = _general(rows.select(_INSTANT, _OTHER_FORM)[others].lazy(), default_timezone).collect()
    instant = rows.get_column(_INSTANT).clone().scatter(others, answers.get_column(_INSTANT))
    readable = instant.is_not_null().scatter(others, answers.get_column(_READABLE))

    def only_others(name: str) -> pl.Series:
        return pl.repeat(False, rows.height, eager=True).scatter(others, answers.get_column(name)).alias(name)

    return rows.with_columns(
        instant, readable.alias(_READABLE), only_others(_BAD_OFFSET), only_others(_EPOCH_FORM)
    ).lazy()


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
