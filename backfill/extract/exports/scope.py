"""Say when a CI export without ``match`` mixes workflows, branches or events.

An unfiltered run listing holds test workflows, feature branches and pull
requests as well as deployments; sent as is, each would count as a production
deployment (and a commit tested twice would look like a rollback). The
warning gives the breakdown and the ``match`` that keeps only the deploy
workflow on the default branch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

import polars as pl

# Workflow names that say they deploy.
_DEPLOYS = re.compile(r"(?i)deploy|release|publish|prod|\bcd\b")
_NOUNS = {"workflow": ("workflow", "workflows"), "branch": ("branch", "branches"), "event": ("event", "events")}
_SHOWN = 5


def scope_columns(scope: Mapping[str, Sequence[str]], available: Sequence[str]) -> dict[str, str]:
    """For each of workflow, branch and event, the file's column that holds it (if any)."""
    present = set(available)
    found = {kind: next((name for name in candidates if name in present), None) for kind, candidates in scope.items()}
    return {kind: name for kind, name in found.items() if name is not None}


def mixed_scope_warning(source: str, values: pl.DataFrame, columns: Mapping[str, str]) -> str | None:
    """The warning for ``values`` (the scope columns of every run), or None when nothing is mixed."""
    counts: dict[str, list[tuple[str, int]]] = {}
    for kind, column in columns.items():
        tally = (
            values.select(pl.col(column).fill_null("").alias("value"))
            .group_by("value")
            .len()
            .sort(["len", "value"], descending=[True, False])
        )
        counts[kind] = [(str(value), int(count)) for value, count in tally.iter_rows()]
    if all(len(found) < 2 for found in counts.values()):
        return None
    parts = [_breakdown(kind, found) for kind, found in counts.items() if len(found) >= 2]
    suggestion = {column: _keep(kind, counts[kind]) for kind, column in columns.items()}
    match = ", ".join(f"{_key(column)} = {json.dumps(value)}" for column, value in suggestion.items() if value)
    return (
        f"source '{source}': no match is set, and the runs mix {_join(parts)}; every one would be sent as a "
        "deployment (test runs, feature branches and pull requests too). To keep only the deploy workflow on "
        f"the default branch, add to this source: match = {{ {match} }}"
    )


def _breakdown(kind: str, found: list[tuple[str, int]]) -> str:
    shown = ", ".join(f"{value or '(none)'} {count}" for value, count in found[:_SHOWN])
    more = f", and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    return f"{len(found)} {_NOUNS[kind][1]} ({shown}{more})"


def _keep(kind: str, found: list[tuple[str, int]]) -> str | None:
    names = [value for value, _ in found if value]
    if kind == "workflow":
        return next((name for name in names if _DEPLOYS.search(name)), "<your deploy workflow>")
    if kind == "branch":
        return next((name for name in ("main", "master") if name in names), names[0] if names else None)
    if kind == "event":
        return "push" if "push" in names else None
    return None


def _key(column: str) -> str:
    return column if re.fullmatch(r"[A-Za-z0-9_-]+", column) else json.dumps(column)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
