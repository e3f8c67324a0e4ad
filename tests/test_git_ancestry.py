"""One walk of the history answers every ancestry question, as merge-base --is-ancestor would."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
from pathlib import Path

import pytest
from gitrepo import GitRepo

from backfill.errors import AncestryError
from backfill.extract.git.ancestry import ancestors


def _is_ancestor(repo: GitRepo, commit: str, later: str) -> bool:
    result = subprocess.run(["git", "merge-base", "--is-ancestor", commit, later], cwd=repo.path, check=False)
    return result.returncode == 0


@pytest.fixture
def tangled(tmp_path: Path) -> tuple[GitRepo, list[str]]:
    """Branches, merges both ways, and a second root merged in: every shape the walk must get right."""
    repo = GitRepo(tmp_path / "repo")
    commits = [repo.commit("root", "2024-01-01T10:00:00Z"), repo.commit("a", "2024-01-02T10:00:00Z")]
    repo.git("checkout", "--quiet", "-b", "side")
    commits.append(repo.commit("side 1", "2024-01-03T10:00:00Z"))
    repo.git("checkout", "--quiet", "main")
    commits.append(repo.commit("b", "2024-01-04T10:00:00Z"))
    repo.git("merge", "--quiet", "--no-ff", "-m", "merge side", "side", date="2024-01-05T10:00:00Z")
    commits.append(repo.git("rev-parse", "HEAD"))
    repo.git("checkout", "--quiet", "side")
    commits.append(repo.commit("side 2", "2024-01-06T10:00:00Z"))
    repo.git("checkout", "--quiet", "--orphan", "other")
    commits.append(repo.commit("another root", "2024-01-07T10:00:00Z"))
    repo.git("checkout", "--quiet", "main")
    repo.git("merge", "--quiet", "--allow-unrelated-histories", "-m", "join", "other", date="2024-01-08T10:00:00Z")
    commits.append(repo.git("rev-parse", "HEAD"))
    return repo, commits


def test_every_pair_answers_as_merge_base_does(tangled: tuple[GitRepo, list[str]]) -> None:
    repo, commits = tangled
    pairs = [(a, b) for a, b in itertools.permutations(commits, 2)]
    expected = [_is_ancestor(repo, a, b) for a, b in pairs]
    assert ancestors(repo.path / ".git", pairs, os.environ) == expected
    assert any(expected) and not all(expected)
    # Subsets too: the walk's boundary depends on which commits are asked about.
    answer = dict(zip(pairs, expected, strict=True))
    shuffled = random.Random(7)
    for chosen in [[pair] for pair in pairs] + [shuffled.sample(pairs, 3) for _ in range(20)]:
        assert ancestors(repo.path / ".git", chosen, os.environ) == [answer[pair] for pair in chosen]


def test_a_commit_git_does_not_have_is_an_error(tangled: tuple[GitRepo, list[str]]) -> None:
    repo, commits = tangled
    with pytest.raises(AncestryError, match=r"fatal:|error:"):
        ancestors(repo.path / ".git", [(commits[0], "f" * 40)], os.environ)
