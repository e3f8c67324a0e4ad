"""Which commits are ancestors of which, for many pairs at once, from two git commands.

``git merge-base --is-ancestor`` answers one pair per process, each walking
the history again. Here git walks once: ``git merge-base --octopus`` finds
where all the older commits meet, and one ``git rev-list --parents`` lists
every commit between there and the later commits, parents first. Each commit
then carries, as bits of one integer, the older commits it reaches, inherited
from its parents; a pair's answer is one bit. Nothing older than the meeting
point can lie on a path from a later commit down to an older one, so the walk
stops there.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from backfill.errors import AncestryError


def ancestors(
    git_dir: Path, pairs: Sequence[tuple[str, str]], env: Mapping[str, str], timeout: float = 600
) -> list[bool]:
    """For each (commit, later) pair, whether ``commit`` is an ancestor of ``later``."""
    if not pairs:
        return []
    older = sorted({commit for commit, _ in pairs})
    later = sorted({commit for _, commit in pairs})

    def git(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["git", "--git-dir", str(git_dir), *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=dict(env),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise AncestryError(f"git {args[0]} took longer than {timeout:.0f} s") from None

    meeting = git("merge-base", "--octopus", *older)
    # Exit code 1 with no output: the commits share no history (several roots); walk it all.
    bases = meeting.stdout.split() if meeting.returncode == 0 else []
    boundary = "".join(f"^{base}^@\n" for base in bases)
    walk = git(
        "rev-list", "--parents", "--topo-order", "--reverse", "--stdin", stdin="\n".join(later) + "\n" + boundary
    )
    if walk.returncode != 0:
        raise AncestryError(_problem(walk.stderr))
    bit = {commit: 1 << index for index, commit in enumerate(older)}
    reaches: dict[str, int] = {}
    for line in walk.stdout.splitlines():
        commit, *parents = line.split()
        mask = bit.get(commit, 0)
        for parent in parents:
            mask |= reaches.get(parent, 0)
        reaches[commit] = mask
    return [commit != other and bool(reaches.get(other, 0) & bit[commit]) for commit, other in pairs]


def _problem(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[0] if lines else "no message")
