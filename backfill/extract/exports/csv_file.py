"""Read a CSV export as text columns, and find the rows whose field count is wrong.

polars pads a short row with nulls and, told to, cuts a long one silently: a
row that lost or gained a field would shift its values into the wrong columns
and could become a wrong event. So every record's field count is checked
against the header's; rows whose count differs carry a reason, and
normalization rejects them.

Most files are regular, and :meth:`CsvFile.scan_regular` proves it on the way:
a cheap pass measures each line (its length and its quotes), and the scan
itself checks that each record's fields, with the quotes polars took away,
fill its line exactly (see :func:`_proof`). A record that does not, or a file
whose quoted fields span lines, takes the exact reading instead:
:meth:`CsvFile.scan` counts each record's fields from its text (quote-aware)
before the scan. Where polars refuses the file (a quote inside an unquoted
field) or its records do not line up with the lines, :meth:`CsvFile.read_leniently`
reads it with Python's csv module: slower, exact, and one bad row no longer
stops the good ones.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from backfill.errors import CsvFormatError
from backfill.extract.mapping import RECORD

RAGGED = "__backfill_ragged"
# A byte that does not occur in CSV text, so that polars hands back whole lines.
_LINE_SEPARATOR = "\x1f"
# What remains of a line once its quoted text is removed (a quote left open runs to the end).
_QUOTED = r'"[^"]*"?'
_LINE_TEXT = "__backfill_line_text"  # a line's bytes that are not quotes
_UNPROVEN = "a record does not prove regular; read the file exactly"


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
        return header.columns

    def scan_regular(self, columns: Sequence[str]) -> pl.LazyFrame:
        """What :meth:`scan` gives, read in one pass where every record proves regular.

        The query fails (a PolarsError) where a record does not; :meth:`read_exactly`
        then gives what :meth:`scan` does. A file whose quoted fields span lines, or
        whose quotes do not pair up, is read by :meth:`scan` at once.
        """
        regular = self.regular_scan(columns)
        return self.scan(columns) if regular is None else regular

    def regular_scan(self, columns: Sequence[str]) -> pl.LazyFrame | None:
        """:meth:`scan_regular`'s one pass; None for a file whose quoted fields span lines or do not pair up.

        Where the query succeeds, its columns are what :meth:`values` reads.
        """
        lines = self._line_shapes()
        quotes = lines.get_column("quotes")
        continues = (quotes.cum_sum() - quotes) % 2 == 1
        if continues.any() or quotes.sum() % 2 == 1:
            return None
        # Record 0 is the header.
        data = lines.slice(1)
        blank = data.get_column("length").is_null()
        reasons = pl.select(pl.when(pl.lit(blank)).then(pl.lit("the row is blank", dtype=pl.String))).to_series()
        expected = len(self.columns)
        return (
            self._scan_all()
            .with_columns(
                # A different record count than the line pass fails the query (ShapeError).
                reasons.alias(RAGGED),
                (data.get_column("length") - data.get_column("quotes")).alias(_LINE_TEXT),
            )
            .with_columns(pl.coalesce(pl.col(RAGGED), _fail_unless(_proof(self.columns, expected))).alias(RAGGED))
            .select(RECORD, *columns, RAGGED)
        )

    def read_exactly(self, columns: Sequence[str]) -> pl.DataFrame:
        """What :meth:`scan` gives, collected; Python's csv module reads a file polars refuses."""
        try:
            return self.scan(columns).collect()
        except pl.exceptions.PolarsError:
            return self.read_leniently(columns)

    def scan(self, columns: Sequence[str]) -> pl.LazyFrame:
        """The given columns as text, the record number, and a reason for each ragged row."""
        counts, quotes_balance = self._count_fields_by_line()
        if not quotes_balance:
            # A quote may open a field that never closes; only the exact reading can tell.
            return self.read_leniently(columns).lazy()
        return (
            self._scan_all()
            .select(RECORD, *columns)
            # A different record count than the line pass fails the query (ShapeError).
            .with_columns(pl.lit(_ragged_reasons(counts, len(self.columns))))
        )

    def _scan_all(self) -> pl.LazyFrame:
        return pl.scan_csv(
            self._source,
            infer_schema=False,
            separator=self.separator,
            truncate_ragged_lines=True,
            row_index_name=RECORD,
            row_index_offset=1,
        )

    def values(self, columns: Sequence[str]) -> pl.DataFrame:
        """Only the given columns, as text, without the field-count check (for a summary)."""
        try:
            return (
                pl.scan_csv(self._source, infer_schema=False, separator=self.separator, truncate_ragged_lines=True)
                .select(*columns)
                .collect()
            )
        except pl.exceptions.PolarsError:
            return self.read_leniently(columns).select(*columns)

    def read_leniently(self, columns: Sequence[str]) -> pl.DataFrame:
        """Like :meth:`scan`, through Python's csv module: for files polars refuses."""
        text = self._source.decode("utf-8-sig") if isinstance(self._source, bytes) else self._read_text()
        # A field can be as long as the file (a quote that never closes), not just the csv module's 128 KiB.
        limit = csv.field_size_limit(min(len(text) + 1, 2**31 - 1))
        try:
            rows, unterminated = _records(io.StringIO(text, newline="").readlines(), self.separator)
        finally:
            csv.field_size_limit(limit)
        positions = {name: self.columns.index(name) for name in columns}
        data = {
            name: [row[index] if index < len(row) and row[index] != "" else None for row in rows]
            for name, index in positions.items()
        }
        frame = pl.DataFrame(data, schema=dict.fromkeys(columns, pl.String)).with_row_index(RECORD, offset=1)
        counts = pl.Series("fields", [len(row) for row in rows], dtype=pl.UInt32)
        reasons = _ragged_reasons(counts, len(self.columns))
        if unterminated:
            sentences = [
                f'line {line}: a quoted field starts here and is never closed (a " with no closing "); '
                "the lines after it are read as rows of their own"
                for line in unterminated.values()
            ]
            reasons = reasons.scatter(list(unterminated), pl.Series(sentences, dtype=pl.String))
        return frame.with_columns(reasons)

    def _read_text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CsvFormatError(_describe_bad_utf8(self.path)) from exc

    def _lines(self) -> pl.LazyFrame:
        return pl.scan_csv(
            self._source,
            has_header=False,
            separator=_LINE_SEPARATOR,
            quote_char=None,
            infer_schema=False,
            new_columns=["line"],
        )

    def _line_shapes(self) -> pl.DataFrame:
        """Each line's length in bytes (null for a blank line) and its number of quotes."""
        line = pl.col("line")
        try:
            return (
                self._lines()
                .select(length=line.str.len_bytes(), quotes=line.str.count_matches('"', literal=True).fill_null(0))
                .collect()
            )
        except pl.exceptions.ComputeError as exc:
            raise self._explain(exc) from exc

    def _count_fields_by_line(self) -> tuple[pl.Series, bool]:
        """Fields per record (0 for a blank line), and whether the file's quotes pair up.

        A quoted field may span lines.
        """
        lines = self._lines()
        line = pl.col("line")
        try:
            # Streamed: the lines themselves are never all in memory at once.
            frame = lines.select(
                quotes=line.str.count_matches('"', literal=True).fill_null(0),
                separators=line.str.replace_all(_QUOTED, "").str.count_matches(self.separator, literal=True),
                blank=line.is_null(),
            ).collect()
        except pl.exceptions.ComputeError as exc:
            raise self._explain(exc) from exc
        # A line continues a record when an odd number of quotes came before it.
        quotes = frame.get_column("quotes")
        continues = (quotes.cum_sum() - quotes) % 2 == 1
        if continues.any():
            # Rare: a quoted field spans lines, and a continuation line starts inside quotes.
            inside = (
                lines.filter(pl.lit(continues))
                .select(
                    (pl.lit('"') + line).str.replace_all(_QUOTED, "").str.count_matches(self.separator, literal=True)
                )
                .collect()
                .to_series()
            )
            frame = (
                frame.with_columns(
                    separators=frame.get_column("separators").scatter(continues.arg_true(), inside),
                    blank=pl.col("blank") & ~continues,
                    record=(~continues).cum_sum() - 1,
                )
                .group_by("record", maintain_order=True)
                .agg(pl.col("separators").sum(), pl.col("blank").first())
            )
        counts = pl.when(pl.col("blank")).then(0).otherwise(pl.col("separators") + 1)
        # Record 0 is the header.
        return frame.select(counts.cast(pl.UInt32).alias("fields")).to_series().slice(1), quotes.sum() % 2 == 0

    def _explain(self, exc: Exception) -> CsvFormatError:
        text = str(exc)
        if "utf-8" in text.lower() or "utf8" in text.lower():
            return CsvFormatError(_describe_bad_utf8(self.path))
        first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return CsvFormatError(f"cannot be read as CSV ({first_line}); check that it is a comma-separated export")


