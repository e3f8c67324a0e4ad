"""The plan says which review columns may hold a formula cell, from the rows as read; the review trusts it.

The check runs on every classified row (rejects, skipped rows and losing
duplicates too), so it may name a column none of whose events needs quoting;
quoting such a column changes nothing. These tests write the review both ways
(with the plan's columns, and checking the events themselves) and compare the bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest
from helpers import WriteFile, source_block

from backfill.config import load_config
from backfill.job import plan_run
from backfill.model import FORMULA_START
from backfill.report.review import WRITTEN_BY_THE_PLAN, write_review

HEADER = "id,updated_at,conclusion,environment,head_sha,display_title,actor_login,html_url\n"
STARTS = ["=", "+", "-", "@", "'", "", "", "", "a", "Deploy "]
CONCLUSIONS = ["success", "failure", "cancelled", "bogus", ""]
ENVS = ["prod", "staging", "qa", "", "=prod", "-dev"]


def _random_export(seed: int, rows: int = 120) -> str:
    rng = random.Random(seed)
    lines = [HEADER]
    shas = ["aaa", "bbb", "=ccc", "ddd"]
    for number in range(rows):
        build = str(rng.randrange(rows // 2)) if rng.random() < 0.3 else str(number)
        if rng.random() < 0.1:
            build = rng.choice(["=1", "-2", "@3"])
        day = rng.randrange(1, 28)
        stamp = rng.choice([f"2025-01-{day:02d}T10:00:00Z", "not a time", "", f"-2025-01-{day:02d}"])
        title = rng.choice(STARTS) + f"title {number}"
        cells = [
            build,
            stamp,
            rng.choice(CONCLUSIONS),
            rng.choice(ENVS),
            rng.choice(shas),
            f'"{title}"',
            rng.choice(STARTS) + "user",
            rng.choice(["", "+https://x.invalid/1", "https://x.invalid/2"]),
        ]
        lines.append(",".join(cells) + "\n")
    return "".join(lines)


@pytest.mark.parametrize("seed", range(8))
def test_the_plans_formula_columns_write_the_review_the_events_would(
    write: WriteFile, tmp_path: Path, seed: int
) -> None:
    write("runs.csv", _random_export(seed))
    config = load_config(write("backfill.toml", source_block("runs", "runs.csv")))
    plan = plan_run(config).plan
    assert plan.formula_columns is not None
    events = plan.events
    risky_events = {
        name
        for name, dtype in events.schema.items()
        if dtype == pl.String
        and name not in WRITTEN_BY_THE_PLAN
        and events.get_column(name).str.contains(FORMULA_START).any()
    }
    assert risky_events <= plan.formula_columns
    trusted, checked = tmp_path / "trusted.csv", tmp_path / "checked.csv"
    write_review(events, trusted, formula_columns=plan.formula_columns)
    write_review(events, checked)
    assert trusted.read_bytes() == checked.read_bytes()


def test_a_formula_only_in_a_rejected_row_leaves_the_events_as_they_are(write: WriteFile, tmp_path: Path) -> None:
    write(
        "runs.csv",
        HEADER + "1,2025-01-01T10:00:00Z,success,prod,abc,Deploy,mona,\n"
        "2,not a time,success,prod,abc,=HYPERLINK(1),@hubot,\n",
    )
    config = load_config(write("backfill.toml", source_block("runs", "runs.csv")))
    plan = plan_run(config).plan
    assert plan.formula_columns is not None
    assert {"description", "initiator"} <= plan.formula_columns
    review = tmp_path / "review.csv"
    write_review(plan.events, review, formula_columns=plan.formula_columns)
    assert "'" not in review.read_text(encoding="utf-8")


def test_a_rollback_description_is_never_a_formula(write: WriteFile, tmp_path: Path) -> None:
    write(
        "runs.csv",
        HEADER + "1,2025-01-01T10:00:00Z,success,prod,aaa,,mona,\n"
        "2,2025-01-02T10:00:00Z,success,prod,bbb,,mona,\n"
        "3,2025-01-03T10:00:00Z,success,prod,aaa,,mona,\n",
    )
    config = load_config(write("backfill.toml", source_block("runs", "runs.csv")))
    plan = plan_run(config).plan
    assert plan.formula_columns is not None
    assert plan.events.get_column("deployment_type").to_list()[-1] == "rollback"
    assert "description" not in plan.formula_columns and "deployment_type" not in plan.formula_columns
    trusted, checked = tmp_path / "trusted.csv", tmp_path / "checked.csv"
    write_review(plan.events, trusted, formula_columns=plan.formula_columns)
    write_review(plan.events, checked)
    assert trusted.read_bytes() == checked.read_bytes()
