"""The README is the manual: its commands and reference must match the code."""

from __future__ import annotations

import re

from helpers import REPO

from backfill.cli import main
from backfill.config import Delivery, DevGrid, Normalize, Planning, State
from backfill.enrich.settings import ChangeRequests, Incidents
from backfill.errors import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_SOURCE_RETRY,
    EXIT_STATE,
    EXIT_USAGE,
)
from backfill.extract import REGISTRY
from backfill.extract.ci_export import ColumnMap
from backfill.extract.exports.presets import PRESETS
from backfill.report.settings import ReportSettings

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_the_first_lines_are_the_two_commands() -> None:
    first_block = README.split("```")[1]
    lines = [line for line in first_block.splitlines()[1:] if line.strip()]
    assert len(lines) == 2
    assert lines[0].endswith("pip install . && backfill run -c configs/demo.toml --dry-run review.csv")
    assert lines[1].endswith("pip install -e '.[test]' && pytest")


def test_every_command_is_documented() -> None:
    for name in main.commands:
        assert f"`backfill {name}" in README, f"backfill {name} is not in the README"


def test_every_preset_and_config_key_is_documented() -> None:
    for name in PRESETS:
        assert f"`{name}`" in README
    top_level = (
        *DevGrid.model_fields,
        *Delivery.model_fields,
        *State.model_fields,
        *Normalize.model_fields,
        *Planning.model_fields,
        *ReportSettings.model_fields,
    )
    sources = [key for extractor in REGISTRY.values() for key in extractor.config_model.model_fields]
    sources += [*ChangeRequests.model_fields, *Incidents.model_fields]
    for key in (*top_level, *sources, *ColumnMap.model_fields):
        if key == "columns":
            assert "[sources.columns]" in README
            continue
        # A key may be shown commented out, as the alternative to the one above it.
        assert re.search(rf"^(# )?{key} = ", README, re.MULTILINE), f"config key {key} is not in the README"


def test_documented_exit_codes_exist() -> None:
    documented = {int(code) for code in re.findall(r"^\| (\d) \|", README, re.MULTILINE)}
    used = {EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_AUTH, EXIT_LOCKED, EXIT_STATE, EXIT_SOURCE_RETRY}
    assert documented == used
