"""A history too large to hold in memory: classified rows kept on disk, the plan made from its key columns.

Each source's classified rows are streamed to a Parquet file in a temporary
folder as they are normalized, so that no source is ever whole in memory. The
plan then reads back only the columns that dedupe, order, rollbacks and the
summary need; the review gets the rest of each event's fields from the files,
a slice of events at a time (:func:`review_slices`). The outcome is the same,
byte for byte, as planning in memory; only the peak memory differs.

The folder is the system's temporary folder (``TMPDIR``): it should be on a
disk, not in memory.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import polars as pl

from backfill.errors import ConfigError
from backfill.model import TS

SPILL_ROW = "_spill_row"  # a row's position among all spilled rows, sources in config order
# Events per slice when the review is written from the spilled rows.
SLICE_EVENTS = 500_000
ROLLBACKS_SCHEMA = {SPILL_ROW: pl.UInt32, "_rollback_to": pl.String, "_marked": pl.Boolean}


class Spill:
    """A temporary folder of Parquet files, one per source, removed on exit."""

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._files: list[Path] = []

    def __enter__(self) -> Spill:
        try:
            self._folder = Path(tempfile.mkdtemp(prefix="backfill-spill-"))
        except OSError as exc:
            raise ConfigError(
                f"{tempfile.gettempdir()}: cannot hold the rows of a large history ({exc.strerror}); "
                "set TMPDIR to a writable folder on a disk, or raise [plan] spill_above_mb"
            ) from None
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def add(self, rows: pl.LazyFrame) -> None:
        """Stream one source's classified rows to disk (the query runs here; a failure leaves nothing behind)."""
        assert self._folder is not None, "the spill is not open"
        path = self._folder / f"{len(self._files)}.parquet"
        try:
            rows.sink_parquet(path, compression="lz4", statistics=False)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._files.append(path)

    @property
    def empty(self) -> bool:
        return not self._files

    def scan(self) -> pl.LazyFrame:
        """Every spilled row, sources in the order they were added, with its :data:`SPILL_ROW`."""
        assert self._files, "nothing was spilled"
        return pl.scan_parquet(self._files).with_row_index(SPILL_ROW)


@dataclass(frozen=True)
class SpilledEvents:
    """Where a spilled plan's events get the fields its own frame leaves out."""

    spill: Spill
    # Rollbacks found, by SPILL_ROW: the description to give (null: the event keeps its own).
    rollbacks: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=ROLLBACKS_SCHEMA))


def in_order(frame: pl.DataFrame, order: pl.Series) -> pl.DataFrame:
    """``frame[order]``, gathered a column at a time so that the frame is never in memory twice."""
    columns: dict[str, pl.Series] = {}
    for name in frame.columns:
        columns[name] = frame.get_column(name).gather(order)
        frame = frame.drop(name)
    return pl.DataFrame(columns)


def review_slices(
    events: pl.DataFrame, spilled: SpilledEvents, columns: list[str], timestamp: pl.Expr
) -> Iterator[pl.DataFrame]:
    """The review's rows for ``events`` (in their order), a slice at a time, each event's fields from the spill.

    ``events`` carries SPILL_ROW; a review column it carries (the key, ``state``)
    is taken from it, the others from the spill. ``timestamp`` is the text form
    of :data:`TS` the review shows.
    """
    own = [name for name in columns if name in events.columns]
    for start in range(0, events.height, SLICE_EVENTS):
        part = events.slice(start, SLICE_EVENTS).select(SPILL_ROW, *own)
        wanted = part.get_column(SPILL_ROW)
        found = (
            spilled.spill.scan()
            .filter(pl.col(SPILL_ROW).is_in(wanted.implode()))
            .select(SPILL_ROW, TS, *(name for name in columns if name not in own and name != "timestamp"))
            .collect()
        )
        # The rows come in spill order: put them in the events' order.
        found = in_order(found, (wanted.rank("ordinal") - 1).cast(pl.UInt32))
        marked = pl.col("_marked").fill_null(False)
        found = found.join(spilled.rollbacks, on=SPILL_ROW, how="left", maintain_order="left").with_columns(
            pl.when(marked).then(pl.lit("rollback")).otherwise(pl.col("deployment_type")).alias("deployment_type"),
            pl.coalesce("_rollback_to", "description").alias("description"),
        )
        yield found.with_columns(timestamp.alias("timestamp"), *(part.get_column(name) for name in own)).select(columns)
