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
from collections.abc import Callable, Collection, Iterable, Sequence
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

Writer = Callable[[str], object]  # writes a file at the path it is given


def rejects_path_for(review_path: Path) -> Path:
    """``review.csv`` -> ``review.rejects.csv``, beside it."""
    return review_path.with_name(f"{review_path.stem}.rejects{review_path.suffix or '.csv'}")


def skipped_path_for(review_path: Path) -> Path:
    """``review.csv`` -> ``review.skipped.csv``, beside it."""
    return review_path.with_name(f"{review_path.stem}.skipped{review_path.suffix or '.csv'}")


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
    if isinstance(to, Path):
        _write_all_atomically([(to, _review_writer(events, spilled, formula_columns))])
    else:
        _write_frames(*_formula_safe_review(events, spilled, formula_columns), to)


def _formula_safe_review(
    events: pl.DataFrame, spilled: SpilledEvents | None, formula_columns: Collection[str] | None
) -> tuple[Iterable[pl.DataFrame], list[str]]:
    """The review's rows, formula-safe: one frame, or with a spill a slice at a time; and its columns."""
    columns = [*EVENT_COLUMNS, *REVIEW_EXTRA_COLUMNS]
    columns.extend(name for name in ENRICHED_COLUMNS if name in events.columns)
    if "state" in events.columns:
        columns.append("state")
    if spilled is None:
        return [formula_safe(events.select(columns), WRITTEN_BY_THE_PLAN, formula_columns)], columns
    slices = review_slices(events, spilled, columns, pl.col(TS).dt.strftime(TIMESTAMP_FORMAT))
    return (formula_safe(part, WRITTEN_BY_THE_PLAN) for part in slices), columns


def _review_writer(
    events: pl.DataFrame, spilled: SpilledEvents | None, formula_columns: Collection[str] | None
) -> Writer:
    """What writes the review CSV to a file's path (without a spill, its one frame, by polars itself)."""
    frames, columns = _formula_safe_review(events, spilled, formula_columns)
    if spilled is None:
        [frame] = frames
        return frame.write_csv

    def write(path: str) -> None:
        with open(path, "wb") as out:
            _write_frames(frames, columns, out)

    return write


def _write_frames(frames: Iterable[pl.DataFrame], columns: list[str], to: BinaryIO) -> None:
    written = False
    for part in frames:
        part.write_csv(to, include_header=not written)
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
    _write_all_atomically([(path, _rows_writer(rejects))])


def _rows_writer(rows: pl.DataFrame) -> Writer:
    """What writes rejected or skipped rows, with their reason, formula-safe, to a file's path."""
    return lambda path: formula_safe(rows.select("source", ROW, "reason", *EVENT_COLUMNS)).write_csv(path)


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


def _write_all_atomically(files: Sequence[tuple[Path, Writer]]) -> None:
    """Write each file to a temporary file beside it; rename them all into place once all are complete.

    If any cannot be written, none is replaced: the files of an earlier run stay as
    they were, together, and the error names the file that failed. A path must not
    be a symlink or anything but a regular file: the rename replaces what it names
    (:mod:`backfill.report.outputs` checks and resolves it).
    """
    temporaries: list[str] = []
    try:
        for path, writer in files:
            temporaries.append(_temporary_beside(path))
            try:
                writer(temporaries[-1])
            except OSError as exc:
                raise ConfigError(f"{path}: cannot be written ({exc.strerror or exc})") from None
        for (path, _), temporary in zip(files, temporaries, strict=True):
            try:
                os.replace(temporary, path)
            except OSError as exc:
                raise ConfigError(f"{path}: cannot be written ({exc.strerror})") from None
    finally:
        for temporary in temporaries:
            Path(temporary).unlink(missing_ok=True)


def _temporary_beside(path: Path) -> str:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be written ({exc.strerror})") from None
    os.close(handle)
    return temporary


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
    files: list[tuple[Path, Writer]] = []
    if review.target is None:
        write_review_to_stdout(events, spilled, formula_columns)
    else:
        files.append((review.target, _review_writer(events, spilled, formula_columns)))
    if rejects is not None:
        files.append((rejects.target or rejects.path, _rows_writer(planned.plan.rejects)))
    if skipped is not None:
        files.append((skipped.target or skipped.path, _rows_writer(planned.plan.skipped)))
    _write_all_atomically(files)
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
