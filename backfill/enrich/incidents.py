"""Incidents from ServiceNow, and the deployment each one names through its change request.

:func:`read_incidents` gives one row per usable incident::

    number: Utf8, opened_at: Datetime("us", "UTC"), resolved_at: Datetime("us", "UTC") (null: still open),
    priority: Utf8 (nullable), change_id: Utf8 (nullable: names no change)

``change_id`` is the first non-empty of ``caused_by_fields`` (DevGrid's
``u_caused_by_deployment``, then ServiceNow's ``caused_by``, a reference to
the change request: its display value is the number). An incident is
rejected, with a sentence naming its row, when it has no number, when
``opened_at`` is missing or not a time, when ``resolved_at`` is not a time or
is before ``opened_at``, or when its number appears again with other values.

:func:`link_incidents` joins them to deployments by ``change_id``: each
incident links to the last deployment of that change at or before it was
opened (else the first after); incidents that link to none are counted and
listed, with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from backfill.enrich.dates import add_instants, instant_column, problem_column
from backfill.enrich.servicenow_export import PROBLEM, Records, read_records
from backfill.enrich.settings import Incidents
from backfill.model import ROW, TS

UTC_US = pl.Datetime("us", "UTC")
INCIDENT_SCHEMA: Mapping[str, pl.DataType] = {
    "number": pl.String(),
    "opened_at": UTC_US,
    "resolved_at": UTC_US,
    "priority": pl.String(),
    "change_id": pl.String(),
}


@dataclass(frozen=True)
class IncidentTable:
    incidents: pl.DataFrame  # INCIDENT_SCHEMA
    rejects: pl.DataFrame  # row, number, reason
    origin: str


@dataclass(frozen=True)
class IncidentLinks:
    linked: pl.DataFrame  # the incident's columns, then entityId, env, build_id, deployed_at
    unlinked: pl.DataFrame  # the incident's columns, then reason

    @property
    def counts(self) -> dict[str, int]:
        return {"linked": self.linked.height, "unlinked": self.unlinked.height}


def read_incidents(
    config: Incidents,
    *,
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """The usable incidents (see the module's docstring); each rejected one is said through ``warn``."""
    table = load_incidents(config, environ=environ)
    if warn is not None:
        for line in reject_lines(config.name, table.origin, table.rejects):
            warn(line)
    return table.incidents


def read_all_incidents(
    entries: Sequence[object],
    *,
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """The incidents of every ``servicenow-incidents`` entry of a config's ``enrich`` list, in one frame."""
    frames = [read_incidents(entry, environ=environ, warn=warn) for entry in entries if isinstance(entry, Incidents)]
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=pl.Schema(INCIDENT_SCHEMA))


def load_incidents(
    config: Incidents,
    *,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notice: Callable[[str], None] = lambda message: None,
    updated_since: datetime | None = None,
) -> IncidentTable:
    fields = [config.number_field, config.opened_field]
    optional = [config.resolved_field, config.priority_field, *config.caused_by_fields]
    records = read_records(
        config,
        fields,
        optional,
        date_fields=[config.opened_field, config.resolved_field],
        updated_since=updated_since,
        environ=environ,
        sleep=sleep,
        notice=notice,
    )
    return prepare_incidents(config, records)


def prepare_incidents(config: Incidents, records: Records) -> IncidentTable:
    frame = records.frame
    present = set(frame.columns)

    def text(field: str) -> pl.Expr:
        return pl.col(field) if field in present else pl.lit(None, dtype=pl.String)

    resolved = config.resolved_field if config.resolved_field in present else None
    dates = [config.opened_field, *([resolved] if resolved else [])]
    lazy = add_instants(frame.lazy(), dates, "UTC" if records.utc else config.timezone)
    opened_at = pl.col(instant_column(config.opened_field))
    resolved_at = pl.col(instant_column(resolved)) if resolved else pl.lit(None, dtype=UTC_US)
    reason = pl.coalesce(
        pl.col(PROBLEM),
        pl.when(pl.col(config.number_field).is_null()).then(pl.lit(f"has no {config.number_field}")),
        pl.when(pl.col(config.opened_field).is_null()).then(pl.lit(f"has no {config.opened_field}")),
        *(pl.col(problem_column(field)) for field in dates),
        pl.when(resolved_at < opened_at).then(
            pl.format(
                "{} '{}' is before {} '{}'",
                pl.lit(resolved),
                text(resolved or ""),
                pl.lit(config.opened_field),
                pl.col(config.opened_field),
            )
        ),
    )
    shaped = lazy.select(
        ROW,
        pl.col(config.number_field).alias("number"),
        opened_at.alias("opened_at"),
        resolved_at.alias("resolved_at"),
        text(config.priority_field).alias("priority"),
        pl.coalesce(*(text(field) for field in config.caused_by_fields)).alias("change_id"),
        reason.alias("reason"),
    ).collect()
    shaped = _reject_conflicting(shaped)
    good = shaped.filter(pl.col("reason").is_null())
    return IncidentTable(
        incidents=good.select(*INCIDENT_SCHEMA).cast(pl.Schema(INCIDENT_SCHEMA)),
        rejects=shaped.filter(pl.col("reason").is_not_null()).select(ROW, "number", "reason"),
        origin=records.origin,
    )


def _reject_conflicting(shaped: pl.DataFrame) -> pl.DataFrame:
    values = list(INCIDENT_SCHEMA)
    fine = shaped.filter(pl.col("reason").is_null())
    distinct = fine.unique(subset=values, keep="first", maintain_order=True)
    conflicting = (
        distinct.group_by("number")
        .agg(pl.len().alias("_versions"))
        .filter(pl.col("_versions") > 1)
        .join(fine.group_by("number").agg(pl.col(ROW).sort().alias("_rows")), on="number")
    )
    repeated = fine.join(distinct.select(ROW), on=ROW, how="anti").select(ROW)
    rows_text = pl.col("_rows").list.eval(pl.element().cast(pl.String)).list.join(", ")
    return (
        shaped.join(conflicting.select("number", "_rows"), on="number", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("reason").is_null() & pl.col("_rows").is_not_null())
            .then(
                pl.format("{} appears in rows {} with different values; keep one of them", pl.col("number"), rows_text)
            )
            .otherwise(pl.col("reason"))
            .alias("reason")
        )
        .drop("_rows")
        .join(repeated, on=ROW, how="anti")
    )


