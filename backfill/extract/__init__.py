"""The registry of source types: one small extractor class per type.

To add a source type, write a module with a config model (a subclass of
:class:`~backfill.extract.base.SourceConfig` with ``type: Literal["..."]``)
and an :class:`~backfill.extract.base.Extractor`, then list the extractor here:
the config's union of source models is made from this list.
Extractor modules import their heavy client libraries inside ``extract``, so
that reading a config stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Final, Union

from pydantic import Field

from backfill.extract.base import ExtractContext, Extracted, Extractor, SourceConfig
from backfill.extract.ci_export import CiExportExtractor
from backfill.extract.git_tags import GitTagsExtractor
from backfill.extract.github_deployments import GithubDeploymentsExtractor
from backfill.extract.github_releases import GithubReleasesExtractor
from backfill.extract.gitlab_deployments import GitlabDeploymentsExtractor
from backfill.extract.gitlab_releases import GitlabReleasesExtractor

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

if TYPE_CHECKING:
    SourceConfigs = SourceConfig
else:
    # One [[sources]] entry: the model its ``type`` names.
    SourceConfigs = Annotated[
        Union[tuple(extractor.config_model for extractor in REGISTRY.values())],  # noqa: UP007
        Field(discriminator="type"),
    ]


def make_extractor(config: SourceConfig, context: ExtractContext) -> Extractor:
    return REGISTRY[config.type](config, context)


__all__ = ["REGISTRY", "SOURCE_TYPES", "ExtractContext", "Extracted", "Extractor", "SourceConfigs", "make_extractor"]
