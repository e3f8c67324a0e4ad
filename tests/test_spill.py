"""A dry run planned from rows spilled to disk writes exactly what one planned in memory writes.

Each case runs the same dry run twice, once with ``[plan] spill_above_mb = 0``
(always spill) and once with the history held in memory, and compares the
review, rejects and skipped files byte for byte, and the summaries.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner, Result
from gitrepo import GitRepo
from helpers import FIXTURES, REPO, WriteFile, source_block
from receivers import KEY, LocalReceiver

import backfill.plan.spill
from backfill.cli import main
from backfill.config import Planning, load_config
from backfill.errors import EXIT_OK, EXIT_USAGE
from backfill.job import spills

sys.path.insert(0, str(REPO / "tests" / "bench"))
from generate_export import generate

IN_MEMORY = 1_000_000.0
ALWAYS = 0.0
# Written by hand: what the generated export lacks.
EXTRA = (
    "id,updated_at,conclusion,environment,head_sha,display_title,actor_login,html_url\n"
    # A commit deployed again after another one: a rollback (no title: it gets one).
    "7001,2023-01-01T00:10:00Z,success,production,aaaa,,ann,https://ci/7001\n"
    "7002,2023-01-01T00:20:00Z,success,production,bbbb,Deploy b,ann,https://ci/7002\n"
    "7003,2023-01-01T00:30:00Z,success,production,aaaa,,ann,https://ci/7003\n"
    "7004,2023-01-01T00:40:00Z,success,production,bbbb,Back to b,ann,https://ci/7004\n"
    # Cells a spreadsheet would run, quotes, commas and a line break in a title.
    '7005,2023-01-01T00:50:00Z,success,staging,cccc,"=HYPERLINK(""x"")",@bob,https://ci/7005\n'
    '7006,2023-01-01T01:00:00Z,failure,staging,dddd,"two\nlines, ""quoted""",-carol,+https://ci/7006\n'
    # The same run as in the generated export, with a later outcome: dedupe across sources.
    "9000003,2023-01-01T01:10:00Z,success,production,eeee,re-run,dan,https://ci/9000003\n"
    # A ragged row and a blank line: rejected with their reason.
    "7007,2023-01-01T01:20:00Z,success\n"
    "\n"
    "7008,not a time,success,production,ffff,bad time,ed,https://ci/7008\n"
    "7009,2023-01-01T01:30:00Z,cancelled,production,gggg,cancelled,ed,https://ci/7009\n"
)


