"""Every option has a BACKFILL_* twin shown in --help; the config is -c, $BACKFILL_CONFIG, then ./backfill.toml."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from helpers import WriteFile, source_block

from backfill.cli import main
from backfill.errors import EXIT_OK, EXIT_USAGE

CSV = "id,updated_at,conclusion,environment,head_sha\n1,2025-01-01T10:00:00Z,success,production,abc\n"


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    finally:
        os.chdir(previous)
    assert "Traceback" not in result.output
    return result


def test_every_option_of_every_command_has_a_variable_shown_in_help() -> None:
    for name, command in main.commands.items():
        shown = cli(name, "--help").output
        for param in command.params:
            if not isinstance(param, click.Option) or param.name in ("help", "version"):
                continue
            assert param.envvar, f"{name} {param.opts}: no environment twin"
            first = param.envvar if isinstance(param.envvar, str) else param.envvar[0]
            assert first.startswith("BACKFILL_"), (name, param.opts, first)
            assert first in shown.replace("\n", " ").replace("  ", " ") or first in shown, (name, first)


def test_twins_are_named_after_the_long_option() -> None:
    options = {opt: param for param in main.commands["run"].params for opt in getattr(param, "opts", [])}
    assert options["--url"].envvar == "BACKFILL_URL"
    assert options["--allow-http"].envvar == "BACKFILL_ALLOW_HTTP"
    assert options["-c"].envvar == "BACKFILL_CONFIG"


@pytest.fixture
def config(write: WriteFile) -> Path:
    write("runs.csv", CSV)
    return write("backfill.toml", source_block("runs", "runs.csv", env=None))


def test_backfill_config_names_the_config(config: Path, tmp_path: Path) -> None:
    review = tmp_path / "review.csv"
    result = cli("run", "--dry-run", str(review), env={"BACKFILL_CONFIG": str(config)}, cwd=tmp_path.parent)
    assert result.exit_code == EXIT_OK, result.output
    assert review.is_file()


def test_without_c_or_backfill_config_the_config_is_backfill_toml_here(config: Path, tmp_path: Path) -> None:
    result = cli("status", "--json", cwd=tmp_path)
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout)["exists"] is False


def test_c_wins_over_backfill_config(config: Path, tmp_path: Path) -> None:
    result = cli("status", "-c", str(config), env={"BACKFILL_CONFIG": str(tmp_path / "nope.toml")})
    assert result.exit_code == EXIT_OK, result.output


def test_no_config_anywhere_says_the_three_ways(tmp_path: Path) -> None:
    result = cli("run", "--dry-run", "-", cwd=tmp_path)
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.strip() == (
        "error: no config file: pass -c FILE, set $BACKFILL_CONFIG, or create ./backfill.toml "
        "(backfill init writes a first one)"
    )


def test_an_option_comes_from_its_variable(config: Path, tmp_path: Path) -> None:
    result = cli(
        "run", "-c", str(config), "--dry-run", str(tmp_path / "r.csv"),
        env={"BACKFILL_JSON": "1", "BACKFILL_SINCE": "2025-06-01"},
    )  # fmt: skip
    summary = json.loads(result.stdout)
    assert summary["window"]["since"] == "2025-06-01T00:00:00+00:00"
    assert summary["totals"]["outside_window"] == 1
    # The flag wins over its variable.
    result = cli(
        "run", "-c", str(config), "--dry-run", str(tmp_path / "r.csv"), "--json", "--since", "2024-01-01",
        env={"BACKFILL_SINCE": "2025-06-01"},
    )  # fmt: skip
    assert json.loads(result.stdout)["totals"]["outside_window"] == 0
