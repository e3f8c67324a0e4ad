"""The config file: every mistake named by file and key, exit 2, nothing run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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


_TAGS = '[[sources]]\nname = "tags"\ntype = "git-tags"\nrepo = "."\nentity_id = "shop"\nenv = "production"\n'
_RELEASES = (
    '[[sources]]\nname = "gh"\ntype = "github-releases"\nrepo = "acme/shop"\nentity_id = "shop"\nenv = "production"\n'
)
_KINDS = "use one of ci-export, git-tags, github-releases, github-deployments, gitlab-releases, gitlab-deployments"


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        # Each entry is checked against its own type's model, whatever types the others name.
        (
            _TAGS.replace('repo = "."', "repo = 5") + source_block("runs", "runs.csv", preset="nope"),
            [
                "sources[0].repo (source 'tags'): must be a string, not an integer 5",
                "sources[1].preset (source 'runs'): is 'nope'; use one of 'github-actions', 'gitlab-ci', 'jenkins', "
                "'circleci', 'azure-devops' or 'events'",
            ],
        ),
        (
            _TAGS.replace('env = "production"', 'env_from_tag = "re:x"')
            + _RELEASES.replace('repo = "acme/shop"', "repo = 3\nbogus = 1"),
            [
                "sources[0].env_from_tag (source 'tags'): must be a regular expression with a group named env, "
                "like re:^deploy/(?P<env>[a-z]+)/",
                "sources[1].repo (source 'gh'): must be a string, not an integer 3",
                "sources[1].bogus (source 'gh'): unknown key; check its spelling against the README's config reference",
            ],
        ),
        # An unknown, missing or misspelt type is named with every type, beside a known one too.
        (
            _TAGS + '[[sources]]\nname = "x"\ntype = "svn"\n',
            [f"sources[1].type (source 'x'): unknown source type 'svn'; {_KINDS}"],
        ),
        (
            _TAGS + '[[sources]]\nname = "x"\ntype = 5\n',
            [f"sources[1].type (source 'x'): unknown source type '5'; {_KINDS}"],
        ),
        (_TAGS + '[[sources]]\nname = "x"\n', [f"sources[1].type (source 'x'): is required; {_KINDS}"]),
        (
            '[[sources]]\nname = "a"\ntype = ["git-tags"]\n',
            [f"sources[0].type (source 'a'): unknown source type '['git-tags']'; {_KINDS}"],
        ),
        (
            'sources = [1, "a"]\n',
            [f"sources[{i}]: input should be a valid dictionary or object to extract fields from" for i in (0, 1)],
        ),
        ("sources = []\n", ["sources: list should have at least 1 item after validation, not 0"]),
        (
            "[devgrid]\nbatch_size = 99\n\n"
            + _TAGS
            + '[[sources]]\nname = "y"\ntype = "svn"\n[normalize]\nenvironments = ["Prod"]\n',
            [
                "devgrid.batch_size: input should be less than or equal to 15",
                "normalize.environments: 'Prod' must be lowercase with no surrounding spaces (DevGrid matches env exactly)",
                f"sources[1].type (source 'y'): unknown source type 'svn'; {_KINDS}",
            ],
        ),
        (
            _TAGS
            + '[[enrich]]\nname = "c"\ntype = "servicenow-changes"\ninstance = "ftp://x"\n[enrich.exact]\nu = "build_id"\n'
            + '[[enrich]]\nname = "i"\ntype = "servicenow-incidents"\npath = "i.csv"\npage_size = 0\n',
            [
                "enrich[0].instance: must start with https:// (for example https://acme.service-now.com)",
                "enrich[1].page_size: input should be greater than or equal to 1",
            ],
        ),
        (
            _TAGS + '[[enrich]]\nname = "e"\ntype = "servicenow-chg"\npath = "a"\n',
            [
                "enrich[0].type: unknown enrich type 'servicenow-chg'; use one of servicenow-changes, servicenow-incidents"
            ],
        ),
        (
            _TAGS + '[[enrich]]\nname = "e"\npath = "a"\n',
            ["enrich[0].type: is required; use one of servicenow-changes, servicenow-incidents"],
        ),
    ],
)
def test_entries_of_several_types_each_meet_their_own_model(write: WriteFile, text: str, lines: list[str]) -> None:
    path = write("backfill.toml", text)
    assert _error(path).splitlines() == [f"{path}: {line}" for line in lines]


def test_every_source_type_is_read_by_the_model_and_extractor_it_names(write: WriteFile) -> None:
    from backfill.extract import REGISTRY, SOURCE_TYPES

    assert list(REGISTRY) == list(SOURCE_TYPES)
    for name, extractor in REGISTRY.items():
        assert extractor.type_name == name
        assert extractor.config_model.model_fields["type"].annotation == Literal[name]  # type: ignore[valid-type]
    text = _TAGS + source_block("runs", "runs.csv") + _RELEASES + _TAGS.replace('"tags"', '"more"')
    config = load_config(write("backfill.toml", text))
    assert [(type(source).__name__, source.name) for source in config.sources] == [
        ("GitTagsSource", "tags"),
        ("CiExportSource", "runs"),
        ("GithubReleasesSource", "gh"),
        ("GitTagsSource", "more"),
    ]