def _cli(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env={"DEVGRID_API_KEY": KEY}, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def workspace(tmp_path: Path, write: WriteFile) -> Path:
    """A history with duplicates, re-runs, rejects, skips, rollbacks, formula cells and a git-tags source."""
    frame = generate(3_000)
    frame.write_csv(tmp_path / "runs.csv")
    # The same rows in another order, as a second source: every key occurs in both.
    frame.sample(fraction=1.0, shuffle=True, seed=3).write_csv(tmp_path / "shuffled.csv")
    write("extra.csv", EXTRA)
    repo = GitRepo(tmp_path / "repo")
    repo.commit("one", "2023-01-01T00:00:00Z")
    repo.tag("v1.0.0", message="1.0.0", date="2023-01-01T02:00:00Z")
    repo.commit("two", "2023-01-01T03:00:00Z")
    repo.tag("v1.1.0", message="1.1.0", date="2023-01-01T04:00:00Z")
    repo.tag("deploy-1.0.0", message="again", date="2023-01-01T05:00:00Z", at="v1.0.0")
    return tmp_path


def _config(folder: Path, spill_above_mb: float, extra: str = "") -> Path:
    text = (
        f'[state]\npath = "{folder / "state.db"}"\n\n[plan]\nspill_above_mb = {spill_above_mb}\n\n'
        f"{extra}"
        + source_block("extra", "extra.csv")
        + source_block("runs", "runs.csv")
        + source_block("shuffled", "shuffled.csv")
        + '[[sources]]\nname = "tags"\ntype = "git-tags"\nrepo = "repo"\nentity_id = "shop"\nenv = "production"\n'
    )
    config = folder / f"backfill-{spill_above_mb:g}.toml"
    config.write_text(text, encoding="utf-8")
    return config


def _dry_run(config: Path, review: Path, *flags: str) -> dict[str, Any]:
    result = _cli("run", "-c", str(config), "--dry-run", str(review), "--json", *flags)
    assert result.exit_code in (EXIT_OK, 1), result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    for name in ("config", "review_csv", "rejects_csv", "skipped_csv"):
        summary.pop(name, None)
    return summary


def _outputs(review: Path) -> list[bytes]:
    return [
        review.read_bytes(),
        review.with_name("review.rejects.csv").read_bytes(),
        review.with_name("review.skipped.csv").read_bytes(),
    ]


def _both(workspace: Path, *flags: str, extra: str = "") -> tuple[list[bytes], dict[str, Any]]:
    """Run the dry run both ways; assert they agree; return the files and the summary."""
    spilled = _dry_run(_config(workspace, ALWAYS, extra), workspace / "spilled" / "review.csv", *flags)
    held = _dry_run(_config(workspace, IN_MEMORY, extra), workspace / "held" / "review.csv", *flags)
    assert spilled == held
    spilled_files = _outputs(workspace / "spilled" / "review.csv")
    assert spilled_files == _outputs(workspace / "held" / "review.csv")
    return spilled_files, spilled


def test_a_spilled_plan_writes_what_a_plan_in_memory_writes(workspace: Path) -> None:
    files, summary = _both(workspace)
    review = pl.read_csv(files[0], infer_schema=False)
    # The case is not trivial: every kind of row is there.
    assert review.height > 2_000 and summary["totals"]["duplicates"] > 2_500
    assert summary["totals"]["rejected"] > 10 and summary["totals"]["skipped"] > 100
    rollbacks = review.filter(pl.col("deployment_type") == "rollback")
    assert "Rollback to 7001" in rollbacks.get_column("description").to_list()
    assert "Back to b" in rollbacks.get_column("description").to_list()  # its own description is kept
    assert review.filter(pl.col("build_id") == "deploy-1.0.0").get_column("deployment_type").to_list() == ["rollback"]
    assert review.filter(pl.col("build_id") == "9000003").get_column("description").to_list() == ["re-run"]
    assert b"'=HYPERLINK" in files[0] and b"'@bob" in files[0] and b"'-carol" in files[0]
    assert b"the row has 3 fields but the header has 8" in files[1] and b"the row is blank" in files[1]


def test_slices_join_up_in_send_order(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole, _ = _both(workspace)
    monkeypatch.setattr(backfill.plan.spill, "SLICE_EVENTS", 7)
    sliced = _dry_run(_config(workspace, ALWAYS), workspace / "sliced" / "review.csv")
    assert _outputs(workspace / "sliced" / "review.csv") == whole
    assert sliced["totals"] == _dry_run(_config(workspace, IN_MEMORY), workspace / "held" / "review.csv")["totals"]


def test_a_window_gives_the_same_review_either_way(workspace: Path) -> None:
    files, summary = _both(workspace, "--since", "2023-01-01T05:00:00Z", "--until", "2023-01-01T20:00:00Z")
    assert summary["totals"]["outside_window"] > 0
    times = pl.read_csv(files[0], infer_schema=False).get_column("timestamp")
    assert times.min() >= "2023-01-01T05:00:00Z" and times.max() < "2023-01-01T20:00:00Z"


def test_events_already_sent_are_marked_the_same_either_way(workspace: Path, receiver: LocalReceiver) -> None:
    sent = _cli("run", "-c", str(_config(workspace, IN_MEMORY)), "--url", receiver.url, "--until", "2023-01-01T06:00Z")
    assert sent.exit_code in (EXIT_OK, 1), sent.output
    files, summary = _both(workspace, "--url", receiver.url)
    states = pl.read_csv(files[0], infer_schema=False).get_column("state").value_counts()
    assert set(states.get_column("state")) == {"new", "sent"}
    assert summary["ledger"]["sent"] == len(receiver.events())


def test_the_review_on_stdout_is_the_same(workspace: Path) -> None:
    files, _ = _both(workspace)
    result = _cli("run", "-c", str(_config(workspace, ALWAYS)), "--dry-run", "-", "--rejects", str(workspace / "r.csv"))
    assert result.stdout_bytes == files[0]


def test_the_spill_is_removed_after_the_run(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    temporary = workspace / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    _dry_run(_config(workspace, ALWAYS), workspace / "spilled" / "review.csv")
    assert list(temporary.iterdir()) == []
    # A run that fails after the spill was written leaves nothing behind either.
    folder = workspace / "spilled" / "review.csv"
    folder.unlink()
    folder.mkdir()
    result = _cli("run", "-c", str(_config(workspace, ALWAYS)), "--dry-run", str(folder))
    assert result.exit_code != EXIT_OK
    assert list(temporary.iterdir()) == []


def test_a_file_polars_refuses_is_read_exactly_either_way(write: WriteFile, tmp_path: Path) -> None:
    # A quote inside an unquoted field: only the exact reading takes it.
    write(
        "odd.csv",
        'id,updated_at,conclusion,environment\n1,2024-01-01T00:00:00Z,success,prod"uction\n2,2024-01-02T00:00:00Z,success,production\n',
    )
    files = []
    for threshold in (ALWAYS, IN_MEMORY):
        config = write(
            f"b{threshold:g}.toml", f"[plan]\nspill_above_mb = {threshold}\n" + source_block("odd", "odd.csv")
        )
        review = tmp_path / f"out{threshold:g}" / "review.csv"
        _dry_run(config, review)
        files.append(_outputs(review))
    assert files[0] == files[1]
    assert files[0][0].count(b"\n") == 2 and b"env 'prod\"\"uction'" in files[0][1]


def test_only_large_histories_without_enrichment_spill(write: WriteFile) -> None:
    runs = write(
        "runs.csv", "id,updated_at,conclusion,environment\n" + "1,2024-01-01T00:00:00Z,success,production\n" * 200
    )
    size_mb = runs.stat().st_size / 1e6
    below = write("below.toml", f"[plan]\nspill_above_mb = {size_mb * 2}\n" + source_block("runs", "runs.csv"))
    above = write("above.toml", f"[plan]\nspill_above_mb = {size_mb / 2}\n" + source_block("runs", "runs.csv"))
    assert not spills(load_config(below))
    assert spills(load_config(above))
    # Enrichment matches change requests over the whole history in memory: such a config never spills.
    demo = load_config(REPO / "configs" / "demo.toml")
    assert demo.enrich
    assert not spills(demo.model_copy(update={"plan": Planning(spill_above_mb=0)}))


def test_a_temporary_folder_that_cannot_be_written_is_named(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = workspace / "no such folder"
    monkeypatch.setattr(tempfile, "tempdir", str(missing))
    result = _cli("run", "-c", str(_config(workspace, ALWAYS)), "--dry-run", str(workspace / "review.csv"))
    assert result.exit_code == EXIT_USAGE
    assert f"{missing}: cannot hold the rows of a large history" in result.stderr
    assert "set TMPDIR" in result.stderr


RECORDED = (
    # Real CI API answers recorded by public projects (tests/fixtures/SOURCES.md), one source each.
    ("github_actions_runs_panjf2000_ants.json", "github-actions", 'env = "production"\n'),
    ("github_actions_runs_pygithub_2020.json", "github-actions", 'env = "production"\n'),
    ("gitlab_deployments_gitlab_com.json", "gitlab-ci", ""),
    ("gitlab_pipelines_gitlab_com.json", "gitlab-ci", 'env = "staging"\n'),
    ("jenkins_builds.json", "jenkins", 'env = "production"\n'),
    ("circleci_jobs.json", "circleci", 'env = "production"\n'),
    ("azuredevops_builds.json", "azure-devops", 'env = "production"\n'),
)


def test_recorded_ci_answers_give_the_same_review_either_way(tmp_path: Path) -> None:
    blocks = "".join(
        f'[[sources]]\nname = "s{index}"\ntype = "ci-export"\npath = "{FIXTURES / "ci" / name}"\n'
        f'preset = "{preset}"\nentity_id = "shop"\n{extra}\n'
        for index, (name, preset, extra) in enumerate(RECORDED)
    )
    outputs = []
    for threshold in (ALWAYS, IN_MEMORY):
        config = tmp_path / f"recorded-{threshold:g}.toml"
        config.write_text(f"[plan]\nspill_above_mb = {threshold}\n\n{blocks}", encoding="utf-8")
        review = tmp_path / f"out-{threshold:g}" / "review.csv"
        summary = _dry_run(config, review)
        assert summary["errors"] == []
        outputs.append((_outputs(review), summary))
    assert outputs[0] == outputs[1]
    assert outputs[0][1]["totals"]["events"] > 50
