"""The review CSV: formula-safe, and readable back through the events preset."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
from helpers import WriteFile, invoke, source_block

from backfill.model import EVENT_COLUMNS, REVIEW_EXTRA_COLUMNS

HEADER = "id,updated_at,conclusion,environment,head_sha,display_title,actor_login\n"
RUNS = (
    HEADER + '1,2025-01-01T10:00:00Z,success,prod,abc,"=HYPERLINK(""http://x.invalid"",""click"")",mona\n'
    "2,2025-01-02T10:00:00+01:00,failure,staging,def,+1 more,@hubot\n"
    "3,2025-01-03T10:00:00Z,success,production,0012,-rollback,'quoted\n"
    "4,2025-01-04T10:00:00Z,success,production,fff,\tTabbed,ann\n"
)


def _dry_run(config: Path, review: Path) -> list[dict[str, str]]:
    result = invoke("run", "-c", str(config), "--dry-run", str(review))
    assert result.exit_code == 0, result.output
    with review.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_review_columns_and_formula_cells(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", RUNS)
    rows = _dry_run(write("backfill.toml", source_block("runs", "runs.csv")), tmp_path / "review.csv")
    assert list(rows[0]) == [*EVENT_COLUMNS, *REVIEW_EXTRA_COLUMNS]
    assert [row["description"] for row in rows] == [
        '\'=HYPERLINK("http://x.invalid","click")',
        "'+1 more",
        "'-rollback",
        "Tabbed",  # values are trimmed, so a leading tab never reaches the review
    ]
    assert [row["initiator"] for row in rows] == ["mona", "'@hubot", "''quoted", "ann"]
    assert rows[0]["original_env"] == "prod" and rows[0]["env"] == "production"
    assert rows[2]["build_commit_sha"] == "0012"


def test_a_review_csv_reads_back_unchanged(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", RUNS)
    first = tmp_path / "review.csv"
    _dry_run(write("backfill.toml", source_block("runs", "runs.csv")), first)
    again = tmp_path / "again.csv"
    config = write("events.toml", source_block("reviewed", "review.csv", preset="events", entity_id=None))
    _dry_run(config, again)
    before = pl.read_csv(first, infer_schema=False).select(EVENT_COLUMNS)
    after = pl.read_csv(again, infer_schema=False).select(EVENT_COLUMNS)
    assert after.equals(before)
    assert first.read_text(encoding="utf-8").count("'") == again.read_text(encoding="utf-8").count("'")


def test_hand_edits_to_a_review_are_what_gets_planned(write: WriteFile, tmp_path: Path) -> None:
    write("runs.csv", RUNS)
    review = tmp_path / "review.csv"
    _dry_run(write("backfill.toml", source_block("runs", "runs.csv")), review)
    frame = pl.read_csv(review, infer_schema=False)
    edited = frame.filter(pl.col("build_id") != "4").with_columns(
        pl.when(pl.col("build_id") == "1").then(pl.lit("CHG0012345")).otherwise(pl.col("change_id")).alias("change_id"),
        pl.when(pl.col("build_id") == "3")
        .then(pl.lit("hotfix"))
        .otherwise(pl.col("deployment_type"))
        .alias("deployment_type"),
    )
    edited.write_csv(review)
    again = tmp_path / "again.csv"
    rows = _dry_run(
        write("events.toml", source_block("reviewed", "review.csv", preset="events", entity_id=None)), again
    )
    assert [(row["build_id"], row["change_id"], row["deployment_type"]) for row in rows] == [
        ("1", "CHG0012345", ""),
        ("2", "", ""),
        ("3", "", "hotfix"),
    ]


def test_the_events_preset_refuses_what_a_review_cannot_hold(write: WriteFile, tmp_path: Path) -> None:
    write(
        "review.csv",
        ",".join([*EVENT_COLUMNS, *REVIEW_EXTRA_COLUMNS]) + "\n"
        "2025-01-01T00:00:00Z,shop,production,cancelled,1,,,,,,,runs,production\n"
        "2025-01-01T00:00:00Z,shop,production,,2,,,,,,,runs,production\n",
    )
    invoke(
        "run",
        "-c",
        str(write("events.toml", source_block("r", "review.csv", preset="events", entity_id=None))),
        "--dry-run",
        str(tmp_path / "out.csv"),
    )
    with (tmp_path / "out.rejects.csv").open(encoding="utf-8") as handle:
        reasons = [row["reason"] for row in csv.DictReader(handle)]
    assert reasons == [
        "unknown status 'cancelled'; say what it means with status_map in this source",
        "missing status",
    ]
