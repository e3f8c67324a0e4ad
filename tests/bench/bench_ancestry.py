"""Benchmark: ancestry questions about a long history, one git process per pair versus one walk.

Usage: python tests/bench/bench_ancestry.py [COMMITS] [PAIRS] [--repeat N]

Builds (with git fast-import, in tests/bench/data/) a history like git's own:
a main line of COMMITS commits into which a maintenance branch is merged every
500 commits. Then asks whether PAIRS commits spread over the history (the
maintenance tips) are ancestors of the newest commit, as the rollback rule
does, and times, fastest of N:
  per pair  one `git merge-base --is-ancestor` per pair (what backfill did);
  one walk  backfill.extract.git.ancestry.ancestors (two git commands in all).
Both must give the same answers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))

from backfill.extract.git.ancestry import ancestors  # noqa: E402


def build(repo: Path, commits: int) -> None:
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "--quiet", "--bare", str(repo)], check=True)
    lines: list[str] = []
    when = 1_600_000_000
    mark = main = maint = 0

    def commit(branch: str, message: str, *parents: int) -> int:
        nonlocal mark, when
        mark += 1
        when += 60
        lines.extend([f"commit refs/heads/{branch}", f"mark :{mark}", f"committer Dev <dev@example.com> {when} +0000"])
        lines.extend([f"data {len(message)}", message])
        if parents:
            lines.append(f"from :{parents[0]}")
        lines.extend(f"merge :{parent}" for parent in parents[1:])
        return mark

    for i in range(commits):
        main = commit("main", f"change {i}", *([main] if main else []))
        if i % 500 == 499:  # a fix on the maintenance line, merged upward into main
            maint = commit("maint", f"fix {i}", maint or main)
            main = commit("main", f"merge fix {i}", main, maint)
    subprocess.run(
        ["git", "--git-dir", str(repo), "fast-import", "--quiet"], input="\n".join(lines) + "\n", text=True, check=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commits", nargs="?", type=int, default=60_000)
    parser.add_argument("pairs", nargs="?", type=int, default=21)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    repo = HERE / "data" / f"ancestry_{args.commits}.git"
    if not repo.exists():
        build(repo, args.commits)
    git = ["git", "--git-dir", str(repo)]
    tip = subprocess.run([*git, "rev-parse", "main"], capture_output=True, text=True, check=True).stdout.strip()
    merges = subprocess.run([*git, "rev-list", "--merges", "main"], capture_output=True, text=True, check=True)
    side = [
        subprocess.run([*git, "rev-parse", f"{merge}^2"], capture_output=True, text=True, check=True).stdout.strip()
        for merge in merges.stdout.split()
    ]
    step = max(1, len(side) // args.pairs)
    pairs = [(commit, tip) for commit in side[::step][: args.pairs]]

    def per_pair() -> list[bool]:
        return [
            subprocess.run([*git, "merge-base", "--is-ancestor", commit, later], check=False).returncode == 0
            for commit, later in pairs
        ]

    def one_walk() -> list[bool]:
        return ancestors(repo, pairs, os.environ)

    timings = {}
    for name, run in (("per pair", per_pair), ("one walk", one_walk)):
        best = float("inf")
        for _ in range(args.repeat):
            began = time.perf_counter()
            answers = run()
            best = min(best, time.perf_counter() - began)
        timings[name] = (best, answers)
    assert timings["per pair"][1] == timings["one walk"][1], "the two ways disagree"
    print(f"history: {args.commits:,} commits, {len(pairs)} pairs, {sum(timings['one walk'][1])} ancestors")
    for name, (seconds, _) in timings.items():
        print(f"{name}: {seconds:.3f} s")


if __name__ == "__main__":
    main()