def link_incidents(
    incidents: pl.DataFrame, deployments: pl.DataFrame, envs: Sequence[str] = ("production",)
) -> IncidentLinks:
    """Each incident with the deployment its change_id names (``deployments``: the plan's events)."""
    deployed = deployments.filter(pl.col("env").is_in(list(envs)) & pl.col("change_id").is_not_null()).select(
        "change_id", "entityId", "env", "build_id", pl.col(TS).alias("deployed_at")
    )
    candidates = incidents.join(deployed, on="change_id", how="inner")
    before = pl.col("deployed_at") <= pl.col("opened_at")
    epoch = pl.col("deployed_at").dt.epoch("us")
    # The last deployment at or before the incident opened; else the first one after it.
    linked = (
        candidates.sort(
            [before, pl.when(before).then(epoch).otherwise(-epoch), "build_id"], descending=[True, True, False]
        )
        .unique(subset=["number"], keep="first", maintain_order=True)
        .sort("opened_at", "number")
    )
    unlinked = (
        incidents.join(linked.select("number"), on="number", how="anti")
        .with_columns(
            pl.when(pl.col("change_id").is_null())
            .then(pl.lit("names no change request"))
            .otherwise(pl.format("no deployment has change_id {}", pl.col("change_id")))
            .alias("reason")
        )
        .sort("opened_at", "number")
    )
    return IncidentLinks(linked=linked, unlinked=unlinked)


def reject_lines(name: str, origin: str, rejects: pl.DataFrame) -> list[str]:
    return [
        f"enrich '{name}': {origin} row {row}{f' ({number})' if number else ''}: {reason}; it is not used"
        for row, number, reason in rejects.select(ROW, "number", "reason").iter_rows()
    ]
