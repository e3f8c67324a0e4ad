"""One deployment's event, built by the rules a backfill applies to every row it reads.

The values (from the CI system's variables, each overridden by a flag or a
``BACKFILL_*`` variable) become one raw row, and that row goes through the
same :func:`~backfill.normalize.classify.normalize` and
:func:`~backfill.plan.dedupe.make_plan` as a backfill's rows: env aliases and
lowercasing, the list of environments, the timestamp rules, the key. A row a
backfill would reject is refused here with the same sentence. When the config
has the ci-export source that imports this CI system's runs, its entity_id,
env, build_id_prefix and hotfix_pattern apply as they do in a backfill, so the
live event and the later import of the same run are one key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from backfill.config import Normalize
from backfill.emit.ci_systems import RunFacts
from backfill.errors import ConfigError
from backfill.extract.base import SourceConfig
from backfill.extract.ci_export import CiExportSource
from backfill.extract.patterns import patterns_regex
from backfill.load.client import events_json
from backfill.model import RAW_COLUMNS, ROW, EventKey, Outcome
from backfill.normalize.classify import TIMESTAMP_FORMAT, Normalization, normalize
from backfill.plan.dedupe import make_plan

EMIT_SOURCE = "emit"
_VOCAB: dict[str, Outcome] = {"success": "success", "failed": "failed"}


@dataclass(frozen=True)
class Given:
    """What the command line (or its environment twins) says; None where it says nothing."""

    entity: str | None = None
    env: str | None = None
    status: str | None = None
    build_id: str | None = None
    commit: str | None = None
    build_url: str | None = None
    initiator: str | None = None
    description: str | None = None
    change_id: str | None = None
    deployment_type: str | None = None
    timestamp: str | None = None


@dataclass(frozen=True)
class BuiltEvent:
    """The event as DevGrid receives it, its review row (for the ledger) and its key."""

    json_text: str
    row: pl.DataFrame  # one row: the review columns and source, as a backfill's plan holds them
    key: EventKey
    source: str
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        import json

        value: dict[str, Any] = json.loads(self.json_text)
        return value


def matching_source(sources: Sequence[SourceConfig], preset: str | None, name: str | None) -> SourceConfig | None:
    """The config's source this event belongs to: the one named, else the only ci-export source of this system."""
    if name is not None:
        found = next((source for source in sources if source.name == name), None)
        if found is None:
            names = ", ".join(source.name for source in sources) or "none"
            raise ConfigError(f"--source '{name}': the config has no such source; its sources are: {names}")
        return found
    if preset is None:
        return None
    same = [source for source in sources if isinstance(source, CiExportSource) and source.preset == preset]
    return same[0] if len(same) == 1 else None


def build_event(
    facts: RunFacts,
    given: Given,
    settings: Normalize,
    source: SourceConfig | None = None,
    *,
    commit_note: str | None = None,
    now: datetime | None = None,
) -> BuiltEvent:
    """The event for this run; raise ConfigError with the backfill's own reason when it cannot be one."""
    now = now or datetime.now(UTC)
    notes = [*facts.notes]
    if commit_note:
        notes.append(commit_note)
    elif facts.commit.note:
        notes.append(facts.commit.note)
    build_id = given.build_id
    if build_id is None and facts.build_id is not None:
        prefix = source.build_id_prefix if isinstance(source, CiExportSource) else None
        build_id = f"{prefix or ''}{facts.build_id}"
    description = given.description or facts.description
    deployment_type = given.deployment_type
    # A source's hotfix_pattern marks the event as a backfill would (on the description: a hotfix_column
    # is a column of the export, which a live run does not have).
    pattern = source.hotfix_pattern if isinstance(source, CiExportSource) and source.hotfix_column is None else None
    if deployment_type is None and pattern is not None and description:
        deployment_type = "hotfix" if re.search(patterns_regex(pattern), description) else None
    values: dict[str, str | None] = {
        "timestamp": given.timestamp or now.strftime(TIMESTAMP_FORMAT),
        "entityId": given.entity or (source.entity_id if source is not None else None),
        "env": given.env or (source.env if source is not None else None),
        "status": given.status,
        "build_id": build_id,
        "build_commit_sha": given.commit if given.commit is not None else facts.commit.sha,
        "change_id": given.change_id,
        "build_url": given.build_url or facts.build_url,
        "description": description,
        "initiator": given.initiator or facts.initiator,
        "deployment_type": deployment_type,
    }
    source_name = source.name if source is not None else EMIT_SOURCE
    raw = pl.LazyFrame(
        {**{name: [values.get(name)] for name in RAW_COLUMNS}, ROW: [1]},
        schema={**dict.fromkeys(RAW_COLUMNS, pl.String), ROW: pl.UInt32},
    )
    rules = Normalization(
        environments=tuple(settings.environments),
        env_aliases=dict(settings.env_aliases),
        default_timezone=settings.default_timezone,
        # A second of slack: the timestamp is this instant, written before the check.
        now=now + timedelta(seconds=1),
        # One event has no history to compare with; the next backfill infers rollbacks.
        infer_rollbacks=False,
        earliest_epoch_year=settings.earliest_epoch_year,
    )
    classified = normalize(raw, source=source_name, source_index=0, status_vocab=_VOCAB, rules=rules).collect()
    plan = make_plan(classified, [source_name], rules)
    if plan.events.height == 0:
        reasons = pl.concat([plan.rejects.select("reason"), plan.skipped.select("reason")])
        raise ConfigError(f"the event cannot be sent: {reasons.item(0, 'reason')}{_hint(reasons.item(0, 'reason'))}")
    row = plan.events
    key = EventKey(*row.select("entityId", "env", "build_id").row(0))
    return BuiltEvent(json_text=events_json(row)[0], row=row, key=key, source=source_name, notes=tuple(notes))


def with_source(event: BuiltEvent, source: str) -> BuiltEvent:
    return replace(event, source=source, row=event.row.with_columns(source=pl.lit(source)))


def _hint(reason: str) -> str:
    hints = {
        "missing entityId": "; pass --entity or set BACKFILL_ENTITY (or DEVGRID_ENTITY_ID)",
        "missing env": "; pass --env or set BACKFILL_ENV",
        "missing status": "; pass --status success|failed, or --status-from-exit $?",
        "missing build_id": "; this CI system's variables name no build: pass --build-id or set BACKFILL_BUILD_ID",
    }
    return hints.get(reason, "")
