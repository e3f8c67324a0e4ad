"""Benchmark: `backfill run --dry-run` on a large messy export, against polars alone.

Usage: python tests/bench/bench_dry_run.py [ROWS] [--repeat N]

Generates the export once (tests/bench/data/, about 200 MB for 1,000,000 runs),
then times, in the same run on the same machine:
  polars    polars reading the whole file and writing it back (read_csv +
            write_csv), in this process, warm; and the same as a fresh process
            (`python -c "import polars; ..."`), which pays the interpreter start,
            the import and the first touch of memory as backfill does;
  backfill  the complete `backfill run --dry-run` command in a fresh process
            (imports, config, the field-count check, read, normalize, dedupe,
            order, rollback inference, review CSV, rejects CSV, summary).
Each is run N times (default 3) and the fastest run counts. Prints both ratios
and the command's peak memory (max RSS) against the targets: 2.5x and 2 GB.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

HERE = Path(__file__).parent
TARGET_RATIO = 2.5
TARGET_MEMORY_MB = 2048


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    export = HERE / "data" / f"runs_{args.rows}.csv"
    if not export.exists():
        subprocess.run([sys.executable, str(HERE / "generate_export.py"), str(args.rows), str(export)], check=True)
    size_mb = export.stat().st_size / 1e6

    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        config = workdir / "bench.toml"
        config.write_text(
            f'[state]\npath = "{workdir / "state.db"}"\n\n'
            f'[[sources]]\nname = "runs"\ntype = "ci-export"\npath = "{export}"\n'
            'preset = "github-actions"\nentity_id = "shop"\n',
            encoding="utf-8",
        )

        def baseline() -> None:
            pl.read_csv(export, infer_schema=False).write_csv(workdir / "copy.csv")

        def baseline_process() -> None:
            script = f"import polars as pl; pl.read_csv({str(export)!r}, infer_schema=False).write_csv({str(workdir / 'copy.csv')!r})"
            subprocess.run([sys.executable, "-c", script], check=True)

        def dry_run() -> None:
            subprocess.run(
                [sys.executable, "-m", "backfill", "run", "-c", str(config), "--dry-run", str(workdir / "review.csv")],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        baseline_s = min(_timed(baseline) for _ in range(args.repeat))
        process_s = min(_timed(baseline_process) for _ in range(args.repeat))
        backfill_s = min(_timed(dry_run) for _ in range(args.repeat))
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        events = sum(1 for _ in (workdir / "review.csv").open(encoding="utf-8")) - 1

    ratio, process_ratio = backfill_s / baseline_s, backfill_s / process_s
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"polars {pl.__version__}"
    )
    print(f"input:    {args.rows:,} runs, {size_mb:.0f} MB -> {events:,} events")
    print(f"polars:   {baseline_s:.2f} s in this process, {process_s:.2f} s as a fresh process (read_csv + write_csv)")
    print(f"backfill: {backfill_s:.2f} s  (backfill run --dry-run, whole process)")
    for label, value in (("ratio", ratio), ("ratio, process to process", process_ratio)):
        print(f"{label}: {value:.2f}x  (target <= {TARGET_RATIO}x: {'met' if value <= TARGET_RATIO else 'NOT met'})")
    print(
        f"peak RSS: {peak_mb:.0f} MB  (target < {TARGET_MEMORY_MB} MB: "
        f"{'met' if peak_mb < TARGET_MEMORY_MB else 'NOT met'})"
    )


def _timed(action: object) -> float:
    assert callable(action)
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
