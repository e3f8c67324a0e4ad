"""The one-pass CSV reading gives what the exact reading gives, and falls back to it for every irregular file."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest
from helpers import WriteFile, plan_for, source_block

from backfill.errors import CsvFormatError
from backfill.extract.exports.csv_file import RAGGED, CsvFile

HEADER = "id,updated_at,conclusion,environment,display_title\n"
ROW = "{n},2025-01-01T00:00:00Z,success,production,{title}\n"


def one_pass(csv_file: CsvFile, columns: list[str]) -> tuple[pl.DataFrame, bool]:
    """What a dry run reads: the one-pass frame, else the exact reading; and whether it fell back."""
    try:
        return csv_file.scan_regular(columns).collect(), False
    except pl.exceptions.PolarsError:
        return csv_file.read_exactly(columns), True


def exact(csv_file: CsvFile, columns: list[str]) -> pl.DataFrame:
    """The field counts from each record's text, then the scan; Python's csv module where polars refuses."""
    try:
        return csv_file.scan(columns).collect()
    except pl.exceptions.PolarsError:
        return csv_file.read_leniently(columns)


def test_a_regular_file_is_read_in_one_pass(tmp_path: Path) -> None:
    titles = ["plain", '"with, a comma"', '"quoted ""twice"""', '""', "", '"x"', "a b", "'single'"]
    path = tmp_path / "runs.csv"
    path.write_text(HEADER + "".join(ROW.format(n=n, title=title) for n, title in enumerate(titles, 1)))
    csv_file = CsvFile(path)
    frame, fell_back = one_pass(csv_file, csv_file.columns)
    assert not fell_back
    assert frame.equals(exact(csv_file, csv_file.columns))
    assert frame.get_column("display_title").to_list() == [
        "plain",
        "with, a comma",
        'quoted "twice"',
        "",  # quoted: polars keeps it empty, normalization makes it missing
        None,
        "x",
        "a b",
        "'single'",
    ]
    assert frame.get_column(RAGGED).null_count() == len(titles)


@pytest.mark.parametrize(
    ("rows", "reasons"),
    [
        # A short row, and a long one.
        ("1,2025-01-01T00:00:00Z,success,production\n", ["the row has 4 fields but the header has 5"]),
        ("1,2025-01-01T00:00:00Z,success,production,a,b\n", ["the row has 6 fields but the header has 5"]),
        # A long row whose extra field is empty, and a short one with a comma in a quoted field.
        ("1,2025-01-01T00:00:00Z,success,production,a,\n", ["the row has 6 fields but the header has 5"]),
        ('1,"2025-01-01T00:00:00Z,",success,production\n', ["the row has 4 fields but the header has 5"]),
        # A quote inside an unquoted field that the exact count reads as hiding a separator.
        ('1,2025-01-01T00:00:00Z,su"cc,es"s,production\n', ["the row has 4 fields but the header has 5"]),
        ('1,2025-01-01T00:00:00Z,success,say "hi, there"\n', ["the row has 4 fields but the header has 5"]),
        # Empty quoted fields and a row of separators only.
        ('"","","","",""\n', [None]),
        (",,,\n", ["the row has 4 fields but the header has 5"]),
    ],
)
def test_an_irregular_row_falls_back_to_the_exact_count(tmp_path: Path, rows: str, reasons: list[str | None]) -> None:
    path = tmp_path / "runs.csv"
    path.write_text(HEADER + ROW.format(n=0, title="first") + rows + ROW.format(n=9, title="last"))
    csv_file = CsvFile(path)
    frame, fell_back = one_pass(csv_file, csv_file.columns)
    assert fell_back == (reasons != [None])
    assert frame.equals(exact(csv_file, csv_file.columns))
    assert frame.get_column(RAGGED).to_list() == [None, *reasons, None]


@pytest.mark.parametrize(
    "text",
    [
        HEADER + ROW.format(n=1, title='"a title\nover two lines"'),  # quoted fields span lines
        HEADER + ROW.format(n=1, title='"never closes'),  # quotes that do not pair up
        HEADER + ROW.format(n=1, title='"never closes') + ROW.format(n=2, title="x"),
        HEADER + ROW.format(n=1, title='"closed"then text'),  # polars refuses it
    ],
)
def test_files_the_one_pass_cannot_read_take_the_exact_reading(tmp_path: Path, text: str) -> None:
    path = tmp_path / "runs.csv"
    path.write_text(text)
    csv_file = CsvFile(path)
    frame, _ = one_pass(csv_file, csv_file.columns)
    assert frame.equals(exact(csv_file, csv_file.columns))


