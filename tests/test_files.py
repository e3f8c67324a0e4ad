"""Reading exports: CSV shapes and encodings, JSON and NDJSON dumps."""

from __future__ import annotations

import json

import polars as pl
import pytest
from helpers import WriteFile, plan_for, source_block

from backfill.errors import CsvFormatError, JsonFormatError, SourceError
from backfill.extract.exports.csv_file import CsvFile
from backfill.extract.exports.json_file import flatten, read_json_records
from backfill.extract.mapping import RECORD

HEADER = "id,updated_at,conclusion,environment,display_title\n"


def test_ragged_rows_are_rejected_with_their_field_count(write: WriteFile) -> None:
    write(
        "runs.csv",
        HEADER + "1,2025-01-01T00:00:00Z,success,production,ok\n"
        "2,2025-01-01T00:00:00Z,success,production\n"  # one field short
        "3,2025-01-01T00:00:00Z,success,production,too,many\n"
        "4,2025-01-01T00:00:00Z,success,production,\n"  # empty last field: fine
        '5,2025-01-01T00:00:00Z,success,production,"a title, with a comma\nand a new line"\n'
        "\n"
        '6,2025-01-01T00:00:00Z,success,production,"quoted ""twice"""\n',
    )
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv"))).plan
    assert plan.events.select("build_id", "description").rows() == [
        ("1", "ok"),
        ("4", None),
        ("5", "a title, with a comma\nand a new line"),
        ("6", 'quoted "twice"'),
    ]
    assert plan.rejects.select("row", "build_id", "reason").rows() == [
        (2, "2", "the row has 4 fields but the header has 5"),
        (3, "3", "the row has 6 fields but the header has 5"),
        (6, None, "the row is blank"),
    ]


def test_quotes_inside_unquoted_fields_fall_back_to_an_exact_count(write: WriteFile) -> None:
    write(
        "runs.csv",
        HEADER + '1,2025-01-01T00:00:00Z,success,production,say "hi\n2,2025-01-01T00:00:00Z,success,production\n',
    )
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv"))).plan
    assert plan.events.select("build_id", "description").rows() == [("1", 'say "hi')]
    assert plan.rejects.select("build_id", "reason").rows() == [("2", "the row has 4 fields but the header has 5")]


def test_an_unterminated_quote_is_a_reject_naming_its_line_and_the_rows_after_it_are_read(write: WriteFile) -> None:
    rows = [f"{n},2025-01-0{n}T00:00:00Z,success,production,run {n}\n" for n in range(1, 7)]
    rows[2] = '3,2025-01-03T00:00:00Z,success,production,"a title that never closes\n'
    write("runs.csv", HEADER + "".join(rows))
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv"))).plan
    assert plan.events.get_column("build_id").to_list() == ["1", "2", "4", "5", "6"]
    assert plan.rejects.select("row", "reason").rows() == [
        (
            3,
            'line 4: a quoted field starts here and is never closed (a " with no closing "); '
            "the lines after it are read as rows of their own",
        ),
    ]
    assert plan.rejects.get_column("build_id").to_list() == ["3"]
    counts = plan.counts.row(0, named=True)
    assert (counts["read"], counts["events"], counts["rejected"]) == (6, 5, 1)


def test_an_unterminated_quote_early_in_a_long_file(write: WriteFile) -> None:
    # What follows the quote is far longer than the csv module's field limit (128 KiB).
    rows = [f"{n},2025-01-01T00:00:00Z,success,production,run {n} {'x' * 40}\n" for n in range(1, 5001)]
    rows[9] = '10,2025-01-01T00:00:00Z,success,production,"never closed\n'
    write("runs.csv", HEADER + "".join(rows))
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv"))).plan
    counts = plan.counts.row(0, named=True)
    assert (counts["read"], counts["rejected"], counts["duplicates"], counts["events"]) == (5000, 1, 0, 4999)
    assert plan.rejects.get_column("reason").to_list()[0].startswith("line 11: a quoted field starts here")


