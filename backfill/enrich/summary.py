"""The enrichments in the run summary: change_id per entity, and incidents linked or not.

Counted over the events the run plans, in the environments the
``servicenow-changes`` entries enrich: per entity, how many kept the
``change_id`` their source gave, were matched (by which rule), were ambiguous
(several candidates, none set) or matched nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backfill.enrich import AMBIGUOUS, Enrichment
from backfill.enrich.change_match import RULE

LISTED = 50  # ambiguous events and unlinked incidents listed by name; the counts cover all


def change_id_summary(enrichment: Enrichment, events: pl.DataFrame) -> dict[str, Any] | None:
    if not enrichment.changes or RULE not in events.columns:
        return None
    looked_at = events.filter(pl.col("env").is_in(list(enrichment.envs)))
    rule = pl.col(RULE)
    ambiguous = rule.str.starts_with(AMBIGUOUS).fill_null(False)
    per_entity = (
        looked_at.group_by("entityId")
        .agg(
            (rule == "source").sum().alias("from_source"),
            rule.str.starts_with("exact").sum().alias("matched_exact"),
            (rule == "window").sum().alias("matched_window"),
            ambiguous.sum().alias("ambiguous"),
            rule.is_null().sum().alias("unmatched"),
        )
        .with_columns((pl.col("matched_exact") + pl.col("matched_window")).alias("matched"))
        .sort("entityId")
    )
    listed = looked_at.filter(ambiguous).sort("_ts").head(LISTED)
    return {
        "envs": list(enrichment.envs),
        "entities": per_entity.select(
            "entityId", "from_source", "matched", "matched_exact", "matched_window", "ambiguous", "unmatched"
        ).to_dicts(),
        "ambiguous_events": [
            {"entityId": entity, "env": env, "build_id": build_id, "timestamp": timestamp, "candidates": said}
            for entity, env, build_id, timestamp, said in listed.select(
                "entityId", "env", "build_id", "timestamp", pl.col(RULE).str.replace(r"^[^:]*:\s*", "")
            ).iter_rows()
        ],
        "change_requests": [
            {"name": report.name, "read": report.read, "used": report.used, "rejected": report.rejects.height}
            for report in enrichment.changes
        ],
    }


def incident_summary(enrichment: Enrichment) -> list[dict[str, Any]]:
    result = []
    for report in enrichment.incidents:
        unlinked = report.links.unlinked
        result.append(
            {
                "name": report.name,
                "read": report.read,
                "rejected": report.rejects.height,
                "linked": report.links.linked.height,
                "linked_by_entity": report.links.linked.group_by("entityId")
                .agg(pl.len().alias("incidents"))
                .sort("entityId")
                .to_dicts(),
                "unlinked": unlinked.height,
                "unlinked_incidents": unlinked.head(LISTED).select("number", "change_id", "reason").to_dicts(),
            }
        )
    return result


def render_enrichment(summary: Mapping[str, Any], console: Console) -> None:
    change_ids = summary.get("change_ids")
    if change_ids:
        envs = ", ".join(change_ids["envs"])
        table = Table(title=f"change_id from ServiceNow ({envs})", title_justify="left")
        names = ("entity", "from source", "matched", "exact", "window", "ambiguous", "unmatched")
        for name in names:
            table.add_column(name, justify="left" if name == "entity" else "right")
        for entity in change_ids["entities"]:
            table.add_row(
                escape(entity["entityId"]),
                *(
                    f"{entity[key]:,}"
                    for key in ("from_source", "matched", "matched_exact", "matched_window", "ambiguous", "unmatched")
                ),
            )
        console.print(table)
        for event in change_ids["ambiguous_events"]:
            console.print(
                f"[yellow]ambiguous:[/yellow] {escape(event['entityId'])}/{event['env']}/{escape(event['build_id'])} "
                f"({event['timestamp']}) could be {escape(event['candidates'])}; no change_id set "
                "(narrow the windows, or give the change an exact id)",
                highlight=False,
                soft_wrap=True,
            )
    for incidents in summary.get("incidents", []):
        console.print(
            f"incidents '{escape(incidents['name'])}': {incidents['read']:,} read, {incidents['linked']:,} linked "
            f"to a deployment, {incidents['unlinked']:,} linked to none, {incidents['rejected']:,} rejected",
            highlight=False,
            soft_wrap=True,
        )
        for incident in incidents["unlinked_incidents"]:
            console.print(
                f"[yellow]unlinked:[/yellow] {escape(incident['number'])}: {escape(incident['reason'])}",
                highlight=False,
                soft_wrap=True,
            )
