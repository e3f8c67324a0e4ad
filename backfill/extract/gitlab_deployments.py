"""``gitlab-deployments``: GitLab deployments and their outcome.

``GET /projects/:id/deployments?order_by=updated_at&sort=desc``, every page;
with a cursor, ``updated_after`` asks GitLab for less and paging stops at the
first deployment updated before it. Status words are the gitlab-ci preset's:
success, failed; created, running, canceled, skipped, blocked... are skipped.
The timestamp is ``finished_at`` (the deployment's, else its job's), else
``updated_at``.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl

from backfill.extract.base import Extracted, Extractor
from backfill.extract.exports.presets import GITLAB_CI
from backfill.extract.forge.common import frame_of, newest_first
from backfill.extract.forge.gitlab import GitlabSource, gitlab_errors, project
from backfill.extract.mapping import raw_frame

COLUMNS = ("id", "status", "finished_at", "environment", "sha", "user", "url", "title")


class GitlabDeploymentsSource(GitlabSource):
    type: Literal["gitlab-deployments"]


class GitlabDeploymentsExtractor(Extractor):
    type_name = "gitlab-deployments"
    config_model = GitlabDeploymentsSource
    incremental = True

    def extract(self) -> Extracted:
        config = self.config
        assert isinstance(config, GitlabDeploymentsSource)
        since = self.context.since
        filters = {"updated_after": since.isoformat()} if since else {}
        with gitlab_errors(config, self.context), project(config, self.context) as handle:
            listing = handle.deployments.list(
                iterator=True, per_page=100, obey_rate_limit=False, order_by="updated_at", sort="desc", **filters
            )
            rows = newest_first(listing, since, lambda item: item.attributes.get("updated_at"), _row)
        fields = {
            "entityId": pl.lit(config.entity_id),
            "env": pl.coalesce(pl.col("environment"), pl.lit(config.env, dtype=pl.String)),
            "status": pl.col("status"),
            "build_id": pl.col("id"),
            "timestamp": pl.col("finished_at"),
            "build_commit_sha": pl.col("sha"),
            "build_url": pl.col("url"),
            "description": pl.col("title"),
            "initiator": pl.col("user"),
        }
        return Extracted(frame=raw_frame(frame_of(rows, COLUMNS), fields), status_vocab=GITLAB_CI.statuses)


def _row(deployment: Any) -> dict[str, Any]:
    data = deployment.attributes
    job = data.get("deployable") or {}
    return {
        "id": data.get("id"),
        "status": data.get("status"),
        "finished_at": data.get("finished_at") or job.get("finished_at") or data.get("updated_at"),
        "environment": (data.get("environment") or {}).get("name"),
        "sha": data.get("sha"),
        "user": (data.get("user") or {}).get("username"),
        "url": job.get("web_url"),
        "title": (job.get("commit") or {}).get("title"),
    }
