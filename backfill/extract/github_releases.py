"""``github-releases``: published GitHub releases as production deployments.

``GET /repos/{repo}/releases``, every page, newest first; with a cursor, paging
stops at the first release created before it. A release's commit is its tag's,
found in the tags listing once per run. Drafts are never deployments;
pre-releases are skipped unless ``include_prereleases``.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl

from backfill.extract.base import Extracted, Extractor
from backfill.extract.forge.common import frame_of, iso, newest_first
from backfill.extract.forge.github import GithubSource, github_errors, repository, tag_commits
from backfill.extract.mapping import raw_frame

COLUMNS = ("tag", "published_at", "title", "author", "url", "draft", "prerelease")


class GithubReleasesSource(GithubSource):
    requires_env = True

    type: Literal["github-releases"]
    include_prereleases: bool = False


class GithubReleasesExtractor(Extractor):
    type_name = "github-releases"
    config_model = GithubReleasesSource
    incremental = True

    def extract(self) -> Extracted:
        config = self.config
        assert isinstance(config, GithubReleasesSource)
        with github_errors(config, self.context), repository(config, self.context) as repo:
            rows = newest_first(repo.get_releases(), self.context.since, lambda release: release.created_at, _row)
            # Only the tags of releases that become events are looked up.
            wanted = {
                str(row["tag"])
                for row in rows
                if row["tag"] and not row["draft"] and (config.include_prereleases or not row["prerelease"])
            }
            commits = tag_commits(repo, wanted, self.context.warn)
        frame = frame_of(rows, COLUMNS).with_columns(pl.col("tag").replace_strict(commits, default=None).alias("sha"))
        prerelease = pl.col("prerelease").is_not_null() & pl.lit(not config.include_prereleases)
        skip = (
            pl.when(pl.col("draft").is_not_null())
            .then(pl.lit("a draft release is not a deployment"))
            .when(prerelease)
            .then(pl.lit("a pre-release (set include_prereleases = true to send them)"))
        )
        fields = {
            "entityId": pl.lit(config.entity_id),
            "env": pl.lit(config.env),
            "status": pl.lit("success"),
            "build_id": pl.col("tag"),
            "timestamp": pl.col("published_at"),
            "build_commit_sha": pl.col("sha"),
            "build_url": pl.col("url"),
            "description": pl.coalesce(pl.col("title"), pl.col("tag")),
            "initiator": pl.col("author"),
            "skip_reason": skip,
        }
        return Extracted(frame=raw_frame(frame, fields), status_vocab={"success": "success"})


def _row(release: Any) -> dict[str, Any]:
    return {
        "tag": release.tag_name,
        "published_at": iso(release.published_at),
        "title": release.name,
        "author": release.author.login if release.author else None,
        "url": release.html_url,
        "draft": "yes" if release.draft else None,
        "prerelease": "yes" if release.prerelease else None,
    }
