"""``gitlab-releases``: GitLab releases as production deployments.

``GET /projects/:id/releases``, every page, newest ``released_at`` first; with a
cursor, paging stops at the first release before it. The commit is the
release's ``commit.id``; an upcoming release (released in the future) is skipped.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl

from backfill.extract.base import Extracted, Extractor
from backfill.extract.forge.common import frame_of, newest_first
from backfill.extract.forge.gitlab import GitlabSource, gitlab_errors, project
from backfill.extract.mapping import raw_frame

COLUMNS = ("tag", "released_at", "name", "sha", "author", "url", "upcoming")


class GitlabReleasesSource(GitlabSource):
    requires_env = True

    type: Literal["gitlab-releases"]


class GitlabReleasesExtractor(Extractor):
    type_name = "gitlab-releases"
    config_model = GitlabReleasesSource
    incremental = True

    def extract(self) -> Extracted:
        config = self.config
        assert isinstance(config, GitlabReleasesSource)
        with gitlab_errors(config, self.context), project(config, self.context) as handle:
            listing = handle.releases.list(
                iterator=True, per_page=100, obey_rate_limit=False, order_by="released_at", sort="desc"
            )
            rows = newest_first(listing, self.context.since, lambda item: item.attributes.get("released_at"), _row)
        fields = {
            "entityId": pl.lit(config.entity_id),
            "env": pl.lit(config.env),
            "status": pl.lit("success"),
            "build_id": pl.col("tag"),
            "timestamp": pl.col("released_at"),
            "build_commit_sha": pl.col("sha"),
            "build_url": pl.col("url"),
            "description": pl.coalesce(pl.col("name"), pl.col("tag")),
            "initiator": pl.col("author"),
            "skip_reason": pl.when(pl.col("upcoming").is_not_null()).then(pl.lit("an upcoming release")),
        }
        return Extracted(frame=raw_frame(frame_of(rows, COLUMNS), fields), status_vocab={"success": "success"})


def _row(release: Any) -> dict[str, Any]:
    data = release.attributes
    return {
        "tag": data.get("tag_name"),
        "released_at": data.get("released_at"),
        "name": data.get("name"),
        "sha": (data.get("commit") or {}).get("id"),
        "author": (data.get("author") or {}).get("username"),
        "url": (data.get("_links") or {}).get("self"),
        "upcoming": "yes" if data.get("upcoming_release") else None,
    }
