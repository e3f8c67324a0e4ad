"""backfill report: every number checked against the hand-built history of report_history.py."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from gitrepo import GitRepo
from helpers import NOW, REPO, WriteFile, invoke
from report_history import build_history

from backfill.config import load_config
from backfill.report import levels
from backfill.report.build import make_report
from backfill.report.lead_time import shipped


@pytest.fixture
def history(tmp_path: Path, write: WriteFile) -> dict[str, str]:
    return build_history(tmp_path, write)


def _report(tmp_path: Path, **options: Any) -> dict[str, Any]:
    return make_report(load_config(tmp_path / "report.toml"), now=NOW, **options)


def test_frequency_rework_and_weeks_over_the_whole_history(tmp_path: Path, history: dict[str, str]) -> None:
    app = _report(tmp_path)["entities"]["app"]
    assert app["deployments"] == 7  # six tags and one run; the failed run does not count
    assert app["failed_deployments"] == 1
    assert (app["hotfixes"], app["rollbacks"]) == (1, 1)
    # From 2025-01-02 00:00 to 2025-01-31 00:00 (the UTC days the events span): 29 days.
    assert app["window_days"] == 29
    assert app["deploys_per_day"] == pytest.approx(7 / 29)
    assert app["deploys_per_week"] == pytest.approx(7 / 29 * 7)
    assert app["deploys_per_month"] == pytest.approx(7 / 29 * 30)
    # 2025-01-02 12:00 to 2025-01-30 00:00 is 660 hours, over 6 gaps.
    assert app["mean_hours_between"] == pytest.approx(110)
    assert app["rework_rate"] == pytest.approx(2 / 7)
    assert app["weeks"] == [
        {"week": "2024-12-30", "deployment": 1, "hotfix": 0, "rollback": 0, "failed": 0},
        {"week": "2025-01-06", "deployment": 1, "hotfix": 1, "rollback": 0, "failed": 0},
        {"week": "2025-01-13", "deployment": 1, "hotfix": 0, "rollback": 1, "failed": 0},
        {"week": "2025-01-20", "deployment": 0, "hotfix": 0, "rollback": 0, "failed": 0},
        {"week": "2025-01-27", "deployment": 2, "hotfix": 0, "rollback": 0, "failed": 1},
    ]


def test_lead_time_counts_each_commit_once_and_leaves_the_first_deployment_out(
    tmp_path: Path, history: dict[str, str]
) -> None:
    app = _report(tmp_path)["entities"]["app"]
    # c3 48 h, c4 24 h, c5 6 h, c6 24 h, c7 24 h: the rollback shipped nothing, c1 and c2 are left out.
    assert app["lead_time_hours"] == {
        "median": 24.0,
        "p75": 24.0,
        "p90": pytest.approx(38.4),  # 24 + 0.6 x (48 - 24)
        "commits": 5,
        "deployments": 4,
        "unresolved_deployments": 1,
    }
    # Deployed commit alone, where a deployment shipped any: 12, 24, 6, 24, 24 hours.
    assert app["lead_time_deploy_commit_hours"] == {"median": 24.0, "p75": 24.0, "p90": 24.0, "deployments": 5}
    assert app["lead_time_buckets"][:3] == [
        {"bucket": "< 1 hour", "commits": 0},
        {"bucket": "1 hour - 1 day", "commits": 1},
        {"bucket": "1 - 7 days", "commits": 4},
    ]
    first = app["data_quality"]["first_deployment"]
    assert first == {
        "at": "2025-01-02T12:00:00+00:00",
        "build_commit_sha": history["c2"],
        "commits": 2,
        "in_window": True,
    }


def test_change_failure_proxy_is_a_rollback_or_hotfix_within_the_window(
    tmp_path: Path, history: dict[str, str], write: WriteFile
) -> None:
    report = _report(tmp_path)
    app = report["entities"]["app"]
    assert report["change_failure_source"] == app["change_failure_source"] == "proxy"
    # v1.1.0 was followed by the hotfix after 12 h, v1.2.0 by the rollback after 18 h.
    assert app["failed_changes"] == 2
    assert app["change_failure_rate"] == pytest.approx(2 / 7)
    assert app["recovery_hours"] == pytest.approx(15)
    assert app["recoveries"] == 2
    # A shorter window than 12 hours sees neither.
    config = (tmp_path / "report.toml").read_text(encoding="utf-8")
    write("report.toml", "[report]\nfailure_window_hours = 11.5\n" + config)
    assert _report(tmp_path)["entities"]["app"]["change_failure_rate"] == 0


def test_change_failure_rate_and_recovery_from_incidents(tmp_path: Path, history: dict[str, str]) -> None:
    at = datetime.fromisoformat
    incidents = pl.DataFrame(
        {
            "number": ["INC001", "INC002", "INC003", "INC004"],
            "opened_at": [at("2025-01-30T01:00Z"), at("2025-01-30T02:00Z"), at("2025-01-31T00:00Z"), None],
            "resolved_at": [at("2025-01-30T03:30Z"), None, at("2025-01-31T01:00Z"), None],
            "priority": ["1", "2", None, None],
            "change_id": ["CHG0003", " CHG0003 ", "CHG9999", None],
        },
        schema={
            "number": pl.Utf8,
            "opened_at": pl.Datetime("us", "UTC"),
            "resolved_at": pl.Datetime("us", "UTC"),
            "priority": pl.Utf8,
            "change_id": pl.Utf8,
        },
    )
    report = _report(tmp_path, incidents=incidents)
    app = report["entities"]["app"]
    assert report["change_failure_source"] == "incidents"
    assert app["failed_changes"] == 1  # run 3's CHG0003; CHG9999 names no deployment
    assert app["change_failure_rate"] == pytest.approx(1 / 7)
    assert app["recovery_hours"] == pytest.approx(2.5)  # INC001; INC002 is still open
    assert app["open_incidents"] == 1
    assert app["data_quality"]["with_change_id"] == pytest.approx(1 / 7)


def test_a_window_bounds_the_rates_and_lets_earlier_deployments_bound_lead_time(
    tmp_path: Path, history: dict[str, str]
) -> None:
    app = _report(tmp_path, since=datetime(2025, 1, 6, tzinfo=UTC), until=datetime(2025, 1, 20, tzinfo=UTC))[
        "entities"
    ]["app"]
    assert app["deployments"] == 4
    assert app["window_days"] == 14
    assert app["deploys_per_week"] == pytest.approx(2)
    # v1.1.0's range is bounded by v1.0.0, outside the window: c3 and c4 count.
    assert app["lead_time_hours"]["commits"] == 4  # 48, 24, 6, 24
    assert app["lead_time_hours"]["median"] == pytest.approx(24)
    assert app["lead_time_hours"]["p90"] == pytest.approx(24 + 0.7 * 24)
    assert app["data_quality"]["first_deployment"]["in_window"] is False
    assert app["change_failure_rate"] == pytest.approx(0.5)
    assert [week["week"] for week in app["weeks"]] == ["2025-01-06", "2025-01-13"]


def test_data_quality_says_what_devgrid_will_not_count(tmp_path: Path, history: dict[str, str]) -> None:
    quality = _report(tmp_path)["entities"]["app"]["data_quality"]
    assert quality["with_build_commit_sha"] == 1
    assert quality["resolvable_in_git"] == pytest.approx(6 / 7)
    assert quality["not_counted"] == {
        "failed_deployments": 1,
        "other_environments": 1,
        "without_build_commit_sha": 0,
        "without_change_id": 6,
    }


def test_levels_are_survey_clusters_never_thresholds(tmp_path: Path, history: dict[str, str]) -> None:
    app = _report(tmp_path)["entities"]["app"]
    assert app["levels"]["deploys_per_day"]["cluster"] == "High"  # 7/29 a day: between daily and weekly
    assert app["levels"]["lead_time_hours"]["cluster"] == "High"  # 24 h: between a day and a week
    assert app["levels"]["change_failure_rate"]["cluster"] == "High"  # 28.6% is nearest 20%
    assert app["levels"]["recovery_hours"]["cluster"] == "High / Medium"  # both "less than one day"
    assert app["levels"]["rework_rate"] is None
    assert app["levels"]["lead_time_hours"]["survey"] == "DORA State of DevOps 2024 survey clusters"


@pytest.mark.parametrize(
    ("metric", "value", "cluster"),
    [
        ("deploys_per_day", 3.0, "Elite"),
        ("deploys_per_day", 1.0, "Elite"),
        ("deploys_per_day", 0.99, "High"),
        ("deploys_per_day", 1 / 10, "Medium"),
        ("deploys_per_day", 1 / 60, "Low"),
        ("deploys_per_day", 0.0, "Low"),
        ("lead_time_hours", 0.0, "Elite"),
        ("lead_time_hours", 200.0, "Medium"),
        ("lead_time_hours", 10_000.0, "Low"),
        ("change_failure_rate", 0.0, "Elite"),
        ("change_failure_rate", 0.12, "Medium"),
        ("change_failure_rate", 0.9, "Low"),
        ("recovery_hours", 0.5, "Elite"),
        ("recovery_hours", 200.0, "Low"),
    ],
)
def test_a_value_is_placed_in_the_cluster_that_holds_it_or_the_nearest(metric: str, value: float, cluster: str) -> None:
    placed = levels.place(metric, value)
    assert placed is not None
    assert placed["cluster"] == cluster


def test_lead_time_walks_merges_and_unknown_commits_in_one_pass(tmp_path: Path) -> None:
    """A merge brings a side branch's commits with it; a SHA git does not know ships nothing."""
    repo = GitRepo(tmp_path / "repo")
    base = repo.commit("base", "2025-03-01T00:00:00+00:00")
    repo.git("checkout", "--quiet", "-b", "side")
    repo.commit("side", "2025-03-02T00:00:00+00:00")
    repo.git("checkout", "--quiet", "main")
    main_work = repo.commit("main work", "2025-03-03T00:00:00+00:00")
    repo.git("merge", "--quiet", "--no-ff", "-m", "merge", "side", date="2025-03-04T00:00:00+00:00")
    merge = repo.git("rev-parse", "HEAD")
    at = datetime.fromisoformat
    deploys = pl.DataFrame(
        {
            "entityId": ["a", "a", "a", "b"],
            "position": [0, 1, 2, 0],
            "at": [at("2025-03-01T01:00Z"), at("2025-03-04T06:00Z"), at("2025-03-04T12:00Z"), at("2025-03-04T12:00Z")],
            "build_commit_sha": [base, "0123abcd" * 5, merge.upper()[:12], main_work],
        }
    )
    walked = shipped(repo.path, deploys)
    a = walked.commits.filter(pl.col("entityId") == "a").sort("lead_hours")
    # The merge (12 h), main work (36 h) and side (60 h), each once; base is the first deployment's.
    assert a.get_column("position").to_list() == [2, 2, 2]
    assert a.get_column("lead_hours").to_list() == [12.0, 36.0, 60.0]
    summary = walked.deploys.sort("entityId", "position")
    assert summary.get_column("resolved").to_list() == [True, False, True, True]
    assert summary.get_column("first").to_list() == [True, False, False, True]
    b = walked.commits.filter(pl.col("entityId") == "b")
    assert b.height == 0  # b's only deployment is its first


