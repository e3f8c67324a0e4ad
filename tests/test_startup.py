"""Start-up: the help and a mistake on the command line need click only, not the libraries the commands use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gitrepo import GitRepo
from helpers import source_block

HEAVY = ("polars", "pydantic", "rich", "httpx", "tenacity", "git", "github", "gitlab")

PROBE = """
import sys
from backfill.cli import main
try:
    main(sys.argv[1:], prog_name="backfill")
except SystemExit as exit:
    code = exit.code
modules = sorted({name.split(".")[0] for name in sys.modules})
own = sorted(name for name in sys.modules if name.startswith("backfill."))
import gc, json  # after the modules are listed: the probe's own imports are not the command's
collector = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
print(json.dumps({"code": code, "modules": modules, "own": own, "gc": collector}), file=sys.stderr)
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
    # Nor what only a command's work needs: git is run, signals caught and randomness drawn by commands alone.
    assert [name for name in ("subprocess", "signal", "secrets") if name in report["modules"]] == []
    # What only printing JSON, or emit's work, needs: the help lists emit's --ci choices from a table of names.
    assert [name for name in ("json", "dataclasses") if name in report["modules"]] == []
    assert [
        name for name in report["own"] if name.startswith(("backfill.emit.ci_systems", "backfill.emit.commits"))
    ] == []


def test_a_dry_run_imports_no_http_client(tmp_path: Path) -> None:
    """A dry run reads files and writes files: the HTTP client and the delivery are for sending."""
    (tmp_path / "runs.csv").write_text(
        "id,updated_at,conclusion,environment\n1,2025-01-01T00:00:00Z,success,production\n"
    )
    config = tmp_path / "backfill.toml"
    config.write_text(source_block("runs", "runs.csv"), encoding="utf-8")
    arguments = ["run", "-c", str(config), "--dry-run", str(tmp_path / "review.csv")]
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *arguments], capture_output=True, text=True, timeout=60, check=False
    )
    report = json.loads(probe.stderr.strip().splitlines()[-1])
    assert report["code"] == 0
    assert (tmp_path / "review.csv").read_text().count("\n") == 2
    assert "polars" in report["modules"]  # the probe sees what the run imported
    assert [name for name in ("httpx", "tenacity", "boto3") if name in report["modules"]] == []
    # Nor what only a sending run does: catch signals to stop cleanly between batches, lock the state.
    assert "backfill.interrupts" not in report["own"]
    assert "filelock" not in report["modules"] and "backfill.state.lock" not in report["own"]


@pytest.mark.parametrize("config_text", [None, "[[sources]]\nname = 'runs'\ntype = 'no-such-type'\n"])
def test_a_run_loads_with_the_collector_paused_and_leaves_it_running(tmp_path: Path, config_text: str | None) -> None:
    """The modules and the config load without cyclic collection, which runs again after, a bad config or not."""
    (tmp_path / "runs.csv").write_text(
        "id,updated_at,conclusion,environment\n1,2025-01-01T00:00:00Z,success,production\n"
    )
    config = tmp_path / "backfill.toml"
    config.write_text(config_text or source_block("runs", "runs.csv"), encoding="utf-8")
    arguments = ["run", "-c", str(config), "--dry-run", str(tmp_path / "review.csv")]
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *arguments], capture_output=True, text=True, timeout=60, check=False
    )
    report = json.loads(probe.stderr.strip().splitlines()[-1])
    assert report["code"] == (0 if config_text is None else 2)
    assert report["gc"]["enabled"] is True
    assert report["gc"]["frozen"] > 10_000  # what loading made is kept out of later collections


def test_a_git_tags_dry_run_runs_git_itself_and_imports_no_client_library(tmp_path: Path) -> None:
    """The tags come from one git command's text: no git library, no forge client, no HTTP client."""
    repo = GitRepo(tmp_path / "repo")
    repo.commit("First", "2024-01-01T10:00:00Z")
    repo.tag("v1.0.0", message="Release 1.0.0", date="2024-01-01T11:00:00Z")
    config = tmp_path / "backfill.toml"
    config.write_text(
        f'[[sources]]\nname = "tags"\ntype = "git-tags"\nrepo = "{repo.path}"\nentity_id = "shop"\nenv = "production"\n',
        encoding="utf-8",
    )
    arguments = ["run", "-c", str(config), "--dry-run", str(tmp_path / "review.csv")]
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *arguments], capture_output=True, text=True, timeout=60, check=False
    )
    report = json.loads(probe.stderr.strip().splitlines()[-1])
    assert report["code"] == 0
    assert "v1.0.0" in (tmp_path / "review.csv").read_text(encoding="utf-8")
    assert [name for name in ("git", "github", "gitlab", "httpx", "tenacity") if name in report["modules"]] == []
    # Nor the modules of the source types the config does not use.
    unused = ("ci_export", "github_releases", "github_deployments", "gitlab_releases", "gitlab_deployments", "forge")
    assert [
        name for name in report["own"] if name.startswith("backfill.extract.") and name.split(".")[2] in unused
    ] == []
    assert "backfill.extract.git_tags" in report["own"]


def test_the_config_imports_the_enrich_settings_alone() -> None:
    """Every run loads the config, whose [[enrich]] models live in the enrich package: not its readers or matchers."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, backfill.config; print(' '.join(name for name in sys.modules if name.startswith('backfill.')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = probe.stdout.split()
    assert "backfill.enrich.settings" in loaded
    workers = ("changes", "change_match", "incidents", "servicenow_export", "table_api", "dates")
    assert [name for name in loaded if name.startswith("backfill.enrich.") and name.split(".")[2] in workers] == []
