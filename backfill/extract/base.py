"""What every extractor shares: its config base class, its context and its result.

An extractor reads one kind of history and maps it to the raw event columns
(:data:`backfill.model.RAW_COLUMNS`). It does not normalize: environment
names, statuses and timestamps stay as the source wrote them, so that the one
normalization step can treat every source alike and report what it changed.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import polars as pl
from pydantic import ConfigDict, Field

from backfill.model import Model, Outcome


class SourceConfig(Model):
    """Keys every ``[[sources]]`` entry accepts."""

    # Built when a config first uses the type (backfill.config), not when the module is imported.
    model_config = ConfigDict(defer_build=True)

    # The keys that may name a local file the source reads (a run never writes over one).
    path_keys: ClassVar[tuple[str, ...]] = ()

    type: str
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    entity_id: str | None = Field(default=None, min_length=1)
    env: str | None = Field(default=None, min_length=1)


@dataclass(frozen=True)
class ExtractContext:
    """What an extractor may use besides its own config."""

    since: datetime | None = None
    cache_dir: Path | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    warn: Callable[[str], None] = lambda message: None  # collected for the summary
    notice: Callable[[str], None] = lambda message: None  # said at once (a rate-limit wait)
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Extracted:
    """One source's rows, mapped to the raw event columns but not yet normalized.

    ``status_vocab`` maps a lowercased, trimmed status value to what it means;
    a value missing from it is rejected as unknown. The key ``""`` says what
    an empty status means (for CI systems: the run had not finished).
    """

    frame: pl.LazyFrame
    status_vocab: Mapping[str, Outcome]
    # A slower, more forgiving reading, for when polars refuses the fast one.
    fallback: Callable[[], pl.LazyFrame] | None = None
    # For (commit, later commit) pairs: is the first an ancestor of the second? Sources
    # that have the repository offer it to the rollback rule.
    is_ancestor: Callable[[Sequence[tuple[str, str]]], list[bool]] | None = None
    # Called once the rows are read: with the classified rows where they are in memory (their
    # passed-through columns included, see backfill.extract.mapping.raw_frame), else with None.
    finish: Callable[[pl.DataFrame | None], None] | None = None


class Extractor(ABC):
    """One source type. Subclasses set ``type_name`` and ``config_model``."""

    type_name: ClassVar[str]
    config_model: ClassVar[type[SourceConfig]]
    # True when extract() honours context.since and reads less history for it.
    incremental: ClassVar[bool] = False

    def __init__(self, config: SourceConfig, context: ExtractContext) -> None:
        self.config = config
        self.context = context

    @abstractmethod
    def extract(self) -> Extracted:
        """Read the source; raise SourceError when it cannot be read at all."""
