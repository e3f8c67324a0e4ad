"""The dry run's files: the review CSV (one row per event, in send order) and its rejects.

A cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return) is written with a leading ``'``; so
is a cell that already starts with ``'``, so the ``events`` preset can undo
exactly that and read a reviewed file back unchanged.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl

from backfill.columns import EVENT_COLUMNS, REVIEW_EXTRA_COLUMNS, ROW

_FORMULA_START = r"^([=+\-@\t\r'])"


def escape_formula(column: pl.Expr) -> pl.Expr:
    return column.str.replace(_FORMULA_START, "'${1}")


def unescape_formula(column: pl.Expr) -> pl.Expr:
    return column.str.replace(r"^'", "")


def rejects_path_for(review_path: Path) -> Path:
    """``review.csv`` -> ``review.rejects.csv``, beside it."""
    return review_path.with_name(f"{review_path.stem}.rejects{review_path.suffix or '.csv'}")


def skipped_path_for(review_path: Path) -> Path:
    """``review.csv`` -> ``review.skipped.csv``, beside it."""
    return review_path.with_name(f"{review_path.stem}.skipped{review_path.suffix or '.csv'}")


def write_skipped(skipped: pl.DataFrame, path: Path) -> None:
    """The rows that are not deployments (a pre-release tag, a cancelled run), with the reason."""
    write_csv_atomically(skipped.select("source", ROW, "reason", *EVENT_COLUMNS), path)


def write_review(events: pl.DataFrame, path: Path) -> None:
    columns = [*EVENT_COLUMNS, *REVIEW_EXTRA_COLUMNS]
    if "state" in events.columns:
        columns.append("state")
    write_csv_atomically(events.select(columns), path)


def write_rejects(rejects: pl.DataFrame, path: Path) -> None:
    write_csv_atomically(rejects.select("source", ROW, "reason", *EVENT_COLUMNS), path)


def write_csv_atomically(frame: pl.DataFrame, path: Path) -> None:
    """Write text cells formula-safe, to a temporary file renamed into place when complete."""
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    # Checking the first character is cheap; rewriting a column only pays where one needs it.
    risky = frame.select(pl.col(text).str.contains(_FORMULA_START).any())
    safe = frame.with_columns(escape_formula(pl.col(name)) for name in text if risky.get_column(name).item())
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        safe.write_csv(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
