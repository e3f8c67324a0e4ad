"""Map a file's columns to the raw event columns.

Each field has candidate columns (from a preset, or named by the user); every
row takes the first candidate that is not empty. Columns a user names must
exist; a preset's candidates are used where present.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from backfill.errors import MappingError
from backfill.extract.patterns import patterns_regex
from backfill.model import RAW_COLUMNS, ROW, passed_through

# The record number while a file is read, under a name no export uses: a user's own
# `row` field stays theirs. raw_frame hands it on as ROW.
RECORD = "__backfill_record"


@dataclass(frozen=True)
class FieldSource:
    """Where one raw column's values come from: columns, in order, or a constant."""

    columns: tuple[str, ...] = ()
    constant: str | None = None

    def expression(self, first_line: Collection[str] = ()) -> pl.Expr:
        """The values; a column named in ``first_line`` gives only its first line (a commit message)."""
        if self.constant is not None:
            return pl.lit(self.constant, dtype=pl.String)
        if not self.columns:
            return pl.lit(None, dtype=pl.String)

        def column(name: str) -> pl.Expr:
            return pl.col(name).str.extract(r"^([^\r\n]*)", 1) if name in first_line else pl.col(name)

        if len(self.columns) == 1:
            return column(self.columns[0])  # normalization turns a blank value into null
        return pl.coalesce([_blank_as_null(column(name)) for name in self.columns])


def _blank_as_null(column: pl.Expr) -> pl.Expr:
    return pl.when(column.str.strip_chars() != "").then(column)


def resolve(
    field: str,
    available: Sequence[str],
    *,
    named: str | Sequence[str] | None,
    candidates: Sequence[str],
    required: bool,
    hint: str | None = None,
) -> FieldSource:
    """The columns that fill ``field``: the user's, else the preset's that exist."""
    present = set(available)
    if named is not None:
        names = (named,) if isinstance(named, str) else tuple(named)
        found = tuple(name for name in names if name in present)
        if not found:
            raise MappingError(f"column {_quote(names)} ({field}) is not in the file; {_describe(available)}")
        return FieldSource(columns=found)
    found = tuple(name for name in candidates if name in present)
    if required and not found:
        expected = f"none of the columns {_quote(candidates)} is" if candidates else "no column is mapped"
        raise MappingError(
            f"{expected} there for {field}; {_describe(available)}; "
            f'map it with [sources.columns] {field} = "<column>"' + (f" {hint}" if hint else "")
        )
    return FieldSource(columns=found)


def match_filter(rules: Mapping[str, str | Sequence[str]], available: Sequence[str]) -> pl.Expr:
    """A skip reason for rows whose value in a column matches none of its patterns."""
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for column, patterns in reversed(list(rules.items())):
        if column not in available:
            raise MappingError(f"column '{column}' (used in match) is not in the file; {_describe(available)}")
        globs = (patterns,) if isinstance(patterns, str) else tuple(patterns)
        matched = pl.col(column).fill_null("").str.contains(patterns_regex(globs))
        reason = pl.when(~matched).then(pl.lit(f"{column} matches none of {', '.join(globs)}")).otherwise(reason)
    return reason


def raw_frame(
    frame: pl.DataFrame | pl.LazyFrame, fields: Mapping[str, pl.Expr], passed: Sequence[str] = ()
) -> pl.LazyFrame:
    """Select the raw event columns, in order; a column with no expression is empty.

    The record number comes from :data:`RECORD`, or from ``row`` where a source
    numbers its own records (git tags). The file's columns named in ``passed``
    follow as they are, renamed by :func:`backfill.model.passed_through`, for
    the extractor to read once the rows are classified (normalization keeps them).
    """
    missing = pl.lit(None, dtype=pl.String)
    lazy = frame.lazy()
    record = RECORD if RECORD in lazy.collect_schema() else ROW
    return lazy.select(
        *(fields.get(name, missing).cast(pl.String).alias(name) for name in RAW_COLUMNS),
        pl.col(record).cast(pl.UInt32).alias(ROW),
        *(pl.col(name).alias(passed_through(name)) for name in passed),
    )


def _quote(names: Sequence[str]) -> str:
    return " or ".join(f"'{name}'" for name in names)


def _describe(available: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(available[:limit])
    more = f" and {len(available) - limit} more" if len(available) > limit else ""
    return f"the file has: {shown}{more}" if available else "the file has no columns"
