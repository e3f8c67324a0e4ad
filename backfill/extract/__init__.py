"""The registry of source types: one small extractor class per type.

To add a source type, write a module with a config model (a subclass of
:class:`~backfill.extract.base.SourceConfig` with ``type: Literal["..."]``)
and an :class:`~backfill.extract.base.Extractor`, then list both here.
Extractor modules import their heavy client libraries inside ``extract``, so
that reading a config stays fast.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from backfill.extract.base import ExtractContext, Extracted, Extractor, SourceConfig
from backfill.extract.ci_export import CiExportExtractor, CiExportSource
from backfill.extract.git_tags import GitTagsExtractor, GitTagsSource
from backfill.extract.github_deployments import GithubDeploymentsExtractor, GithubDeploymentsSource
from backfill.extract.github_releases import GithubReleasesExtractor, GithubReleasesSource
from backfill.extract.gitlab_deployments import GitlabDeploymentsExtractor, GitlabDeploymentsSource
from backfill.extract.gitlab_releases import GitlabReleasesExtractor, GitlabReleasesSource

REGISTRY: Final[dict[str, type[Extractor]]] = {
    extractor.type_name: extractor
    for extractor in (
        CiExportExtractor,
        GitTagsExtractor,
        GithubReleasesExtractor,
        GithubDeploymentsExtractor,
        GitlabReleasesExtractor,
        GitlabDeploymentsExtractor,
    )
}
SOURCE_TYPES: Final = tuple(REGISTRY)

SourceConfigs = Annotated[
    CiExportSource
    | GitTagsSource
    | GithubReleasesSource
    | GithubDeploymentsSource
    | GitlabReleasesSource
    | GitlabDeploymentsSource,
    Field(discriminator="type"),
]


def make_extractor(config: SourceConfig, context: ExtractContext) -> Extractor:
    return REGISTRY[config.type](config, context)


__all__ = ["REGISTRY", "SOURCE_TYPES", "ExtractContext", "Extracted", "Extractor", "SourceConfigs", "make_extractor"]
