"""backfill init without a config: a first config from the repository's remote, tags and CI export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from gitrepo import GitRepo
from helpers import FIXTURES

from backfill.cli import main
from backfill.config import load_config
from backfill.errors import EXIT_OK, EXIT_USAGE
from backfill.extract.ci_export import CiExportSource
from backfill.extract.git_tags import GitTagsSource
from backfill.starter_config import parse_remote, tag_naming


def init(folder: Path, *args: str) -> Result:
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(main, ["init", *args], catch_exceptions=False)
    finally:
        os.chdir(cwd)
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "shop")
    for number, tag in enumerate(["v1.0.0", "v1.1.0", "v2.0.0-rc.1", "v2.0.0", "nightly"]):
        repo.commit(f"change {number}", f"2025-0{number + 1}-01T10:00:00+00:00")
        repo.tag(tag, message=f"release {tag}", date=f"2025-0{number + 1}-02T10:00:00+00:00")
    repo.git("remote", "add", "origin", "https://ci-bot:s3cr3t-token@github.com/acme/web-shop.git")
    return repo


def test_init_writes_a_config_that_loads_and_reads_the_release_tags(repo: GitRepo) -> None:
    result = init(repo.path)
    assert result.exit_code == EXIT_OK, result.output
    path = repo.path / "backfill.toml"
    assert "backfill run -c backfill.toml --dry-run review.csv" in result.stderr
    text = path.read_text(encoding="utf-8")
    assert "s3cr3t-token" not in text and "ci-bot" not in text
    config = load_config(path)
    (source,) = config.sources
    assert isinstance(source, GitTagsSource)
    assert (source.pattern, source.entity_id, source.env) == ("v*", "web-shop", "production")
    assert Path(source.repo).resolve() == repo.path.resolve()
    assert "4 of 5 tags are named like" in text and "not matched: nightly" in text
    # The GitHub alternative is offered, commented, with the owner/repo from the remote.
    assert '# repo = "acme/web-shop"' in text and '# type = "github-deployments"' in text
    review = repo.path / "review.csv"
    dry = CliRunner().invoke(main, ["run", "-c", str(path), "--dry-run", str(review)], catch_exceptions=False)
    assert dry.exit_code == EXIT_OK, dry.output
    # v2.0.0-rc.1 is a pre-release, and nightly does not match: three releases.
    assert len(review.read_text(encoding="utf-8").splitlines()) == 1 + 3


def test_init_never_overwrites_a_file(repo: GitRepo) -> None:
    path = repo.path / "backfill.toml"
    path.write_text("# mine\n", encoding="utf-8")
    result = init(repo.path, "--entity", "shop")
    assert result.exit_code == EXIT_USAGE
    assert "already exists; init never overwrites a file" in result.stderr
    assert path.read_text(encoding="utf-8") == "# mine\n"


def test_init_with_a_ci_export_writes_that_source_first(repo: GitRepo) -> None:
    export = FIXTURES / "ci" / "github_actions_runs_panjf2000_ants.json"
    result = init(repo.path, "-c", "configs/devgrid.toml", "--ci-export", str(export), "--entity", "ants")
    assert result.exit_code == EXIT_OK, result.output
    config = load_config(repo.path / "configs" / "devgrid.toml")
    (source,) = config.sources  # the tags are offered commented: both would count each deployment twice
    assert isinstance(source, CiExportSource)
    assert (source.preset, source.entity_id, Path(source.path)) == ("github-actions", "ants", export)
    assert '# type = "git-tags"' in (repo.path / "configs" / "devgrid.toml").read_text(encoding="utf-8")


def test_init_needs_a_preset_when_the_remote_does_not_say(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    GitRepo(folder).commit("first", "2025-01-01T10:00:00+00:00")
    result = init(folder, "--ci-export", "runs.csv")
    assert result.exit_code == EXIT_USAGE and "--preset" in result.stderr
    assert not (folder / "backfill.toml").exists()


def test_init_outside_a_repository_still_writes_a_config_that_loads(tmp_path: Path) -> None:
    result = init(tmp_path, "--entity", "My App")
    assert result.exit_code == EXIT_OK, result.output
    config = load_config(tmp_path / "backfill.toml")
    assert config.sources[0].name == "My-App-tags" and config.sources[0].entity_id == "My App"
    assert "is not a git repository" in (tmp_path / "backfill.toml").read_text(encoding="utf-8")


def test_with_a_config_init_creates_the_state_file_as_before(repo: GitRepo) -> None:
    assert init(repo.path).exit_code == EXIT_OK
    result = init(repo.path)
    assert result.exit_code == EXIT_OK, result.output
    assert (repo.path / ".backfill" / "state.db").is_file()


def test_init_finds_the_config_path_in_backfill_config(repo: GitRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_CONFIG", str(repo.path / "ci" / "catch-up.toml"))
    assert init(repo.path).exit_code == EXIT_OK
    assert (repo.path / "ci" / "catch-up.toml").is_file() and not (repo.path / "backfill.toml").exists()


@pytest.mark.parametrize(
    ("url", "forge", "host", "path"),
    [
        ("https://github.com/acme/shop.git", "github", "github.com", "acme/shop"),
        ("git@github.com:acme/shop.git", "github", "github.com", "acme/shop"),
        ("ssh://git@github.example.com:2222/acme/shop", "github", "github.example.com", "acme/shop"),
        ("https://gitlab.com/group/sub/project.git", "gitlab", "gitlab.com", "group/sub/project"),
        ("git@gitlab.example.org:group/project.git", "gitlab", "gitlab.example.org", "group/project"),
        ("https://git.example.com/team/repo.git", None, "git.example.com", "team/repo"),
    ],
)
def test_remotes_are_read_in_every_form(url: str, forge: str | None, host: str, path: str) -> None:
    remote = parse_remote(url)
    assert remote is not None
    assert (remote.forge, remote.host, remote.path) == (forge, host, path)


def test_a_remote_with_credentials_is_shown_without_them() -> None:
    remote = parse_remote("https://x-access-token:ghs_abc123@github.com/acme/shop.git")
    assert remote is not None and "ghs_abc123" not in remote.url and "x-access-token" not in remote.url


@pytest.mark.parametrize(
    ("tags", "pattern"),
    [
        (("v1.0", "v1.1", "v2.0"), "v*"),
        (("1.0.0", "1.1.0", "latest"), "[0-9]*"),
        (("release-2024.01", "release-2024.02", "v1"), "release-*"),
        (("api/v1.0", "api/v1.1", "web/v2.0"), "api/v*"),
        (("stable", "latest"), "*"),
        ((), "*"),
    ],
)
def test_tag_naming_picks_the_most_common_shape(tags: tuple[str, ...], pattern: str) -> None:
    assert tag_naming(tags)[0] == pattern
