"""The report as one JSON-ready document: plan as a dry run does, measure, place beside the survey.

:func:`make_report` reads every source and plans exactly as ``run --dry-run``
does (nothing is sent, the state file is neither opened nor written), then
computes per entity what :mod:`.dora` and :mod:`.lead_time` define. The page,
the terminal headline and ``--json`` all render this one document.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from backfill.config import Config
from backfill.enrich.incidents import read_all_incidents
from backfill.enrich.settings import Incidents
from backfill.errors import ConfigError
from backfill.extract.git.remote import clone_path, is_url, without_credentials
from backfill.extract.git_tags import GitTagsSource
from backfill.job import Step, no_progress, plan_run
from backfill.model import TS
from backfill.plan.dedupe import RunPlan
from backfill.report import dora, levels
from backfill.report.lead_time import GitWalkError, Shipped, shipped

SCHEMA_VERSION = 1
# Lead time buckets for the chart, in hours: (label, upper bound).
LEAD_BUCKETS = (
    ("< 1 hour", 1.0),
    ("1 hour - 1 day", 24.0),
    ("1 - 7 days", 168.0),
    ("7 - 30 days", 720.0),
    ("30 - 182 days", 4368.0),
    (">= 182 days", float("inf")),
)


def make_report(
    config: Config,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    entities: Sequence[str] = (),
    incidents: pl.DataFrame | None = None,
    step: Step = no_progress,
    notice: Callable[[str], None] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Plan like a dry run, then measure; see the module docstring and the README's Report section."""
    environment = config.report.environment
    if environment not in config.normalize.environments:
        raise ConfigError(
            f"{config.path}: report.environment: '{environment}' is not one of "
            f"{', '.join(config.normalize.environments)}"
        )
    run = plan_run(config, now=now, step=step, notice=notice)
    if incidents is None and any(isinstance(entry, Incidents) for entry in config.enrich):
        # The incidents the config's [[enrich]] entries read: change failure rate and recovery come from them.
        with step("reading incidents"):
            incidents = read_all_incidents(config.enrich, warn=run.warnings.append)
    result = measure(config, run, since=since, until=until, entities=entities, incidents=incidents, step=step)
    result["exit_code"] = run.exit_code
    return result


def measure(
    config: Config,
    run: RunPlan,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    entities: Sequence[str] = (),
    incidents: pl.DataFrame | None = None,
    step: Step = no_progress,
) -> dict[str, Any]:
    """The report of an existing plan (what :func:`make_report` does after planning)."""
    events = run.plan.events
    known = events.get_column("entityId").unique().sort().to_list()
    if entities:
        missing = [name for name in entities if name not in known]
        if missing:
            raise ConfigError(
                f"--entity {missing[0]}: no planned event has this entityId; the entities are: "
                f"{', '.join(known) or 'none'}"
            )
        events = events.filter(pl.col("entityId").is_in(list(entities)))
        known = [name for name in known if name in entities]
    settings = config.report
    deploys = dora.production(events, settings.environment)
    window_rows = deploys.filter(dora.in_window(deploys, since, until))
    window = dora.windows(window_rows, since, until, known)
    frequency = {row["entityId"]: row for row in dora.frequency(window_rows, window).iter_rows(named=True)}
    weeks = dora.weekly(window_rows, window)
    if incidents is not None:
        incidents = incidents.select(*(pl.col(name).cast(kind) for name, kind in dora.INCIDENT_SCHEMA.items()))
        failures = dora.incident_failures(deploys, incidents, since, until)
    else:
        failures = dora.proxy_failures(deploys, since, until, settings.failure_window_hours)
    failures_by = {row["entityId"]: row for row in failures.iter_rows(named=True)}
    warnings = list(run.warnings)
    lead = _lead_times(config, deploys, known, since, until, step, warnings)
    # One split per frame, not one filter per entity: a plan can hold thousands of entities.
    weeks_of = _by_entity(weeks)
    deploys_of = _by_entity(window_rows)
    events_of = _by_entity(events.filter(_event_window(since, until)).select("entityId", "env"))
    report_entities: dict[str, Any] = {}
    for entity in known:
        report_entities[entity] = _entity(
            entity,
            frequency.get(entity),
            weeks_of.get(entity, weeks.clear()),
            failures_by.get(entity),
            lead.get(entity),
            deploys_of.get(entity, window_rows.clear()),
            events_of.get(entity, pl.DataFrame(schema={"entityId": pl.String, "env": pl.String})),
            settings.environment,
            incidents is not None,
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "config": str(config.path),
        "environment": settings.environment,
        "window": {"since": _iso(since), "until": _iso(until)},
        "change_failure_source": "incidents" if incidents is not None else "proxy",
        "failure_window_hours": None if incidents is not None else settings.failure_window_hours,
        "entities": report_entities,
        "rejected": _by_reason(run.plan.rejects.group_by("reason").agg(pl.len().alias("rows"))),
        "skipped": _by_reason(run.plan.skips.group_by("reason").agg(pl.col("rows").sum())),
        "failures": [str(failure) for failure in run.failures],
        "warnings": warnings,
    }


