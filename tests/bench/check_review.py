"""Check: a change to the dry run's hot path writes byte for byte the review and rejects it wrote before.

Usage: python tests/bench/check_review.py REFERENCE [EXPORT ...]

REFERENCE is a git revision (say ``main`` or ``HEAD~1``): its backfill package is
unpacked to a temporary folder (``git archive``) and run with the same Python.
Each EXPORT (by default the benchmark's 1,000,000-row export and its shuffled
copy, see bench_dry_run.py) goes through ``backfill run --dry-run`` with both,
and the review CSV, the rejects CSV, the skipped CSV, what the run prints
(its summary and warnings, with the run's folder left out) and, from a second
run with ``--json``, its JSON summary must be identical.
Exits 1 on a difference.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parents[1]
DEFAULT_EXPORTS = (HERE / "data" / "runs_1000000.csv", HERE / "data" / "runs_1000000_shuffled.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference")
    parser.add_argument("exports", nargs="*", type=Path, default=list(DEFAULT_EXPORTS))
    args = parser.parse_args()
    different = 0
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        reference = workdir / "reference"
        _unpack(args.reference, reference)
        for export in args.exports:
            outputs = {
                name: _dry_run(workdir / name, export, tree)
                for name, tree in (("reference", reference), ("current", REPO))
            }
            for kind in ("review.csv", "review.rejects.csv", "review.skipped.csv", "printed.txt", "json/printed.txt"):
                same = filecmp.cmp(outputs["reference"] / kind, outputs["current"] / kind, shallow=False)
                size = (outputs["current"] / kind).stat().st_size
                print(f"{export.name}: {kind} {'identical' if same else 'DIFFERENT'} ({size:,} bytes)")
                different += not same
    sys.exit(1 if different else 0)


def _unpack(revision: str, folder: Path) -> None:
    folder.mkdir()
    archive = folder / "tree.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), revision, "backfill"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")


def _dry_run(folder: Path, export: Path, tree: Path) -> Path:
    _run_once(folder, export, tree, [])
    _run_once(folder / "json", export, tree, ["--json"])
    return folder


def _run_once(folder: Path, export: Path, tree: Path, flags: list[str]) -> None:
    folder.mkdir(exist_ok=True)
    config = folder / f"{export.stem}.toml"
    config.write_text(
        f'[state]\npath = "{folder / "state.db"}"\n\n'
        f'[[sources]]\nname = "runs"\ntype = "ci-export"\npath = "{export}"\n'
        'preset = "github-actions"\nentity_id = "shop"\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "backfill", "run", "-c", str(config), "--dry-run", str(folder / "review.csv"), *flags],
        env={**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"},
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    printed = f"exit {done.returncode}\n{done.stdout}{done.stderr}".replace(str(folder), "<run>")
    (folder / "printed.txt").write_text(printed, encoding="utf-8")


if __name__ == "__main__":
    main()
