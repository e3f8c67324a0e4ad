"""Benchmark: a repository with 10,000 tags through `backfill run --dry-run`.

Usage: python tests/bench/bench_tags.py [TAGS] [--repeat N]

Builds the repository once with `git fast-import` (tests/bench/data/), one
commit per tag, three tags in four annotated, with a few pre-releases and
hotfixes. Then times, in the same run, each in a fresh process, in alternating
rounds, fastest of N (wall clock, and CPU time with the git processes):
  baseline  importing what the git path needs (click; polars; pydantic's
            BaseModel and TypeAdapter for the config; filelock for the state
            file's lock; rich's console, table and progress for the display:
            the modules themselves, since `import pydantic` or `import rich`
            alone loads next to nothing), then `git for-each-ref` over the tags
            with the fields backfill reads;
  backfill  `backfill run --dry-run` on a config with that repository as a
            git-tags source (events, rollback inference and review CSV included).
Target: backfill at most 1.5x the baseline.

backfill's own modules are compiled to bytecode first, as `pip install .`
leaves them (installed.py).
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from installed import compile_backfill

HERE = Path(__file__).parent
TARGET = 1.5
DEPENDENCIES = (
    "import click, filelock, polars\n"
    "from pydantic import BaseModel, TypeAdapter\n"
    "from rich.console import Console\n"
    "from rich.progress import Progress\n"
    "from rich.table import Table"
)


def build(repo: Path, tags: int) -> None:
    """A linear history, one commit per tag, written by git fast-import in one go."""
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "--quiet", "--bare", str(repo)], check=True)
    lines: list[str] = []
    start = 1_600_000_000
    for i in range(tags):
        when = start + i * 3600
        message = f"Change {i}"
        lines += [
            "commit refs/heads/main",
            f"mark :{i + 1}",
            f"committer Dev <dev@example.com> {when} +0200",
            f"data {len(message)}",
            message,
        ]
        if i:
            lines.append(f"from :{i}")
        name = f"v{i // 100}.{i % 100}.0" + ("-rc1" if i % 50 == 7 else "-hotfix" if i % 40 == 3 else "")
        if i % 4:
            tag_message = f"Release {name}"
            lines += [
                f"tag {name}",
                f"from :{i + 1}",
                f"tagger Release Bot <bot@example.com> {when + 60} -0500",
                f"data {len(tag_message)}",
                tag_message,
            ]
        else:
            lines += [f"reset refs/tags/{name}", f"from :{i + 1}"]
    subprocess.run(
        ["git", "--git-dir", str(repo), "fast-import", "--quiet"], input="\n".join(lines) + "\n", text=True, check=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tags", nargs="?", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    repo = HERE / "data" / f"tags_{args.tags}.git"
    if not repo.exists():
        build(repo, args.tags)

    from backfill.extract.git_tags import _FORMAT

    compile_backfill()

    baseline_script = (
        f"{DEPENDENCIES}\nimport subprocess\n"
        f"subprocess.run(['git', '--git-dir', {str(repo)!r}, 'for-each-ref', '--format={_FORMAT}', 'refs/tags'],"
        " stdout=subprocess.DEVNULL, check=True)"
    )
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "tags.toml"
        config.write_text(
            f'[state]\npath = "{Path(work) / "state.db"}"\n\n[[sources]]\nname = "tags"\ntype = "git-tags"\n'
            f'repo = "{repo}"\npattern = "v*"\nentity_id = "shop"\nenv = "production"\nhotfix_pattern = "*-hotfix*"\n',
            encoding="utf-8",
        )
        commands = {
            "baseline": [sys.executable, "-c", baseline_script],
            "backfill": [
                sys.executable,
                "-m",
                "backfill",
                "run",
                "-c",
                str(config),
                "--dry-run",
                str(Path(work) / "r.csv"),
            ],
        }
        # Rounds alternate, so that a change in the machine's load meets both; the fastest round counts.
        wall = dict.fromkeys(commands, float("inf"))
        cpu = dict.fromkeys(commands, float("inf"))
        for _ in range(args.repeat):
            for name, command in commands.items():
                seconds, processor = _timed(command)
                wall[name], cpu[name] = min(wall[name], seconds), min(cpu[name], processor)
        events = sum(1 for _ in (Path(work) / "r.csv").open(encoding="utf-8")) - 1
    ratio = wall["backfill"] / wall["baseline"]
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    print(f"input:    {args.tags:,} tags -> {events:,} events")
    print(
        f"baseline: {wall['baseline']:.2f} s, CPU {cpu['baseline']:.2f} s  (import the dependencies + git for-each-ref)"
    )
    print(f"backfill: {wall['backfill']:.2f} s, CPU {cpu['backfill']:.2f} s  (backfill run --dry-run, whole process)")
    print(
        f"ratio:    {ratio:.2f}x, CPU {cpu['backfill'] / cpu['baseline']:.2f}x  (target <= {TARGET}x: "
        f"{'met' if ratio <= TARGET else 'NOT met'})"
    )


def _timed(command: list[str]) -> tuple[float, float]:
    """Wall-clock seconds, and CPU seconds of the process and its children (git among them)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


if __name__ == "__main__":
    main()