def _by_entity(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {str(key[0]): part for key, part in frame.partition_by("entityId", as_dict=True).items()}


def _event_window(since: datetime | None, until: datetime | None) -> pl.Expr:
    keep = pl.lit(True)
    if since is not None:
        keep = keep & (pl.col(TS) >= since)
    if until is not None:
        keep = keep & (pl.col(TS) < until)
    return keep


def _entity(
    entity: str,
    frequency: dict[str, Any] | None,
    weeks: pl.DataFrame,
    failures: dict[str, Any] | None,
    lead: dict[str, Any] | None,
    deploys: pl.DataFrame,
    events: pl.DataFrame,
    environment: str,
    from_incidents: bool,
) -> dict[str, Any]:
    count = int(frequency["deployments"]) if frequency else 0
    successes = deploys.filter(pl.col("status") == "success")
    failed_changes = int(failures["failed_changes"]) if failures and failures["failed_changes"] is not None else 0
    recovery = pl.Series("recovery", (failures or {}).get("recovery") or [], dtype=pl.Float64)
    cfr = failed_changes / count if count else None
    recovery_hours = dora.quantiles(recovery)["median"]
    lead_hours = lead["lead_time_hours"] if lead else None
    with_sha = int(successes.get_column("build_commit_sha").is_not_null().sum())
    with_change = int(successes.get_column("change_id").is_not_null().sum())
    result: dict[str, Any] = {
        "deployments": count,
        "failed_deployments": int(frequency["failed_deployments"]) if frequency else 0,
        "hotfixes": int(frequency["hotfixes"]) if frequency else 0,
        "rollbacks": int(frequency["rollbacks"]) if frequency else 0,
        "window_days": _float(frequency, "window_days"),
        "deploys_per_day": _float(frequency, "deploys_per_day"),
        "deploys_per_week": _float(frequency, "deploys_per_week"),
        "deploys_per_month": _float(frequency, "deploys_per_month"),
        "mean_hours_between": _float(frequency, "mean_hours_between"),
        "lead_time_hours": lead_hours,
        "lead_time_deploy_commit_hours": lead["deploy_commit_hours"] if lead else None,
        "change_failure_rate": cfr,
        "change_failure_source": "incidents" if from_incidents else "proxy",
        "failed_changes": failed_changes,
        "recovery_hours": recovery_hours,
        "recoveries": recovery.len(),
        "open_incidents": int((failures or {}).get("open_incidents") or 0) if from_incidents else None,
        "rework_rate": _float(frequency, "rework_rate"),
        "levels": {
            "deploys_per_day": levels.place("deploys_per_day", _float(frequency, "deploys_per_day")),
            "lead_time_hours": levels.place("lead_time_hours", lead_hours["median"] if lead_hours else None),
            "change_failure_rate": levels.place("change_failure_rate", cfr),
            "recovery_hours": levels.place("recovery_hours", recovery_hours),
            "rework_rate": None,
        },
        "weeks": [
            {"week": row["week"].isoformat(), **{kind: row[kind] for kind in dora.KINDS}}
            for row in weeks.iter_rows(named=True)
        ],
        "lead_time_buckets": lead["buckets"] if lead else None,
        "data_quality": {
            "successful_deployments": count,
            "with_build_commit_sha": _share(with_sha, count),
            "resolvable_in_git": lead["resolvable_share"] if lead else None,
            "with_change_id": _share(with_change, count),
            "not_counted": {
                "failed_deployments": int(frequency["failed_deployments"]) if frequency else 0,
                "other_environments": events.filter(pl.col("env") != environment).height,
                "without_build_commit_sha": count - with_sha,
                "without_change_id": count - with_change,
            },
            "first_deployment": lead["first_deployment"] if lead else None,
            "repository": lead["repository"] if lead else None,
        },
    }
    return result


def _lead_times(
    config: Config,
    deploys: pl.DataFrame,
    entities: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    step: Step,
    warnings: list[str],
) -> dict[str, dict[str, Any]]:
    """Per entity with a repository, its lead time figures; git is walked once per repository."""
    repos = _repositories(config)
    successes = deploys.filter(pl.col("status") == "success").with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).over("entityId").alias("position"),
        dora.in_window(deploys, since, until).alias("in_window"),
    )
    by_repo: dict[tuple[Path, str], list[str]] = {}
    for entity in entities:
        if entity in repos:
            by_repo.setdefault(repos[entity], []).append(entity)
    result: dict[str, dict[str, Any]] = {}
    for (repo, shown), names in by_repo.items():
        rows = successes.filter(pl.col("entityId").is_in(names))
        with step(f"walking the git history of {', '.join(names)}"):
            try:
                walked = shipped(repo, rows.select("entityId", "position", "at", "build_commit_sha"))
            except GitWalkError as exc:
                warnings.append(f"lead time of {', '.join(names)}: {shown}: {exc}")
                continue
        for name in names:
            result[name] = _lead_figures(name, shown, rows.filter(pl.col("entityId") == name), walked)
    return result


