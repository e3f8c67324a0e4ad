"""The run summary: one dict for ``--json``, the same facts as tables for people.

Everything here is computed from the plan, restricted to the run's window
(``--since``/``--until``): the events summarized are the events the run plans.
Nothing is counted twice, and the per-source counts always add up:
read = events + skipped + rejected + duplicates + outside_window. An event
outside the window is counted there, after deduplication; skipped and rejected
rows are counted whatever their time (a rejected row's time may be what is
wrong with it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backfill.enrich.summary import change_id_summary, incident_summary, render_enrichment
from backfill.model import TS, RunOutcome
from backfill.normalize.classify import TIMESTAMP_FORMAT
from backfill.plan.dedupe import Plan, RunPlan
from backfill.plan.ledger import within

if TYPE_CHECKING:
    from backfill.load.send import SendResult

# DevGrid's guide: what each attribute is needed for, and what goes wrong without it.
COMPLETENESS = {
    "build_commit_sha": "Lead Time for Change needs build_commit_sha; events without it break Lead Time.",
    "change_id": "Change Failure Rate and Time to Restore need change_id; without it DevGrid cannot "
    "calculate CFR or MTTR.",
}


SUMMARY_COUNTS = ("read", "skipped", "rejected", "duplicates", "outside_window", "events")
Window = tuple[datetime | None, datetime | None]


class DeliverySummary(TypedDict):
    """What a sending run did (``delivery`` in ``--json``)."""

    run_id: int
    destination: str
    already_sent: int
    outside_window: int
    to_send: int
    sent: int
    rejected_by_devgrid: int
    held: int
    unconfirmed: int
    possibly_duplicated: int
    possibly_duplicated_copies: int
    left_to_send: int
    seconds: float
    events_per_second: float | None
    outcome: RunOutcome
    stopped: str | None
    unknown_entities: list[dict[str, Any]]
    rejected_events: list[dict[str, Any]]
    unconfirmed_events: list[dict[str, Any]]
    possibly_duplicated_events: list[dict[str, Any]]


class RunSummary(TypedDict, total=False):
    """``backfill run --json``: the same facts the tables show. A dry run has the review keys and
    ``ledger`` (when a state file exists); a sending run has ``url`` and ``delivery``."""

    mode: Literal["dry-run", "send"]
    config: str
    url: str
    review_csv: str
    rejects_csv: str | None
    skipped_csv: str | None
    ledger: dict[str, Any]
    delivery: DeliverySummary
    window: dict[str, str | None]
    sources: list[dict[str, Any]]
    totals: dict[str, int]
    entities: list[dict[str, Any]]
    completeness: dict[str, dict[str, Any]]
    env_rewrites: list[dict[str, Any]]
    env_rejected: list[dict[str, Any]]
    warnings: list[str]
    errors: list[str]
    change_ids: dict[str, Any]  # with [[enrich]] change requests: matched / ambiguous / unmatched per entity
    incidents: list[dict[str, Any]]  # with [[enrich]] incidents: per entry, read, linked, unlinked


def build_summary(run: RunPlan, extra: Mapping[str, Any] | None = None, window: Window = (None, None)) -> RunSummary:
    plan = run.plan
    events = within(plan.events, *window) if window != (None, None) else plan.events
    counts = _windowed_counts(plan, events)
    summary = cast(RunSummary, dict(extra or {}))
    summary["window"] = {"since": _iso(window[0]), "until": _iso(window[1])}
    summary["sources"] = _sources(plan, counts)
    summary["totals"] = {name: int(counts.get_column(name).sum()) for name in SUMMARY_COUNTS}
    summary["entities"] = _entities(events)
    summary["completeness"] = _completeness(events)
    summary["env_rewrites"] = (
        events.filter(pl.col("original_env") != pl.col("env"))
        .group_by(pl.col("original_env").alias("from"), pl.col("env").alias("to"))
        .agg(pl.len().alias("events"))
        .sort("from", "to")
        .to_dicts()
    )
    env_rejects = plan.rejects.filter(pl.col("reason").str.starts_with("env '"))
    summary["env_rejected"] = (
        env_rejects.group_by(pl.col("env").alias("value")).agg(pl.len().alias("rows")).sort("value").to_dicts()
    )
    change_ids = change_id_summary(run.enrichment, events)
    if change_ids is not None:
        summary["change_ids"] = change_ids
    if run.enrichment.incidents:
        summary["incidents"] = incident_summary(run.enrichment)
    summary["warnings"] = [*run.warnings, *run.enrichment.warnings(), *_warnings(summary, events)]
    summary["errors"] = [str(failure) for failure in run.failures]
    return summary


def delivery_summary(result: SendResult, limit: int = 50) -> DeliverySummary:
    """What a real run did: the counts, and the events a person must look at."""
    report = result.delivery
    stopped = result.stopped
    return {
        "run_id": result.run_id,
        "destination": result.destination.url,
        "already_sent": result.already_sent,
        "outside_window": result.outside_window,
        "to_send": result.to_send,
        "sent": report.sent,
        "rejected_by_devgrid": len(report.rejected),
        "held": len(report.held),
        "unconfirmed": len(report.unconfirmed),
        "possibly_duplicated": len(report.possibly_duplicated),
        "possibly_duplicated_copies": report.most_copies if report.possibly_duplicated else 0,
        "left_to_send": report.left_to_send,
        "seconds": round(result.send_seconds, 3),
        "events_per_second": round(report.sent / result.send_seconds, 1) if result.send_seconds else None,
        "outcome": result.outcome,
        "stopped": str(stopped) if stopped else None,
        "unknown_entities": [
            {"entityId": entity, "reason": reason, "held": sum(1 for key, _ in report.held if key.entity_id == entity)}
            for entity, reason in report.unknown_entities.items()
        ],
        "rejected_events": [{**asdict(key), "message": message} for key, message in report.rejected[:limit]],
        "unconfirmed_events": [asdict(key) for key in report.unconfirmed[:limit]],
        "possibly_duplicated_events": [asdict(key) for key in report.possibly_duplicated[:limit]],
    }


def _windowed_counts(plan: Plan, events: pl.DataFrame) -> pl.DataFrame:
    """The plan's counts per source, with its events split into inside and outside the window."""
    inside = events.group_by("source").agg(pl.len().cast(pl.Int64).alias("_inside"))
    return (
        plan.counts.join(inside, on="source", how="left", maintain_order="left")
        .with_columns(pl.col("_inside").fill_null(0))
        .with_columns((pl.col("events") - pl.col("_inside")).alias("outside_window"), pl.col("_inside").alias("events"))
        .select("source", *SUMMARY_COUNTS)
    )


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant is not None else None


