"""The dry run's files: the review CSV (one row per event, in send order) and its rejects.

A cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return) is written with a leading ``'``; so
is a cell that already starts with ``'``, so the ``events`` preset can undo
exactly that and read a reviewed file back unchanged.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

import polars as pl

from backfill.columns import ENRICHED_COLUMNS, EVENT_COLUMNS, REVIEW_EXTRA_COLUMNS, ROW
from backfill.errors import BackfillError, ConfigError

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


def write_review(events: pl.DataFrame, to: Path | BinaryIO) -> None:
    """The review CSV, to a file (replaced only once complete) or to a stream such as stdout."""
    columns = [*EVENT_COLUMNS, *REVIEW_EXTRA_COLUMNS]
    columns.extend(name for name in ENRICHED_COLUMNS if name in events.columns)
    if "state" in events.columns:
        columns.append("state")
    review = events.select(columns)
    if isinstance(to, Path):
        write_csv_atomically(review, to)
    else:
        formula_safe(review).write_csv(to)


def write_review_to_stdout(events: pl.DataFrame) -> None:
    """The review CSV on stdout (``--dry-run -``); a reader that stops early (``| head``) is not a failure."""
    sys.stdout.flush()
    try:
        write_review(events, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    except OSError as exc:
        # polars reports a closed pipe as a plain OSError naming it.
        if not isinstance(exc, BrokenPipeError) and "Broken pipe" not in str(exc):
            raise BackfillError(f"cannot write the review to stdout ({exc.strerror or exc})") from None
        # Point stdout at nothing, so that flushing it again on exit does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def write_rejects(rejects: pl.DataFrame, path: Path) -> None:
    write_csv_atomically(rejects.select("source", ROW, "reason", *EVENT_COLUMNS), path)


def formula_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """Every text cell a spreadsheet would run as a formula, quoted."""
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    # Checking the first character is cheap; rewriting a column only pays where one needs it.
    risky = frame.select(pl.col(text).str.contains(_FORMULA_START).any())
    return frame.with_columns(escape_formula(pl.col(name)) for name in text if risky.get_column(name).item())


def write_csv_atomically(frame: pl.DataFrame, path: Path) -> None:
    """Write text cells formula-safe, to a temporary file renamed into place when complete.

    ``path`` must not be a symlink or anything but a regular file: the rename
    replaces what it names (:mod:`backfill.outputs` checks and resolves it).
    """
    safe = formula_safe(frame)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be written ({exc.strerror})") from None
    os.close(handle)
    try:
        safe.write_csv(temporary)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot be written ({exc.strerror})") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
