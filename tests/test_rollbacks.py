"""Rollbacks in tag histories: release lines merged upward are not rollbacks; deploying again is."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitrepo import GitRepo
from helpers import WriteFile, plan_for


def _config(write: WriteFile, *extra: str) -> Path:
    lines = ["[[sources]]", 'name = "tags"', 'type = "git-tags"', 'repo = "repo"', 'entity_id = "shop"', *extra]
    if not any(line.startswith("env") for line in extra):
        lines.append('env = "production"')
    return write("backfill.toml", "\n".join(lines) + "\n")


@pytest.fixture
def maintained(tmp_path: Path) -> GitRepo:
    """Release lines as git keeps them: fixes land on the oldest maintained line and are merged upward.

    The security release tags the newest line first (v1.2.1), then the older
    lines (v1.0.2, v1.1.2) the same day, whose commits are ancestors of v1.2.1's.
    """
    repo = GitRepo(tmp_path / "repo")
    repo.commit("one", "2024-01-01T10:00:00Z")
    repo.tag("v1.0.0", message="1.0.0", date="2024-01-01T11:00:00Z")
    repo.git("branch", "maint-1.0")
    repo.commit("two", "2024-02-01T10:00:00Z")
    repo.tag("v1.1.0", message="1.1.0", date="2024-02-01T11:00:00Z")
    repo.git("branch", "maint-1.1")
    repo.git("checkout", "--quiet", "maint-1.0")
    repo.commit("fix one", "2024-02-10T10:00:00Z")
    repo.tag("v1.0.1", message="1.0.1", date="2024-02-10T11:00:00Z")
    repo.git("checkout", "--quiet", "maint-1.1")
    repo.git("merge", "--quiet", "--no-ff", "-m", "Merge maint-1.0", "maint-1.0", date="2024-02-10T12:00:00Z")
    repo.tag("v1.1.1", message="1.1.1", date="2024-02-10T13:00:00Z")
    repo.git("checkout", "--quiet", "main")
    repo.git("merge", "--quiet", "--no-ff", "-m", "Merge maint-1.1", "maint-1.1", date="2024-02-11T10:00:00Z")
    repo.commit("three", "2024-03-01T10:00:00Z")
    repo.tag("v1.2.0", message="1.2.0", date="2024-03-01T11:00:00Z")
    repo.git("branch", "maint-1.2")
    # The security fix, merged upward the same day.
    repo.git("checkout", "--quiet", "maint-1.0")
    repo.commit("security fix", "2024-04-01T08:00:00Z")
    repo.git("checkout", "--quiet", "maint-1.1")
    repo.git("merge", "--quiet", "--no-ff", "-m", "Merge maint-1.0", "maint-1.0", date="2024-04-01T08:10:00Z")
    repo.git("checkout", "--quiet", "maint-1.2")
    repo.git("merge", "--quiet", "--no-ff", "-m", "Merge maint-1.1", "maint-1.1", date="2024-04-01T08:20:00Z")
    repo.tag("v1.2.1", message="1.2.1", date="2024-04-01T09:00:00Z")
    repo.tag("v1.0.2", message="1.0.2", date="2024-04-01T09:05:00Z", at="maint-1.0")
    repo.tag("v1.1.2", message="1.1.2", date="2024-04-01T09:10:00Z", at="maint-1.1")
    repo.git("checkout", "--quiet", "main")
    repo.git("merge", "--quiet", "--no-ff", "-m", "Merge maint-1.2", "maint-1.2", date="2024-04-02T10:00:00Z")
    repo.tag("v1.3.0", message="1.3.0", date="2024-04-02T11:00:00Z")
    return repo


def test_maintenance_releases_of_older_lines_are_not_rollbacks(write: WriteFile, maintained: GitRepo) -> None:
    events = plan_for(_config(write)).plan.events
    assert events.select("build_id", "deployment_type").rows() == [
        ("v1.0.0", None),
        ("v1.1.0", None),
        ("v1.0.1", None),
        ("v1.1.1", None),
        ("v1.2.0", None),
        ("v1.2.1", None),
        ("v1.0.2", None),
        ("v1.1.2", None),
        ("v1.3.0", None),
    ]
    # The commits are ancestors all the same: the rule is not blind, it knows the lines.
    ancestor = maintained.git("merge-base", "--is-ancestor", "v1.0.2", "v1.2.1")
    assert ancestor == ""


def test_deploying_a_version_or_commit_again_is_a_rollback(write: WriteFile, maintained: GitRepo) -> None:
    # After 1.3.0, production goes back: to 1.2.1's commit under another name, then to version 1.2.0 by name.
    maintained.tag("rollback-2024-04-03", message="", date="2024-04-03T10:00:00Z", at="v1.2.1")
    maintained.tag("prod/v1.2.0", message="", date="2024-04-04T10:00:00Z", at="v1.2.0")
    events = plan_for(_config(write)).plan.events
    rows = events.filter(events.get_column("timestamp") >= "2024-04-02").select(
        "build_id", "deployment_type", "description"
    )
    assert rows.rows() == [
        ("v1.3.0", None, "1.3.0"),
        ("rollback-2024-04-03", "rollback", "Rollback to v1.2.1"),
        ("prod/v1.2.0", "rollback", "Rollback to v1.2.0"),
    ]
    assert events.get_column("deployment_type").drop_nulls().to_list() == ["rollback", "rollback"]


def test_the_same_version_under_another_name_right_after_is_a_redeploy(write: WriteFile, maintained: GitRepo) -> None:
    maintained.tag("prod/v1.3.0", message="", date="2024-04-02T12:00:00Z", at="v1.3.0")
    events = plan_for(_config(write)).plan.events
    assert events.get_column("deployment_type").drop_nulls().to_list() == []


def test_an_older_build_deployed_after_newer_ones_is_a_rollback(write: WriteFile, tmp_path: Path) -> None:
    """Build numbers are one line: build 40, deployed to production after 43, goes back."""
    repo = GitRepo(tmp_path / "repo")
    commits = {}
    for build in range(40, 44):
        commits[build] = repo.commit(f"build {build}", f"2024-05-{build - 30:02d}T10:00:00Z")
        repo.tag(f"deploy/staging/{build}", message=f"{build}", date=f"2024-05-{build - 30:02d}T11:00:00Z")
    for build, day in ((41, 14), (42, 15), (43, 16), (40, 17)):
        repo.tag(f"deploy/production/{build}", message=f"{build}", date=f"2024-05-{day}T11:00:00Z", at=commits[build])
    config = _config(write, 'env_from_tag = "re:^deploy/(?P<env>[a-z]+)/"')
    events = plan_for(config).plan.events.filter(env="production")
    assert events.select("build_id", "deployment_type", "description").rows() == [
        ("deploy/production/41", None, "41"),
        ("deploy/production/42", None, "42"),
        ("deploy/production/43", None, "43"),
        ("deploy/production/40", "rollback", "40"),
    ]


def test_a_new_version_older_than_its_line_is_a_rollback_on_an_ancestor(write: WriteFile, tmp_path: Path) -> None:
    """1.4.0 after 1.5.0, on 1.5.0's history, goes back; 1.4.1 after 1.5.0 is the 1.4 line's next release."""
    repo = GitRepo(tmp_path / "repo")
    old = repo.commit("old", "2024-01-01T10:00:00Z")
    repo.commit("new", "2024-01-02T10:00:00Z")
    repo.tag("v1.5.0", message="1.5.0", date="2024-01-02T11:00:00Z")
    repo.tag("v1.4.0", message="1.4.0", date="2024-01-03T11:00:00Z", at=old)
    repo.tag("v1.4.1", message="1.4.1", date="2024-01-04T11:00:00Z", at=old)
    events = plan_for(_config(write)).plan.events
    assert events.select("build_id", "deployment_type").rows() == [
        ("v1.5.0", None),
        ("v1.4.0", "rollback"),
        ("v1.4.1", None),
    ]


def test_a_next_version_on_older_code_is_a_rollback(write: WriteFile, maintained: GitRepo) -> None:
    """v1.3.1 after v1.3.0, tagged on a commit v1.3.0 already contains: the version goes up, the code goes back."""
    older = maintained.git("rev-parse", "v1.2.0^1")  # the merge of maint-1.1 into main, never tagged
    maintained.tag("v1.3.1", message="", date="2024-04-03T10:00:00Z", at=older)
    events = plan_for(_config(write)).plan.events
    assert events.filter(build_id="v1.3.1").select("deployment_type", "description").rows() == [
        ("rollback", f"Rollback to {older[:12]} (an ancestor of v1.3.0)")
    ]
    assert events.get_column("deployment_type").drop_nulls().to_list() == ["rollback"]


def test_infer_rollbacks_false_and_an_explicit_type_still_win(write: WriteFile, maintained: GitRepo) -> None:
    maintained.tag("hotfix-back", message="", date="2024-04-03T10:00:00Z", at="v1.2.1")
    typed = plan_for(_config(write, 'hotfix_pattern = "hotfix-*"')).plan.events
    assert typed.filter(build_id="hotfix-back").get_column("deployment_type").to_list() == ["hotfix"]
    off = plan_for(
        write(
            "off.toml",
            "[normalize]\ninfer_rollbacks = false\n" + _config(write).read_text(encoding="utf-8"),
        )
    ).plan.events
    assert off.get_column("deployment_type").drop_nulls().to_list() == []
