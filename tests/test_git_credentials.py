"""Clone URLs and their credentials: a token reaches git per command, never a file, a command line or a message."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from githttp import git_http_server
from gitrepo import GitRepo
from helpers import WriteFile

from backfill.config import load_config
from backfill.errors import ConfigError
from backfill.job import plan_run

TOKEN = "ghp_s3cretT0ken9876"


def _config(write: WriteFile, repo: str, *extra: str) -> Path:
    lines = ["[[sources]]", 'name = "tags"', 'type = "git-tags"', f'repo = "{repo}"', 'entity_id = "shop"']
    lines += ['env = "production"', *extra]
    return write("backfill.toml", "\n".join(lines) + "\n")


@pytest.fixture
def served(tmp_path: Path) -> GitRepo:
    """A bare repository with two release tags, under tmp_path/served/shop.git."""
    work = GitRepo(tmp_path / "work")
    work.commit("one", "2024-01-01T10:00:00Z")
    work.tag("v1.0.0", message="1.0.0", date="2024-01-01T11:00:00Z")
    work.commit("two", "2024-02-01T10:00:00Z")
    work.tag("v1.1.0", message="1.1.0", date="2024-02-01T11:00:00Z")
    (tmp_path / "served").mkdir()
    work.git("clone", "--quiet", "--bare", str(work.path), str(tmp_path / "served" / "shop.git"))
    return work


@pytest.fixture
def logged_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """git on PATH behind a wrapper that writes down every command line, as ps would show it."""
    shim = tmp_path / "bin"
    shim.mkdir()
    log = tmp_path / "commands.log"
    real = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True, check=True).stdout.strip()
    (shim / "git").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n', encoding="utf-8")
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    return log


def _every_file_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_a_token_from_the_environment_clones_and_never_lands_on_disk_or_a_command_line(
    write: WriteFile, served: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logged_git: Path
) -> None:
    monkeypatch.setenv("GIT_TOKEN", TOKEN)
    with git_http_server(tmp_path / "served", "x-access-token", TOKEN) as (url, seen):
        config = _config(write, f"{url}/shop.git", 'token_env = "GIT_TOKEN"')
        first = plan_run(load_config(config))
        assert not first.failures, first.failures
        assert first.plan.events.get_column("build_id").to_list() == ["v1.0.0", "v1.1.0"]
        served.commit("three", "2024-03-01T10:00:00Z")
        served.tag("v1.2.0", message="1.2.0", date="2024-03-01T11:00:00Z")
        served.git("push", "--quiet", str(tmp_path / "served" / "shop.git"), "main", "--tags")
        again = plan_run(load_config(config))  # a fetch into the cached clone
        assert again.plan.events.get_column("build_id").to_list() == ["v1.0.0", "v1.1.0", "v1.2.0"]
    assert seen, "the server never saw the token, so this test proves nothing"
    repos = tmp_path / ".backfill" / "repos"
    assert stat.S_IMODE(repos.stat().st_mode) == 0o700
    files = _every_file_under(repos)
    assert any(path.name == "config" for path in files)
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), path
    commands = logged_git.read_text(encoding="utf-8")
    assert "clone" in commands and "fetch" in commands
    assert TOKEN not in commands
    assert TOKEN not in " ".join([*first.warnings, *again.warnings])


def test_a_wrong_token_says_what_git_said_without_the_token(
    write: WriteFile, served: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_TOKEN", "wrong-" + TOKEN)
    with git_http_server(tmp_path / "served", "x-access-token", TOKEN) as (url, _):
        result = plan_run(load_config(_config(write, f"{url}/shop.git", 'token_env = "GIT_TOKEN"')))
    message = str(result.failures[0])
    assert message.startswith(f"source 'tags': cannot fetch {url}/shop.git (fatal: Authentication failed for ")
    assert TOKEN not in message


def test_a_token_variable_that_is_not_set_names_it(write: WriteFile, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GIT_TOKEN", raising=False)
    result = plan_run(load_config(_config(write, "https://git.example.com/acme/shop.git", 'token_env = "GIT_TOKEN"')))
    assert [str(failure) for failure in result.failures] == [
        "source 'tags': GIT_TOKEN is not set: export GIT_TOKEN=<token> (named by token_env)"
    ]


@pytest.mark.parametrize(
    "url",
    [
        f"https://deploy-bot:{TOKEN}@git.example.com/acme/shop.git",
        f"https://{TOKEN}@github.com/acme/shop.git",
        f"ssh://git:{TOKEN}@git.example.com/acme/shop.git",
    ],
)
def test_a_url_with_credentials_is_refused_pointing_at_token_env(write: WriteFile, url: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_config(write, url))
    message = str(error.value)
    assert "sources[0].repo (source 'tags'): the URL holds credentials" in message
    assert 'token_env = "GIT_TOKEN"' in message
    assert TOKEN not in message and "deploy-bot" not in message


@pytest.mark.parametrize(
    ("repo", "extra", "message"),
    [
        ("repo", 'token_env = "GIT_TOKEN"', "sources[0].token_env (source 'tags'): is for https:// clone URLs"),
        ("git@github.com:acme/shop.git", 'token_env = "GIT_TOKEN"', "sources[0].token_env (source 'tags'): is for"),
        (
            "http://git.example.com/shop.git",
            'token_env = "GIT_TOKEN"',
            "sources[0].repo (source 'tags'): is plain http on another machine",
        ),
        ("https://git.example.com/shop.git", 'token_env = "GIT TOKEN"', "sources[0].token_env (source 'tags'):"),
    ],
)
def test_token_env_mistakes(write: WriteFile, repo: str, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_config(write, repo, extra))
    assert message in str(error.value)


def test_ssh_urls_keep_their_user(write: WriteFile) -> None:
    assert load_config(_config(write, "git@github.com:acme/shop.git")).sources[0].repo == "git@github.com:acme/shop.git"  # type: ignore[attr-defined]
    assert load_config(_config(write, "ssh://git@github.com/acme/shop.git")).sources


def test_the_environment_git_sees_holds_no_token_unless_asked(tmp_path: Path) -> None:
    """Without token_env, git gets no credential settings of ours: the user's own helpers still work."""
    from backfill.extract.git.remote import _credential_env

    env = _credential_env("https://git.example.com/acme/shop.git", "x-access-token", TOKEN, {"GIT_CONFIG_COUNT": "1"})
    assert env["GIT_CONFIG_COUNT"] == "3"
    assert env["GIT_CONFIG_KEY_1"] == "credential.helper" and env["GIT_CONFIG_VALUE_1"] == ""
    assert env["GIT_CONFIG_KEY_2"] == "credential.https://git.example.com.helper"
    assert TOKEN not in env["GIT_CONFIG_VALUE_2"] and "$BACKFILL_GIT_TOKEN" in env["GIT_CONFIG_VALUE_2"]
    assert sys.platform != "win32"


def test_a_failed_clone_names_no_credentials_git_prints(
    write: WriteFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL rewritten by the user's own git config (insteadOf) may hold userinfo; the message does not."""
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(
        f'[url "http://bot:{TOKEN}@127.0.0.1:9/"]\n\tinsteadOf = https://git.example.com/\n', encoding="utf-8"
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    result = plan_run(load_config(_config(write, "https://git.example.com/acme/shop.git")))
    message = str(result.failures[0])
    assert message.startswith("source 'tags': cannot fetch https://git.example.com/acme/shop.git (fatal: ")
    assert TOKEN not in message and "bot:" not in message


def test_a_token_that_is_not_one_word_fails_its_source_without_showing_it(
    write: WriteFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A line break would add lines of its own to git's credential protocol.
    monkeypatch.setenv("GIT_TOKEN", "sEcReT\nurl=https://elsewhere.example")
    result = plan_run(load_config(_config(write, "https://git.example.com/acme/shop.git", 'token_env = "GIT_TOKEN"')))
    assert [str(failure) for failure in result.failures] == [
        "source 'tags': $GIT_TOKEN: the token holds a line break: it must hold the token alone, on one line"
    ]
