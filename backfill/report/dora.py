"""The DORA metrics as DevGrid defines them, computed from the planned events: pure functions over frames.

Every function takes the production deployments (:func:`production`), one
row per event with ``entityId, at, status, kind, build_commit_sha, change_id``,
and returns one row per entity. ``kind`` is ``deployment``, ``hotfix``,
``rollback`` (successful deployments, by ``deployment_type``) or ``failed``.

- Deployment frequency (DevGrid's rule): successful deployments, rollbacks and
  hotfixes included, failed runs not; per day = N / days in the window, per
  week x7, per month x30; mean time between = (last - first) / (N - 1).
- Rework rate: hotfix and rollback deployments / successful deployments.
- Change failure rate, from incidents: the share of successful deployments
  whose ``change_id`` an incident names; recovery time: ``resolved_at -
  opened_at`` of those incidents. Without incidents, a proxy: a successful
  deployment whose next successful deployment is a rollback or hotfix within
  the failure window failed, and recovered when that one went out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl

from backfill.model import TS

KINDS = ("deployment", "hotfix", "rollback", "failed")
REWORK = ("hotfix", "rollback")
QUANTILES = {"median": 0.5, "p75": 0.75, "p90": 0.9}
INCIDENT_SCHEMA: dict[str, pl.DataType] = {
    "number": pl.String(),
    "opened_at": pl.Datetime("us", "UTC"),
    "resolved_at": pl.Datetime("us", "UTC"),
    "priority": pl.String(),
    "change_id": pl.String(),
}
_SUCCESS = pl.col("status") == "success"
_DAY_US = 86_400_000_000


def production(events: pl.DataFrame, environment: str) -> pl.DataFrame:
    """The planned events of ``environment``, in time order per entity, with their ``kind``."""
    kind = (
        pl.when(pl.col("status") != "success")
        .then(pl.lit("failed"))
        .when(pl.col("deployment_type").str.to_lowercase().is_in(REWORK))
        .then(pl.col("deployment_type").str.to_lowercase())
        .otherwise(pl.lit("deployment"))
    )
    return (
        events.lazy()
        .filter((pl.col("env") == environment) & pl.col(TS).is_not_null())
        .select("entityId", pl.col(TS).alias("at"), "status", kind.alias("kind"), "build_commit_sha", "change_id")
        .sort("entityId", "at", maintain_order=True)
        .collect()
    )


def in_window(frame: pl.DataFrame, since: datetime | None, until: datetime | None) -> pl.Expr:
    keep = pl.lit(True)
    if since is not None:
        keep = keep & (pl.col("at") >= since)
    if until is not None:
        keep = keep & (pl.col("at") < until)
    return keep


def windows(
    deploys: pl.DataFrame, since: datetime | None, until: datetime | None, entities: Sequence[str] = ()
) -> pl.DataFrame:
    """Per entity, the window its rates are over: --since/--until, else the UTC days its events span.

    With both --since and --until every one of ``entities`` has the window,
    deployments or not: no deployment in a known window is a rate of 0.
    """
    if since is not None and until is not None:
        names = sorted({*entities, *deploys.get_column("entityId").to_list()})
        return pl.DataFrame(
            {"entityId": names, "start": [since] * len(names), "end": [until] * len(names)},
            schema={"entityId": pl.String, "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC")},
        )
    start = pl.lit(since).cast(pl.Datetime("us", "UTC")) if since else pl.col("at").min().dt.truncate("1d")
    end = (
        pl.lit(until).cast(pl.Datetime("us", "UTC"))
        if until
        else pl.col("at").max().dt.truncate("1d") + pl.duration(days=1)
    )
    return deploys.group_by("entityId").agg(start.alias("start"), end.alias("end"))


def frequency(deploys: pl.DataFrame, window: pl.DataFrame) -> pl.DataFrame:
    """entityId, deployments, failed_deployments, hotfixes, rollbacks, window_days, deploys_per_day/week/month,
    mean_hours_between, rework_rate."""
    counts = deploys.group_by("entityId").agg(
        _SUCCESS.sum().alias("deployments"),
        (pl.col("kind") == "failed").sum().alias("failed_deployments"),
        (pl.col("kind") == "hotfix").sum().alias("hotfixes"),
        (pl.col("kind") == "rollback").sum().alias("rollbacks"),
        ((pl.col("at").filter(_SUCCESS).max() - pl.col("at").filter(_SUCCESS).min()).dt.total_microseconds()).alias(
            "_span_us"
        ),
    )
    days = (pl.col("end") - pl.col("start")).dt.total_microseconds() / _DAY_US
    per_day = pl.col("deployments") / pl.col("window_days")
    return (
        window.join(counts, on="entityId", how="left")
        .with_columns(pl.col("deployments", "failed_deployments", "hotfixes", "rollbacks").fill_null(0).cast(pl.Int64))
        .with_columns(days.alias("window_days"))
        .with_columns(
            pl.when(pl.col("window_days") > 0).then(per_day).alias("deploys_per_day"),
        )
        .with_columns(
            (pl.col("deploys_per_day") * 7).alias("deploys_per_week"),
            (pl.col("deploys_per_day") * 30).alias("deploys_per_month"),
            pl.when(pl.col("deployments") >= 2)
            .then(pl.col("_span_us") / (pl.col("deployments") - 1) / 3_600_000_000)
            .alias("mean_hours_between"),
            pl.when(pl.col("deployments") > 0)
            .then((pl.col("hotfixes") + pl.col("rollbacks")) / pl.col("deployments"))
            .alias("rework_rate"),
        )
        .drop("_span_us", "start", "end")
    )


def weekly(deploys: pl.DataFrame, window: pl.DataFrame) -> pl.DataFrame:
    """entityId, week (the Monday, UTC), and a count per kind; every week of the window, zeros included."""
    counts = (
        deploys.with_columns(pl.col("at").dt.truncate("1w").dt.date().alias("week"))
        .group_by("entityId", "week", "kind")
        .agg(pl.len().cast(pl.Int64).alias("n"))
    )
    weeks = (
        window.select(
            "entityId",
            pl.date_ranges(
                pl.col("start").dt.truncate("1w").dt.date(),
                (pl.col("end") - pl.duration(microseconds=1)).dt.truncate("1w").dt.date(),
                interval="1w",
            ).alias("week"),
        )
        .explode("week")
        .join(pl.DataFrame({"kind": list(KINDS)}), how="cross")
    )
    return (
        weeks.join(counts, on=["entityId", "week", "kind"], how="left")
        .with_columns(pl.col("n").fill_null(0))
        .pivot(on="kind", index=["entityId", "week"], values="n", aggregate_function="first")
        .select("entityId", "week", *KINDS)
        .sort("entityId", "week")
    )


def proxy_failures(deploys: pl.DataFrame, since: datetime | None, until: datetime | None, hours: float) -> pl.DataFrame:
    """entityId, failed_changes, recovery (a list of hours): a deployment followed by a rollback or hotfix.

    The next successful deployment after each one is looked at over the whole
    history, so the last one in the window can be followed by one after it.
    """
    successes = deploys.filter(_SUCCESS).with_columns(
        pl.col("kind").shift(-1).over("entityId").alias("_next_kind"),
        (pl.col("at").shift(-1).over("entityId") - pl.col("at")).dt.total_microseconds().alias("_gap_us"),
    )
    gap_hours = pl.col("_gap_us") / 3_600_000_000
    failed = pl.col("_next_kind").is_in(REWORK) & (gap_hours <= hours)
    return (
        successes.filter(in_window(successes, since, until))
        .with_columns(failed.fill_null(False).alias("_failed"))
        .group_by("entityId")
        .agg(
            pl.col("_failed").sum().cast(pl.Int64).alias("failed_changes"),
            gap_hours.filter(pl.col("_failed")).alias("recovery"),
        )
    )


def incident_failures(
    deploys: pl.DataFrame, incidents: pl.DataFrame, since: datetime | None, until: datetime | None
) -> pl.DataFrame:
    """entityId, failed_changes, recovery (hours of each linked, resolved incident), open_incidents."""
    named = incidents.filter(pl.col("change_id").is_not_null()).with_columns(pl.col("change_id").str.strip_chars())
    successes = deploys.filter(_SUCCESS & in_window(deploys, since, until))
    failed = successes.filter(
        pl.col("change_id").str.strip_chars().is_in(named.get_column("change_id").implode())
    ).with_columns(pl.col("change_id").str.strip_chars())
    per_entity = failed.group_by("entityId").agg(pl.len().cast(pl.Int64).alias("failed_changes"))
    linked = (
        failed.select("entityId", "change_id")
        .unique()
        .join(named, on="change_id", how="inner")
        .unique(subset=["entityId", "number"], keep="first", maintain_order=True)
    )
    hours = (pl.col("resolved_at") - pl.col("opened_at")).dt.total_microseconds() / 3_600_000_000
    recovery = linked.group_by("entityId").agg(
        hours.filter(pl.col("resolved_at").is_not_null()).sort().alias("recovery"),
        pl.col("resolved_at").is_null().sum().cast(pl.Int64).alias("open_incidents"),
    )
    return per_entity.join(recovery, on="entityId", how="left")


def quantiles(values: pl.Series) -> dict[str, float | None]:
    """median, p75, p90 (linear interpolation between ranks), ``None`` for no values."""
    if values.len() == 0:
        return dict.fromkeys(QUANTILES)
    return {name: _number(values.quantile(q, interpolation="linear")) for name, q in QUANTILES.items()}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
