"""Every way exports write time becomes one UTC instant, or a reason why not."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from backfill.model import TS
from backfill.normalize.timestamps import TS_VERDICT, add_timestamp
from backfill.normalize.verdicts import VERDICT, Verdict, reason

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def parse(
    value: str | None,
    timezone: str = "UTC",
    duration_ms: str | None = None,
    now: datetime = NOW,
    earliest_epoch_year: int = 2000,
) -> tuple[str | None, str | None]:
    """The instant as text, or the sentence a rejected row gets."""
    frame = pl.LazyFrame(
        {"timestamp": [value], "duration_ms": [duration_ms]}, schema={"timestamp": pl.String, "duration_ms": pl.String}
    )
    together = add_timestamp(frame, timezone, now, earliest_epoch_year)
    # The rarer forms read apart (as a dry run collected into memory reads them) give the same answer.
    apart = add_timestamp(frame, timezone, now, earliest_epoch_year, apart=True)
    assert apart.collect().equals(together.collect())
    parsed = together.with_columns(
        pl.col(TS_VERDICT).alias(VERDICT),
        pl.col("timestamp").alias("_raw_timestamp"),
        *(
            pl.lit(None, dtype=pl.String).alias(name)
            for name in ("_raw_status", "skip_reason", "reject_reason", "original_env")
        ),
    )
    row = parsed.with_columns(reason(["production"], timezone).alias("reason")).collect().row(0, named=True)
    instant = row[TS].strftime("%Y-%m-%dT%H:%M:%S.%fZ") if row[TS] is not None else None
    return instant, row["reason"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-01-15T14:30:00Z", "2025-01-15T14:30:00.000000Z"),
        ("2025-01-15t14:30:00z", "2025-01-15T14:30:00.000000Z"),
        ("2025-01-15T14:30:00+02:00", "2025-01-15T12:30:00.000000Z"),
        ("2025-01-15T14:30:00+0200", "2025-01-15T12:30:00.000000Z"),
        ("2025-01-15T14:30:00-05", "2025-01-15T19:30:00.000000Z"),
        ("2025-01-15T14:30:00+05:30", "2025-01-15T09:00:00.000000Z"),
        ("2025-01-15 14:30:00", "2025-01-15T14:30:00.000000Z"),
        ("2025-01-15T14:30", "2025-01-15T14:30:00.000000Z"),
        ("2025-01-15", "2025-01-15T00:00:00.000000Z"),
        ("2023-02-25T06:23:04.0061884Z", "2023-02-25T06:23:04.006188Z"),  # Azure DevOps: 7 digits
        ("2019-03-13T14:14:23.000+00:00", "2019-03-13T14:14:23.000000Z"),
        ("2025-01-15T14:30:00,5Z", "2025-01-15T14:30:00.500000Z"),
        ("1736951400", "2025-01-15T14:30:00.000000Z"),  # epoch seconds
        ("1736951400.75", "2025-01-15T14:30:00.000000Z"),
        ("1736951400123", "2025-01-15T14:30:00.123000Z"),  # milliseconds
        ("1736951400123456", "2025-01-15T14:30:00.123456Z"),  # microseconds
        ("1736951400123456789", "2025-01-15T14:30:00.123456Z"),  # nanoseconds
    ],
)
def test_accepted_forms(value: str, expected: str) -> None:
    assert parse(value) == (expected, None)


def test_no_offset_means_the_default_timezone() -> None:
    assert parse("2025-07-01 12:00:00", "Europe/Berlin") == ("2025-07-01T10:00:00.000000Z", None)
    assert parse("2025-01-01 12:00:00", "America/New_York") == ("2025-01-01T17:00:00.000000Z", None)
    # An explicit offset wins over the default time zone.
    assert parse("2025-07-01T12:00:00Z", "Europe/Berlin") == ("2025-07-01T12:00:00.000000Z", None)


@pytest.mark.parametrize("local", ["2025-03-30 02:30:00", "2025-10-26 02:30:00"])
def test_local_times_a_clock_change_skips_or_repeats_are_rejected(local: str) -> None:
    instant, problem = parse(local, "Europe/Berlin")
    assert instant is None
    assert problem == (
        f"timestamp '{local}' does not exist or is ambiguous in Europe/Berlin (a daylight-saving change); "
        "give it an offset"
    )


@pytest.mark.parametrize("value", ["garbage", "2025-02-30T00:00:00Z", "2025-01-15T25:00:00Z", "15/01/2025 14:30", "-5"])
def test_unparseable_is_rejected(value: str) -> None:
    assert parse(value) == (None, f"timestamp '{value}' is not a valid ISO 8601 or epoch time")


def test_missing_and_future_are_rejected() -> None:
    assert parse(None) == (None, "missing timestamp")
    assert parse("2026-01-01T00:00:01Z") == (None, "timestamp '2026-01-01T00:00:01Z' is in the future")
    assert parse("2026-01-01T00:00:00Z") == ("2026-01-01T00:00:00.000000Z", None)


def test_duration_is_added_to_reach_the_end_of_the_run() -> None:
    assert parse("1650024049161", duration_ms="1587") == ("2022-04-15T12:00:50.748000Z", None)
    assert parse("1650024049161", duration_ms="soon") == (None, "duration_ms 'soon' is not a number of milliseconds")


def test_mixed_forms_in_one_column() -> None:
    # The common form is read directly, the others by the general rules: each row gets its own.
    values = ["2025-01-15T14:30:00Z", "1736951400", None, "garbage", "2025-01-15 14:30:00", "2025-01-15T14:30:00+01:00"]
    frame = pl.LazyFrame(
        {"timestamp": values, "duration_ms": [None] * len(values)},
        schema={"timestamp": pl.String, "duration_ms": pl.String},
    )
    parsed = add_timestamp(frame, "UTC", NOW).collect()
    assert parsed.get_column(TS).dt.strftime("%H:%M").to_list() == ["14:30", "14:30", None, None, "14:30", "13:30"]
    assert parsed.get_column(TS_VERDICT).to_list() == [
        None,
        None,
        Verdict.MISSING_TIMESTAMP,
        Verdict.INVALID_TIMESTAMP,
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20230601", "2023-06-01T00:00:00.000000Z"),  # not 1970-08-23 in epoch seconds
        ("20230601T120000Z", "2023-06-01T12:00:00.000000Z"),
        ("20230601t120000z", "2023-06-01T12:00:00.000000Z"),
        ("20230601T120000", "2023-06-01T12:00:00.000000Z"),
        ("20230601T1200Z", "2023-06-01T12:00:00.000000Z"),
        ("20230601T120000.25+0530", "2023-06-01T06:30:00.250000Z"),
        ("20230601T120000-08:00", "2023-06-01T20:00:00.000000Z"),
        ("20230601120000", "2023-06-01T12:00:00.000000Z"),
        ("2025-01-15T14:30:00-0800", "2025-01-15T22:30:00.000000Z"),
        ("2025-01-15T14:30:00.5-08:00", "2025-01-15T22:30:00.500000Z"),
        ("2025-01-15T14:30:00+14:00", "2025-01-15T00:30:00.000000Z"),
        ("2025-01-15T14:30:00-12:00", "2025-01-16T02:30:00.000000Z"),
        ("2025-01-15 14:30:00+0545", "2025-01-15T08:45:00.000000Z"),  # Nepal
        ("2025-01-15T14:30:00+00:00", "2025-01-15T14:30:00.000000Z"),
        ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00.000000Z"),  # a leap second
        ("2016-12-31 23:59:60Z", "2017-01-01T00:00:00.000000Z"),
        ("2016-12-31T23:59:60.5Z", "2017-01-01T00:00:00.500000Z"),
        ("946684800", "2000-01-01T00:00:00.000000Z"),  # the earliest epoch second accepted by default
        ("946684800000", "2000-01-01T00:00:00.000000Z"),  # milliseconds
    ],
)
def test_compact_dates_offsets_and_leap_seconds(value: str, expected: str) -> None:
    assert parse(value) == (expected, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2040-02-29T00:00:00Z", "2040-02-29T00:00:00.000000Z"),
        ("2147483648", "2038-01-19T03:14:08.000000Z"),  # past 32-bit epoch seconds
        ("2240611200000", "2041-01-01T00:00:00.000000Z"),
        ("20400101", "2040-01-01T00:00:00.000000Z"),
    ],
)
def test_years_past_2038(value: str, expected: str) -> None:
    assert parse(value, now=datetime(2050, 1, 1, tzinfo=UTC)) == (expected, None)


@pytest.mark.parametrize(
    "value",
    [
        "2025-01-15T14:30:00+99:99",
        "2025-01-15T14:30:00+24:00",
        "2025-01-15T14:30:00+15:00",
        "2025-01-15T14:30:00-1500",
        "2025-01-15 14:30:00+05:60",
        "20250115T143000+2400",
    ],
)
def test_an_offset_no_place_has_is_rejected(value: str) -> None:
    assert parse(value) == (None, f"timestamp '{value}' has an offset no place has (they run from -14:00 to +14:00)")


@pytest.mark.parametrize("value", ["2023", "0", "123456789", "946684799", "946684799999", "12345"])
def test_an_epoch_time_too_old_for_a_deployment_is_rejected(value: str) -> None:
    assert parse(value) == (
        None,
        f"timestamp '{value}' read as epoch time falls before [normalize] earliest_epoch_year (2000 unless set), "
        "too old for a deployment; check the column, or lower earliest_epoch_year",
    )


def test_the_earliest_epoch_year_is_a_setting() -> None:
    assert parse("123456789", earliest_epoch_year=1970) == ("1973-11-29T21:33:09.000000Z", None)
    assert parse("1736951400", earliest_epoch_year=2026)[0] is None
    # Written dates are what they say, however old.
    assert parse("1999-12-31T23:00:00Z") == ("1999-12-31T23:00:00.000000Z", None)


@pytest.mark.parametrize("value", ["20231301", "20230230", "20230601T250000Z"])
def test_an_impossible_compact_date_is_rejected(value: str) -> None:
    assert parse(value) == (None, f"timestamp '{value}' is not a valid ISO 8601 or epoch time")


def test_a_negative_duration_is_rejected() -> None:
    # A Jenkins build whose duration went negative would land 31 years before it ran.
    assert parse("1650024049161", duration_ms="-1000000000000") == (
        None,
        "duration_ms '-1000000000000' is negative; a run cannot end before it starts",
    )
    assert parse("1650024049161", duration_ms="0") == ("2022-04-15T12:00:49.161000Z", None)


def _plain_shaped_values() -> list[str]:
    """Values in the shapes read by integer arithmetic, with every edge a calendar or an offset has."""
    import random

    rng = random.Random(11)
    years = ["0000", "0001", "0400", "1600", "1900", "1970", "1999", "2000", "2016", "2023", "2024", "2100", "9999"]
    dates = [
        f"{year}-{month:02d}-{day:02d}"
        for year in years
        for month in range(0, 14)
        for day in (0, 1, 28, 29, 30, 31, 32)
    ]
    times = ["00:00:00", "23:59:59", "23:59:60", "23:59:61", "24:00:00", "12:60:00", "02:30:00", "01:30:00", "99:99:99"]
    offsets = ["", "Z", "z", "+00:00", "-00:00", "+02:00", "-05:30", "+05:45", "+13:59", "+14:00", "-14:00", "+14:01"]
    offsets += ["+15:00", "+02:60", "-12:00", "+0200", "+02", " Z"]
    # Every date with a few times and offsets, and every time and offset with a few dates.
    values = [f"{date}{rng.choice('T ')}{rng.choice(times)}{rng.choice(offsets)}" for date in dates for _ in range(4)]
    values += [
        f"{rng.choice(dates)}{separator}{time}{offset}" for separator in "T " for time in times for offset in offsets
    ]
    values += [f"2024-02-29T{time}{offset}" for time in times for offset in offsets]
    # Clock changes in the time zones below, written without an offset.
    values += [f"2025-{day} {time}" for day in ("03-30", "10-26", "03-09", "11-02", "04-06", "10-05") for time in times]
    values += ["1986-01-01 00:10:00"]  # Nepal moved from +05:30 to +05:45
    values += ["".join(rng.choice("0123456789") for _ in range(length)) for length in range(1, 21) for _ in range(40)]
    values += [
        "0",
        "00000000",
        "0000000000000",
        "946684799",
        "946684800",
        "99999999999",
        "100000000000",
        "9999999999999",
    ]
    values += ["1736951400.5", "-1736951400", "+1736951400", " 1736951400", "1736951400 ", "\uff11\uff17\uff13\uff16"]
    values += ["2025-01-15T14:30:00.5Z", "2025-01-15T14:30Z", "2025-1-15T14:30:00Z", "2025-01-15T14:30:00+2:00"]
    values += ["2025-01-15T14:30:0Z", "+025-01-15T14:30:00Z", "2025-01-15T14:30:00Z ", "2025-01-15X14:30:00Z"]
    return values


@pytest.mark.parametrize(
    "timezone", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]
)
def test_the_plain_shapes_read_by_arithmetic_give_what_the_general_rules_give(timezone: str) -> None:
    values = _plain_shaped_values()
    frame = pl.LazyFrame(
        {"timestamp": values, "duration_ms": [None] * len(values)},
        schema={"timestamp": pl.String, "duration_ms": pl.String},
    )
    now = datetime(2030, 1, 1, tzinfo=UTC)
    plain = add_timestamp(frame, timezone, now).collect()
    general = add_timestamp(frame, timezone, now, plain_shapes=False).collect()
    assert plain.equals(general)
    # The comparison means something: most values are read, and every kind of verdict occurs.
    assert plain.get_column(TS).is_not_null().sum() > len(values) // 10
    verdicts = set(plain.get_column(TS_VERDICT).drop_nulls().to_list())
    assert {
        Verdict.INVALID_TIMESTAMP,
        Verdict.IMPOSSIBLE_OFFSET,
        Verdict.EPOCH_TOO_OLD,
        Verdict.FUTURE_TIMESTAMP,
    } <= verdicts
    if timezone != "UTC":
        assert Verdict.LOCAL_TIME_GAP in verdicts


@pytest.mark.parametrize(
    "timezone", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]
)
def test_the_rarer_forms_read_apart_give_what_reading_every_row_gives(timezone: str) -> None:
    values = _plain_shaped_values()
    values += [None, "", "2025-01-15T14:30:00.123456789+05:45", "20250115T143000Z", "2025-01-15 14:30", "60"]
    values += ["2025-06-30T23:59:60Z", "1736951400123456", "2025-01-15t14:30:00z", "junk", "2025-03-30T02:30:00"]
    # Mixed, so that rows read apart sit between rows read by the cheaper forms.
    mixed = [values[(index * 7919) % len(values)] for index in range(len(values) * 3)]
    durations = [None if index % 3 else str(index % 5000 - 100) for index in range(len(mixed))]
    frame = pl.LazyFrame(
        {"timestamp": mixed, "duration_ms": durations, "other": list(range(len(mixed)))},
        schema={"timestamp": pl.String, "duration_ms": pl.String, "other": pl.Int64},
    )
    now = datetime(2030, 1, 1, tzinfo=UTC)
    together = add_timestamp(frame, timezone, now).collect()
    apart = add_timestamp(frame, timezone, now, apart=True).collect()
    assert apart.equals(together)
    assert apart.columns == together.columns
    # Some rows take each way.
    assert 0 < together.get_column(TS).is_not_null().sum() < len(mixed)


def test_reading_apart_an_empty_frame_or_none_that_needs_it() -> None:
    schema = {"timestamp": pl.String, "duration_ms": pl.String}
    for values in ([], ["2025-01-15T14:30:00Z", "1736951400"], ["junk", None]):
        frame = pl.LazyFrame({"timestamp": values, "duration_ms": [None] * len(values)}, schema=schema)
        together = add_timestamp(frame, "UTC", NOW).collect()
        assert add_timestamp(frame, "UTC", NOW, apart=True).collect().equals(together)