def _sources(plan: Plan, counts: pl.DataFrame) -> list[dict[str, Any]]:
    sources = counts.to_dicts()
    for source in sources:
        reasons = plan.skips.filter(pl.col("source") == source["source"]).sort("rows", descending=True)
        source["skip_reasons"] = dict(zip(reasons.get_column("reason"), reasons.get_column("rows"), strict=True))
    return sources


def _entities(events: pl.DataFrame) -> list[dict[str, Any]]:
    return (
        events.group_by("entityId", "env")
        .agg(
            # The text DevGrid receives, from the instant (a spilled plan's events carry only that).
            pl.col(TS).min().dt.strftime(TIMESTAMP_FORMAT).alias("first"),
            pl.col(TS).max().dt.strftime(TIMESTAMP_FORMAT).alias("last"),
            (pl.col("status") == "success").sum().alias("success"),
            (pl.col("status") == "failed").sum().alias("failed"),
            pl.col("build_commit_sha").sort_by(TS).first().alias("first_commit"),
        )
        .sort("entityId", "env")
        .to_dicts()
    )


def _completeness(events: pl.DataFrame) -> dict[str, dict[str, Any]]:
    total = events.height
    result = {}
    for name in COMPLETENESS:
        present = int(events.get_column(name).is_not_null().sum())
        result[name] = {
            "present": present,
            "missing": total - present,
            "percent": round(100.0 * present / total, 1) if total else None,
        }
    return result


def _warnings(summary: RunSummary, events: pl.DataFrame) -> list[str]:
    warnings = []
    for name, why in COMPLETENESS.items():
        missing = summary["completeness"][name]["missing"]
        if missing:
            warnings.append(f"{missing} of {events.height} events have no {name}. {why}")
    for entity in summary["entities"]:
        if entity["env"] == "production" and entity["first_commit"]:
            warnings.append(
                f"{entity['entityId']}/{entity['env']}: DevGrid may count every commit before "
                f"{entity['first_commit'][:12]} in the lead time of the first imported deployment "
                f"({entity['first']}); expect that one to look slow."
            )
    return warnings


