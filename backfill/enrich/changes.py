"""Change requests as the matching rules need them, and the records that cannot be used.

A change record is rejected, with a sentence naming its row, when it has no
number, when a date in it is not a time (or does not exist in ``timezone``),
when its window ends before it starts, or when its number appears again with
other values. A number that appears twice with the same values (pages that
overlap) is kept once. Nothing else is dropped: a change whose service is not
mapped can still match by exact id.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from backfill.enrich.dates import add_instants, instant_column, problem_column
from backfill.enrich.servicenow_export import PROBLEM, Records, value_column
from backfill.enrich.settings import ChangeRequests
from backfill.model import ROW

NUMBER = "number"
ENTITY = "_entity"
START = "_start"
END = "_end"
WINDOW = "_window"  # which pair of fields gave the window, e.g. work_start..work_end
SYS_ID = "sys_id"  # read when the export has it: incidents may name their change by it


def key_column(field: str) -> str:
    return f"_key_{field}"


def exact_key(column: pl.Expr) -> pl.Expr:
    """How exact-id values compare: trimmed, case-insensitive (a SHA is the same in either case)."""
    return column.str.strip_chars().str.to_lowercase().replace("", None)


@dataclass(frozen=True)
class Changes:
    usable: pl.DataFrame  # NUMBER, ENTITY, START, END, WINDOW, ROW, SYS_ID, one key column per exact field
    rejects: pl.DataFrame  # ROW, NUMBER, reason
    unmapped: pl.DataFrame  # service (as written), changes: services that [enrich.services] does not map
    read: int
    origin: str


def wanted_fields(config: ChangeRequests) -> tuple[list[str], list[str]]:
    """(fields the export must have, fields it may have)."""
    required = [config.number_field, *config.exact]
    optional = []
    if config.window and config.services:
        required.append(config.service_field)
        optional = [field for pair in config.window_fields for field in pair]
    elif config.services:
        # Exact ids alone: the service, where the export has it, still keeps a change to its entity.
        optional.append(config.service_field)
    optional.append(SYS_ID)
    return list(dict.fromkeys(required)), [field for field in dict.fromkeys(optional) if field not in required]


def window_pairs(config: ChangeRequests, columns: list[str]) -> list[tuple[str, str]]:
    return [(start, end) for start, end in config.window_fields if start in columns and end in columns]


def prepare_changes(config: ChangeRequests, records: Records) -> Changes:
    frame = records.frame
    pairs = window_pairs(config, frame.columns) if config.window and config.services else []
    date_fields = list(dict.fromkeys(field for pair in pairs for field in pair))
    lazy = add_instants(frame.lazy(), date_fields, "UTC" if records.utc else config.timezone)
    service = config.service_field
    if pairs or (config.services and service in frame.columns):
        # Service names compare trimmed and case-insensitively; a sys_id is lowercase hex either way.
        mapping = {key.strip().lower(): value for key, value in config.services.items()}

        def mapped(column: str) -> pl.Expr:
            return pl.col(column).str.to_lowercase().replace_strict(mapping, default=None, return_dtype=pl.String)

        entity = pl.coalesce(mapped(service), mapped(value_column(service)))
    else:
        entity = pl.lit(None, dtype=pl.String)
    start = pl.lit(None, dtype=pl.Datetime("us", "UTC"))
    end = pl.lit(None, dtype=pl.Datetime("us", "UTC"))
    window = pl.lit(None, dtype=pl.String)
    backwards = pl.lit(None, dtype=pl.String)
    # The first pair with both ends given is the change's window (work_*, else start_date/end_date).
    for first, last in reversed(pairs):
        both = pl.col(instant_column(first)).is_not_null() & pl.col(instant_column(last)).is_not_null()
        start = pl.when(both).then(pl.col(instant_column(first))).otherwise(start)
        end = pl.when(both).then(pl.col(instant_column(last))).otherwise(end)
        window = pl.when(both).then(pl.lit(f"{first}..{last}")).otherwise(window)
        backwards = (
            pl.when(both & (pl.col(instant_column(last)) < pl.col(instant_column(first))))
            .then(pl.format("{} '{}' is before {} '{}'", pl.lit(last), pl.col(last), pl.lit(first), pl.col(first)))
            .when(both)
            .then(pl.lit(None, dtype=pl.String))
            .otherwise(backwards)
        )
    number = config.number_field
    reason = pl.coalesce(
        pl.col(PROBLEM),
        pl.when(pl.col(number).is_null()).then(pl.lit(f"has no {number}")),
        *(pl.col(problem_column(field)) for field in date_fields),
        backwards,
    )
    keys = [exact_key(pl.col(field)).alias(key_column(field)) for field in config.exact]
    shaped = lazy.select(
        ROW,
        pl.col(number).alias(NUMBER),
        entity.alias(ENTITY),
        start.alias(START),
        end.alias(END),
        window.alias(WINDOW),
        *keys,
        reason.alias("reason"),
        (pl.col(service) if service in frame.columns else pl.lit(None, dtype=pl.String)).alias("_service"),
        (pl.col(value_column(SYS_ID)) if SYS_ID in frame.columns else pl.lit(None, dtype=pl.String)).alias(SYS_ID),
    ).collect()
    shaped = _reject_conflicting_numbers(shaped)
    good = shaped.filter(pl.col("reason").is_null())
    unmapped = (
        good.filter(pl.col(ENTITY).is_null() & pl.col("_service").is_not_null())
        .group_by(pl.col("_service").alias("service"))
        .agg(pl.len().alias("changes"))
        .sort(["changes", "service"], descending=[True, False])
        if config.services
        else pl.DataFrame(schema={"service": pl.String, "changes": pl.UInt32})
    )
    return Changes(
        usable=good.drop("reason", "_service"),
        rejects=shaped.filter(pl.col("reason").is_not_null()).select(ROW, NUMBER, "reason"),
        unmapped=unmapped,
        read=frame.height,
        origin=records.origin,
    )


def _reject_conflicting_numbers(shaped: pl.DataFrame) -> pl.DataFrame:
    """A number twice with the same values is one change; with other values, none of its rows is used."""
    values = [name for name in shaped.columns if name not in (ROW, "reason")]
    fine = shaped.filter(pl.col("reason").is_null() & pl.col(NUMBER).is_not_null())
    distinct = fine.unique(subset=values, keep="first", maintain_order=True)
    conflicting = (
        distinct.group_by(NUMBER)
        .agg(pl.len().alias("_versions"))
        .filter(pl.col("_versions") > 1)
        .join(fine.group_by(NUMBER).agg(pl.col(ROW).sort().alias("_rows")), on=NUMBER)
    )
    repeated_rows = fine.join(distinct.select(ROW), on=ROW, how="anti").select(ROW)
    shaped = shaped.join(conflicting.select(NUMBER, "_rows"), on=NUMBER, how="left", maintain_order="left")
    rows_text = pl.col("_rows").list.eval(pl.element().cast(pl.String)).list.join(", ")
    return (
        shaped.with_columns(
            pl.when(pl.col("reason").is_null() & pl.col("_rows").is_not_null())
            .then(pl.format("{} appears in rows {} with different values; keep one of them", pl.col(NUMBER), rows_text))
            .otherwise(pl.col("reason"))
            .alias("reason")
        )
        .drop("_rows")
        # The same change again (pages that overlap) is kept once.
        .join(repeated_rows, on=ROW, how="anti")
    )
