"""``ci-export``: CSV, JSON and NDJSON exports of CI runs and deployments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Literal

import polars as pl
from pydantic import Field, model_validator

from backfill.errors import BackfillError, CsvFormatError, JsonFormatError, MappingError, ReadError
from backfill.extract.base import Extracted, Extractor, SourceConfig
from backfill.extract.exports.csv_file import RAGGED, CsvFile
from backfill.extract.exports.json_file import read_json_records, read_ndjson_records
from backfill.extract.exports.presets import PRESETS
from backfill.extract.exports.scope import mixed_scope_warning, scope_columns
from backfill.extract.mapping import RECORD, FieldSource, match_filter, raw_frame, resolve
from backfill.extract.patterns import patterns_regex
from backfill.model import ConfigPath, Model, Outcome, passed_through, unescape_formula

PresetName = Literal["github-actions", "gitlab-ci", "jenkins", "circleci", "azure-devops", "events"]
ColumnNames = str | list[str]


class ColumnMap(Model):
    """``[sources.columns]``: the column (or columns, first non-empty wins) for each field."""

    build_id: ColumnNames | None = None
    timestamp: ColumnNames | None = None
    duration_ms: ColumnNames | None = None
    status: ColumnNames | None = None
    env: ColumnNames | None = None
    build_commit_sha: ColumnNames | None = None
    change_id: ColumnNames | None = None
    build_url: ColumnNames | None = None
    description: ColumnNames | None = None
    initiator: ColumnNames | None = None
    deployment_type: ColumnNames | None = None


class CiExportSource(SourceConfig):
    path_keys: ClassVar[tuple[str, ...]] = ("path",)
    type: Literal["ci-export"]
    path: ConfigPath = Field(min_length=1)
    preset: PresetName
    format: Literal["auto", "csv", "json", "ndjson"] = "auto"
    encoding: str = "utf-8"
    entity_column: str | None = Field(default=None, min_length=1)
    columns: ColumnMap = ColumnMap()
    status_map: dict[str, Literal["success", "failed", "skip"]] = Field(default_factory=dict)
    match: dict[str, str | list[str]] = Field(default_factory=dict)
    build_id_prefix: str | None = None
    # Rows whose hotfix_column (default: the description) matches get deployment_type = "hotfix".
    hotfix_pattern: str | list[str] | None = None
    hotfix_column: str | None = None

    @model_validator(mode="after")
    def _one_entity(self) -> CiExportSource:
        has_column = "entity" in PRESETS[self.preset].columns
        if self.entity_id is not None and self.entity_column is not None:
            raise ValueError("entity_id: set entity_id or entity_column, not both")
        if self.entity_id is None and self.entity_column is None and not has_column:
            raise ValueError(
                'entity_id: is required; set entity_id = "<DevGrid entity id>" or entity_column = "<column>"'
            )
        return self


class CiExportExtractor(Extractor):
    type_name = "ci-export"
    config_model = CiExportSource

    def extract(self) -> Extracted:
        config = self.config
        assert isinstance(config, CiExportSource)
        preset = PRESETS[config.preset]
        vocab: dict[str, Outcome] = dict(preset.statuses)
        vocab.update({word.strip().lower(): outcome for word, outcome in config.status_map.items()})
        with self._source_errors():
            frame, fallback, finish = self._read_and_map(config)
        if fallback is not None:
            read_exactly = fallback

            def fallback_with_errors() -> pl.LazyFrame:
                with self._source_errors():
                    return read_exactly()

            return Extracted(frame=frame, status_vocab=vocab, fallback=fallback_with_errors, finish=finish)
        return Extracted(frame=frame, status_vocab=vocab, finish=finish)

    @contextmanager
    def _source_errors(self) -> Iterator[None]:
        try:
            yield
        except (CsvFormatError, JsonFormatError, MappingError) as exc:
            config = self.config
            assert isinstance(config, CiExportSource)
            raise ReadError(f"{config.path}: {exc}") from exc

    def _read_and_map(
        self, config: CiExportSource
    ) -> tuple[pl.LazyFrame, Callable[[], pl.LazyFrame] | None, Callable[[pl.DataFrame | None], None] | None]:
        """The raw frame; for CSV a slower exact reading to fall back on (when a row is not regular), and what
        finishes the source once its rows are read (the warnings, where the read itself tallies the scope)."""
        path = Path(config.path)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise CsvFormatError(f"{what}; check path in this source (paths are relative to the config file)")
        preset = PRESETS[config.preset]
        file_format = config.format if config.format != "auto" else _format_of(path)

        csv_file: CsvFile | None = None
        table: pl.DataFrame | None = None
        if file_format == "csv":
            csv_file = CsvFile(path, config.encoding)
            available = csv_file.columns
        else:
            if file_format == "json":
                table = read_json_records(path, config.encoding, preset.record_keys)
            else:
                table = read_ndjson_records(path, config.encoding)
            # The record number is the tool's, not a column of the user's file.
            available = [name for name in table.columns if name != RECORD]

        sources = self._field_sources(config, available)
        scope = scope_columns(preset.scope, available) if not config.match else {}
        scope_names = list(dict.fromkeys(scope.values()))
        warnings: list[str] = []
        if config.env is not None and sources["env"].columns:
            warnings.append(
                f"source '{config.name}': the file has an environment column "
                f'({", ".join(sources["env"].columns)}); env = "{config.env}" is not used'
            )

        def warn(values: pl.DataFrame | None) -> None:
            """The source's warnings, in their order: the scope's (from ``values``, its columns), then the others."""
            scope_warning = mixed_scope_warning(config.name, values, scope) if values is not None else None
            for warning in [scope_warning, *warnings]:
                if warning:
                    self.context.warn(warning)

        def warn_from_file() -> None:
            if not scope:
                warn(None)
            elif csv_file is not None:
                warn(csv_file.values(scope_names))
            else:
                assert table is not None
                warn(table.select(scope_names))

        try:
            frame, fallback, passes_scope = self._map(config, csv_file, table, available, sources, scope_names)
        except (BackfillError, pl.exceptions.PolarsError):
            # Said before the failure, as when the scope is read first.
            warn_from_file()
            raise
        if not passes_scope:
            warn_from_file()
            return frame, fallback, None

        def finish_with(rows: pl.DataFrame | None) -> None:
            if rows is None or not scope:
                warn_from_file()
            else:
                warn(rows.select(pl.col(passed_through(name)).alias(name) for name in scope_names))

        return frame, fallback, finish_with

    def _map(
        self,
        config: CiExportSource,
        csv_file: CsvFile | None,
        table: pl.DataFrame | None,
        available: list[str],
        sources: dict[str, FieldSource],
        scope_names: list[str],
    ) -> tuple[pl.LazyFrame, Callable[[], pl.LazyFrame] | None, bool]:
        """The raw frame, a CSV file's exact reading, and whether the rows pass the scope columns through."""
        preset = PRESETS[config.preset]
        if not sources["env"].columns and config.env is not None:
            sources["env"] = FieldSource(constant=config.env)
        needed = {name for source in sources.values() for name in source.columns} | set(config.match)
        if config.hotfix_column is not None:
            if config.hotfix_column not in available:
                raise MappingError(f"column '{config.hotfix_column}' (hotfix_column) is not in the file")
            needed.add(config.hotfix_column)

        expressions = {field: source.expression(preset.first_line) for field, source in sources.items()}
        if config.build_id_prefix:
            build_id = expressions["build_id"]
            # A blank build id stays missing: the prefix alone is not an id.
            expressions["build_id"] = pl.when(build_id.str.strip_chars() != "").then(
                pl.lit(config.build_id_prefix) + build_id
            )
        if preset.unescape_formulas:
            expressions = {field: unescape_formula(expr) for field, expr in expressions.items()}
        if config.match:
            expressions["skip_reason"] = match_filter(config.match, available)
        if config.hotfix_pattern is not None:
            target = pl.col(config.hotfix_column) if config.hotfix_column else expressions["description"]
            hotfix = pl.when(target.str.contains(patterns_regex(config.hotfix_pattern))).then(pl.lit("hotfix"))
            # An explicit deployment_type column wins over the pattern.
            expressions["deployment_type"] = pl.coalesce(expressions["deployment_type"], hotfix)
        expressions["reject_reason"] = pl.col(RAGGED) if csv_file is not None else pl.lit(None, dtype=pl.String)

        if csv_file is None:
            assert table is not None
            return raw_frame(table, expressions), None, False
        exact, columns = csv_file, sorted(needed)

        def read_exactly() -> pl.LazyFrame:
            return raw_frame(exact.read_exactly(columns), expressions)

        regular = csv_file.regular_scan(sorted(needed | set(scope_names)))
        if regular is None:
            return raw_frame(csv_file.scan(columns), expressions), read_exactly, False
        # The scope columns pass through, so that the warning needs no read of its own.
        return raw_frame(regular, expressions, scope_names), read_exactly, True

    def _field_sources(self, config: CiExportSource, available: list[str]) -> dict[str, FieldSource]:
        preset = PRESETS[config.preset]
        named = config.columns.model_dump(exclude_none=True)
        sources: dict[str, FieldSource] = {}
        for field in ColumnMap.model_fields:
            if field == "env" and config.env is not None:
                # `env` is for exports without an environment column: a mapped column that
                # is not in the file is not an error then.
                present = [name for name in _as_list(named.get(field)) if name in available]
                candidates = present or [name for name in preset.columns.get(field, ()) if name in available]
                sources[field] = FieldSource(columns=tuple(candidates))
                continue
            sources[field] = resolve(
                field,
                available,
                named=named.get(field),
                candidates=preset.columns.get(field, ()),
                required=field in ("build_id", "timestamp", "status", "env"),
                hint='or set env = "production" in this source if every row is one environment'
                if field == "env"
                else None,
            )
        if config.entity_id is not None:
            sources["entityId"] = FieldSource(constant=config.entity_id)
        else:
            sources["entityId"] = resolve(
                "entityId",
                available,
                named=config.entity_column,
                candidates=preset.columns.get("entity", ()),
                required=True,
            )
        return sources


def _as_list(names: str | list[str] | None) -> list[str]:
    return [] if names is None else [names] if isinstance(names, str) else list(names)


def _format_of(path: Path) -> Literal["csv", "json", "ndjson"]:
    suffix = path.suffix.lower()
    if suffix in (".ndjson", ".jsonl"):
        return "ndjson"
    if suffix == ".json":
        return "json"
    return "csv"
