"""The command line: what a user sees, and the exit code, for good and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, WriteFile, invoke, source_block

from backfill.errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE

HEADER = "id,updated_at,conclusion,environment,head_sha\n"
GOOD = HEADER + "1,2025-01-01T00:00:00Z,success,production,abc\n"


def _run(config: Path, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    result = invoke("run", "-c", str(config), "--dry-run", str(tmp_path / "review.csv"), *extra)
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


def test_demo_config_dry_run_works_offline(tmp_path: Path) -> None:
    code, _, stderr = _run(REPO / "configs" / "demo.toml", tmp_path)
    assert code == EXIT_OK
    assert "Sources" in stderr and "total" in stderr
    review = (tmp_path / "review.csv").read_text(encoding="utf-8").splitlines()
    assert review[0].startswith("timestamp,entityId,env,status,build_id")
    assert len(review) > 10
    assert (tmp_path / "review.rejects.csv").exists()
    assert not (REPO / ".backfill" / "demo-state.db").exists()


def test_the_demo_reviews_exactly_this(tmp_path: Path) -> None:
    """The demo is the first thing a user runs: its counts and events are pinned, so a change shows here."""
    result = invoke("run", "-c", str(REPO / "configs" / "demo.toml"), "--dry-run", str(tmp_path / "r.csv"), "--json")
    assert result.exit_code == EXIT_OK, result.output
    summary = json.loads(result.stdout)
    counts = {
        source["source"]: tuple(source[name] for name in ("read", "skipped", "rejected", "duplicates", "events"))
        for source in summary["sources"]
    }
    assert counts == {
        "shop-runs": (24, 4, 2, 2, 16),
        "vdev-deployments": (8, 4, 2, 0, 2),
        "billing-tags": (7, 2, 0, 0, 5),
    }
    review = (tmp_path / "r.csv").read_text(encoding="utf-8").splitlines()
    assert len(review) == 1 + 23
    assert review[0] == (
        "timestamp,entityId,env,status,build_id,build_commit_sha,change_id,build_url,description,initiator,"
        "deployment_type,source,original_env,change_id_rule"
    )
    assert review[4] == (
        "2025-01-06T09:31:02Z,shop,production,success,9000001,b5adc7462c1361a7b18be15f023c5ff79a02dba6,CHG0030001,"
        "https://github.com/acme/shop/actions/runs/9000001,Deploy v1.4.0,hubot,,shop-runs,production,"
        "exact correlation_id"
    )
    assert review[11] == (
        "2025-01-16T09:05:00Z,shop,production,success,9000016,aa303a05cadf893a59b98abefea77e88f001cf29,,"
        "https://github.com/acme/shop/actions/runs/9000016,Deploy v1.5.1,octocat,,shop-runs,production,"
    )


def test_json_summary_on_stdout(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", GOOD + "2,2025-01-02T00:00:00Z,cancelled,production,abc\n")
    code, stdout, stderr = _run(write("backfill.toml", source_block("runs", "runs.csv")), tmp_path, "--json")
    assert code == EXIT_OK
    summary = json.loads(stdout)
    assert summary["mode"] == "dry-run"
    assert summary["totals"] == {
        "read": 2,
        "skipped": 1,
        "rejected": 0,
        "duplicates": 0,
        "outside_window": 0,
        "events": 1,
    }
    assert summary["sources"][0]["skip_reasons"] == {"status 'cancelled' is not a deployment": 1}
    assert summary["completeness"]["change_id"] == {"present": 0, "missing": 1, "percent": 0.0}
    assert "Sources" not in stderr


def test_summary_warns_about_attributes_devgrid_needs(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", HEADER + "1,2025-01-01T00:00:00Z,success,production,\n")
    _, _, stderr = _run(write("backfill.toml", source_block("runs", "runs.csv")), tmp_path)
    assert "1 of 1 events have no build_commit_sha. Lead Time for Change needs build_commit_sha" in stderr
    assert "1 of 1 events have no change_id." in stderr


def test_a_dry_run_writes_no_state(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", GOOD)
    config = write("backfill.toml", '[state]\npath = "state/backfill.db"\n' + source_block("runs", "runs.csv"))
    assert _run(config, tmp_path)[0] == EXIT_OK
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "runs.csv: does not exist; check path in this source (paths are relative to the config file)"),
        ("", "runs.csv: the file is empty; export the runs again, header row included"),
        (
            "id,updated_at,result\n1,2025-01-01T00:00:00Z,success\n",
            "runs.csv: none of the columns 'conclusion' is there for status; the file has: id, updated_at, result; "
            'map it with [sources.columns] status = "<column>"',
        ),
        (
            (HEADER + "1,2025-01-01T00:00:00Z,success,production,caf\xe9\n").encode("latin-1"),
            "runs.csv: line 2 is not UTF-8 (byte 0xE9 at offset 91); save the file as UTF-8, or set "
            'encoding = "cp1252" (the file\'s real encoding) in this source',
        ),
    ],
    ids=["missing", "empty", "missing-column", "not-utf8"],
)
def test_unreadable_sources_exit_1_with_one_line(
    write: WriteFile, tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    if content is not None:
        write("runs.csv", content)
    write("good.csv", GOOD)
    config = write("backfill.toml", source_block("runs", "runs.csv") + source_block("other", "good.csv"))
    code, _, stderr = _run(config, tmp_path)
    assert code == EXIT_ERROR
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: source 'runs': {tmp_path / message}"]
    # The other source still ran.
    assert (tmp_path / "review.csv").read_text(encoding="utf-8").count("\n") == 2


def test_a_mapped_column_that_is_not_there(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", GOOD)
    config = write("backfill.toml", source_block("runs", "runs.csv", columns={"status": "result"}))
    code, _, stderr = _run(config, tmp_path)
    assert code == EXIT_ERROR
    assert (
        f"error: source 'runs': {tmp_path / 'runs.csv'}: column 'result' (status) is not in the file; "
        "the file has: id, updated_at, conclusion, environment, head_sha"
    ) in stderr


def test_bad_rows_land_in_the_rejects_file_and_good_rows_go_on(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", GOOD + "2,2025-01-01T00:00:00Z,success\n3,tomorrow,success,production,abc\n")
    code, _, _ = _run(write("backfill.toml", source_block("runs", "runs.csv")), tmp_path)
    assert code == EXIT_OK
    rejects = (tmp_path / "review.rejects.csv").read_text(encoding="utf-8").splitlines()
    assert rejects == [
        "source,row,reason,timestamp,entityId,env,status,build_id,build_commit_sha,change_id,build_url,description,"
        "initiator,deployment_type",
        "runs,2,the row has 3 fields but the header has 5,2025-01-01T00:00:00Z,shop,,success,2,,,,,,",
        "runs,3,timestamp 'tomorrow' is not a valid ISO 8601 or epoch time,tomorrow,shop,production,success,3,abc,,,,,",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[devgrid]\nbatch_size = "15"\n', "devgrid.batch_size: must be an integer, not a string '15'"),
        ('[[sources]]\nname = "x"\ntype = "svn"\n', "sources[0].type (source 'x'): unknown source type 'svn'"),
        (
            source_block("runs", "runs.csv", preset="travis"),
            "sources[0].preset (source 'runs'): is 'travis'; use one of",
        ),
        (
            source_block("runs", "a.csv") + source_block("runs", "b.csv"),
            "sources[1].name: 'runs' is used twice; names must be unique",
        ),
    ],
    ids=["wrong-type", "unknown-type", "unknown-preset", "duplicate-name"],
)
def test_config_mistakes_exit_2(write: WriteFile, tmp_path: Path, text: str, message: str) -> None:
    config = write("backfill.toml", text)
    code, _, stderr = _run(config, tmp_path)
    assert code == EXIT_USAGE
    assert stderr.startswith(f"error: {config}: {message}")
    assert not (tmp_path / "review.csv").exists()


def test_missing_config_is_a_usage_error_naming_the_three_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BACKFILL_CONFIG", raising=False)
    result = invoke("run", "--dry-run", "x.csv")
    assert result.exit_code == EXIT_USAGE
    assert "no config file: pass -c FILE, set $BACKFILL_CONFIG, or create ./backfill.toml" in result.stderr


def test_presets_lists_every_preset() -> None:
    result = invoke("presets")
    assert result.exit_code == EXIT_OK
    for name in ("github-actions", "gitlab-ci", "jenkins", "circleci", "azure-devops", "events"):
        assert f"\n{name}\n" in f"\n{result.stdout}"