def test_two_unterminated_quotes_and_a_quoted_new_line_between(write: WriteFile) -> None:
    write(
        "runs.csv",
        HEADER + '1,2025-01-01T00:00:00Z,success,production,"open\n'
        '2,2025-01-02T00:00:00Z,success,production,"two\nlines"\n'
        '3,2025-01-03T00:00:00Z,success,production,say "hi\n'
        '4,2025-01-04T00:00:00Z,success,production,"open again\n'
        "5,2025-01-05T00:00:00Z,success,production,last\n",
    )
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv"))).plan
    # Read as a CSV reader reads it: the first quote closes at "two", then a field opens at lines" and runs on.
    accounted = plan.counts.row(0, named=True)
    assert accounted["read"] == accounted["events"] + accounted["rejected"] + accounted["skipped"]
    assert [reason for reason in plan.rejects.get_column("reason").to_list() if "never closed" in reason]
    assert "5" in plan.events.get_column("build_id").to_list()


def test_bom_and_crlf_are_fine(write: WriteFile) -> None:
    write(
        "runs.csv", ("\ufeff" + HEADER + "1,2025-01-01T00:00:00Z,success,production,x\n").replace("\n", "\r\n").encode()
    )
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv"))).plan
    assert plan.events.select("build_id", "description").rows() == [("1", "x")]
    assert plan.rejects.height == 0


def test_non_utf8_bytes_name_the_line_and_what_to_do(write: WriteFile) -> None:
    path = write("runs.csv", (HEADER + "1,2025-01-01T00:00:00Z,success,production,caf\xe9\n").encode("cp1252"))
    with pytest.raises(CsvFormatError) as error:
        CsvFile(path).scan(["id"])
    assert str(error.value) == (
        "line 2 is not UTF-8 (byte 0xE9 at offset 96); save the file as UTF-8, or set "
        'encoding = "cp1252" (the file\'s real encoding) in this source'
    )


def test_encoding_setting_reads_other_encodings(write: WriteFile) -> None:
    write("runs.csv", (HEADER + "1,2025-01-01T00:00:00Z,success,production,caf\xe9\n").encode("cp1252"))
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv", encoding="cp1252"))).plan
    assert plan.events.get_column("description").to_list() == ["café"]


def test_empty_file_and_header_only(write: WriteFile) -> None:
    with pytest.raises(CsvFormatError, match="the file is empty; export the runs again, header row included"):
        CsvFile(write("empty.csv", ""))
    plan = plan_for(write("backfill.toml", source_block("runs", write("runs.csv", HEADER).name))).plan
    assert plan.counts.row(0, named=True)["read"] == 0


def test_json_wrappers_and_back_to_back_pages(write: WriteFile) -> None:
    page = {"total_count": 2, "workflow_runs": [{"id": 1, "actor": {"login": "mona"}}]}
    second = {"total_count": 2, "workflow_runs": [{"id": 2, "actor": {"login": "hubot"}}]}
    path = write("runs.json", json.dumps(page) + "\n" + json.dumps(second))
    frame = read_json_records(path, "utf-8", ["workflow_runs"])
    assert frame.select(RECORD, "id", "actor.login").rows() == [(1, "1", "mona"), (2, "2", "hubot")]
    path = write("builds.json", json.dumps({"count": 1, "value": [{"id": 12}]}))
    assert read_json_records(path, "utf-8", ()).get_column("id").to_list() == ["12"]


def test_json_that_is_not_a_list_of_records(write: WriteFile) -> None:
    with pytest.raises(JsonFormatError, match=r"is not valid JSON at line 1, column 9 \(Expecting value\)"):
        read_json_records(write("a.json", '[{"id": }]'), "utf-8", ())
    with pytest.raises(JsonFormatError, match="without one list of records in it"):
        read_json_records(write("b.json", '{"a": 1}'), "utf-8", ())
    with pytest.raises(JsonFormatError, match="record 2 is not a JSON object"):
        read_json_records(write("c.json", '[{"id": 1}, 5]'), "utf-8", ())


def test_json_mixed_value_types_become_text(write: WriteFile) -> None:
    path = write("runs.json", '[{"id": 1, "n": 1}, {"id": "x", "n": 2.5}, {"id": 3.5, "n": {"a": 1}}]')
    # A number in one record and text in another: all text. An object against a number cannot be one column.
    with pytest.raises(JsonFormatError, match="is an object in some records and a plain value in others"):
        read_json_records(path, "utf-8", ())
    path = write("runs.json", '[{"id": 1, "n": 1}, {"id": "x", "n": 2.5}, {"id": 3.0}]')
    assert read_json_records(path, "utf-8", ()).select("id", "n").rows() == [("1", "1"), ("x", "2.5"), ("3", None)]