def test_blank_lines_bom_and_crlf_are_read_in_one_pass(tmp_path: Path) -> None:
    text = "\ufeff" + HEADER + ROW.format(n=1, title='"a, b"') + "\n" + ROW.format(n=2, title="c") + "\n"
    path = tmp_path / "runs.csv"
    path.write_bytes(text.replace("\n", "\r\n").encode())
    csv_file = CsvFile(path)
    frame, fell_back = one_pass(csv_file, csv_file.columns)
    assert not fell_back
    assert frame.equals(exact(csv_file, csv_file.columns))
    assert frame.get_column(RAGGED).to_list() == [None, "the row is blank", None, "the row is blank"]
    assert frame.get_column("display_title").to_list() == ["a, b", None, "c", None]


def test_other_encodings_are_read_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_bytes((HEADER + ROW.format(n=1, title='"caf\xe9, cr\xe8me"')).encode("cp1252"))
    csv_file = CsvFile(path, encoding="cp1252")
    frame, fell_back = one_pass(csv_file, ["display_title"])
    assert not fell_back
    assert frame.get_column("display_title").to_list() == ["café, crème"]
    assert frame.equals(exact(csv_file, ["display_title"]))


def test_non_utf8_bytes_are_named_by_the_one_pass_too(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_bytes((HEADER + ROW.format(n=1, title="caf\xe9")).encode("cp1252"))
    with pytest.raises(CsvFormatError, match=r"^line 2 is not UTF-8 \(byte 0xE9 at offset 96\)"):
        CsvFile(path).scan_regular(["id"])


# Pieces of CSV fields, many of them irregular: quotes in odd places, separators, line ends.
_PIECES = ["a", "bc", "", " ", ",", '"', '""', '"x"', '"y,z"', '"p""q"', "\r", "é", '"', "1"]


def _random_file(rng: random.Random) -> str:
    width = rng.randint(1, 4)
    lines = [",".join(f"h{index}" for index in range(width))]
    for _ in range(rng.randint(1, 6)):
        fields = rng.randint(0, width + 2) if rng.random() < 0.3 else width
        line = ",".join("".join(rng.choices(_PIECES, k=rng.randint(0, 3))) for _ in range(fields))
        # Mostly lines whose quotes pair up: the others make quoted fields span lines.
        lines.append(line + '"' if line.count('"') % 2 and rng.random() < 0.9 else line)
    ending = rng.choice(["\n", "\r\n"])
    return ending.join(lines) + rng.choice([ending, ""])


def test_the_one_pass_gives_what_the_exact_reading_gives_on_random_files(write: WriteFile) -> None:
    rng = random.Random(11)
    outcomes = {"one pass": 0, "fell back": 0}
    for attempt in range(400):
        path = write(f"random{attempt}.csv", _random_file(rng).encode())
        try:
            csv_file = CsvFile(path)
        except CsvFormatError:
            continue
        columns = list(dict.fromkeys(csv_file.columns))
        try:
            expected = exact(csv_file, columns)
        except (CsvFormatError, pl.exceptions.PolarsError):
            continue
        frame, fell_back = one_pass(csv_file, columns)
        assert frame.equals(expected), path.read_bytes()
        outcomes["fell back" if fell_back else "one pass"] += 1
    # Both ways are exercised, each many times.
    assert min(outcomes.values()) > 50, outcomes


def test_a_dry_run_rejects_what_the_exact_reading_rejects(write: WriteFile) -> None:
    rows = [ROW.format(n=n, title=f'"run {n}, ""ok"""') for n in range(1, 6)]
    rows[2] = "3,2025-01-01T00:00:00Z,success,production\n"
    write("runs.csv", HEADER + "".join(rows) + "\n")
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv"))).plan
    assert plan.events.get_column("build_id").to_list() == ["1", "2", "4", "5"]
    assert plan.rejects.select("row", "build_id", "reason").rows() == [
        (3, "3", "the row has 4 fields but the header has 5"),
        (6, None, "the row is blank"),
    ]
