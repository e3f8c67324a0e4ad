"""Benchmark: how long `backfill --help` takes, against the interpreter alone and click alone.

Usage: python tests/bench/bench_startup.py [--repeat N]

Each a fresh process, fastest of N (default 20): `python -c pass`, `python -c
"import click"`, `backfill --help` and `backfill run --help`. Target: `backfill
--help` at most 0.1 s. The machine may be shared: compare with the two
baselines of the same run.

backfill's own modules are compiled to bytecode first, as `pip install .`
leaves them (installed.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time

from installed import compile_backfill

TARGET_SECONDS = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    backfill = shutil.which("backfill") or sys.exit("backfill is not installed in this environment")
    compile_backfill()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import click'": [sys.executable, "-c", "import click"],
        "backfill --help": [backfill, "--help"],
        "backfill run --help": [backfill, "run", "--help"],
    }
    best = dict.fromkeys(commands, float("inf"))
    for _ in range(args.repeat):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for name, seconds in best.items():
        print(f"  {name:<26} {seconds * 1000:6.0f} ms")
    verdict = "met" if best["backfill --help"] <= TARGET_SECONDS else "NOT met"
    print(f"backfill --help: {best['backfill --help']:.3f} s (target <= {TARGET_SECONDS} s: {verdict})")


if __name__ == "__main__":
    main()
