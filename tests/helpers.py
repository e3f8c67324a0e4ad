"""Helpers the tests share: config snippets, and running the library or the CLI."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from click.testing import CliRunner, Result

from backfill.cli import main
from backfill.config import load_config
from backfill.job import RunPlan, plan_run

# What the `write` fixture gives: write(name, text or bytes) -> the path, under tmp_path.
WriteFile = Callable[[str, str | bytes], Path]

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent
# A fixed "now" so that "in the future" does not depend on when the tests run.
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def source_block(name: str, path: str, preset: str = "github-actions", **keys: Any) -> str:
    """One [[sources]] entry of type ci-export, as TOML."""
    lines = ["[[sources]]", f'name = "{name}"', 'type = "ci-export"', f'path = "{path}"', f'preset = "{preset}"']
    keys.setdefault("entity_id", "shop")
    tables: dict[str, dict[str, str]] = {}
    for key, value in keys.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables[key] = value
        else:
            lines.append(f"{key} = {_toml(value)}")
    for table, values in tables.items():
        lines.append(f"[sources.{table}]")
        lines.extend(f'"{key}" = {_toml(value)}' for key, value in values.items())
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return str(value)


def plan_for(config_path: Path, now: datetime = NOW) -> RunPlan:
    return plan_run(load_config(config_path), now=now)


def events_of(config_path: Path) -> pl.DataFrame:
    return plan_for(config_path).plan.events


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)
