"""Read a CSV export as text columns, and find the rows whose field count is wrong.

polars pads a short row with nulls and, told to, cuts a long one silently: a
row that lost or gained a field would shift its values into the wrong columns
and could become a wrong event. So a second, cheap pass reads the file as
lines and counts each record's fields (quote-aware); rows whose count differs
from the header's are marked, and normalization rejects them with the count
in the reason.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from backfill.columns import ROW

RAGGED = "__ragged"
# A byte that does not occur in CSV text, so that polars hands back whole lines.
_LINE_SEPARATOR = "\x1f"


class CsvFormatError(Exception):
    """The file cannot be read as CSV at all; the message names the place."""


class CsvFile:
    """A CSV file whose header is known; read only the columns a mapping needs."""

    def __init__(self, path: Path, encoding: str = "utf-8", separator: str = ",") -> None:
        self.path = path
        self.separator = separator
        self._source: Path | bytes = path
        if encoding.replace("-", "").replace("_", "").lower() not in ("utf8", "utf8sig"):
            self._source = _transcode(path, encoding)
        self.columns = self._header()

    def _header(self) -> list[str]:
        try:
            header = pl.read_csv(self._source, n_rows=0, infer_schema=False, separator=self.separator)
        except pl.exceptions.NoDataError as exc:
            raise CsvFormatError("the file is empty; export the runs again, header row included") from exc
        except pl.exceptions.ComputeError as exc:
            raise self._explain(exc) from exc
        return [name for name in header.columns if name != ""]

    def read(self, columns: Sequence[str]) -> pl.DataFrame:
        """The given columns as text, plus the record number and a reason for ragged rows."""
        try:
            frame = pl.read_csv(
                self._source,
                columns=list(columns) or None,
                infer_schema=False,
                separator=self.separator,
                truncate_ragged_lines=True,
                row_index_name=ROW,
                row_index_offset=1,
            )
        except pl.exceptions.ComputeError as exc:
            raise self._explain(exc) from exc
        if not columns:
            frame = frame.select(ROW)
        counts = self._field_counts(frame.height)
        expected = len(self.columns)
        if counts is None:
            ragged = pl.lit(None, dtype=pl.String)
        else:
            ragged = (
                pl.when(counts == 0)
                .then(pl.lit("the row is blank"))
                .when(counts != expected)
                .then(pl.format("the row has {} fields but the header has {}", counts, pl.lit(expected)))
            )
        return frame.with_columns(ragged.alias(RAGGED))

    def _field_counts(self, records: int) -> pl.Series | None:
        """Fields per record (0 for a blank line), aligned with polars' records."""
        counts = _count_fields_by_line(self._source, self.separator)
        if counts is not None and counts.len() == records:
            return counts
        # Quotes inside unquoted fields confuse the line pass; csv is slower but exact.
        counts = _count_fields_with_csv_module(self._source, self.separator)
        return counts if counts.len() == records else None

    def _explain(self, exc: Exception) -> CsvFormatError:
        text = str(exc)
        if "utf-8" in text.lower() or "utf8" in text.lower():
            return CsvFormatError(_describe_bad_utf8(self.path))
        first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return CsvFormatError(f"cannot be read as CSV ({first_line}); check that it is a comma-separated export")


def _transcode(path: Path, encoding: str) -> bytes:
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise CsvFormatError(f"unknown encoding '{encoding}'; use a Python codec name such as cp1252") from exc
    try:
        return path.read_bytes().decode(encoding).encode("utf-8")
    except UnicodeDecodeError as exc:
        raise CsvFormatError(f"is not valid {encoding} at byte {exc.start}; check the encoding setting") from exc


def _describe_bad_utf8(path: Path) -> str:
    """Name the line and byte where the file stops being UTF-8 (only runs on that error)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return (
            f"line {line} is not UTF-8 (byte 0x{data[exc.start]:02X} at offset {exc.start}); "
            'save the file as UTF-8, or set encoding = "cp1252" (the file\'s real encoding) in this source'
        )
    return "is not valid UTF-8; save the file as UTF-8 or set encoding in this source"


def _count_fields_by_line(source: Path | bytes, separator: str) -> pl.Series | None:
    try:
        lines = pl.read_csv(
            source,
            has_header=False,
            separator=_LINE_SEPARATOR,
            quote_char=None,
            infer_schema=False,
            new_columns=["line"],
        ).get_column("line")
    except (pl.exceptions.ComputeError, pl.exceptions.ShapeError):
        return None
    frame = pl.DataFrame({"line": lines}).with_columns(quotes=pl.col("line").str.count_matches('"').fill_null(0))
    frame = frame.with_columns(
        # A line continues a record when an odd number of quotes came before it.
        continues=((pl.col("quotes").cum_sum() - pl.col("quotes")) % 2 == 1),
    )
    # A continuation line starts inside a quoted field: open it so one regex fits every line.
    text = pl.when(pl.col("continues")).then(pl.lit('"') + pl.col("line")).otherwise(pl.col("line"))
    outside_quotes = text.str.replace_all(r'"[^"]*("|$)', "")
    frame = frame.with_columns(
        separators=outside_quotes.str.count_matches(separator, literal=True).fill_null(0),
        blank=pl.col("line").is_null() & ~pl.col("continues"),
        record=(~pl.col("continues")).cum_sum() - 1,
    )
    if frame.get_column("continues").any():
        frame = frame.group_by("record", maintain_order=True).agg(pl.col("separators").sum(), pl.col("blank").first())
    counts = pl.when(pl.col("blank")).then(0).otherwise(pl.col("separators") + 1)
    # Record 0 is the header.
    return frame.select(counts.alias("fields")).get_column("fields").slice(1)


def _count_fields_with_csv_module(source: Path | bytes, separator: str) -> pl.Series:
    text = source.decode("utf-8-sig") if isinstance(source, bytes) else source.read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    next(reader, None)
    return pl.Series("fields", [len(row) for row in reader], dtype=pl.UInt32)
