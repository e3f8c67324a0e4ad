"""Benchmark: `backfill report` against `backfill run --dry-run`, and lead time over a long history.

Usage: python tests/bench/bench_report.py [ROWS] [--commits N] [--tags N] [--repeat N]

1. The large messy export of bench_dry_run.py (ROWS runs, default 1,000,000;
   generated once into tests/bench/data/): `backfill run --dry-run` and
   `backfill report` on the same config, each a fresh process, fastest of N.
   Target: the report within 1.5x of the dry run.
2. A repository of N commits (default 50,000) with a tag on every fifth
   (10,000 tags), a side branch merged every 100 commits, written once by
   `git fast-import`: the lead time walk alone (backfill.report.lead_time,
   in this process: git's two commands and the attribution of every commit),
   and `backfill report` on it as a git-tags source, a fresh process.
   Target: lead time within 10 s.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

HERE = Path(__file__).parent
TARGET_RATIO = 1.5
TARGET_LEAD_SECONDS = 10.0


def build_history(repo: Path, commits: int, every: int) -> None:
    """Commits an hour apart on main, a tag on every ``every``-th, a side commit merged every 100."""
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "--quiet", "--bare", str(repo)], check=True)
    lines: list[str] = []
    start = 1_600_000_000
    mark = 0
    previous = 0
    for i in range(commits):
        when = start + i * 3600
        side = 0
        if i and i % 100 == 0:
            mark += 1
            side = mark
            lines += [
                "commit refs/heads/side",
                f"mark :{side}",
                f"committer Dev <dev@example.com> {when - 1800} +0000",
                "data 4",
                "side",
                f"from :{previous}",
            ]
        mark += 1
        message = f"Change {i}"
        lines += ["commit refs/heads/main", f"mark :{mark}", f"committer Dev <dev@example.com> {when} +0000"]
        lines += [f"data {len(message)}", message]
        if previous:
            lines.append(f"from :{previous}")
        if side:
            lines.append(f"merge :{side}")
        previous = mark
        if i % every == every - 1:
            lines += [f"reset refs/tags/v{i // every}.0.0", f"from :{mark}"]
    subprocess.run(
        ["git", "--git-dir", str(repo), "fast-import", "--quiet"], input="\n".join(lines) + "\n", text=True, check=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--commits", type=int, default=50_000)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, polars {pl.__version__}")
    export = HERE / "data" / f"runs_{args.rows}.csv"
    if not export.exists():
        subprocess.run([sys.executable, str(HERE / "generate_export.py"), str(args.rows), str(export)], check=True)
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        config = folder / "bench.toml"
        config.write_text(
            f'[state]\npath = "{folder / "state.db"}"\n\n'
            f'[[sources]]\nname = "runs"\ntype = "ci-export"\npath = "{export}"\n'
            'preset = "github-actions"\nentity_id = "shop"\n',
            encoding="utf-8",
        )
        backfill = [sys.executable, "-m", "backfill"]
        dry = _best(args.repeat, [*backfill, "run", "-c", str(config), "--dry-run", str(folder / "review.csv")])
        ours = _best(args.repeat, [*backfill, "report", "-c", str(config), "--out", str(folder / "report.html")])
        size = (folder / "report.html").stat().st_size
        ratio = ours / dry
        print(f"export:    {args.rows:,} runs ({export.stat().st_size / 1e6:.0f} MB)")
        print(f"dry run:   {dry:.2f} s  (backfill run --dry-run, whole process)")
        print(f"report:    {ours:.2f} s  (backfill report, whole process; page {size / 1e3:.0f} KB)")
        print(f"ratio:     {ratio:.2f}x  (target <= {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")

        every = max(1, args.commits // args.tags)
        repo = HERE / "data" / f"history_{args.commits}_{every}.git"
        if not repo.exists():
            build_history(repo, args.commits, every)
        lead, commits = _lead_time_walk(repo, args.repeat)
        tags_config = folder / "tags.toml"
        tags_config.write_text(
            f'[state]\npath = "{folder / "state.db"}"\n\n[[sources]]\nname = "tags"\ntype = "git-tags"\n'
            f'repo = "{repo}"\nentity_id = "shop"\nenv = "production"\n',
            encoding="utf-8",
        )
        whole = _best(args.repeat, [*backfill, "report", "-c", str(tags_config), "--out", str(folder / "tags.html")])
        tags = subprocess.run(
            ["git", "--git-dir", str(repo), "tag"], capture_output=True, text=True, check=True
        ).stdout.count("\n")
        print(f"history:   {tags:,} tags, {commits:,} commits shipped")
        print(
            f"lead time: {lead:.2f} s  (git cat-file + rev-list and the attribution, in process; "
            f"target <= {TARGET_LEAD_SECONDS:.0f} s: {'met' if lead <= TARGET_LEAD_SECONDS else 'NOT met'})"
        )
        print(f"report:    {whole:.2f} s  (backfill report on those tags, whole process)")


def _lead_time_walk(repo: Path, repeat: int) -> tuple[float, int]:
    """The lead time walk for every tag as a deployment, timed in this process."""
    from backfill.report.lead_time import shipped

    output = subprocess.run(
        ["git", "--git-dir", str(repo), "for-each-ref", "--format=%(objectname) %(creatordate:unix)", "refs/tags"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shas, times = zip(*(line.split() for line in output.splitlines()), strict=True)
    deploys = (
        pl.DataFrame({"build_commit_sha": list(shas), "at": [int(t) + 600 for t in times]})
        .with_columns(pl.from_epoch("at", time_unit="s").dt.replace_time_zone("UTC"), pl.lit("shop").alias("entityId"))
        .sort("at")
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("position"))
    )
    best = float("inf")
    commits = 0
    for _ in range(repeat):
        start = time.perf_counter()
        walked = shipped(repo, deploys)
        best = min(best, time.perf_counter() - start)
        commits = walked.commits.height
    return best, commits


def _best(repeat: int, command: list[str]) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


if __name__ == "__main__":
    main()
