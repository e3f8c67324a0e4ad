"""``github-deployments``: GitHub deployments and their outcome.

``GET /repos/{repo}/deployments``, every page, newest first (with a cursor,
paging stops at the first deployment created before it), and for each its
statuses, newest first. The outcome is the newest status that says how the
deployment went: ``success``, or ``failure``/``error`` (failed). GitHub marks a
superseded deployment ``inactive``, which is not an outcome, so the statuses
before it are read too. A deployment with no outcome yet (queued, in progress)
is skipped. The timestamp is the time of that status.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl

from backfill.extractors.base import Extracted, Extractor, Outcome
from backfill.extractors.forge import frame_of, iso, older_than
from backfill.extractors.github_api import GithubSource, github_errors, repository
from backfill.extractors.mapping import raw_frame

OUTCOMES = ("success", "failure", "error")
STATUSES: dict[str, Outcome] = {
    "": "skip",
    "success": "success",
    "failure": "failed",
    "error": "failed",
    "inactive": "skip",
    "in_progress": "skip",
    "queued": "skip",
    "pending": "skip",
}
COLUMNS = ("id", "sha", "environment", "state", "status_at", "description", "creator", "url")


class GithubDeploymentsSource(GithubSource):
    type: Literal["github-deployments"]


class GithubDeploymentsExtractor(Extractor):
    type_name = "github-deployments"
    config_model = GithubDeploymentsSource
    incremental = True

    def extract(self) -> Extracted:
        config = self.config
        assert isinstance(config, GithubDeploymentsSource)
        with github_errors(config, self.context), repository(config, self.context) as repo:
            rows = []
            for deployment in repo.get_deployments():
                if older_than(deployment.created_at, self.context.since):
                    break
                rows.append(_row(deployment))
        fields = {
            "entityId": pl.lit(config.entity_id),
            # A deployment names its environment; env in the config is for none that does not.
            "env": pl.coalesce(pl.col("environment"), pl.lit(config.env, dtype=pl.String)),
            "status": pl.col("state"),
            "build_id": pl.col("id"),
            "timestamp": pl.col("status_at"),
            "build_commit_sha": pl.col("sha"),
            "build_url": pl.col("url"),
            "description": pl.col("description"),
            "initiator": pl.col("creator"),
        }
        return Extracted(frame=raw_frame(frame_of(rows, COLUMNS), fields), status_vocab=STATUSES)


def _row(deployment: Any) -> dict[str, Any]:
    latest = outcome = None
    for status in deployment.get_statuses():
        latest = latest or status
        if status.state in OUTCOMES:
            outcome = status
            break
    final = outcome or latest
    return {
        "id": deployment.id,
        "sha": deployment.sha,
        "environment": deployment.environment,
        "state": final.state if final else None,
        "status_at": iso(final.created_at) if final else None,
        "description": deployment.description or (final.description if final else None),
        "creator": deployment.creator.login if deployment.creator else None,
        "url": (final.log_url or final.target_url or final.environment_url) if final else None,
    }