def test_flatten_nested_lists_of_objects() -> None:
    frame = pl.DataFrame(
        {
            "actions": [
                [{"causes": [{"userId": "ann"}]}, {"lastBuiltRevision": {"SHA1": "abc"}}],
                [{"lastBuiltRevision": {"SHA1": "def"}}],
            ]
        }
    )
    flat = flatten(frame)
    assert flat.select("actions[].causes[].userId", "actions[].lastBuiltRevision.SHA1").rows() == [
        ("ann", "abc"),
        (None, "def"),
    ]


def test_ndjson_lines(write: WriteFile) -> None:
    write(
        "runs.ndjson",
        '{"id": 1, "updated_at": "2025-01-01T00:00:00Z", "conclusion": "success"}\n\n'
        '{"id": 2, "updated_at": "2025-01-02T00:00:00Z", "conclusion": "failure"}\n',
    )
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.ndjson", env="production"))).plan
    assert plan.events.select("build_id", "status").rows() == [("1", "success"), ("2", "failed")]
    write("bad.ndjson", '{"id": 1}\n{"id": \n')
    config = write("bad.toml", source_block("runs", "bad.ndjson", env="production"))
    result = plan_for(config)
    assert [str(failure) for failure in result.failures] == [
        f"source 'runs': {config.parent / 'bad.ndjson'}: line 2 is not valid JSON (Expecting value at column 8)"
    ]
    assert isinstance(result.failures[0], SourceError)


def test_build_id_prefix_and_blank_ids(write: WriteFile) -> None:
    write(
        "runs.csv",
        HEADER + "7,2025-01-01T00:00:00Z,success,production,x\n  ,2025-01-02T00:00:00Z,success,production,y\n",
    )
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv", build_id_prefix="deploy#"))).plan
    assert plan.events.get_column("build_id").to_list() == ["deploy#7"]
    assert plan.rejects.select("row", "reason").rows() == [(2, "missing build_id")]


@pytest.mark.parametrize("suffix", ["json", "ndjson"])
def test_a_field_named_row_is_the_users_own(write: WriteFile, suffix: str) -> None:
    records = [
        {"id": 7, "row": "r-12", "updated_at": "2025-01-01T00:00:00Z", "conclusion": "success", "head_sha": "a"},
        {"id": 8, "row": "r-13", "updated_at": "2025-01-02T00:00:00Z", "conclusion": "success", "head_sha": "b"},
    ]
    text = json.dumps(records) if suffix == "json" else "\n".join(json.dumps(record) for record in records)
    write(f"runs.{suffix}", text)
    config = source_block("runs", f"runs.{suffix}", env="production", columns={"description": "row"})
    plan = plan_for(write("backfill.toml", config)).plan
    assert plan.events.select("build_id", "description").rows() == [("7", "r-12"), ("8", "r-13")]


def test_a_csv_column_named_row_is_the_users_own(write: WriteFile) -> None:
    write("runs.csv", "row,id,updated_at,conclusion,environment\nfirst,1,2025-01-01T00:00:00Z,success,production\n")
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv", columns={"description": "row"}))).plan
    assert plan.events.select("build_id", "description").rows() == [("1", "first")]


def test_messages_list_only_the_users_columns(write: WriteFile) -> None:
    write("runs.json", json.dumps([{"when": "2025-01-01T00:00:00Z", "id": 1}]))
    result = plan_for(write("backfill.toml", source_block("runs", "runs.json", env="production")))
    message = str(result.failures[0])
    assert "the file has: when, id;" in message
    assert "row" not in message.replace("[sources.columns]", "")


@pytest.mark.parametrize("suffix", ["json", "ndjson"])
@pytest.mark.parametrize("depth", [40, 900, 5000, 100_000])
def test_deeply_nested_json_is_a_clear_error_naming_the_file(write: WriteFile, suffix: str, depth: int) -> None:
    deep = '{"a":' * depth + "1" + "}" * depth
    record = '{"id": 1, "updated_at": "2025-01-01T00:00:00Z", "conclusion": "success", "x": ' + deep + "}"
    path = write(f"runs.{suffix}", f"[{record}]" if suffix == "json" else record + "\n")
    result = plan_for(write("backfill.toml", source_block("runs", path.name, env="production")))
    assert [str(failure) for failure in result.failures] == [
        f"source 'runs': {path}: nests objects or lists more than 32 levels deep; "
        "export the API's list of runs, whose records are a few levels deep"
    ]
