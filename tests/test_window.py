"""--since/--until: the summary describes the events the run plans, and an empty window is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import WriteFile, source_block
from receivers import KEY, LocalReceiver

from backfill.cli import main
from backfill.errors import EXIT_OK, EXIT_USAGE

HEADER = "id,updated_at,conclusion,environment,head_sha\n"
SINCE, UNTIL = "2025-01-02T04:00:00Z", "2025-01-02T12:00:00Z"


def hourly(first: int, count: int, conclusion: str = "success", sha: bool = True) -> str:
    """One run an hour from 2025-01-01T00:00Z; run i at hour i."""
    return "".join(
        f"{i},2025-01-{1 + i // 24:02d}T{i % 24:02d}:00:00Z,{conclusion},production,{f'sha{i}' if sha else ''}\n"
        for i in range(first, first + count)
    )


def cli(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env={"DEVGRID_API_KEY": KEY}, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def adds_up(counts: dict[str, Any]) -> bool:
    parts = ("events", "skipped", "rejected", "duplicates", "outside_window")
    return bool(counts["read"] == sum(counts[name] for name in parts))


def test_a_dry_run_summarizes_only_the_events_in_the_window(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", HEADER + hourly(0, 60))
    config = write("backfill.toml", source_block("runs", "runs.csv"))
    review = tmp_path / "review.csv"
    result = cli("run", "-c", str(config), "--dry-run", str(review), "--since", SINCE, "--until", UNTIL, "--json")
    assert result.exit_code == EXIT_OK, result.output
    summary = json.loads(result.stdout)
    assert len(review.read_text().splitlines()) == 1 + 8
    assert summary["window"] == {"since": "2025-01-02T04:00:00+00:00", "until": "2025-01-02T12:00:00+00:00"}
    assert summary["totals"] == {
        "read": 60,
        "skipped": 0,
        "rejected": 0,
        "duplicates": 0,
        "outside_window": 52,
        "events": 8,
    }
    assert summary["sources"][0]["events"] == 8 and summary["sources"][0]["outside_window"] == 52
    [entity] = summary["entities"]
    assert (entity["first"], entity["last"], entity["success"]) == ("2025-01-02T04:00:00Z", "2025-01-02T11:00:00Z", 8)
    assert entity["first_commit"] == "sha28"
    assert summary["completeness"]["build_commit_sha"] == {"present": 8, "missing": 0, "percent": 100.0}
    assert summary["completeness"]["change_id"]["missing"] == 8
    assert "8 of 8 events have no change_id." in " ".join(summary["warnings"])


def test_counts_add_up_with_skips_rejects_duplicates_and_a_window(write: WriteFile, tmp_path: Path) -> None:
    write(
        "a.csv",
        HEADER + hourly(0, 30) + hourly(30, 6, "cancelled") + "99,yesterday-ish,success,production,x\n",
    )
    write("b.csv", HEADER + hourly(20, 20) + hourly(40, 3, "success", sha=False))  # 20..29 repeat a.csv
    config = write("backfill.toml", source_block("a", "a.csv") + source_block("b", "b.csv"))
    args = ["run", "-c", str(config), "--dry-run", str(tmp_path / "review.csv"), "--json"]
    for window in ([], ["--since", "2025-01-01T22:00:00Z"], ["--until", UNTIL]):
        result = cli(*args, *window)
        summary = json.loads(result.stdout)
        for counts in [*summary["sources"], summary["totals"]]:
            assert adds_up(counts), counts
        events = sum(entity["success"] + entity["failed"] for entity in summary["entities"])
        assert events == summary["totals"]["events"] == len((tmp_path / "review.csv").read_text().splitlines()) - 1
    a, b = summary["sources"]
    # Until hour 36. a: hours 0..29, all inside; 6 cancelled; 1 bad time (rejected, whatever the window).
    assert (a["read"], a["events"], a["skipped"], a["rejected"], a["outside_window"]) == (37, 30, 6, 1, 0)
    # b: hours 20..42; 20..29 are a's (duplicates); 30..35 inside; 36..42 outside.
    assert (b["read"], b["duplicates"], b["events"], b["outside_window"]) == (23, 10, 6, 7)


def test_the_window_is_shown_in_the_tables(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", HEADER + hourly(0, 60))
    config = write("backfill.toml", source_block("runs", "runs.csv"))
    review = str(tmp_path / "review.csv")
    result = cli("run", "-c", str(config), "--dry-run", review, "--since", SINCE, "--until", UNTIL)
    assert "outside window" in result.stderr
    assert (
        "window: --since 2025-01-02T04:00:00+00:00 --until 2025-01-02T12:00:00+00:00: "
        "52 events outside it are left out of this summary and this run"
    ) in result.stderr
    plain = cli("run", "-c", str(config), "--dry-run", review)
    assert "outside window" not in plain.stderr and "window:" not in plain.stderr


def test_a_sending_run_summarizes_what_it_sends(write: WriteFile, receiver: LocalReceiver) -> None:
    write("runs.csv", HEADER + hourly(0, 60))
    config = write("backfill.toml", source_block("runs", "runs.csv"))
    result = cli("run", "-c", str(config), "--url", receiver.url, "--since", SINCE, "--until", UNTIL, "--json")
    assert result.exit_code == EXIT_OK, result.output
    summary = json.loads(result.stdout)
    assert summary["delivery"]["sent"] == summary["totals"]["events"] == 8 == len(receiver.events())
    assert summary["delivery"]["outside_window"] == summary["totals"]["outside_window"] == 52
    assert adds_up(summary["totals"])


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2025-01-02", "2025-01-02"),
        ("2025-01-03", "2025-01-02"),
        ("2025-01-02T10:00:00+00:00", "2025-01-02T11:00:00+02:00"),  # until is 09:00Z
        ("2025-01-02T10:00:00", "2025-01-02T10:00:00Z"),  # UTC unless an offset is given
    ],
)
def test_a_window_that_holds_nothing_is_refused_before_reading(write: WriteFile, since: str, until: str) -> None:
    config = write("backfill.toml", source_block("gone", "gone.csv"))
    for mode in (["--dry-run", "review.csv"], []):
        result = cli("run", "-c", str(config), *mode, "--since", since, "--until", until)
        assert result.exit_code == EXIT_USAGE
        assert result.stderr == (
            f"error: --since {since} is not before --until {until}: no event could be in the window; "
            "give a --since earlier than --until\n"
        )


def test_offsets_are_compared_as_instants(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", HEADER + hourly(0, 60))
    config = write("backfill.toml", source_block("runs", "runs.csv"))
    # since 04:00Z written in +06:00 is later on the clock face than until 05:00Z, and earlier in time.
    args = ["--since", "2025-01-02T10:00:00+06:00", "--until", "2025-01-02T05:00:00Z", "--json"]
    result = cli("run", "-c", str(config), "--dry-run", str(tmp_path / "review.csv"), *args)
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout)["totals"]["events"] == 1


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_a_time_that_is_not_iso_8601_is_one_line_naming_the_option(write: WriteFile, option: str) -> None:
    config = write("backfill.toml", source_block("gone", "gone.csv"))
    result = cli("run", "-c", str(config), "--dry-run", "review.csv", option, "last tuesday")
    assert result.exit_code == EXIT_USAGE
    assert result.stderr == f"error: {option} 'last tuesday' is not an ISO 8601 date or time, such as 2025-01-31\n"