def _lead_figures(entity: str, repo: str, rows: pl.DataFrame, walked: Shipped) -> dict[str, Any]:
    window = rows.filter("in_window").select("position")
    deploys = walked.deploys.filter(pl.col("entityId") == entity).join(
        rows.select("position", "at", "in_window", "build_commit_sha"), on="position"
    )
    commits = walked.commits.filter(pl.col("entityId") == entity).join(window, on="position", how="semi")
    in_window = deploys.filter("in_window")
    with_sha = in_window.filter(pl.col("build_commit_sha").is_not_null())
    lead = commits.get_column("lead_hours")
    deploy_commit = in_window.get_column("deploy_commit_hours").drop_nulls()
    first = deploys.filter("first")
    bounds = [float("-inf"), *(upper for _, upper in LEAD_BUCKETS)]
    buckets = [
        {"bucket": label, "commits": int(((lead >= low) & (lead < high)).sum())}
        for (label, _), low, high in zip(LEAD_BUCKETS, bounds, bounds[1:], strict=False)
    ]
    return {
        "repository": repo,
        "lead_time_hours": {
            **dora.quantiles(lead),
            "commits": lead.len(),
            "deployments": in_window.filter((pl.col("commits") > 0) & ~pl.col("first")).height,
            "unresolved_deployments": int((~with_sha.get_column("resolved")).sum()),
        },
        "deploy_commit_hours": {**dora.quantiles(deploy_commit), "deployments": deploy_commit.len()},
        "resolvable_share": _share(int(in_window.get_column("resolved").sum()), in_window.height),
        "first_deployment": {
            "at": first.get_column("at")[0].isoformat(),
            "build_commit_sha": first.get_column("build_commit_sha")[0],
            "commits": int(first.get_column("commits")[0]),
            "in_window": bool(first.get_column("in_window")[0]),
        }
        if first.height
        else None,
        "buckets": buckets,
    }


def _repositories(config: Config) -> dict[str, tuple[Path, str]]:
    """Per entity, the git repository its commits are in, and how to name it to the user.

    ``[report] repos`` first, else the repo of a git-tags source for the
    entity: a URL or a bundle through the clone that source keeps, named as
    the config gives it (without credentials).
    """
    found: dict[str, tuple[Path, str]] = {}
    cache = Path(config.state.path).parent
    for source in config.sources:
        if isinstance(source, GitTagsSource) and source.entity_id and source.entity_id not in found:
            location = source.repo
            is_bundle = Path(location).is_file() and location.endswith(".bundle")
            path = clone_path(cache, location) if is_url(location) or is_bundle else Path(location)
            found[source.entity_id] = (path, without_credentials(location))
    found.update({entity: (Path(path), path) for entity, path in config.report.repos.items()})
    return found


def _by_reason(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [
        {"reason": reason, "rows": int(rows)}
        for reason, rows in frame.sort(["rows", "reason"], descending=[True, False]).iter_rows()
    ]


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _float(row: dict[str, Any] | None, key: str) -> float | None:
    value = row.get(key) if row else None
    return float(value) if value is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
