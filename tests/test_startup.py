"""Start-up: the help and a mistake on the command line need click only, not the libraries the commands use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("polars", "pydantic", "rich", "httpx", "tenacity", "git", "github", "gitlab")

PROBE = """
import json, sys
from backfill.cli import main
try:
    main(sys.argv[1:], prog_name="backfill")
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted({name.split(".")[0] for name in sys.modules})}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "arguments",
    [["--help"], ["run", "--help"], ["status", "--help"], ["serve", "--help"], ["--version"], ["run"]],
)
def test_help_and_usage_errors_import_no_heavy_library(arguments: list[str]) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *arguments], capture_output=True, text=True, timeout=60, check=False
    )
    report = json.loads(probe.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, 2)  # `run` without -c is a usage error
    assert [name for name in HEAVY if name in report["modules"]] == []
