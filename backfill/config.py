"""The config file: one model, validated before anything else runs.

Every problem is reported as ``FILE: key.path: what is wrong``, one line each,
and raises :class:`~backfill.errors.ConfigError` (exit 2). Paths in the file
are relative to the file's folder. Secrets never live here: the config names
the environment variable that holds each one.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator

from backfill.enrich.settings import ENRICH_MODELS, ENRICH_TYPES, EnrichConfigs
from backfill.errors import ConfigError
from backfill.extract import REGISTRY, SOURCE_TYPES
from backfill.extract.base import SourceConfig
from backfill.model import ConfigPath, Model, TimeZoneName
from backfill.report.settings import ReportSettings

DEFAULT_URL = "https://prod.api.devgrid.io"
_WANTED = {
    "int_type": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "float_type": "a number",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
}
_KEYED_MESSAGE = re.compile(r"^(?P<key>[A-Za-z_][\w.\[\]-]*): (?P<message>.*)$", re.DOTALL)
MAX_BATCH = 15  # DevGrid answers 413 above this


class DevGrid(Model):
    url: str = DEFAULT_URL
    api_key_env: str = Field(default="DEVGRID_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # A file holding the key, for secret stores that mount files; used instead of api_key_env.
    api_key_file: ConfigPath | None = None
    batch_size: int = Field(default=MAX_BATCH, ge=1, le=MAX_BATCH)
    timeout: float = Field(default=30.0, gt=0, le=600)  # seconds, per request
    max_attempts: int = Field(default=6, ge=1, le=50)  # per batch, the first included
    max_wait: float = Field(default=300.0, ge=0, le=86400)  # seconds spent waiting between attempts, per batch

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for a local receiver)")
        return value.rstrip("/")


class Delivery(Model):
    # Batches POSTed at once. By default each (entityId, env) stream keeps one in flight, oldest first,
    # and streams go side by side; same_stream lets several batches of one stream fly at once.
    in_flight: int = Field(default=4, ge=1, le=32)
    same_stream: bool = False


class State(Model):
    path: ConfigPath = Field(default=".backfill/state.db", validate_default=True)
    # Incremental sources re-read this far behind their cursor; the ledger absorbs the overlap.
    lookback_days: float = Field(default=3.0, ge=0, le=3650)
    # The state kept in object storage (s3://bucket/key); path is then its local working copy.
    url: str | None = None
    lock_seconds: float = Field(default=900.0, ge=1, le=86400)  # a lock not extended for this long is taken over
    upload_seconds: float = Field(default=60.0, ge=0, le=86400)  # upload at least this often while sending

    @field_validator("url")
    @classmethod
    def _object_url(cls, value: str | None) -> str | None:
        from backfill.state.remote import ObjectUrl

        if value is not None:
            ObjectUrl.parse(value)
        return value


class Normalize(Model):
    environments: list[str] = Field(default=["production", "staging", "development"], min_length=1)
    env_aliases: dict[str, str] = Field(
        default_factory=lambda: {"prod": "production", "stg": "staging", "dev": "development"}
    )
    default_timezone: TimeZoneName = "UTC"
    # Mark rollbacks (a commit deployed again after a later one) with deployment_type = "rollback".
    infer_rollbacks: bool = True
    # An epoch timestamp before this year is rejected: a number that is not a deployment time.
    earliest_epoch_year: int = Field(default=2000, ge=1970, le=2100)

    @field_validator("environments")
    @classmethod
    def _canonical_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != name.strip().lower() or not name:
                raise ValueError(f"'{name}' must be lowercase with no surrounding spaces (DevGrid matches env exactly)")
        if len(set(value)) != len(value):
            raise ValueError("lists a name twice")
        return value

    @model_validator(mode="after")
    def _aliases_point_at_environments(self) -> Normalize:
        for alias, target in self.env_aliases.items():
            if target not in self.environments:
                raise ValueError(f"env_aliases.{alias}: points at '{target}', which is not in environments")
        return self


class Planning(Model):
    """``[plan]``: how a dry run holds the history it plans."""

    # Above this many MB of input files, a dry run keeps the classified rows on disk, not in memory (0: always).
    spill_above_mb: float = Field(default=256.0, ge=0)


if TYPE_CHECKING:
    Sources = list[SourceConfig]
    Enrichments = list[EnrichConfigs]
else:
    # Each entry is checked against the model its ``type`` names (_entries_of_their_types).
    Sources = Enrichments = list[Any]


class Config(Model):
    devgrid: DevGrid = DevGrid()
    delivery: Delivery = Delivery()
    state: State = State()
    normalize: Normalize = Normalize()
    plan: Planning = Planning()
    report: ReportSettings = ReportSettings()
    sources: Sources
    # ServiceNow change requests and incidents joined to the events (backfill.enrich).
    enrich: Enrichments = Field(default_factory=list)
    # Where the config was read from; set by load_config, not by the file.
    path: Path = Path("backfill.toml")

    @field_validator("sources", "enrich", mode="plain")
    @classmethod
    def _entries_of_their_types(cls, value: Any, info: ValidationInfo) -> list[Any]:
        """Each entry as the model its ``type`` names: a discriminated union of the types the file uses.

        Only those types' modules are imported and their models built; an
        entry with an unknown or no type meets the same union, so its error
        is the same whichever types the other entries name.
        """
        known = SOURCE_TYPES if info.field_name == "sources" else ENRICH_TYPES
        named = {_type_of(entry) for entry in value} if isinstance(value, list) else set()
        used = tuple(name for name in known if name in named) or known[:1]
        entries: list[Any] = _entries(info.field_name or "", used).validate_python(value, context=info.context)
        return entries

    @model_validator(mode="after")
    def _unique_names_and_known_envs(self) -> Config:
        problems = []
        seen: set[str] = set()
        for index, source in enumerate(self.sources):
            if source.name in seen:
                problems.append(f"sources[{index}].name: '{source.name}' is used twice; names must be unique")
            seen.add(source.name)
            if source.env is not None:
                canonical = self.normalize.env_aliases.get(source.env.strip().lower(), source.env.strip().lower())
                if canonical not in self.normalize.environments:
                    problems.append(
                        f"sources[{index}].env: '{source.env}' is not one of "
                        f"{', '.join(self.normalize.environments)} (nor an alias of one)"
                    )
        names: set[str] = set()
        for index, entry in enumerate(self.enrich):
            if entry.name in names:
                problems.append(f"enrich[{index}].name: '{entry.name}' is used twice; names must be unique")
            names.add(entry.name)
            for env in getattr(entry, "envs", ()):
                if env not in self.normalize.environments:
                    problems.append(
                        f"enrich[{index}].envs: '{env}' is not one of {', '.join(self.normalize.environments)}"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self


def _type_of(entry: Any) -> str | None:
    tag = entry.get("type") if isinstance(entry, dict) else getattr(entry, "type", None)
    return tag if isinstance(tag, str) else None


@cache
def _entries(field: str, types: tuple[str, ...]) -> TypeAdapter[list[Any]]:
    """A list of ``[[sources]]`` or ``[[enrich]]`` entries of these types, each told by its ``type``."""
    if field == "sources":
        models: tuple[type[Model], ...] = tuple(REGISTRY[name].config_model for name in types)
    else:
        models = tuple(ENRICH_MODELS[name] for name in types)
    entry: Any = Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007
    entries: Any = Annotated[list[entry], Field(min_length=1)] if field == "sources" else list[entry]
    adapter: TypeAdapter[list[Any]] = TypeAdapter(entries, config=ConfigDict(strict=True))
    return adapter


def allowing_plain_http(config: Config) -> Config:
    """The config with ``allow_http`` set on every source and entry that sends a token (``run --allow-http``)."""
    sources = [
        source.model_copy(update={"allow_http": True}) if "allow_http" in type(source).model_fields else source
        for source in config.sources
    ]
    enrich = [entry.model_copy(update={"allow_http": True}) for entry in config.enrich]
    return config.model_copy(update={"sources": sources, "enrich": enrich})


def load_config(path: Path) -> Config:
    """Read and validate a config file; raise ConfigError naming the file and key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give the path of a .toml file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: is not valid TOML: {exc}") from None
    if "path" in data:
        raise ConfigError(f"{path}: path: unknown key at the top level; did you mean a source's path?")
    # Validate [state] even when absent, so that its default path is resolved like a written one.
    data.setdefault("state", {})
    try:
        config = Config.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(path, error, data) for error in exc.errors())) from None
    return config.model_copy(update={"path": path})