def render(summary: RunSummary, console: Console) -> None:
    """Print the summary as tables, for a person reading a terminal or a CI log."""
    window = summary["window"]
    windowed = window["since"] is not None or window["until"] is not None
    columns = SUMMARY_COUNTS if windowed else tuple(name for name in SUMMARY_COUNTS if name != "outside_window")
    sources = Table(title="Sources", title_justify="left")
    sources.add_column("source")
    for name in columns:
        sources.add_column(name.replace("_", " "), justify="right")
    for source in summary["sources"]:
        sources.add_row(escape(source["source"]), *(f"{source[name]:,}" for name in columns))
    totals = summary["totals"]
    sources.add_row("total", *(f"{totals[name]:,}" for name in columns), style="bold")
    console.print(sources)
    if windowed:
        bounds = " ".join(f"--{name} {window[name]}" for name in ("since", "until") if window[name] is not None)
        say(
            console,
            "window",
            f"{bounds}: {totals['outside_window']:,} events outside it are left out of this summary and this run",
        )

    if summary["entities"]:
        entities = Table(title="Events by entity and environment", title_justify="left")
        for name in ("entity", "env", "first", "last", "success", "failed"):
            entities.add_column(name, justify="right" if name in ("success", "failed") else "left")
        for entity in summary["entities"]:
            entities.add_row(
                escape(entity["entityId"]),
                entity["env"],
                entity["first"],
                entity["last"],
                f"{entity['success']:,}",
                f"{entity['failed']:,}",
            )
        console.print(entities)

    fields = Table(title="Attributes DevGrid's metrics need", title_justify="left")
    for name in ("attribute", "present", "missing", "complete"):
        fields.add_column(name, justify="left" if name == "attribute" else "right")
    for name, counts in summary["completeness"].items():
        percent = "-" if counts["percent"] is None else f"{counts['percent']}%"
        fields.add_row(name, f"{counts['present']:,}", f"{counts['missing']:,}", percent)
    console.print(fields)

    render_enrichment(summary, console)

    if summary["env_rewrites"] or summary["env_rejected"]:
        envs = Table(title="Environment names", title_justify="left")
        for name in ("as written", "sent as", "rows"):
            envs.add_column(name, justify="right" if name == "rows" else "left")
        for rewrite in summary["env_rewrites"]:
            envs.add_row(escape(rewrite["from"]), rewrite["to"], f"{rewrite['events']:,}")
        for rejected in summary["env_rejected"]:
            envs.add_row(escape(str(rejected["value"])), "[red]rejected[/red]", f"{rejected['rows']:,}")
        console.print(envs)

    if "delivery" in summary:
        _render_delivery(summary["delivery"], console)
        if summary["delivery"]["stopped"]:
            console.print(
                f"[red]stopped:[/red] {escape(summary['delivery']['stopped'])}", highlight=False, soft_wrap=True
            )
    if "ledger" in summary:
        ledger = summary["ledger"]
        console.print(f"state: {ledger['new']:,} new, {ledger['sent']:,} already sent (the review's state column)")
    if summary.get("review_csv") == "-":
        say(console, "review", "written to stdout")
    elif summary.get("review_csv"):
        say(console, "review", str(summary["review_csv"]))
    if summary.get("rejects_csv"):
        say(console, "rejects", str(summary["rejects_csv"]))
    elif "review_csv" in summary:
        say(
            console,
            "rejects",
            f"{totals['rejected']:,} rows rejected, counted above but written nowhere (--rejects PATH writes them)",
        )
    if summary.get("skipped_csv"):
        say(console, "skipped", str(summary["skipped_csv"]))
    for warning in summary["warnings"]:
        say(console, "warning", warning, "yellow")
    for error in summary["errors"]:
        say(console, "error", error, "red")


def _render_delivery(delivery: DeliverySummary, console: Console) -> None:
    table = Table(
        title=f"Delivery to {escape(delivery['destination'])} (run {delivery['run_id']})", title_justify="left"
    )
    table.add_column("")
    table.add_column("events", justify="right")
    rows = [
        ("already sent (in the ledger)", delivery["already_sent"]),
        ("outside --since/--until", delivery["outside_window"]),
        ("to send", delivery["to_send"]),
        ("sent (DevGrid stored them)", delivery["sent"]),
        ("refused by DevGrid", delivery["rejected_by_devgrid"]),
        ("held back (entity unknown to DevGrid)", delivery["held"]),
        ("unconfirmed (201 not understood)", delivery["unconfirmed"]),
        ("possibly duplicated", delivery["possibly_duplicated"]),
        ("left to send", delivery["left_to_send"]),
    ]
    for label, count in rows:
        table.add_row(label, f"{count:,}")
    console.print(table)
    if delivery["events_per_second"]:
        rate = f"sent in {delivery['seconds']:.1f} s ({delivery['events_per_second']:,.0f} events/s)"
        console.print(rate, highlight=False)
    for entity in delivery["unknown_entities"]:
        say(
            console,
            "unknown entity",
            f"DevGrid does not know entity '{entity['entityId']}' ({entity['reason']})"
            + (f"; {entity['held']:,} more of its events were held back, not sent" if entity["held"] else "")
            + ". Create the entity in DevGrid, or fix entity_id / entity_column, then run again with --retry-rejected",
            "red",
        )
    for event in delivery["rejected_events"]:
        say(console, "refused", f"{event['entity_id']}/{event['env']}/{event['build_id']}: {event['message']}", "red")
    for event in delivery["unconfirmed_events"]:
        key = f"{event['entity_id']}/{event['env']}/{event['build_id']}"
        say(console, "unconfirmed", f"{key} (DevGrid answered 201 without saying which events it stored)", "yellow")
    for event in delivery["possibly_duplicated_events"]:
        key = f"{event['entity_id']}/{event['env']}/{event['build_id']}"
        say(console, "possibly duplicated", f"{key} (sent again after an answer that never came)", "yellow")
    if delivery["possibly_duplicated_copies"] > 2:
        say(
            console,
            "possibly duplicated",
            f"some events may be stored up to {delivery['possibly_duplicated_copies']} times: their batch was sent "
            "again by several runs that could not record DevGrid's answer (a full disk?)",
            "yellow",
        )


def say(console: Console, label: str, text: str, style: str | None = None) -> None:
    """One line, never wrapped (people grep CI logs for them); the text is shown as it is, not as markup."""
    shown = f"[{style}]{label}:[/{style}]" if style else f"{label}:"
    console.print(f"{shown} {escape(text)}", highlight=False, soft_wrap=True)
