"""Enrichments: what ServiceNow knows about deployments, joined to them before dedupe and review.

Two types, one module each behind this registry:

* ``servicenow-changes`` sets ``change_id`` on events (:mod:`.changes`, :mod:`.change_match`);
* ``servicenow-incidents`` links incidents to deployments by ``change_id`` (:mod:`.incidents`).

:func:`enrich_events` runs on the classified rows of every source, after
normalize and before the plan dedupes them. A ``change_id`` an event already
has is kept (rule ``source``); entries run in config order, and a later one
only fills what the earlier ones left empty. Every event it looks at gets a
``change_id_rule``: ``source``, ``exact <field>``, ``window``,
``ambiguous (<rule>): CHG... CHG...`` or empty (no change matched).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final

import polars as pl

from backfill.enrich.settings import ENRICH_TYPES, ChangeRequests, EnrichConfigs, Incidents

# The modules that read, match and link are imported by the functions that use them: every run imports
# this package (the config's models live in it), most runs have no [[enrich]].
if TYPE_CHECKING:
    from backfill.enrich.changes import Changes
    from backfill.enrich.incidents import IncidentLinks

REGISTRY: Final[dict[str, type[ChangeRequests] | type[Incidents]]] = {
    "servicenow-changes": ChangeRequests,
    "servicenow-incidents": Incidents,
}
assert tuple(REGISTRY) == ENRICH_TYPES
AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class ChangeReport:
    name: str
    origin: str
    read: int
    used: int
    rejects: pl.DataFrame  # row, number, reason
    unmapped: pl.DataFrame  # service, changes
    sys_ids: pl.DataFrame  # sys_id, number: how incidents exported without display values name a change


@dataclass(frozen=True)
class IncidentReport:
    name: str
    origin: str
    read: int
    rejects: pl.DataFrame
    links: IncidentLinks


@dataclass
class Enrichment:
    """What the ``[[enrich]]`` entries read, rejected and linked, for the summary."""

    envs: tuple[str, ...] = ()
    changes: list[ChangeReport] = field(default_factory=list)
    incidents: list[IncidentReport] = field(default_factory=list)

    def warnings(self) -> list[str]:
        if not self.changes and not self.incidents:
            return []
        from backfill.enrich.incidents import reject_lines

        lines: list[str] = []
        for report in self.changes:
            lines.extend(reject_lines(report.name, report.origin, report.rejects))
            for service, count in report.unmapped.head(10).iter_rows():
                lines.append(
                    f"enrich '{report.name}': {count} change(s) name the service '{service}', which "
                    "[enrich.services] does not map to an entity; they can match by exact id only"
                )
        for incidents in self.incidents:
            lines.extend(reject_lines(incidents.name, incidents.origin, incidents.rejects))
        return lines


def load_changes(
    config: ChangeRequests,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notice: Callable[[str], None] = lambda message: None,
    updated_since: datetime | None = None,
) -> Changes:
    from backfill.enrich.changes import prepare_changes, wanted_fields, window_pairs
    from backfill.enrich.servicenow_export import read_records

    required, optional = wanted_fields(config)
    records = read_records(
        config,
        required,
        optional,
        date_fields=optional,
        updated_since=updated_since,
        environ=environ,
        sleep=sleep,
        notice=notice,
    )
    if config.window and config.services and not window_pairs(config, records.frame.columns) and records.frame.height:
        from backfill.errors import EnrichError

        pairs = " or ".join("..".join(pair) for pair in config.window_fields)
        raise EnrichError(
            config.name,
            f"{records.origin}: has no window fields ({pairs}) for the time-window rule; "
            "export them, or set window = false",
        )
    return prepare_changes(config, records)


def enrich_events(
    classified: pl.DataFrame,
    configs: Sequence[EnrichConfigs],
    *,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notice: Callable[[str], None] = lambda message: None,
) -> tuple[pl.DataFrame, Enrichment]:
    """Set change_id (and change_id_rule) on the events; other rows pass unchanged."""
    entries = [config for config in configs if isinstance(config, ChangeRequests)]
    envs = tuple(dict.fromkeys(env for config in entries for env in config.envs))
    enrichment = Enrichment(envs=envs)
    if not entries:
        return classified, enrichment
    from backfill.enrich.change_match import CANDIDATES, INDEX, RULE, match
    from backfill.enrich.changes import NUMBER, SYS_ID
    from backfill.model import TS
    from backfill.normalize.verdicts import VERDICT, Verdict

    environ = os.environ if environ is None else environ
    is_event = pl.col(VERDICT) == Verdict.EVENT
    frame = classified.with_row_index(INDEX).with_columns(
        pl.when(is_event & pl.col("change_id").is_not_null()).then(pl.lit("source")).alias(RULE)
    )
    for config in entries:
        wanted = is_event & pl.col("change_id").is_null() & pl.col("env").is_in(list(config.envs))
        todo = frame.filter(wanted).select(INDEX, "entityId", TS, *dict.fromkeys(config.exact.values()))
        earliest = todo.get_column(TS).min() if todo.height else None
        changes = load_changes(config, environ, sleep, notice, updated_since=earliest)  # type: ignore[arg-type]
        decided = match(todo, changes.usable, dict(config.exact), config.window and bool(config.services))
        ambiguous = pl.format(f"{AMBIGUOUS} ({{}}): {{}}", pl.col(RULE), pl.col(CANDIDATES).list.join(" "))
        said = pl.when(pl.col(NUMBER).is_not_null()).then(pl.col(RULE)).otherwise(ambiguous)
        decided = decided.select(INDEX, pl.col(NUMBER).alias("_change"), said.alias("_rule"))
        frame = (
            frame.join(decided, on=INDEX, how="left", maintain_order="left")
            .with_columns(
                pl.coalesce("change_id", "_change").alias("change_id"),
                pl.coalesce("_rule", RULE).alias(RULE),
            )
            .drop("_change", "_rule")
        )
        enrichment.changes.append(
            ChangeReport(
                name=config.name,
                origin=changes.origin,
                read=changes.read,
                used=changes.usable.height,
                rejects=changes.rejects,
                unmapped=changes.unmapped,
                sys_ids=changes.usable.select(SYS_ID, NUMBER).drop_nulls(),
            )
        )
    return frame.drop(INDEX), enrichment


def link_incident_entries(
    events: pl.DataFrame,
    configs: Sequence[EnrichConfigs],
    enrichment: Enrichment,
    *,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notice: Callable[[str], None] = lambda message: None,
) -> None:
    """Read every ``servicenow-incidents`` entry and link its incidents to the planned events."""
    if not any(isinstance(config, Incidents) for config in configs):
        return
    from backfill.enrich.changes import NUMBER, SYS_ID
    from backfill.enrich.incidents import link_incidents, load_incidents
    from backfill.model import TS

    envs = enrichment.envs or ("production",)
    # An incident exported without display values names its change by sys_id.
    sys_ids = (
        pl.concat([report.sys_ids for report in enrichment.changes], how="vertical").unique(
            subset=[SYS_ID], keep="first", maintain_order=True
        )
        if enrichment.changes
        else pl.DataFrame(schema={SYS_ID: pl.String, NUMBER: pl.String})
    )
    for config in configs:
        if isinstance(config, Incidents):
            earliest = events.get_column(TS).min() if events.height else None
            table = load_incidents(
                config,
                environ=environ,
                sleep=sleep,
                notice=notice,
                updated_since=earliest,  # type: ignore[arg-type]
            )
            named = (
                table.incidents.join(
                    sys_ids.rename({SYS_ID: "change_id", NUMBER: "_number"}),
                    on="change_id",
                    how="left",
                    maintain_order="left",
                )
                .with_columns(pl.coalesce("_number", "change_id").alias("change_id"))
                .drop("_number")
            )
            enrichment.incidents.append(
                IncidentReport(
                    name=config.name,
                    origin=table.origin,
                    read=table.incidents.height + table.rejects.height,
                    rejects=table.rejects,
                    links=link_incidents(named, events, envs),
                )
            )


__all__ = [
    "ENRICH_TYPES",
    "REGISTRY",
    "ChangeRequests",
    "EnrichConfigs",
    "Enrichment",
    "Incidents",
    "enrich_events",
    "link_incident_entries",
    "load_changes",
]