def _describe(path: Path, error: Any, data: dict[str, Any]) -> str:
    location = _key_path(error["loc"])
    kind = error["type"]
    given = error.get("input")
    if kind == "missing":
        message = "is required"
    elif kind == "extra_forbidden":
        message = "unknown key; check its spelling against the README's config reference"
    elif kind == "union_tag_invalid":
        location = f"{location}.type" if location else "type"
        kinds, what = (ENRICH_TYPES, "enrich") if location.startswith("enrich[") else (SOURCE_TYPES, "source")
        message = f"unknown {what} type '{error['ctx']['tag']}'; use one of {', '.join(kinds)}"
    elif kind == "union_tag_not_found":
        location = f"{location}.type" if location else "type"
        kinds = ENRICH_TYPES if location.startswith("enrich[") else SOURCE_TYPES
        message = f"is required; use one of {', '.join(kinds)}"
    elif kind == "literal_error":
        message = f"is {given!r}; use one of {error['ctx']['expected']}"
    elif kind in _WANTED:
        message = f"must be {_WANTED[kind]}, not {_toml_type(given)}"
    elif kind == "value_error":
        # A check on a whole table names the keys it is about: "key.path: message", a line each.
        lines = []
        for problem in str(error["ctx"]["error"]).splitlines():
            named = _KEYED_MESSAGE.match(problem)
            key, sentence = location, problem
            if named:
                key = f"{location}.{named['key']}" if location else named["key"]
                sentence = named["message"]
            lines.append(_line(path, key, _source_name(error["loc"], data), sentence))
        return "\n".join(lines)
    else:
        message = error["msg"][0].lower() + error["msg"][1:]
    return _line(path, location, _source_name(error["loc"], data), message)


def _line(path: Path, location: str, source: str | None, message: str) -> str:
    where = f"{location} (source '{source}')" if source else location
    return f"{path}: {where}: {message}" if where else f"{path}: {message}"


def _key_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        elif item in SOURCE_TYPES and parts and parts[-1].startswith("sources["):
            continue  # pydantic names the union member; the user never wrote it
        elif item in ENRICH_TYPES and parts and parts[-1].startswith("enrich["):
            continue
        else:
            parts.append(str(item))
    return ".".join(parts)


def _source_name(loc: tuple[Any, ...], data: dict[str, Any]) -> str | None:
    if len(loc) >= 2 and loc[0] == "sources" and isinstance(loc[1], int):
        sources = data.get("sources")
        if isinstance(sources, list) and loc[1] < len(sources) and isinstance(sources[loc[1]], dict):
            name = sources[loc[1]].get("name")
            return name if isinstance(name, str) else None
    return None


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    shown = repr(value) if isinstance(value, (bool, int, float, str)) else ""
    return f"{names.get(type(value), type(value).__name__)} {shown}".strip()