def _records(lines: list[str], separator: str) -> tuple[list[list[str]], dict[int, int]]:
    """The data records as Python's csv module reads them, and where a quote never closes.

    A quote that opens a field and never closes swallows every line after it
    into one field. That record becomes its first line alone (its index maps
    to the line where it starts, 1-based), and the lines after it are read
    again as records of their own, so that every line is accounted for.
    """
    header = csv.reader(lines, delimiter=separator)
    next(header, None)
    start = header.line_num
    rows: list[list[str]] = []
    unterminated: dict[int, int] = {}
    while True:
        reader = csv.reader(lines[start:], delimiter=separator)
        ends = [0]
        for row in reader:
            rows.append(row)
            ends.append(reader.line_num)
        if len(ends) == 1 or not _never_closes(lines[start + ends[-2] :], separator):
            return rows, unterminated
        last_start = start + ends[-2]
        # The line alone, for the rejects file: its fields up to the quote are as written.
        rows[-1] = next(csv.reader(lines[last_start : last_start + 1], delimiter=separator), [])
        unterminated[len(rows) - 1] = last_start + 1
        start = last_start + 1


def _never_closes(lines: list[str], separator: str) -> bool:
    """Whether one record's lines end inside a quoted field (only a strict reader says so)."""
    try:
        for _ in csv.reader(lines, delimiter=separator, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _proof(header: Sequence[str], expected: int) -> pl.Expr:
    """Whether a record read from one line has exactly the header's number of fields.

    polars takes only quotes away from a field's text, so a record of k fields
    fills its line with the fields' other bytes and k - 1 separators: the line's
    bytes that are not quotes number sum(len(field) - quotes(field)) + k - 1.
    A short row is padded with empty fields and a long one cut, so the sum is the
    line's exactly when k is the header's count. One more condition makes the
    count the exact one's (see :meth:`CsvFile.scan`), which reads a quote as
    opening or closing a quoted part wherever it stands: an even number of quotes
    in every field, so that a quote inside an unquoted field cannot hide a
    separator. A blank line proves nothing (it has its reason already).
    """
    fields = [pl.col(name) for name in header]
    text = pl.sum_horizontal(
        (field.str.len_bytes() - field.str.count_matches('"', literal=True)).fill_null(0) for field in fields
    )
    odd_quotes = pl.any_horizontal(
        (field.str.count_matches('"', literal=True) % 2 == 1).fill_null(False) for field in fields
    )
    line = pl.col(_LINE_TEXT)
    return line.is_null() | ((text + (expected - 1) == line) & ~odd_quotes)


def _fail_unless(proven: pl.Expr) -> pl.Expr:
    """Null where ``proven``; elsewhere the query fails (polars has no assertion, a strict cast fails)."""
    return pl.when(~proven).then(pl.lit(_UNPROVEN)).cast(pl.UInt8, strict=True).cast(pl.String)


def _ragged_reasons(counts: pl.Series, expected: int) -> pl.Series:
    """A reason for each row whose field count is wrong; sentences are built for those rows only."""
    reasons = pl.repeat(None, counts.len(), dtype=pl.String, eager=True).alias(RAGGED)
    bad = (counts != expected).arg_true()
    if bad.len() == 0:
        return reasons
    wrong = counts.gather(bad)
    sentences = pl.select(
        pl.when(wrong == 0)
        .then(pl.lit("the row is blank"))
        .otherwise(pl.format("the row has {} fields but the header has {}", wrong, pl.lit(expected)))
    ).to_series()
    return reasons.scatter(bad, sentences)


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
