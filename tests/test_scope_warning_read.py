"""The mixed-scope warning comes from the one pass that reads the rows, and says what a read of its own says.

Where a CSV file takes the one-pass reading, its scope columns pass through
normalization and are tallied once the rows are in memory; every other way
(the exact reading, a fallback after a row that does not prove regular, a
spilled plan, a source that fails to map) tallies them from the file, as a
separate read. The warnings, and their order, must not depend on which.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import WriteFile, source_block

from backfill.config import load_config
from backfill.extract.exports.csv_file import CsvFile
from backfill.extract.exports.presets import PRESETS
from backfill.extract.exports.scope import mixed_scope_warning, scope_columns
from backfill.job import plan_run
from backfill.plan.spill import Spill

HEADER = "id,name,head_branch,event,updated_at,conclusion,environment,head_sha,display_title\n"
ROWS = [
    "1,Deploy,main,push,2025-01-01T10:00:00Z,success,production,aaa,first",
    "2,CI,feature/x,pull_request,2025-01-02T10:00:00Z,success,production,bbb,second",
    '3,Deploy, main ,push,2025-01-03T10:00:00Z,failure,production,ccc,"with, comma"',
    "4,,main,,2025-01-04T10:00:00Z,success,production,ddd,",
    "5,Lint,main,schedule,2025-01-05T10:00:00Z,success,production,eee,fifth",
]
SHAPES = {
    "regular": "".join(row + "\n" for row in ROWS),
    "blank line": ROWS[0] + "\n\n" + "".join(row + "\n" for row in ROWS[1:]),
    "crlf": "".join(row + "\r\n" for row in ROWS),
    "quoted newline": "".join(row + "\n" for row in ROWS[:2]) + "6,Deploy,main,push,2025-01-06T10:00:00Z,success,"
    'production,fff,"two\nlines"\n' + "".join(row + "\n" for row in ROWS[2:]),
    "ragged row": "".join(row + "\n" for row in ROWS) + "7,Deploy,main,push,2025-01-07T10:00:00Z,success\n",
    "long row": "".join(row + "\n" for row in ROWS)
    + "8,Deploy,dev,push,2025-01-08T10:00:00Z,success,production,a,b,c\n",
    "unclosed quote": "".join(row + "\n" for row in ROWS) + '9,"Deploy,main,push,2025-01-09T10:00:00Z,success\n',
    "quote inside a field": "".join(row + "\n" for row in ROWS) + '10,De"ploy,main,push,2025-01-10T10:00:00Z,x,y,z,w\n',
}


def _expected(path: Path, *, env: str | None) -> list[str]:
    csv_file = CsvFile(path)
    scope = scope_columns(PRESETS["github-actions"].scope, csv_file.columns)
    names = list(dict.fromkeys(scope.values()))
    warning = mixed_scope_warning("runs", csv_file.values(names), scope)
    expected = [warning] if warning else []
    if env is not None:
        expected.append(f"source 'runs': the file has an environment column (environment); env = \"{env}\" is not used")
    return expected


@pytest.mark.parametrize("spilled", [False, True], ids=["in memory", "spilled"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_warnings_are_those_a_read_of_the_scope_gives(
    write: WriteFile, tmp_path: Path, shape: str, spilled: bool
) -> None:
    path = write("runs.csv", HEADER + SHAPES[shape])
    config = load_config(write("backfill.toml", source_block("runs", "runs.csv", env="production")))
    if spilled:
        with Spill() as spill:
            planned = plan_run(config, spill=spill)
    else:
        planned = plan_run(config)
    assert not planned.failures
    assert planned.warnings == _expected(path, env="production")
    assert planned.warnings[0].startswith("source 'runs': no match is set")
    assert "__backfill" not in " ".join(planned.plan.events.columns)


def test_a_source_that_fails_to_map_still_warns_first(write: WriteFile, tmp_path: Path) -> None:
    path = write("runs.csv", HEADER + SHAPES["regular"])
    config = load_config(
        write("backfill.toml", source_block("runs", "runs.csv", env="production", hotfix_column="nowhere"))
    )
    planned = plan_run(config)
    assert [failure.source for failure in planned.failures] == ["runs"]
    assert "hotfix_column" in str(planned.failures[0])
    assert planned.warnings == _expected(path, env="production")


def test_no_scope_column_no_scope_warning(write: WriteFile) -> None:
    write("runs.csv", "id,updated_at,conclusion,environment,head_sha\n1,2025-01-01T10:00:00Z,success,production,a\n")
    planned = plan_run(load_config(write("backfill.toml", source_block("runs", "runs.csv"))))
    assert planned.warnings == []
    assert planned.plan.events.height == 1


def test_a_regular_file_is_read_once_for_its_rows_and_its_scope(
    write: WriteFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write("runs.csv", HEADER + SHAPES["regular"])
    expected = _expected(path, env=None)
    config = load_config(write("backfill.toml", source_block("runs", "runs.csv")))

    def no_second_read(self: CsvFile, columns: object) -> None:
        raise AssertionError("the scope columns were read again")

    monkeypatch.setattr(CsvFile, "values", no_second_read)
    planned = plan_run(config)
    assert planned.warnings == expected
