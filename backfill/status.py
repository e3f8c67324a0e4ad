"""``backfill status``: what the state file knows, for people and for ``--json``."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backfill.config import Config
from backfill.state.store import Store
from backfill.summary import say


def status_report(config: Config, store: Store | None) -> dict[str, Any]:
    report: dict[str, Any] = {"state": config.state.path, "exists": store is not None}
    if store is None:
        report.update(sources=[{"source": source.name, "cursor": None} for source in config.sources])
        report.update(entities=[], runs=[], pending_batches=[], rejected_events=[], possibly_duplicated=[])
        return report
    cursors = store.cursors()
    counts = store.sent_by_source()
    names = [source.name for source in config.sources]
    names += sorted(name for name in counts.keys() | cursors.keys() if name and name not in names)
    report["sources"] = [
        {
            "source": name,
            "cursor": cursors[name].strftime("%Y-%m-%dT%H:%M:%SZ") if name in cursors else None,
            **counts.get(name, {"sent": 0, "pending": 0, "rejected": 0, "possibly_duplicated": 0}),
        }
        for name in names
    ]
    report["entities"] = store.sent_ranges()
    report["runs"] = store.recent_runs()
    report["pending_batches"] = [
        {"id": batch.id, "run_id": batch.run_id, "events": len(json.loads(batch.body)["events"])}
        for batch in store.pending_batches()
    ]
    report["rejected_events"] = store.rejected_events().to_dicts()
    report["possibly_duplicated"] = [asdict(key) for key in store.possibly_duplicated()]
    return report


def render_status(report: dict[str, Any], console: Console) -> None:
    if not report["exists"]:
        console.print(f"{escape(report['state'])} does not exist yet: nothing has been sent.", highlight=False)
        return
    sources = Table(title="Sources", title_justify="left")
    for name in ("source", "cursor", "sent", "pending", "refused", "possibly duplicated"):
        sources.add_column(name, justify="left" if name in ("source", "cursor") else "right")
    for source in report["sources"]:
        sources.add_row(
            escape(source["source"]),
            source["cursor"] or "-",
            f"{source['sent']:,}",
            f"{source['pending']:,}",
            f"{source['rejected']:,}",
            f"{source['possibly_duplicated']:,}",
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
        for name in ("run", "started", "outcome", "sent", "refused", "possibly dup.", "left", "message"):
            runs.add_column(
                name, justify="right" if name in ("run", "sent", "refused", "possibly dup.", "left") else "left"
            )
        for run in report["runs"]:
            runs.add_row(
                str(run["id"]),
                run["started_at"][:19] + "Z",
                run["outcome"],
                f"{run['sent']:,}",
                f"{run['rejected']:,}",
                f"{run['possibly_duplicated']:,}",
                f"{run['left_to_send']:,}",
                escape(run["message"] or ""),
            )
        console.print(runs)
    for batch in report["pending_batches"]:
        say(
            console,
            "pending",
            f"batch {batch['id']} of run {batch['run_id']} ({batch['events']} events) was never answered; "
            "the next run sends it again",
        )
    for event in report["rejected_events"]:
        key = f"{event['entityId']}/{event['env']}/{event['build_id']}"
        say(console, "refused", f"{key} ({event['timestamp']}): {event['message'] or ''}")
    if report["possibly_duplicated"]:
        say(
            console,
            "possibly duplicated",
            f"{len(report['possibly_duplicated'])} events were sent again after an answer that never came "
            "(--json lists them)",
        )
