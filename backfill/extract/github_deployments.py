"""``github-deployments``: GitHub deployments and their outcome.

``GET /repos/{repo}/deployments``, every page, newest first (with a cursor,
paging stops at the first deployment created before it), and for each all
its statuses. The outcome is the first status that said how the deployment
went: ``success``, or ``failure``/``error`` (failed), and the timestamp is that
status's time. Statuses posted later do not move it: tools re-post
``success`` (sigmavirus24/github3.py's deployment 801 of 2014 was marked
successful again in 2017 and 2018), and GitHub marks a superseded deployment
``inactive``, which is not an outcome. A deployment with no outcome yet
(queued, in progress) is skipped.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl

from backfill.errors import Reading
from backfill.extract.base import Extracted, Extractor
from backfill.extract.forge.common import frame_of, newest_first
from backfill.extract.forge.github import GithubSource, github_errors, repository
from backfill.extract.mapping import raw_frame
from backfill.model import Outcome

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
            rows = newest_first(repo.get_deployments(), self.context.since, lambda item: item.created_at, _row)
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
    from github import GithubException

    latest: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None
    try:
        # Newest first: the last outcome met is the first one posted.
        for status in deployment.get_statuses():
            listed = _as_listed(status)
            latest = latest or listed
            if listed.get("state") in OUTCOMES:
                outcome = listed
    except GithubException as exc:
        raise Reading(f"the statuses of deployment {deployment.id}", exc) from exc
    final = outcome or latest or {}
    return {
        "id": deployment.id,
        "sha": deployment.sha,
        "environment": deployment.environment,
        "state": final.get("state"),
        "status_at": final.get("created_at"),
        "description": deployment.description or final.get("description"),
        "creator": deployment.creator.login if deployment.creator else None,
        "url": final.get("log_url") or final.get("target_url") or final.get("environment_url"),
    }


def _as_listed(status: Any) -> dict[str, Any]:
    """A status's fields as the listing gave them.

    Reading a field the listing lacks through PyGithub (older statuses have no
    ``log_url``) would fetch that status again, one request per deployment.
    """
    data = getattr(status, "_rawData", None)
    return data if isinstance(data, dict) else {}
