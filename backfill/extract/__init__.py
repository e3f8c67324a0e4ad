"""The registry of source types: one small extractor class per type.

To add a source type, write a module with a config model (a subclass of
:class:`~backfill.extract.base.SourceConfig` with ``type: Literal["..."]``)
and an :class:`~backfill.extract.base.Extractor`, then name the module and the
class here. A type's module is imported when a config uses the type, not
before: a config's ``[[sources]]`` are checked against the models of the
types it names alone (:mod:`backfill.config`), so that a run reads, imports
and builds only what its sources need. Extractor modules import their heavy
client libraries inside ``extract``, for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import Final

from backfill.extract.base import ExtractContext, Extracted, Extractor, SourceConfig

# type name -> (module, extractor class), in the order messages list the types.
_EXTRACTORS: Final = {
    "ci-export": ("backfill.extract.ci_export", "CiExportExtractor"),
    "git-tags": ("backfill.extract.git_tags", "GitTagsExtractor"),
    "github-releases": ("backfill.extract.github_releases", "GithubReleasesExtractor"),
    "github-deployments": ("backfill.extract.github_deployments", "GithubDeploymentsExtractor"),
    "gitlab-releases": ("backfill.extract.gitlab_releases", "GitlabReleasesExtractor"),
    "gitlab-deployments": ("backfill.extract.gitlab_deployments", "GitlabDeploymentsExtractor"),
}
SOURCE_TYPES: Final = tuple(_EXTRACTORS)


class _Registry(Mapping[str, type[Extractor]]):
    """Source type -> its extractor class, the class's module imported when first asked for."""

    def __getitem__(self, type_name: str) -> type[Extractor]:
        module, name = _EXTRACTORS[type_name]
        extractor: type[Extractor] = getattr(import_module(module), name)
        return extractor

    def __iter__(self) -> Iterator[str]:
        return iter(_EXTRACTORS)

    def __len__(self) -> int:
        return len(_EXTRACTORS)


REGISTRY: Final[Mapping[str, type[Extractor]]] = _Registry()


def make_extractor(config: SourceConfig, context: ExtractContext) -> Extractor:
    return REGISTRY[config.type](config, context)


__all__ = ["REGISTRY", "SOURCE_TYPES", "ExtractContext", "Extracted", "Extractor", "make_extractor"]
