"""backfill: import a team's past deployments into DevGrid, once, in order.

The library under the CLI, in the order of the data path::

    import backfill

    config = backfill.load_config("backfill.toml")
    planned = backfill.plan_run(config)                  # extract, normalize, plan
    result = backfill.run(config, backfill.RunRequest(review=Path("review.csv")))  # a dry run
    result.summary, result.outcome, result.exit_code

Everything backfill raises on purpose is a :class:`BackfillError` with an exit code.
Names load on first use, so that ``import backfill`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_PUBLIC = {
    "Config": "backfill.config",
    "load_config": "backfill.config",
    "Plan": "backfill.plan.dedupe",
    "RunPlan": "backfill.plan.dedupe",
    "plan_run": "backfill.job",
    "Hooks": "backfill.job",
    "RunRequest": "backfill.job",
    "RunResult": "backfill.job",
    "run": "backfill.job",
    "EventKey": "backfill.model",
    "BackfillError": "backfill.errors",
    "ConfigError": "backfill.errors",
    "SourceError": "backfill.errors",
    "StateError": "backfill.errors",
    "StateLockedError": "backfill.errors",
    "DestinationError": "backfill.errors",
    "DeliveryError": "backfill.errors",
    "AuthError": "backfill.errors",
    "Interrupted": "backfill.errors",
}

__all__ = [
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

if TYPE_CHECKING:
    from backfill.config import Config, load_config
    from backfill.errors import (
        AuthError,
        BackfillError,
        ConfigError,
        DeliveryError,
        DestinationError,
        Interrupted,
        SourceError,
        StateError,
        StateLockedError,
    )
    from backfill.job import Hooks, RunRequest, RunResult, plan_run, run
    from backfill.model import EventKey
    from backfill.plan.dedupe import Plan, RunPlan


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'backfill' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
