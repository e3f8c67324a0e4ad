"""The config file: every mistake named by file and key, exit 2, nothing run."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import WriteFile, source_block

from backfill.config import load_config
from backfill.errors import ConfigError


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as error:
        load_config(path)
    return str(error.value)


def test_defaults_and_paths_relative_to_the_config_file(write: WriteFile, tmp_path: Path) -> None:
    config = load_config(write("configs/shop.toml", source_block("runs", "../data/runs.csv")))
    assert config.devgrid.url == "https://prod.api.devgrid.io"
    assert config.devgrid.api_key_env == "DEVGRID_API_KEY"
    assert config.devgrid.batch_size == 15
    assert Path(config.state.path) == tmp_path / "configs/.backfill/state.db"
    assert Path(config.sources[0].path).resolve() == (tmp_path / "data/runs.csv").resolve()  # type: ignore[attr-defined]
    assert config.normalize.environments == ["production", "staging", "development"]
    assert config.normalize.env_aliases == {"prod": "production", "stg": "staging", "dev": "development"}
    assert config.normalize.default_timezone == "UTC"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[devgrid]\nbatch_size = "15"\n',
            "devgrid.batch_size: must be an integer, not a string '15'",
        ),
        ("[devgrid]\nbatch_size = 16\n", "devgrid.batch_size: input should be less than or equal to 15"),
        ("[devgrid]\nbatch_size = 0\n", "devgrid.batch_size: input should be greater than or equal to 1"),
        ('[devgrid]\nurl = "prod.api.devgrid.io"\n', "devgrid.url: must start with https://"),
        ('[devgrid]\napi_key = "secret"\n', "devgrid.api_key: unknown key; check its spelling"),
        ("[state]\npath = 5\n", "state.path: must be a string, not an integer 5"),
        ('[normalize]\nenvironments = ["Production"]\n', "normalize.environments: 'Production' must be lowercase"),
        ('[normalize]\nenv_aliases = { prod = "prd" }\n', "normalize.env_aliases.prod: points at 'prd', which is not"),
        ('[normalize]\ndefault_timezone = "CEST"\n', "normalize.default_timezone: 'CEST' is not a time zone name"),
    ],
)
def test_top_level_mistakes(write: WriteFile, text: str, message: str) -> None:
    path = write("backfill.toml", text + source_block("runs", "runs.csv"))
    assert _error(path).startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"preset": "gitlab"},
            "sources[0].preset (source 'runs'): is 'gitlab'; use one of 'github-actions', 'gitlab-ci'",
        ),
        ({"pathh": "x"}, "sources[0].pathh (source 'runs'): unknown key"),
        ({"entity_id": None}, "sources[0].entity_id (source 'runs'): is required; set entity_id"),
        ({"entity_column": "app"}, "sources[0].entity_id (source 'runs'): set entity_id or entity_column, not both"),
        ({"env": "qa"}, "sources[0].env: 'qa' is not one of production, staging, development (nor an alias of one)"),
        ({"status_map": {"completed": "succeeded"}}, "sources[0].status_map.completed (source 'runs'): is 'succeeded'"),
        ({"match": {"name": 5}}, "sources[0].match.name"),
    ],
)
def test_source_mistakes(write: WriteFile, keys: dict[str, object], message: str) -> None:
    path = write("backfill.toml", source_block("runs", "runs.csv", **keys))
    assert message in _error(path)


def test_source_names_are_simple(write: WriteFile) -> None:
    path = write("backfill.toml", source_block("shop runs", "runs.csv"))
    assert "sources[0].name (source 'shop runs'): string should match pattern" in _error(path)


def test_unknown_source_type_and_duplicate_names(write: WriteFile) -> None:
    text = (
        source_block("runs", "runs.csv") + source_block("runs", "more.csv") + '[[sources]]\nname = "x"\ntype = "svn"\n'
    )
    path = write("backfill.toml", text)
    assert _error(path).splitlines() == [
        f"{path}: sources[2].type (source 'x'): unknown source type 'svn'; use one of ci-export, git-tags, "
        "github-releases, github-deployments, gitlab-releases, gitlab-deployments",
    ]
    path = write("backfill.toml", source_block("runs", "runs.csv") + source_block("runs", "more.csv"))
    assert _error(path) == f"{path}: sources[1].name: 'runs' is used twice; names must be unique"


def test_file_level_mistakes(write: WriteFile, tmp_path: Path) -> None:
    assert _error(tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: no such config file"
    path = write("bad.toml", "[devgrid\n")
    assert _error(path).startswith(f"{path}: is not valid TOML: ")
    assert "line 1" in _error(path)
    path = write("empty.toml", "")
    assert _error(path) == f"{path}: sources: is required"
    path = write("binary.toml", b"\xff\xfe")
    assert _error(path) == f"{path}: is not UTF-8 text (byte 0); save it as UTF-8"


def test_every_example_config_is_valid() -> None:
    from helpers import REPO

    examples = sorted((REPO / "configs").glob("*.toml"))
    assert examples
    for example in examples:
        load_config(example)
