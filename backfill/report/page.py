"""The report as one self-contained HTML page: static SVG charts, a table under each, no script.

Charts are Vega-Lite specs rendered to SVG here, by ``vl-convert-python``
(Vega-Lite and its renderer compiled in, no browser, no network). The page
therefore needs no JavaScript at all: it draws the same with scripts off, in
a mail client or a CI artefact viewer, and its Content-Security-Policy forbids
every fetch (``default-src 'none'``), so nothing it holds can reach out. Each
chart's numbers are also in the table beneath it.
"""

from __future__ import annotations

import html
import os
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from backfill.report.dora import KINDS
from backfill.report.formatting import duration as _duration
from backfill.report.formatting import number as _num
from backfill.report.formatting import percent as _pct
from backfill.report.levels import SURVEY

# The page stays under 2 MB: charts fill what the text and tables leave of this.
PAGE_BUDGET = 1_900_000
COLOURS = {"deployment": "#4c78a8", "hotfix": "#f58518", "rollback": "#b279a2", "failed": "#e45756"}
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:60rem;
padding:0 1rem;color:#222;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:2px solid #4c78a8;padding-bottom:.2rem;margin-top:2.5rem}
h3{margin-top:1.5rem}table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f5f8}
figure{margin:1rem 0 .3rem}figcaption{font-size:.85rem;color:#555}
.note{font-size:.85rem;color:#555}.proxy{background:#fff4e0;padding:0 .25rem}
details{margin:.3rem 0 1rem}summary{cursor:pointer;color:#335}
"""


def write_page(report: dict[str, Any], path: Path) -> None:
    """Write the page to ``path`` through a temporary file beside it, so a failure leaves no half page."""
    text = render_page(report)
    folder = path.parent
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.chmod(temporary, 0o644)  # a page to share, like any file written here (mkstemp makes it private)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def render_page(report: dict[str, Any]) -> str:
    """The page; charts, busiest entities first, as long as the whole stays within PAGE_BUDGET bytes."""
    bare = _page(report, {})
    return _page(report, _charts(report["entities"], PAGE_BUDGET - len(bare.encode())))


def _page(report: dict[str, Any], charts: dict[tuple[str, str], str | None]) -> str:
    window = report["window"]
    span = f"{window['since'] or 'the first event'} to {window['until'] or 'the last event'}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>DORA baseline: backfill report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>DORA baseline, before anything is sent</h1>",
        f"<p class=note>From {_e(report['config'])}, planned as a dry run plans: nothing was sent and no state was "
        f"written. Environment <b>{_e(report['environment'])}</b>; window {_e(span)}. Levels are the nearest of the "
        f"{_e(SURVEY)}, which are clusters of survey answers, not thresholds.</p>",
    ]
    if report["change_failure_source"] == "proxy":
        parts.append(
            f"<p class=note><span class=proxy>Change failure rate and recovery time are a proxy</span>: no incidents "
            f"were given, so a deployment followed by a rollback or hotfix within {report['failure_window_hours']:g} "
            "hours counts as failed, and as recovered when that rollback or hotfix went out. DevGrid computes these "
            "from incidents linked by change_id instead.</p>"
        )
    if not report["entities"]:
        parts.append("<p>No event was planned, so there is nothing to measure.</p>")
    for entity, figures in report["entities"].items():
        parts.append(_entity(entity, figures, report["environment"], charts))
    if charts and any(svg is None for svg in charts.values()):
        parts.append(
            "<p class=note>Some charts were left out to keep the page under 2 MB (the entities with the most "
            "deployments keep theirs); the table under each holds its numbers.</p>"
        )
    parts.append(_quality(report))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _charts(entities: dict[str, Any], budget: int) -> dict[tuple[str, str], str | None]:
    """Each entity's charts as SVG, those of the entities with most deployments first, within ``budget`` bytes.

    A chart that would take the charts past the budget is None: its table alone is shown.
    """
    specs: list[tuple[tuple[str, str], dict[str, Any]]] = []
    for entity, figures in sorted(entities.items(), key=lambda item: (-item[1]["deployments"], item[0])):
        if figures["weeks"]:
            specs.append(((entity, "weekly"), _weekly_spec(figures["weeks"])))
        if figures["lead_time_buckets"] and figures["lead_time_hours"]["commits"]:
            specs.append(((entity, "lead"), _lead_spec(figures["lead_time_buckets"])))
    charts: dict[tuple[str, str], str | None] = {}
    spent = 0
    for key, spec in specs:
        svg = _svg(spec) if spent < budget else None
        # The figure around the SVG and the note it replaces take a few hundred bytes more.
        size = len(svg.encode()) + 400 if svg is not None else 0
        if spent + size > budget:
            svg, size = None, 0
        spent += size
        charts[key] = svg
    return charts


def _entity(entity: str, figures: dict[str, Any], environment: str, charts: dict[tuple[str, str], str | None]) -> str:
    anchor = _e(entity)
    parts = [f'<section class=entity id="entity-{anchor}"><h2>{anchor}</h2>', _headline(figures)]
    weeks = figures["weeks"]
    if weeks:
        parts.append(
            _figure(f"weekly-{entity}", charts.get((entity, "weekly")), "Successful and failed deployments per week")
        )
        rows = [[week["week"], *(week[kind] for kind in KINDS)] for week in weeks]
        parts.append(_details("The weekly counts", ["week (Monday, UTC)", *KINDS], rows))
    else:
        parts.append(f"<p>No {_e(environment)} deployment in the window.</p>")
    buckets = figures["lead_time_buckets"]
    if buckets and figures["lead_time_hours"]["commits"]:
        parts.append(
            _figure(
                f"lead-{entity}",
                charts.get((entity, "lead")),
                "Commits by lead time (deployment time - committer time)",
            )
        )
        parts.append(_table(["lead time", "commits"], [[b["bucket"], b["commits"]] for b in buckets]))
    parts.append(_entity_quality(figures))
    parts.append("</section>")
    return "\n".join(parts)


def _headline(figures: dict[str, Any]) -> str:
    lead = figures["lead_time_hours"]
    deploy_commit = figures["lead_time_deploy_commit_hours"]
    levels = figures["levels"]
    proxy = " (proxy)" if figures["change_failure_source"] == "proxy" else ""
    rows = [
        [
            "Deployment frequency",
            f"{_num(figures['deploys_per_day'], 3)} / day, {_num(figures['deploys_per_week'], 2)} / week, "
            f"{_num(figures['deploys_per_month'], 1)} / month ({figures['deployments']} successful in "
            f"{_num(figures['window_days'], 1)} days); mean {_duration(figures['mean_hours_between'])} between",
            _level(levels["deploys_per_day"]),
            "successful deployments, rollbacks and hotfixes included, failed runs not; N / days in window",
        ],
        [
            "Change lead time",
            (
                f"median {_duration(lead['median'])}, p75 {_duration(lead['p75'])}, p90 {_duration(lead['p90'])} "
                f"over {lead['commits']} commits"
                if lead
                else "no git repository for this entity"
            ),
            _level(levels["lead_time_hours"]),
            "per commit a deployment shipped first: deployment time - committer time",
        ],
        [
            "Lead time, deploy commit only",
            f"median {_duration(deploy_commit['median'])}, p90 {_duration(deploy_commit['p90'])} over "
            f"{deploy_commit['deployments']} deployments"
            if deploy_commit
            else "-",
            "",
            "deployment time - committer time of the deployed commit alone",
        ],
        [
            f"Change failure rate{proxy}",
            f"{_pct(figures['change_failure_rate'])} ({figures['failed_changes']} of {figures['deployments']})",
            _level(levels["change_failure_rate"]),
            "followed by a rollback or hotfix" if proxy else "named by an incident's change_id",
        ],
        [
            f"Failed deployment recovery time{proxy}",
            f"median {_duration(figures['recovery_hours'])} over {figures['recoveries']} recoveries",
            _level(levels["recovery_hours"]),
            "until the rollback or hotfix" if proxy else "incident resolved_at - opened_at",
        ],
        [
            "Deployment rework rate",
            f"{_pct(figures['rework_rate'])} ({figures['hotfixes']} hotfixes, {figures['rollbacks']} rollbacks)",
            "no 2024 survey cluster",
            "hotfix and rollback deployments / successful deployments",
        ],
    ]
    return _table(["metric", "value", "nearest survey cluster", "source rule"], rows, cls="headline")


def _entity_quality(figures: dict[str, Any]) -> str:
    quality = figures["data_quality"]
    skipped = quality["not_counted"]
    rows = [
        ["successful deployments in the window", quality["successful_deployments"]],
        ["with build_commit_sha", _pct(quality["with_build_commit_sha"])],
        ["whose commit git resolves", _pct(quality["resolvable_in_git"])],
        ["with change_id", _pct(quality["with_change_id"])],
        ["failed deployments (DevGrid counts no frequency for them)", skipped["failed_deployments"]],
        ["events of other environments (not in these metrics)", skipped["other_environments"]],
        [
            "successful deployments without build_commit_sha (no lead time in DevGrid)",
            skipped["without_build_commit_sha"],
        ],
        ["successful deployments without change_id (no incident can name them)", skipped["without_change_id"]],
    ]
    lead = figures["lead_time_hours"]
    if lead:
        rows.append(["deployments whose SHA git cannot resolve", lead["unresolved_deployments"]])
    parts = ["<h3>Data quality</h3>", _table(["", "count or share"], rows)]
    first = quality["first_deployment"]
    if first:
        parts.append(
            f"<p class=note>The first deployment git knows ({_e(first['at'])}, "
            f"{_e(str(first['build_commit_sha'])[:12])}) is left out of lead time: it would count its "
            f"{first['commits']} commits, all history before it, as shipped by it. DevGrid has no earlier "
            "deployment either, so it may count them.</p>"
        )
    return "\n".join(parts)


def _quality(report: dict[str, Any]) -> str:
    parts = ["<section id=rows><h2>Rows that are not events</h2>"]
    for title, rows in (("Rejected", report["rejected"]), ("Skipped", report["skipped"])):
        parts.append(f"<h3>{title}: {sum(row['rows'] for row in rows)} rows</h3>")
        if rows:
            parts.append(_table(["reason", "rows"], [[row["reason"], row["rows"]] for row in rows]))
    if report["failures"] or report["warnings"]:
        parts.append("<h3>Warnings</h3><ul>")
        parts += [f"<li>{_e(line)}</li>" for line in [*report["failures"], *report["warnings"]]]
        parts.append("</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _weekly_spec(weeks: list[dict[str, Any]]) -> dict[str, Any]:
    # A time axis labels a few dates, not every week: drawing text is most of the rendering time.
    # A bar of 0 draws nothing, so only counts above 0 are drawn; the axis still spans every week.
    values = [
        {"week": week["week"], "end": _week_end(week["week"]), "kind": kind, "order": index, "n": week[kind]}
        for week in weeks
        for index, kind in enumerate(KINDS)
        if week[kind]
    ]
    domain = [weeks[0]["week"], _week_end(weeks[-1]["week"])]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "width": 720,
        "height": 220,
        "data": {"values": values},
        "mark": {"type": "bar", "stroke": "white", "strokeWidth": 1},
        "encoding": {
            "x": {
                "field": "week",
                "type": "temporal",
                "scale": {"type": "utc", "domain": domain},
                "title": "week (from Monday, UTC)",
                "axis": {"format": "%Y-%m-%d", "labelAngle": 0},
            },
            "x2": {"field": "end"},
            "y": {"field": "n", "type": "quantitative", "aggregate": "sum", "title": "deployments"},
            "color": {
                "field": "kind",
                "type": "nominal",
                "title": None,
                "scale": {"domain": list(KINDS), "range": [COLOURS[kind] for kind in KINDS]},
            },
            "order": {"field": "order", "sort": "ascending"},
        },
    }


def _week_end(monday: str) -> str:
    return (date.fromisoformat(monday) + timedelta(days=7)).isoformat()


def _lead_spec(buckets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "width": 720,
        "height": 180,
        "data": {"values": buckets},
        "mark": {"type": "bar", "color": COLOURS["deployment"]},
        "encoding": {
            "x": {"field": "bucket", "type": "ordinal", "sort": None, "title": "lead time", "axis": {"labelAngle": 0}},
            "y": {"field": "commits", "type": "quantitative", "title": "commits"},
        },
    }


def _svg(spec: dict[str, Any]) -> str:
    import vl_convert

    return str(vl_convert.vegalite_to_svg(spec))


def _figure(name: str, svg: str | None, caption: str) -> str:
    if svg is None:
        return f"<p class=note>{_e(caption)}: chart left out to keep the page small; the table holds its numbers.</p>"
    return f'<figure class=chart data-chart="{_e(name)}">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


def _table(header: list[str], rows: list[list[Any]], cls: str = "data") -> str:
    head = "".join(f"<th>{_e(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in rows)
    return f"<table class={cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _details(summary: str, header: list[str], rows: list[list[Any]]) -> str:
    return f"<details open><summary>{_e(summary)}</summary>{_table(header, rows)}</details>"


def _cell(value: Any) -> str:
    if isinstance(value, int):
        return f"<td class=n>{value:,}</td>"
    return f"<td>{_e(str(value))}</td>"


def _level(level: dict[str, Any] | None) -> str:
    return f"{level['cluster']} ({level['said']})" if level else "-"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
