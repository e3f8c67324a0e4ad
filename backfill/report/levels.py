"""The 2024 DORA survey's performance clusters, to place a team's numbers beside them.

The clusters come from the Accelerate State of DevOps Report 2024 (DORA,
Google Cloud): cluster analysis of that year's survey answers, not thresholds
anyone set. They are quoted as the report gives them; a value is placed in the
cluster whose range holds it, or else the nearest one (on a log scale for times
and frequencies). The report gave no clusters for rework rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SURVEY = "DORA State of DevOps 2024 survey clusters"
DAY = 24.0


@dataclass(frozen=True)
class Cluster:
    name: str
    low: float  # inclusive
    high: float  # exclusive; low == high for a cluster given as one value
    said: str  # as the report words it


# Deployment frequency in deployments per day.
FREQUENCY = (
    Cluster("Elite", 1.0, math.inf, "on demand (multiple deploys per day)"),
    Cluster("High", 1 / 7, 1.0, "between once per day and once per week"),
    Cluster("Medium", 1 / 30, 1 / 7, "between once per week and once per month"),
    Cluster("Low", 1 / 182, 1 / 30, "between once per month and once every six months"),
)
# Change lead time in hours.
LEAD_TIME = (
    Cluster("Elite", 0.0, DAY, "less than one day"),
    Cluster("High", DAY, 7 * DAY, "between one day and one week"),
    Cluster("Medium", 7 * DAY, 30 * DAY, "between one week and one month"),
    Cluster("Low", 30 * DAY, 182 * DAY, "between one month and six months"),
)
# Change failure rate, a share.
FAILURE_RATE = (
    Cluster("Elite", 0.05, 0.05, "5%"),
    Cluster("High", 0.20, 0.20, "20%"),
    Cluster("Medium", 0.10, 0.10, "10%"),
    Cluster("Low", 0.40, 0.40, "40%"),
)
# Failed deployment recovery time in hours.
RECOVERY = (
    Cluster("Elite", 0.0, 1.0, "less than one hour"),
    Cluster("High", 1.0, DAY, "less than one day"),
    Cluster("Medium", 1.0, DAY, "less than one day"),
    Cluster("Low", 7 * DAY, 30 * DAY, "between one week and one month"),
)
METRICS = {
    "deploys_per_day": FREQUENCY,
    "lead_time_hours": LEAD_TIME,
    "change_failure_rate": FAILURE_RATE,
    "recovery_hours": RECOVERY,
}


def place(metric: str, value: float | None) -> dict[str, Any] | None:
    """The survey cluster(s) nearest ``value``: ``{"cluster": "High", "said": ..., "survey": ...}``.

    Two clusters can share a range (High and Medium recovery, both less than a
    day): both are named, "High / Medium". ``None`` where there is no value
    or the survey gave no clusters for the metric.
    """
    clusters = METRICS.get(metric)
    if value is None or clusters is None or math.isnan(value):
        return None
    chosen = [cluster for cluster in clusters if _holds(cluster, value)]
    if not chosen:
        distances = [_distance(cluster, value, metric != "change_failure_rate") for cluster in clusters]
        chosen = [cluster for cluster, distance in zip(clusters, distances, strict=True) if distance == min(distances)]
    return {
        "cluster": " / ".join(cluster.name for cluster in chosen),
        "said": chosen[0].said,
        "survey": SURVEY,
    }


def _holds(cluster: Cluster, value: float) -> bool:
    return cluster.low <= value < cluster.high or value == cluster.low == cluster.high


def _distance(cluster: Cluster, value: float, logarithmic: bool) -> float:
    edge = cluster.low if value < cluster.low else cluster.high
    if not logarithmic:
        return abs(value - edge)
    floor = 1e-9  # a lead time of 0 hours, a frequency of 0
    return abs(math.log(max(value, floor)) - math.log(max(edge, floor)))
