"""The report's headline on the terminal: one table, a row per entity."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backfill.report.formatting import duration, number, percent


def render_headline(report: dict[str, Any], console: Console, page: str | None) -> None:
    proxy = report["change_failure_source"] == "proxy"
    table = Table(title=f"DORA baseline ({escape(report['environment'])}), nothing sent", title_justify="left")
    for column in ("entity", "deploys", "per week", "lead time median", "p90", "change failure", "recovery", "rework"):
        table.add_column(column, justify="left" if column == "entity" else "right")
    for entity, figures in report["entities"].items():
        lead = figures["lead_time_hours"]
        table.add_row(
            escape(entity),
            f"{figures['deployments']:,}",
            number(figures["deploys_per_week"], 2),
            duration(lead["median"]) if lead else "no git",
            duration(lead["p90"]) if lead else "",
            percent(figures["change_failure_rate"]) + (" *" if proxy else ""),
            duration(figures["recovery_hours"]),
            percent(figures["rework_rate"]),
        )
    console.print(table)
    if proxy:
        console.print(
            f"* proxy: a deployment followed by a rollback or hotfix within {report['failure_window_hours']:g} h "
            "(no incidents given)",
            highlight=False,
        )
    for entity, figures in report["entities"].items():
        first = figures["data_quality"]["first_deployment"]
        if first and first["in_window"]:
            console.print(
                f"{escape(entity)}: the first deployment ({first['at']}) is left out of lead time; "
                f"its commits ({first['commits']}) have no earlier deployment to start from",
                highlight=False,
            )
    for line in [*report["failures"], *report["warnings"]]:
        console.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)
    if page:
        console.print(f"report written to {escape(page)}", highlight=False)
