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
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import polars as pl

from backfill.errors import BackfillError, ConfigError
from backfill.model import (
    ENRICHED_COLUMNS,
    EVENT_COLUMNS,
    REVIEW_EXTRA_COLUMNS,
    ROW,
    TS,
    escape_formula,
    starting_like_a_formula,
)
from backfill.normalize.classify import TIMESTAMP_FORMAT
from backfill.plan.spill import SpilledEvents, review_slices

if TYPE_CHECKING:
    from backfill.plan.dedupe import RunPlan
    from backfill.plan.ledger import LedgerDiff
    from backfill.report.outputs import RunOutputs
    from backfill.state.store import Destination


def rejects_path_for(review_path: Path) -> Path:
    """``review.csv`` -> ``review.rejects.csv``, beside it."""
    return review_path.with_name(f"{review_path.stem}.rejects{review_path.suffix or '.csv'}")


def skipped_path_for(review_path: Path) -> Path:
    """``review.csv`` -> ``review.skipped.csv``, beside it."""
    return review_path.with_name(f"{review_path.stem}.skipped{review_path.suffix or '.csv'}")


def write_skipped(skipped: pl.DataFrame, path: Path) -> None:
    """The rows that are not deployments (a pre-release tag, a cancelled run), with the reason."""
    write_csv_atomically(skipped.select("source", ROW, "reason", *EVENT_COLUMNS), path)


def write_review(
    events: pl.DataFrame,
    to: Path | BinaryIO,
    spilled: SpilledEvents | None = None,
    formula_columns: Collection[str] | None = None,
) -> None:
    """The review CSV, to a file (replaced only once complete) or to a stream such as stdout.

    With ``spilled``, the events' other fields come from the spill, a slice at a time.
    ``formula_columns``, where known, are the only columns that may hold a cell
    starting like a formula (see :attr:`backfill.plan.dedupe.Plan.formula_columns`).
    """
    columns = [*EVENT_COLUMNS, *REVIEW_EXTRA_COLUMNS]
    columns.extend(name for name in ENRICHED_COLUMNS if name in events.columns)
    if "state" in events.columns:
        columns.append("state")
    if spilled is None:
        safe = formula_safe(events.select(columns), WRITTEN_BY_THE_PLAN, formula_columns)
        if isinstance(to, Path):
            _write_atomically(to, safe.write_csv)
        else:
            _write_slices([safe], columns, to, checked=True)
        return
    slices = review_slices(events, spilled, columns, pl.col(TS).dt.strftime(TIMESTAMP_FORMAT))
    if isinstance(to, Path):
        _write_atomically(to, lambda temporary: _write_slices_to(slices, columns, temporary))
    else:
        _write_slices(slices, columns, to)


def _write_slices_to(slices: Iterable[pl.DataFrame], columns: list[str], path: str) -> None:
    with open(path, "wb") as out:
        _write_slices(slices, columns, out)


def _write_slices(slices: Iterable[pl.DataFrame], columns: list[str], to: BinaryIO, *, checked: bool = False) -> None:
    written = False
    for part in slices:
        (part if checked else formula_safe(part, WRITTEN_BY_THE_PLAN)).write_csv(to, include_header=not written)
        written = True
    if not written:
        pl.DataFrame(schema=dict.fromkeys(columns, pl.String)).write_csv(to)


def write_review_to_stdout(
    events: pl.DataFrame, spilled: SpilledEvents | None = None, formula_columns: Collection[str] | None = None
) -> None:
    """The review CSV on stdout (``--dry-run -``); a reader that stops early (``| head``) is not a failure."""
    sys.stdout.flush()
    try:
        write_review(events, sys.stdout.buffer, spilled, formula_columns)
        sys.stdout.buffer.flush()
    except OSError as exc:
        # polars reports a closed pipe as a plain OSError naming it.
        if not isinstance(exc, BrokenPipeError) and "Broken pipe" not in str(exc):
            raise BackfillError(f"cannot write the review to stdout ({exc.strerror or exc})") from None
        # Point stdout at nothing, so that flushing it again on exit does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def write_rejects(rejects: pl.DataFrame, path: Path) -> None:
    write_csv_atomically(rejects.select("source", ROW, "reason", *EVENT_COLUMNS), path)


# Review columns whose text the plan writes itself (an ISO time, success or failed, new or sent): never a formula.
WRITTEN_BY_THE_PLAN = ("timestamp", "status", "state")


def formula_safe(
    frame: pl.DataFrame, written: tuple[str, ...] = (), may_hold: Collection[str] | None = None
) -> pl.DataFrame:
    """Every text cell a spreadsheet would run as a formula, quoted.

    ``written``: columns known not to hold one; ``may_hold``: where given, the
    only columns that may (a cell that does not start like a formula is left as
    it is, so a column named there needlessly comes out the same).
    """
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String and name not in written]
    if may_hold is not None:
        return frame.with_columns(escape_formula(pl.col(name)) for name in text if name in may_hold)
    # Rewriting a column only pays where one needs it.
    risky = starting_like_a_formula(frame, text)
    return frame.with_columns(escape_formula(pl.col(name)) for name in text if name in risky)


def write_csv_atomically(frame: pl.DataFrame, path: Path, written: tuple[str, ...] = ()) -> None:
    """Write text cells formula-safe, to a temporary file renamed into place when complete.

    ``path`` must not be a symlink or anything but a regular file: the rename
    replaces what it names (:mod:`backfill.report.outputs` checks and resolves it).
    """
    safe = formula_safe(frame, written)
    _write_atomically(path, safe.write_csv)


def _write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write`` with a temporary file's name beside ``path``, then rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be written ({exc.strerror})") from None
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot be written ({exc.strerror})") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_review_files(
    planned: RunPlan, ledger: LedgerDiff, outputs: RunOutputs, destination: Destination | None
) -> dict[str, Any]:
    """A dry run's files: the review (with ``state`` when a ledger was compared), rejects, skipped rows.

    Returns what the summary says of them.
    """
    review, rejects, skipped = outputs.review, outputs.rejects, outputs.skipped
    assert review is not None, "a dry run has a review"
    events = ledger.marked if ledger.compared else ledger.marked.drop("state")
    spilled, formula_columns = planned.plan.spilled, planned.plan.formula_columns
    if review.target is None:
        write_review_to_stdout(events, spilled, formula_columns)
    else:
        write_review(events, review.target, spilled, formula_columns)
    if rejects is not None:
        write_rejects(planned.plan.rejects, rejects.target or rejects.path)
    if skipped is not None:
        write_skipped(planned.plan.skipped, skipped.target or skipped.path)
    extra: dict[str, Any] = {
        "review_csv": str(review.path),
        "rejects_csv": str(rejects.path) if rejects is not None else None,
        "skipped_csv": str(skipped.path) if skipped is not None else None,
    }
    if ledger.compared:
        extra["ledger"] = {
            "destination": destination.url if destination else None,
            "new": ledger.new.height,
            "sent": ledger.already_sent,
        }
    return extra