def test_report_command_writes_the_page_and_prints_json(tmp_path: Path, history: dict[str, str]) -> None:
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    result = invoke("report", "-c", str(tmp_path / "report.toml"), "--out", str(page), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema_version"] == 1
    app = data["entities"]["app"]
    for key in (
        "deployments",
        "deploys_per_day",
        "deploys_per_week",
        "mean_hours_between",
        "lead_time_hours",
        "change_failure_rate",
        "recovery_hours",
        "rework_rate",
    ):
        assert key in app
    assert set(app["lead_time_hours"]) >= {"median", "p75", "p90", "commits"}
    text = page.read_text(encoding="utf-8")
    assert text.count('class=chart data-chart="') == 2
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/", "")
    assert "survey clusters" in text and "proxy" in text
    assert len(text.encode()) < 2_000_000
    assert not (tmp_path / "state").exists()  # nothing written: no state file, no folder for it


def test_report_command_filters_entities_and_names_an_unknown_one(tmp_path: Path, history: dict[str, str]) -> None:
    page = tmp_path / "report.html"
    result = invoke("report", "-c", str(tmp_path / "report.toml"), "--out", str(page), "--entity", "nope")
    assert result.exit_code == 2
    assert "error: --entity nope: no planned event has this entityId; the entities are: app" in result.stderr
    result = invoke("report", "-c", str(tmp_path / "report.toml"), "--out", str(page), "--entity", "app")
    assert result.exit_code == 0, result.output
    assert "app" in result.stderr and "report written to" in result.stderr


def test_report_refuses_to_write_over_an_input(tmp_path: Path, history: dict[str, str]) -> None:
    result = invoke("report", "-c", str(tmp_path / "report.toml"), "--out", str(tmp_path / "runs.csv"))
    assert result.exit_code == 2
    assert "runs.csv: is the path of source 'runs'; writing the report (--out) there would replace it" in result.stderr


def test_a_known_window_without_deployments_is_a_rate_of_zero(tmp_path: Path, history: dict[str, str]) -> None:
    app = _report(tmp_path, since=datetime(2025, 1, 20, tzinfo=UTC), until=datetime(2025, 1, 27, tzinfo=UTC))[
        "entities"
    ]["app"]
    assert app["deployments"] == 0
    assert app["window_days"] == 7
    assert app["deploys_per_day"] == 0
    assert app["mean_hours_between"] is None
    assert app["change_failure_rate"] is None
    assert app["rework_rate"] is None
    assert app["lead_time_hours"]["commits"] == 0
    assert app["lead_time_hours"]["median"] is None
    assert app["weeks"] == [{"week": "2025-01-20", "deployment": 0, "hotfix": 0, "rollback": 0, "failed": 0}]
    assert app["levels"]["deploys_per_day"]["cluster"] == "Low"


def test_a_repository_git_cannot_read_is_a_warning_not_a_failure(
    tmp_path: Path, history: dict[str, str], write: WriteFile
) -> None:
    config = (tmp_path / "report.toml").read_text(encoding="utf-8")
    write("report.toml", '[report]\nrepos = { app = "no-such-repo" }\n' + config)
    page = tmp_path / "report.html"
    result = invoke("report", "-c", str(tmp_path / "report.toml"), "--out", str(page), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["entities"]["app"]["lead_time_hours"] is None
    assert data["entities"]["app"]["deployments"] == 7  # the rest of the report stands
    [warning] = [line for line in data["warnings"] if line.startswith("lead time of app")]
    assert "no-such-repo" in warning and "git could not walk the history" in warning


def test_shas_that_are_not_commit_ids_are_never_handed_to_git(tmp_path: Path) -> None:
    """HEAD, a branch or a tag name would resolve to some commit; only hexadecimal ids are asked about."""
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit("one", "2025-03-01T00:00:00+00:00")
    repo.commit("two", "2025-03-02T00:00:00+00:00")
    repo.tag("v1")
    at = datetime.fromisoformat
    deploys = pl.DataFrame(
        {
            "entityId": ["a"] * 5,
            "position": [0, 1, 2, 3, 4],
            "at": [at(f"2025-03-0{day}T00:00Z") for day in (3, 4, 5, 6, 7)],
            "build_commit_sha": [f"  {first.upper()} ", "HEAD", "main", "v1", None],
        }
    )
    summary = shipped(repo.path, deploys).deploys.sort("position")
    assert summary.get_column("resolved").to_list() == [True, False, False, False, False]


def test_the_report_environment_must_be_one_of_the_environments(
    tmp_path: Path, history: dict[str, str], write: WriteFile
) -> None:
    config = (tmp_path / "report.toml").read_text(encoding="utf-8")
    write("report.toml", '[report]\nenvironment = "qa"\n' + config)
    result = invoke("report", "-c", str(tmp_path / "report.toml"), "--out", str(tmp_path / "r.html"))
    assert result.exit_code == 2
    assert "report.environment: 'qa' is not one of production, staging, development" in result.stderr


def test_staging_can_be_the_environment_measured(tmp_path: Path, history: dict[str, str], write: WriteFile) -> None:
    config = (tmp_path / "report.toml").read_text(encoding="utf-8")
    write("report.toml", '[report]\nenvironment = "staging"\n' + config)
    app = _report(tmp_path)["entities"]["app"]
    assert app["deployments"] == 1
    assert app["data_quality"]["not_counted"]["other_environments"] == 8


@pytest.mark.timeout(300)
def test_many_entities_keep_the_page_under_2_mb(tmp_path: Path, write: WriteFile) -> None:
    """Eighty services with a year of daily deployments: the busiest keep their charts, every table stays."""
    days = 365
    rows = [
        (f"{entity}-{day}", "2025-01-01T00:00:00Z", f"svc{entity:02d}")
        for entity in range(80)
        for day in range(days - entity)  # svc00 deploys most
    ]
    frame = pl.DataFrame({"id": [r[0] for r in rows], "app": [r[2] for r in rows]}).with_columns(
        (
            pl.lit(datetime(2025, 1, 1, tzinfo=UTC))
            + pl.duration(days=pl.col("id").str.split("-").list.get(1).cast(pl.Int64))
        )
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        .alias("updated_at"),
        pl.lit("success").alias("conclusion"),
        pl.lit("production").alias("environment"),
    )
    frame.write_csv(tmp_path / "many.csv")
    write(
        "many.toml",
        """
        [state]
        path = "state/state.db"

        [[sources]]
        name = "many"
        type = "ci-export"
        path = "many.csv"
        preset = "github-actions"
        entity_column = "app"
        """,
    )
    page = tmp_path / "many.html"
    result = invoke("report", "-c", str(tmp_path / "many.toml"), "--out", str(page))
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    assert len(text.encode()) < 2_000_000
    assert 'data-chart="weekly-svc00"' in text  # the busiest first
    assert 'data-chart="weekly-svc79"' not in text
    assert text.count("<h2>svc") == 80
    assert "Some charts were left out to keep the page under 2 MB" in text


def test_a_bundle_is_walked_through_the_clone_its_source_keeps(
    tmp_path: Path, history: dict[str, str], write: WriteFile
) -> None:
    subprocess.run(["git", "-C", str(tmp_path / "repo"), "bundle", "create", "../app.bundle", "--all"], check=True)
    config = (tmp_path / "report.toml").read_text(encoding="utf-8").replace('repo = "repo"', 'repo = "app.bundle"')
    write("report.toml", config)
    app = _report(tmp_path)["entities"]["app"]
    assert app["lead_time_hours"]["commits"] == 5
    assert app["data_quality"]["repository"] == str(tmp_path / "app.bundle")


def test_the_terminal_headline_names_each_entity_and_the_proxy(tmp_path: Path, history: dict[str, str]) -> None:
    page = tmp_path / "report.html"
    result = invoke("report", "-c", str(tmp_path / "report.toml"), "--out", str(page))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the headline goes to stderr; stdout is kept for --json
    lines = result.stderr.splitlines()
    [row] = [line for line in lines if line.startswith("│ app")]
    assert "7" in row and "24.0 h" in row and "28.6% *" in row and "15.0 h" in row
    assert any(line.startswith("* proxy: a deployment followed by a rollback or hotfix within 24 h") for line in lines)
    assert any("the first deployment (2025-01-02T12:00:00+00:00) is left out of lead time" in line for line in lines)
    assert lines[-1] == f"report written to {page}"


def test_rows_that_are_not_events_are_counted_by_reason(tmp_path: Path, history: dict[str, str]) -> None:
    report = _report(tmp_path)
    assert report["rejected"] == [
        {"reason": "timestamp '2025-01-31T25:00:00Z' is not a valid ISO 8601 or epoch time", "rows": 1}
    ]
    assert report["skipped"] == [{"reason": "status 'cancelled' is not a deployment", "rows": 1}]
    page = tmp_path / "report.html"
    assert invoke("report", "-c", str(tmp_path / "report.toml"), "--out", str(page)).exit_code == 0
    text = page.read_text(encoding="utf-8")
    assert "Rejected: 1 rows" in text and "status &#x27;cancelled&#x27; is not a deployment" in text


def test_the_demo_report_takes_change_failure_and_recovery_from_its_servicenow_incidents(tmp_path: Path) -> None:
    result = invoke("report", "-c", str(REPO / "configs" / "demo.toml"), "--out", str(tmp_path / "r.html"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["change_failure_source"] == "incidents"
    billing = report["entities"]["billing"]
    assert (billing["change_failure_source"], billing["failed_changes"], billing["deployments"]) == ("incidents", 1, 5)
    assert billing["change_failure_rate"] == 0.2 and billing["recovery_hours"] == 0.75
