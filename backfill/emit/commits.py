"""A commit named by a CI system, made a full SHA, or nothing.

CI systems name the commit in several forms: a full SHA, an abbreviated one
(Bitbucket's 12 characters), the literal ``HEAD`` (Buildkite, when a build is
started without a commit), or a SHA from another checkout of the same job
(Jenkins' ``GIT_COMMIT``). DevGrid needs the full 40 hex digits to compute lead
time, so anything else is resolved in the working copy with git, and a value
git cannot resolve is left out rather than sent wrong.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_GIT_TIMEOUT = 10.0  # seconds; a local rev-parse answers at once


@dataclass(frozen=True)
class Resolved:
    sha: str | None
    note: str | None = None  # what was done, when it was not taken as given


class WorkingCopy:
    """The git repository the pipeline checked out (the current folder unless told otherwise)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or Path.cwd()

    def rev_parse(self, name: str) -> str | None:
        """The full SHA of the commit ``name`` names here, or None (no repository, no such commit)."""
        if not name or name.startswith("-"):
            return None
        import subprocess  # only when git is asked: `backfill --help` does not need it

        try:
            done = subprocess.run(
                ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"],
                cwd=self.folder,
                capture_output=True,
                text=True,
                timeout=_GIT_TIMEOUT,
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        value = done.stdout.strip().lower()
        return value if done.returncode == 0 and FULL_SHA.fullmatch(value) else None

    def has_commit(self, sha: str) -> bool | None:
        """Whether this repository holds ``sha``; None when there is no repository to ask."""
        if self.rev_parse("HEAD") is None:
            return None
        return self.rev_parse(sha) == sha


def resolve_commit(value: str | None, where: str, copy: WorkingCopy, *, check_exists: bool = False) -> Resolved:
    """``value`` (from ``where``) as a full SHA: taken as is when it is one, else resolved with git.

    ``check_exists``: a full SHA that the working copy does not hold is replaced by HEAD
    (Jenkins sets ``GIT_COMMIT`` from the last checkout of the job, which may be another repository).
    """
    given = (value or "").strip()
    if FULL_SHA.fullmatch(given.lower()):
        sha = given.lower()
        if check_exists and copy.has_commit(sha) is False:
            head = copy.rev_parse("HEAD")
            if head is not None:
                return Resolved(head, f"{where} {sha} is not a commit of this repository: used git HEAD {head}")
        return Resolved(sha)
    if not given:
        return Resolved(None)
    found = copy.rev_parse(given)
    if found is not None:
        return Resolved(found, f"{where} '{given}' is not a full commit SHA: resolved with git to {found}")
    return Resolved(
        None,
        f"{where} '{given}' is not a full commit SHA and git cannot resolve it here; the event is sent without "
        "build_commit_sha (run emit in the checked-out repository, or pass --commit)",
    )
