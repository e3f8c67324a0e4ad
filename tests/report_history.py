"""A deployment history built by hand, with known commit and tag times, for the report's tests.

The history (entity "app", production), in time order:

    position  deployment        at (UTC)           commit  shipped first     kind
    0         v1.0.0            2025-01-02 12:00   c2      c1, c2 (left out) deployment
    1         v1.1.0            2025-01-08 00:00   c4      c3 48 h, c4 24 h  deployment
    2         v1.1.1-hotfix     2025-01-08 12:00   c5      c5 6 h            hotfix
    3         v1.2.0            2025-01-15 00:00   c6      c6 24 h           deployment
    4         v1.2.1            2025-01-15 18:00   c4      nothing           rollback
    5         v1.3.0            2025-01-28 00:00   c7      c7 24 h           deployment
    -         run 2 (failed)    2025-01-29 00:00   c7                        failed
    6         run 3             2025-01-30 00:00   dead... (unknown)         deployment, CHG0003
    -         run 4 (staging)   2025-01-30 06:00   c7                        other environment
    -         run 5             hour 25            rejected
    -         run 6 (cancelled) 2025-01-30 12:00   skipped

No deployment in the week of 2025-01-20.
"""

from __future__ import annotations

from pathlib import Path

from gitrepo import GitRepo
from helpers import WriteFile

UNKNOWN_SHA = "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef"


def build_history(tmp_path: Path, write: WriteFile) -> dict[str, str]:
    """The repository, the CI export and report.toml under tmp_path; returns the commits' SHAs."""
    repo = GitRepo(tmp_path / "repo")
    shas = {}
    shas["c1"] = repo.commit("c1", "2025-01-01T00:00:00+00:00")
    shas["c2"] = repo.commit("c2", "2025-01-02T00:00:00+00:00")
    repo.tag("v1.0.0", message="1.0.0", date="2025-01-02T12:00:00+00:00")
    shas["c3"] = repo.commit("c3", "2025-01-06T00:00:00+00:00")
    shas["c4"] = repo.commit("c4", "2025-01-07T00:00:00+00:00")
    repo.tag("v1.1.0", message="1.1.0", date="2025-01-08T00:00:00+00:00")
    shas["c5"] = repo.commit("c5", "2025-01-08T06:00:00+00:00")
    repo.tag("v1.1.1-hotfix", message="hotfix", date="2025-01-08T12:00:00+00:00")
    shas["c6"] = repo.commit("c6", "2025-01-14T00:00:00+00:00")
    repo.tag("v1.2.0", message="1.2.0", date="2025-01-15T00:00:00+00:00")
    repo.tag("v1.2.1", message="back to 1.1.0", date="2025-01-15T18:00:00+00:00", at=shas["c4"])
    shas["c7"] = repo.commit("c7", "2025-01-27T00:00:00+00:00")
    repo.tag("v1.3.0", message="1.3.0", date="2025-01-28T00:00:00+00:00")
    write(
        "runs.csv",
        "id,updated_at,conclusion,environment,head_sha,change\n"
        f"2,2025-01-29T00:00:00Z,failure,production,{shas['c7']},\n"
        f"3,2025-01-30T00:00:00Z,success,production,{UNKNOWN_SHA},CHG0003\n"
        f"4,2025-01-30T06:00:00Z,success,staging,{shas['c7']},\n"
        f"5,2025-01-31T25:00:00Z,success,production,{shas['c7']},\n"
        f"6,2025-01-30T12:00:00Z,cancelled,production,{shas['c7']},\n",
    )
    write(
        "report.toml",
        """
        [state]
        path = "state/state.db"

        [[sources]]
        name = "tags"
        type = "git-tags"
        repo = "repo"
        entity_id = "app"
        env = "production"
        hotfix_pattern = "*-hotfix"

        [[sources]]
        name = "runs"
        type = "ci-export"
        path = "runs.csv"
        preset = "github-actions"
        entity_id = "app"
        [sources.columns]
        change_id = "change"
        """,
    )
    return shas
