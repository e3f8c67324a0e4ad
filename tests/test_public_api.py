"""The library's public surface: what `import backfill` offers is a promise, pinned here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import backfill
from backfill.errors import BackfillError

PUBLIC = [
    "AuthError",
    "BackfillError",
    "Config",
    "ConfigError",
    "DeliveryError",
    "DestinationError",
    "EventKey",
    "Hooks",
    "Interrupted",
    "Plan",
    "RunPlan",
    "RunRequest",
    "RunResult",
    "SourceError",
    "StateError",
    "StateLockedError",
    "__version__",
    "load_config",
    "plan_run",
    "run",
]


def test_the_public_names_are_pinned_and_each_resolves() -> None:
    assert backfill.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(backfill, name) is not None, name
    errors = [getattr(backfill, name) for name in PUBLIC if name.endswith("Error")]
    assert all(issubclass(error, BackfillError) for error in errors)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        backfill.not_a_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "not_a_name" in str(exc)
    else:
        raise AssertionError("backfill.not_a_name resolved")


def test_importing_the_package_loads_no_heavy_library() -> None:
    probe = (
        "import sys, backfill; print(sorted(m for m in ('polars', 'pydantic', 'httpx', 'rich') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_dry_run_through_the_library(tmp_path: Path) -> None:
    config = backfill.load_config(Path(__file__).parent.parent / "configs" / "demo.toml")
    config = config.model_copy(update={"state": config.state.model_copy(update={"path": str(tmp_path / "s.db")})})
    result = backfill.run(config, backfill.RunRequest(review=tmp_path / "review.csv"))
    assert result.outcome == "reviewed" and result.exit_code == 0
    assert result.summary["mode"] == "dry-run"
    assert (tmp_path / "review.csv").read_text().count("\n") == result.summary["totals"]["events"] + 1
    assert not (tmp_path / "s.db").exists()
