"""The data path in one place: extract, normalize, plan, then either the review or the load.

:func:`run` is what ``backfill run`` does, with or without ``--dry-run``:

1. a sending run takes the state (lock, destination, settling what an earlier
   run left open: :class:`backfill.load.send.SendSession`); a dry run only reads it;
2. every source is extracted and normalized, and the rows planned
   (:func:`plan_run`: dedupe, send order, rollbacks);
3. the plan is compared once with the destination's ledger (:mod:`backfill.plan.ledger`);
4. a dry run writes the review files; a sending run sends the new events;
5. the result carries the summary, the outcome and the exit code.

The CLI parses the command line, calls :func:`run` and prints the result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from backfill.config import Config, allowing_plain_http
from backfill.enrich import Enrichment, enrich_events, link_incident_entries
from backfill.errors import Interrupted, ReadError, SourceError, StateError
from backfill.extract import ExtractContext, make_extractor
from backfill.extract.base import SourceConfig
from backfill.model import PASSED_THROUGH_COLUMNS, RunOutcome, empty_raw_frame
from backfill.normalize.classify import Normalization, normalize
from backfill.plan.dedupe import GATHERED_COLUMNS, RunPlan, make_plan, make_spilled_plan
from backfill.plan.ledger import diff
from backfill.plan.rollbacks import IsAncestor
from backfill.plan.spill import Spill
from backfill.report.outputs import run_outputs, source_paths
from backfill.report.review import write_rejects, write_review_files
from backfill.report.summary import RunSummary, build_summary, delivery_summary
from backfill.state.view import LedgerView

if TYPE_CHECKING:
    import httpx

    from backfill.state.store import KeyChange

Step = Callable[[str], AbstractContextManager[object]]
Finish = Callable[[pl.DataFrame | None], None]


def no_progress(description: str) -> AbstractContextManager[object]:
    return nullcontext()


@dataclass(frozen=True)
class Hooks:
    """What the caller shows while a run works: steps, a progress bar, notices (a retry, a wait)."""

    step: Step = no_progress
    start_bar: Callable[[int], None] = lambda total: None
    progress: Callable[[int], None] = lambda events: None
    notice: Callable[[str], None] = lambda message: None


@dataclass(frozen=True)
class RunRequest:
    """One ``backfill run``: where its files go (a review makes it a dry run), and the command line's choices."""

    review: Path | None = None  # the dry run's review CSV (- for stdout); None sends
    rejects: Path | None = None  # instead of the default beside the review or the state file
    json_on_stdout: bool = False  # the summary goes to stdout, so the review may not
    url: str | None = None  # instead of [devgrid] url
    since: datetime | None = None
    until: datetime | None = None
    retry_rejected: bool = False
    require_state: bool = False
    key_change: KeyChange | None = None
    allow_http: bool = False
    in_flight: int | None = None  # batches POSTed at once, instead of [delivery] in_flight


@dataclass
class RunResult:
    """What the run did: its plan, the summary (--json prints it as it is), the outcome and the exit code."""

    plan: RunPlan
    summary: RunSummary
    outcome: RunOutcome
    exit_code: int


