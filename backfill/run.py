"""The data path in one place: extract, normalize, plan (and, when sending, load).

:func:`plan_run` reads and plans; :mod:`backfill.send` adds the state file and
delivery. The CLI only parses arguments, calls these, writes files and prints
the summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from backfill.columns import empty_raw_frame
from backfill.config import Config
from backfill.enrich import Enrichment, enrich_events, link_incident_entries
from backfill.errors import SourceError
from backfill.extractors import ExtractContext, make_extractor
from backfill.extractors.base import SourceConfig
from backfill.pipeline.normalize import Rules, normalize
from backfill.pipeline.plan import Plan, make_plan
from backfill.pipeline.rollbacks import IsAncestor

Step = Callable[[str], AbstractContextManager[object]]


def no_progress(description: str) -> AbstractContextManager[object]:
    return nullcontext()


@dataclass
class RunPlan:
    """A plan plus what went wrong on the way: sources that failed, and warnings."""

    plan: Plan
    failures: list[SourceError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # What the [[enrich]] entries matched, rejected and linked.
    enrichment: Enrichment = field(default_factory=Enrichment)


def plan_run(
    config: Config,
    *,
    now: datetime | None = None,
    step: Step = no_progress,
    reading_from: Mapping[str, datetime | None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notice: Callable[[str], None] | None = None,
) -> RunPlan:
    """Read every source and build the send plan. A source that fails is reported, not fatal.

    ``reading_from`` gives, per source name, the time from which a source that
    reads incrementally may start (see :func:`backfill.state.rules.incremental_since`).
    ``notice`` says things as they happen (a rate-limit wait); without it they
    join the warnings.
    """
    now = now or datetime.now(UTC)
    warnings: list[str] = []
    failures: list[SourceError] = []
    rules = Rules(
        environments=tuple(config.normalize.environments),
        env_aliases=dict(config.normalize.env_aliases),
        default_timezone=config.normalize.default_timezone,
        now=now,
        infer_rollbacks=config.normalize.infer_rollbacks,
        earliest_epoch_year=config.normalize.earliest_epoch_year,
    )
    context = ExtractContext(
        cache_dir=Path(config.state.path).parent, warn=warnings.append, notice=notice or warnings.append, sleep=sleep
    )
    frames: list[pl.DataFrame] = []
    ancestry: dict[str, IsAncestor] = {}
    for index, source in enumerate(config.sources):
        with step(f"reading {source.name}"):
            since = (reading_from or {}).get(source.name)
            try:
                frame, is_ancestor = _classify_source(source, index, replace(context, since=since), rules)
            except SourceError as exc:
                failures.append(exc)
                continue
            frames.append(frame)
            if is_ancestor is not None:
                ancestry[source.name] = is_ancestor
    classified = pl.concat(frames, how="vertical") if frames else _empty(config, rules)
    enrichment = Enrichment()
    if config.enrich:
        with step("matching change requests"):
            classified, enrichment = enrich_events(
                classified, config.enrich, environ=context.environ, sleep=sleep, notice=context.notice
            )
    with step("planning"):
        plan = make_plan(classified, [source.name for source in config.sources], rules, ancestry)
    if config.enrich:
        with step("linking incidents"):
            link_incident_entries(
                plan.events, config.enrich, enrichment, environ=context.environ, sleep=sleep, notice=context.notice
            )
    return RunPlan(plan=plan, failures=failures, warnings=warnings, enrichment=enrichment)


def _classify_source(
    source: SourceConfig, index: int, context: ExtractContext, rules: Rules
) -> tuple[pl.DataFrame, IsAncestor | None]:
    """Extract and normalize one source; every failure becomes a SourceError naming it."""
    extracted = make_extractor(source, context).extract()

    def classify(raw: pl.LazyFrame) -> pl.DataFrame:
        return normalize(
            raw, source=source.name, source_index=index, status_vocab=extracted.status_vocab, rules=rules
        ).collect()

    try:
        try:
            return classify(extracted.frame), extracted.is_ancestor
        except pl.exceptions.PolarsError:
            if extracted.fallback is None:
                raise
            return classify(extracted.fallback()), extracted.is_ancestor
    except pl.exceptions.PolarsError as exc:
        raise SourceError(source.name, f"could not be read: {_first_line(exc)}") from exc


def _empty(config: Config, rules: Rules) -> pl.DataFrame:
    return normalize(empty_raw_frame(), source="", source_index=0, status_vocab={}, rules=rules).collect()


def _first_line(exc: BaseException) -> str:
    lines: Iterator[str] = (line.strip() for line in str(exc).splitlines())
    return next((line for line in lines if line), type(exc).__name__)
