"""``backfill status``: what the state file knows, per destination, for people and for ``--json``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backfill.config import Config
from backfill.report.summary import say
from backfill.state.remote import fetch_working_copy
from backfill.state.store import SOURCE_COUNTS, Destination, Store


def status_of(config: Config, notice: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """What ``backfill status`` shows: the state file read (and checked) without a lock, never written."""
    fetch_working_copy(config, notice)  # with [state] url: the object, read without its lock
    store = Store.open(Path(config.state.path), create=False, verify=True)
    try:
        return status_report(config, store)
    finally:
        if store is not None:
            store.close()


def status_report(config: Config, store: Store | None) -> dict[str, Any]:
    report: dict[str, Any] = {"state": config.state.path, "exists": store is not None, "destinations": []}
    if store is None:
        return report
    with store.snapshot():  # one moment of the file, though a run may be writing it
        report["destinations"] = [_destination(config, store, destination) for destination in store.destinations()]
    return report


def _destination(config: Config, store: Store, destination: Destination) -> dict[str, Any]:
    cursors = store.cursors(destination.id)
    counts = store.by_source(destination.id)
    names = [source.name for source in config.sources]
    names += sorted(name for name in counts.keys() | cursors.keys() if name and name not in names)
    return {
        "url": destination.url,
        "account": destination.account,
        "sources": [
            {
                "source": name,
                "cursor": cursors[name].strftime("%Y-%m-%dT%H:%M:%SZ") if name in cursors else None,
                **counts.get(name, dict.fromkeys(SOURCE_COUNTS, 0)),
            }
            for name in names
        ],
        "entities": store.sent_ranges(destination.id),
        "runs": store.recent_runs(destination.id),
        "pending_batches": [
            {"id": batch.id, "run_id": batch.run_id, "events": len(json.loads(batch.body)["events"])}
            for batch in store.pending_batches(destination.id)
        ],
        "refused_events": store.refused_events(destination.id).to_dicts(),
        "possibly_duplicated": [asdict(key) for key in store.flagged(destination.id, "possibly_duplicated")],
        "unconfirmed": [asdict(key) for key in store.flagged(destination.id, "unconfirmed")],
    }


def render_status(report: dict[str, Any], console: Console) -> None:
    if not report["exists"]:
        console.print(f"{escape(report['state'])} does not exist yet: nothing has been sent.", highlight=False)
        return
    if not report["destinations"]:
        console.print(f"{escape(report['state'])} holds no destination yet: nothing has been sent.", highlight=False)
    for destination in report["destinations"]:
        _render_destination(destination, console)


def _render_destination(report: dict[str, Any], console: Console) -> None:
    account = f" (account {report['account']})" if report["account"] else ""
    console.rule(f"[bold]{escape(report['url'])}[/bold]{account}", align="left")
    sources = Table(title="Sources", title_justify="left")
    columns = ("source", "cursor", "sent", "pending", "refused", "held", "possibly duplicated", "unconfirmed")
    for name in columns:
        sources.add_column(name, justify="left" if name in ("source", "cursor") else "right")
    for source in report["sources"]:
        sources.add_row(
            escape(source["source"]),
            source["cursor"] or "-",
            *(f"{source[name.replace(' ', '_')]:,}" for name in columns[2:]),
        )
    console.print(sources)
    if report["entities"]:
        entities = Table(title="Sent, by entity and environment", title_justify="left")
        for name in ("entity", "env", "first", "last", "sent"):
            entities.add_column(name, justify="right" if name == "sent" else "left")
        for entity in report["entities"]:
            entities.add_row(
                escape(entity["entityId"]), entity["env"], entity["first"], entity["last"], f"{entity['sent']:,}"
            )
        console.print(entities)
    if report["runs"]:
        runs = Table(title="Last runs", title_justify="left")
        numbers = ("sent", "refused", "held", "possibly dup.", "left")
        for name in ("run", "started", "outcome", *numbers, "message"):
            runs.add_column(name, justify="right" if name == "run" or name in numbers else "left")
        for run in report["runs"]:
            runs.add_row(
                str(run["id"]),
                run["started_at"][:19] + "Z",
                run["outcome"],
                *(f"{run[name]:,}" for name in ("sent", "rejected", "held", "possibly_duplicated", "left_to_send")),
                escape(run["message"] or ""),
            )
        console.print(runs)
    for batch in report["pending_batches"]:
        say(
            console,
            "pending",
            f"batch {batch['id']} of run {batch['run_id']} ({batch['events']} events) was never answered; "
            "the next run to this destination sends it again",
        )
    for event in report["refused_events"]:
        key = f"{event['entityId']}/{event['env']}/{event['build_id']}"
        label = "refused" if event["state"] == "refused" else "held"
        say(console, label, f"{key} ({event['timestamp']}): {event['message'] or ''}")
    for flag, why in (
        ("possibly_duplicated", "were sent again after an answer that never came"),
        ("unconfirmed", "were sent on a 201 whose body did not say which events DevGrid stored"),
    ):
        if report[flag]:
            say(console, flag.replace("_", " "), f"{len(report[flag])} events {why} (--json lists them)")
