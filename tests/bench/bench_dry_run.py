"""Benchmark: `backfill run --dry-run` on large messy exports, against two polars floors.

Usage: python tests/bench/bench_dry_run.py [ROWS] [--repeat N] [--memory-rows M]

Generates the export once (tests/bench/data/, about 200 MB for 1,000,000 runs)
and a shuffled copy of it (the same rows in a random order), then times on each
file, in the same run, every one a fresh process, fastest of N (default 3):
  read+write       polars reading the whole file and writing it back
                   (`read_csv` + `write_csv`);
  read+sort+write  the same, sorted by the time column on the way (backfill
                   writes its events in time order, so this is its real floor);
  backfill         the complete `backfill run --dry-run` (imports, config, the
                   field-count check, read, normalize, dedupe, order, rollback
                   inference, review CSV, rejects CSV, summary);
  least dry run    least_dry_run.py: what the export's events need in plain
                   polars (times, environments, conclusions, one row per key,
                   time order, the files), without the checks and accounts
                   backfill adds: a lower bound for backfill, not a target.
Prints each ratio, each process's peak RSS and its CPU time (user + system,
the fastest round's: less sensitive than wall time to a shared machine's load). Targets: backfill at most 1.5x
the read+sort+write floor on both files, its peak RSS at most 1.5x that floor's.
With --memory-rows M (default 5,000,000; 0 skips it), the dry run on an export
of M rows (above [plan] spill_above_mb, so planned from disk): its peak RSS
must stay under 2 GB.

backfill's own modules are compiled to bytecode first, as `pip install .`
leaves them (installed.py). The machine may be shared: the ratios (same files,
same run) mean more than the absolute times.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from installed import compile_backfill

HERE = Path(__file__).parent
TARGET_RATIO = 1.5
TARGET_RSS_RATIO = 1.5
TARGET_MEMORY_MB = 2048
TIME_COLUMN = "updated_at"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-rows", type=int, default=5_000_000)
    args = parser.parse_args()
    compile_backfill()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"polars {pl.__version__}"
    )
    export = _export(args.rows)
    shuffled = _shuffled(export)
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        for label, path in (("generator's order", export), ("shuffled", shuffled)):
            _compare(workdir, label, path, args.repeat)
        if args.memory_rows:
            big = _export(args.memory_rows)
            seconds, rss, _ = _run(_dry_run(workdir, big))
            verdict = "met" if rss < TARGET_MEMORY_MB else "NOT met"
            size_mb = big.stat().st_size / 1e6
            print(
                f"{args.memory_rows:,} rows ({size_mb:,.0f} MB): backfill {seconds:.1f} s, "
                f"peak RSS {rss:,.0f} MB (target < {TARGET_MEMORY_MB} MB: {verdict})"
            )


def _export(rows: int) -> Path:
    export = HERE / "data" / f"runs_{rows}.csv"
    if not export.exists():
        subprocess.run([sys.executable, str(HERE / "generate_export.py"), str(rows), str(export)], check=True)
    return export


def _shuffled(export: Path) -> Path:
    shuffled = export.with_name(export.stem + "_shuffled.csv")
    if not shuffled.exists():
        frame = pl.read_csv(export, infer_schema=False)
        frame.sample(fraction=1.0, shuffle=True, seed=11).write_csv(shuffled)
    return shuffled


def _compare(workdir: Path, label: str, export: Path, repeat: int) -> None:
    copy = workdir / "copy.csv"
    read_write = f"import polars as pl; pl.read_csv({str(export)!r}, infer_schema=False).write_csv({str(copy)!r})"
    read_sort_write = (
        f"import polars as pl; pl.read_csv({str(export)!r}, infer_schema=False)"
        f".sort({TIME_COLUMN!r}, maintain_order=True).write_csv({str(copy)!r})"
    )
    commands = {
        "read+write": [sys.executable, "-c", read_write],
        "read+sort+write": [sys.executable, "-c", read_sort_write],
        "backfill": _dry_run(workdir, export),
        "least dry run": [sys.executable, str(HERE / "least_dry_run.py"), str(export), str(workdir)],
    }
    # Rounds alternate the four, so that the machine's other load touches them alike.
    best: dict[str, tuple[float, float, float]] = {}
    for _ in range(repeat):
        for name, command in commands.items():
            seconds, rss, cpu = _run(command)
            previous = best.get(name)
            best[name] = (
                (min(seconds, previous[0]), max(rss, previous[1]), min(cpu, previous[2]))
                if previous
                else (seconds, rss, cpu)
            )
    size_mb = export.stat().st_size / 1e6
    print(f"{label}: {export.name}, {size_mb:.0f} MB")
    for name, (seconds, rss, cpu) in best.items():
        print(f"  {name:<16} {seconds:6.2f} s  peak RSS {rss:6,.0f} MB  CPU {cpu:6.2f} s")
    floor_s, floor_rss, floor_cpu = best["read+sort+write"]
    ours_s, ours_rss, ours_cpu = best["backfill"]
    plain = ours_s / best["read+write"][0]
    ratio, rss_ratio = ours_s / floor_s, ours_rss / floor_rss
    print(f"  backfill / read+write:      {plain:.2f}x")
    print(f"  backfill / read+sort+write: {ratio:.2f}x (target <= {TARGET_RATIO}x: {_met(ratio <= TARGET_RATIO)})")
    print(f"  CPU time / the floor's:     {ours_cpu / floor_cpu:.2f}x")
    least = best["least dry run"][0] / floor_s
    print(f"  least dry run / read+sort+write: {least:.2f}x (a lower bound: see least_dry_run.py)")
    print(
        f"  peak RSS / the floor's:     {rss_ratio:.2f}x (target <= {TARGET_RSS_RATIO}x: {_met(rss_ratio <= TARGET_RSS_RATIO)})"
    )


def _dry_run(workdir: Path, export: Path) -> list[str]:
    config = workdir / f"{export.stem}.toml"
    config.write_text(
        f'[state]\npath = "{workdir / "state.db"}"\n\n'
        f'[[sources]]\nname = "runs"\ntype = "ci-export"\npath = "{export}"\n'
        'preset = "github-actions"\nentity_id = "shop"\n',
        encoding="utf-8",
    )
    return [sys.executable, "-m", "backfill", "run", "-c", str(config), "--dry-run", str(workdir / "review.csv")]


def _run(command: list[str]) -> tuple[float, float, float]:
    """Seconds, peak RSS (MB) and CPU seconds (user + system) of one fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):  # 1: some rows could not be read, as the generator means them to
        raise SystemExit(f"{command[:3]} exited {process.returncode}")
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def _met(condition: bool) -> str:
    return "met" if condition else "NOT met"


if __name__ == "__main__":
    main()