def run(
    config: Config,
    request: RunRequest,
    *,
    hooks: Hooks = Hooks(),
    environ: Mapping[str, str] = os.environ,
    client: httpx.Client | None = None,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunResult:
    """Plan, diff against the ledger once, then write the review or send. Raises BackfillError when it cannot start.

    A sending run turns Ctrl-C and SIGTERM into a clean stop (recorded, summarized,
    exit 130/143); ``client`` is the HTTP client to send with (one is made from
    ``[devgrid]`` otherwise).
    """
    config = allowing_plain_http(config) if request.allow_http else config
    url = (request.url or config.devgrid.url).rstrip("/")
    window = (request.since, request.until)
    if request.review is None:
        from backfill.state.store import state_folder_problem

        # A sending run writes beside its state file first of all: say so before any output is checked.
        problem = state_folder_problem(Path(config.state.path).resolve())
        if problem:
            raise StateError(problem)
    outputs = run_outputs(config, request.review, request.rejects, as_json=request.json_on_stdout)
    if outputs.review is not None:
        with ExitStack() as stack:
            spill = stack.enter_context(Spill()) if spills(config) else None
            with LedgerView(
                config, url, require_state=request.require_state, environ=environ, notice=hooks.notice
            ) as view:
                planned = plan_run(config, now=now, step=hooks.step, sleep=sleep, notice=hooks.notice, spill=spill)
                ledger = diff(planned.plan.events, *window, view.known_keys if view.exists else None)
            with hooks.step("writing the review"):
                extra = write_review_files(planned, ledger, outputs, view.destination)
        summary = build_summary(planned, {"mode": "dry-run", "config": str(config.path), **extra}, window)
        return RunResult(planned, summary, "reviewed", planned.exit_code)

    # Only a sending run needs the HTTP client and the delivery: a dry run does not import them.
    import httpx

    from backfill.interrupts import Interrupts
    from backfill.load.send import SendOptions, SendSession
    from backfill.secrets import api_key, check_url

    check_url(url, allow_http=request.allow_http)
    key_file = Path(config.devgrid.api_key_file) if config.devgrid.api_key_file else None
    options = SendOptions(
        url=url,
        api_key=api_key(config.devgrid.api_key_env, key_file, environ),
        since=request.since,
        until=request.until,
        retry_rejected=request.retry_rejected,
        require_state=request.require_state,
        key_change=request.key_change,
        in_flight=request.in_flight,
    )
    with ExitStack() as stack:
        interrupts = stack.enter_context(Interrupts())
        if client is None:
            client = stack.enter_context(httpx.Client(timeout=config.devgrid.timeout, follow_redirects=False))
        session = SendSession(
            config, options, client, notice=hooks.notice, progress=hooks.progress, sleep=sleep, interrupts=interrupts
        )
        with session:
            try:
                with hooks.step("settling batches an earlier run left open"):
                    session.settle()
                with interrupts.anywhere():
                    planned = plan_run(
                        config,
                        now=now,
                        step=hooks.step,
                        reading_from=session.reading_from(request.since),
                        sleep=sleep,
                        notice=hooks.notice,
                    )
            except Interrupted as signal:
                session.interrupted(signal)  # nothing new was sent; the signal's exit code follows
                raise
            ledger = diff(planned.plan.events, *window, session.known_keys)
            sent = session.send(ledger, sources_complete=not planned.failures, start_bar=hooks.start_bar)
    rejects = outputs.rejects
    assert rejects is not None, "a sending run always writes its rejects"
    write_rejects(planned.plan.rejects, rejects.target or rejects.path)
    extra = {"mode": "send", "config": str(config.path), "url": url, "rejects_csv": str(rejects.path)}
    summary = build_summary(planned, {**extra, "delivery": delivery_summary(sent)}, window)
    return RunResult(planned, summary, sent.outcome, sent.exit_code or planned.exit_code)


def plan_run(
    config: Config,
    *,
    now: datetime | None = None,
    step: Step = no_progress,
    reading_from: Mapping[str, datetime | None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notice: Callable[[str], None] | None = None,
    spill: Spill | None = None,
) -> RunPlan:
    """Read every source and build the send plan. A source that fails is reported, not fatal.

    With ``spill`` (for a history too large for memory, see :mod:`backfill.plan.spill`)
    the classified rows go to disk and the plan is made from them; enrichment
    is then not available.

    ``reading_from`` gives, per source name, the time from which a source that
    reads incrementally may start (see :func:`backfill.state.rules.incremental_since`).
    ``notice`` says things as they happen (a rate-limit wait); without it they
    join the warnings.
    """
    now = now or datetime.now(UTC)
    warnings: list[str] = []
    failures: list[SourceError] = []
    rules = Normalization(
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

    def keep(rows: pl.LazyFrame, finish: Finish | None) -> None:
        if spill is not None:
            spill.add(rows.select(pl.exclude(PASSED_THROUGH_COLUMNS)))
            if finish is not None:
                finish(None)
            return
        frame = rows.collect()
        # One chunk for the columns the plan gathers rows from, which is several times faster than across
        # many; the others are only filtered and counted, and copying them into one chunk does not pay.
        frame = frame.with_columns(frame.select(GATHERED_COLUMNS).rechunk().get_columns())
        if finish is not None:
            finish(frame)
        frames.append(frame.select(pl.exclude(PASSED_THROUGH_COLUMNS)))

    ancestry: dict[str, IsAncestor] = {}
    for index, source in enumerate(config.sources):
        with step(f"reading {source.name}"):
            since = (reading_from or {}).get(source.name)
            try:
                is_ancestor = _classify_source(
                    source, index, replace(context, since=since), rules, keep, collected=spill is None
                )
            except SourceError as exc:
                failures.append(exc)
                continue
            if is_ancestor is not None:
                ancestry[source.name] = is_ancestor
    names = [source.name for source in config.sources]
    enrichment = Enrichment()
    if spill is not None and not spill.empty:
        with step("planning"):
            plan = make_spilled_plan(spill, names, rules, ancestry)
        return RunPlan(plan=plan, failures=failures, warnings=warnings, enrichment=enrichment)
    classified = pl.concat(frames, how="vertical") if frames else _empty(rules)
    if config.enrich:
        with step("matching change requests"):
            classified, enrichment = enrich_events(
                classified, config.enrich, environ=context.environ, sleep=sleep, notice=context.notice
            )
    with step("planning"):
        plan = make_plan(classified, names, rules, ancestry)
    if config.enrich:
        with step("linking incidents"):
            link_incident_entries(
                plan.events, config.enrich, enrichment, environ=context.environ, sleep=sleep, notice=context.notice
            )
    return RunPlan(plan=plan, failures=failures, warnings=warnings, enrichment=enrichment)


def _classify_source(
    source: SourceConfig,
    index: int,
    context: ExtractContext,
    rules: Normalization,
    keep: Callable[[pl.LazyFrame, Finish | None], None],
    *,
    collected: bool,
) -> IsAncestor | None:
    """Extract and normalize one source into ``keep``; every failure becomes a SourceError naming it (here only)."""
    try:
        extracted = make_extractor(source, context).extract()

        def classify(raw: pl.LazyFrame, finish: Finish | None) -> None:
            rows = normalize(
                raw,
                source=source.name,
                source_index=index,
                status_vocab=extracted.status_vocab,
                rules=rules,
                collected=collected,
            )
            keep(rows, finish)

        try:
            classify(extracted.frame, extracted.finish)
        except pl.exceptions.PolarsError:
            if extracted.fallback is None:
                raise
            # The fallback's rows pass nothing through: the extractor finishes from its file, before they are read.
            if extracted.finish is not None:
                extracted.finish(None)
            classify(extracted.fallback(), None)
        return extracted.is_ancestor
    except ReadError as exc:
        raise exc.for_source(source.name) from None
    except pl.exceptions.PolarsError as exc:
        raise SourceError(source.name, f"could not be read: {_first_line(exc)}") from exc


def spills(config: Config) -> bool:
    """Whether a dry run plans from a spill to disk: its files are large and nothing enriches its events."""
    if config.enrich:
        return False
    files = [path for source in config.sources for _, path in source_paths(source) if path.is_file()]
    return sum(path.stat().st_size for path in files) > config.plan.spill_above_mb * 1_000_000


def _empty(rules: Normalization) -> pl.DataFrame:
    return normalize(empty_raw_frame(), source="", source_index=0, status_vocab={}, rules=rules).collect()


def _first_line(exc: BaseException) -> str:
    lines: Iterator[str] = (line.strip() for line in str(exc).splitlines())
    return next((line for line in lines if line), type(exc).__name__)
