"""git-tags: real repositories built in tmp_path, every event field checked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
from gitrepo import GitRepo
from helpers import WriteFile, plan_for

from backfill.config import load_config
from backfill.errors import ConfigError


def _source(repo: Path | str = "repo", **keys: object) -> str:
    lines = ["[[sources]]", 'name = "tags"', 'type = "git-tags"', f'repo = "{repo}"', 'entity_id = "shop"']
    keys.setdefault("env", "production")
    for key, value in keys.items():
        if value is None:
            continue
        if isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(item).replace(chr(39), chr(34)) for item in value)}]")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


@pytest.fixture
def shop(tmp_path: Path) -> GitRepo:
    """A release history: annotated and lightweight tags, a hotfix, pre-releases, other tags, a re-tag."""
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit("Initial release", "2024-01-10T09:00:00+01:00")
    repo.tag("v1.0.0", message="Release 1.0.0\n\nThe first one.", date="2024-01-10T10:00:00+01:00")
    repo.commit("Add search", "2024-02-01T12:00:00-05:00")
    repo.tag("v1.1.0-rc1", message="Release candidate", date="2024-02-01T13:00:00-05:00")
    repo.tag("v1.1.0", message="Release 1.1.0", date="2024-02-02T08:30:00-05:00")
    repo.tag("docs-2024", message="Docs snapshot", date="2024-02-02T09:00:00-05:00")
    repo.commit("Fix rounding", "2024-02-05T23:30:00+09:00")
    repo.tag(
        "v1.1.1-hotfix",
        message="Hotfix: rounding",
        date="2024-02-05T23:45:00+09:00",
        who="Ops Person <ops@example.com>",
    )
    repo.commit("Faster search", "2024-03-01T10:00:00+00:00")
    repo.tag("v1.2.0")  # lightweight: the commit's date and subject
    repo.tag("v1.2.0+same", message="Same commit, second tag", date="2024-03-01T11:00:00+00:00")
    repo.tag("v1.2.1", message="Roll back to the first release", date="2024-03-02T10:00:00+00:00", at=first)
    return repo


def test_every_field_of_every_kind_of_tag(write: WriteFile, shop: GitRepo) -> None:
    config = write(
        "backfill.toml",
        _source(pattern="v*", hotfix_pattern="*-hotfix*", build_url="https://github.com/acme/shop/releases/tag/{tag}"),
    )
    plan = plan_for(config).plan
    sha = {tag: shop.git("rev-parse", f"{tag}^{{commit}}") for tag in ("v1.0.0", "v1.1.0", "v1.1.1-hotfix", "v1.2.0")}
    events = plan.events.select(
        "timestamp",
        "build_id",
        "build_commit_sha",
        "description",
        "initiator",
        "deployment_type",
        "build_url",
        "env",
        "status",
        "entityId",
    )
    assert events.rows() == [
        (
            "2024-01-10T09:00:00Z",
            "v1.0.0",
            sha["v1.0.0"],
            "Release 1.0.0",
            "releases@example.com",
            None,
            "https://github.com/acme/shop/releases/tag/v1.0.0",
            "production",
            "success",
            "shop",
        ),
        (
            "2024-02-02T13:30:00Z",
            "v1.1.0",
            sha["v1.1.0"],
            "Release 1.1.0",
            "releases@example.com",
            None,
            "https://github.com/acme/shop/releases/tag/v1.1.0",
            "production",
            "success",
            "shop",
        ),
        (
            "2024-02-05T14:45:00Z",
            "v1.1.1-hotfix",
            sha["v1.1.1-hotfix"],
            "Hotfix: rounding",
            "ops@example.com",
            "hotfix",
            "https://github.com/acme/shop/releases/tag/v1.1.1-hotfix",
            "production",
            "success",
            "shop",
        ),
        (
            "2024-03-01T10:00:00Z",
            "v1.2.0",
            sha["v1.2.0"],
            "Faster search",
            None,
            None,
            "https://github.com/acme/shop/releases/tag/v1.2.0",
            "production",
            "success",
            "shop",
        ),
        (
            "2024-03-01T11:00:00Z",
            "v1.2.0+same",
            sha["v1.2.0"],
            "Same commit, second tag",
            "releases@example.com",
            None,
            "https://github.com/acme/shop/releases/tag/v1.2.0+same",
            "production",
            "success",
            "shop",
        ),
        (
            "2024-03-02T10:00:00Z",
            "v1.2.1",
            sha["v1.0.0"],
            "Roll back to the first release",
            "releases@example.com",
            "rollback",
            "https://github.com/acme/shop/releases/tag/v1.2.1",
            "production",
            "success",
            "shop",
        ),
    ]
    skipped = dict(plan.skips.select("reason", "rows").iter_rows())
    assert skipped == {"tag matches none of v*": 1, "pre-release 1.1.0rc1 (PEP 440)": 1}
    assert plan.counts.row(0, named=True) == {
        "source": "tags",
        "read": 8,
        "skipped": 2,
        "rejected": 0,
        "duplicates": 0,
        "events": 6,
    }


def test_time_source_commit_and_tagger(write: WriteFile, shop: GitRepo) -> None:
    by_commit = plan_for(write("a.toml", _source(pattern="v1.1.0", time_source="commit"))).plan.events
    assert by_commit.select("build_id", "timestamp").rows() == [("v1.1.0", "2024-02-01T17:00:00Z")]
    by_tagger = plan_for(write("b.toml", _source(pattern=["v1.2.0", "v1.1.0"], time_source="tagger"))).plan
    assert by_tagger.events.get_column("build_id").to_list() == ["v1.1.0"]
    assert by_tagger.rejects.select("build_id", "reason").rows() == [
        ("v1.2.0", 'a lightweight tag has no tagger date; use time_source = "auto" or "commit"')
    ]


def test_env_from_tag(write: WriteFile, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("one", "2024-05-01T10:00:00Z")
    repo.tag("deploy/staging/42", message="to staging", date="2024-05-01T10:05:00Z")
    repo.tag("deploy/production/42", message="to production", date="2024-05-01T11:00:00Z")
    repo.tag("v42", message="a release tag", date="2024-05-01T11:30:00Z")
    config = write("backfill.toml", _source(env=None, env_from_tag="re:^deploy/(?P<env>[a-z]+)/"))
    plan = plan_for(config).plan
    assert plan.events.select("build_id", "env").rows() == [
        ("deploy/staging/42", "staging"),
        ("deploy/production/42", "production"),
    ]
    assert plan.skips.select("reason", "rows").rows() == [
        ("tag does not match env_from_tag re:^deploy/(?P<env>[a-z]+)/", 1)
    ]


def test_a_rollback_to_an_ancestor_needs_the_repository(write: WriteFile, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("one", "2024-01-01T10:00:00Z")
    older = repo.commit("two", "2024-01-02T10:00:00Z")
    repo.commit("three", "2024-01-03T10:00:00Z")
    repo.tag("v3", message="v3", date="2024-01-03T11:00:00Z")
    # An annotated tag with an empty message: no description, so the rule writes one.
    repo.git("tag", "-a", "v2-again", "-m", "", older, date="2024-01-04T11:00:00Z")
    repo.commit("four", "2024-01-05T10:00:00Z")
    repo.tag("v4", message="v4", date="2024-01-05T11:00:00Z")
    events = plan_for(write("backfill.toml", _source())).plan.events
    rows = events.select("build_id", "deployment_type", "description").rows()
    assert rows[0] == ("v3", None, "v3")
    assert rows[1][:2] == ("v2-again", "rollback")
    assert rows[1][2] == f"Rollback to {older[:12]} (an ancestor of v3)"
    assert rows[2] == ("v4", None, "v4")


def test_rollback_inference_can_be_turned_off(write: WriteFile, shop: GitRepo) -> None:
    config = write("backfill.toml", "[normalize]\ninfer_rollbacks = false\n" + _source(pattern="v*"))
    assert "rollback" not in plan_for(config).plan.events.get_column("deployment_type").to_list()


def test_a_catch_up_run_picks_up_new_tags_only(write: WriteFile, shop: GitRepo, tmp_path: Path) -> None:
    from receivers import start_receiver
    from test_send import cli, send

    config = write("backfill.toml", _source(pattern="v*", hotfix_pattern="*-hotfix"))
    for receiver in start_receiver(tmp_path):
        assert send(config, receiver)[1]["delivery"]["sent"] == 6
        shop.commit("More search", "2024-04-01T10:00:00Z")
        shop.tag("v1.3.0", message="Release 1.3.0", date="2024-04-01T11:00:00Z")
        result, summary = send(config, receiver)
        assert result.exit_code == 0
        assert (summary["delivery"]["sent"], summary["delivery"]["already_sent"]) == (1, 6)
        assert [event["event"]["attributes"]["build_id"] for event in receiver.events()][-1] == "v1.3.0"
        assert cli("run", "-c", str(config), "--url", receiver.url).exit_code == 0


def test_a_pattern_that_matches_nothing_warns_with_the_tags_it_saw(write: WriteFile, shop: GitRepo) -> None:
    result = plan_for(write("backfill.toml", _source(pattern="release-*")))
    assert result.plan.events.height == 0
    assert result.warnings == [
        "source 'tags': pattern release-* matches none of the 8 tags (docs-2024, v1.0.0, v1.1.0, v1.1.0-rc1, "
        "v1.1.1-hotfix, v1.2.0, v1.2.0+same, v1.2.1)"
    ]


def test_bad_repositories_name_the_source_and_other_sources_still_run(write: WriteFile, tmp_path: Path) -> None:
    (tmp_path / "not-a-repo").mkdir()
    good = GitRepo(tmp_path / "good")
    good.commit("one", "2024-01-01T10:00:00Z")
    good.tag("v1", message="v1", date="2024-01-01T10:00:00Z")
    text = (
        _source("missing").replace('"tags"', '"missing"')
        + _source("not-a-repo").replace('"tags"', '"plain"')
        + _source("file:///nowhere/at/all.git").replace('"tags"', '"unreachable"')
        + _source("good").replace('"tags"', '"good"')
    )
    result = plan_for(write("backfill.toml", text))
    assert [str(failure) for failure in result.failures] == [
        f"source 'missing': repo {tmp_path / 'missing'} does not exist; check repo (relative to the config file)",
        f"source 'plain': {tmp_path / 'not-a-repo'} is not a git repository; point repo at one",
        "source 'unreachable': cannot fetch file:///nowhere/at/all.git (fatal: '/nowhere/at/all.git' does not "
        "appear to be a git repository); check repo and your access to it",
    ]
    assert result.plan.events.get_column("build_id").to_list() == ["v1"]


def test_repo_names_the_repository_itself_not_a_folder_inside_one_nor_a_file(
    write: WriteFile, shop: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (shop.path / "docs").mkdir()
    (tmp_path / "notes.txt").write_text("not a repository\n", encoding="utf-8")
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "--bare", "--quiet", str(shop.path), str(bare)], check=True)
    # Another repository named by the environment does not stand in for the one the config names.
    monkeypatch.setenv("GIT_DIR", str(shop.path / ".git"))
    text = (
        _source(shop.path / "docs").replace('"tags"', '"inside"')
        + _source(tmp_path / "notes.txt").replace('"tags"', '"file"')
        + _source(tmp_path).replace('"tags"', '"above"')
        + _source(bare, pattern="v1.0.0").replace('"tags"', '"bare"')
    )
    result = plan_for(write("backfill.toml", text))
    assert [str(failure) for failure in result.failures] == [
        f"source 'inside': {shop.path / 'docs'} is not a git repository; point repo at one",
        f"source 'file': {tmp_path / 'notes.txt'} is not a git repository; point repo at one",
        f"source 'above': {tmp_path} is not a git repository; point repo at one",
    ]
    assert result.plan.events.get_column("build_id").to_list() == ["v1.0.0"]


def test_a_clone_url_is_cached_beside_the_state_and_fetched_again(
    write: WriteFile, shop: GitRepo, tmp_path: Path
) -> None:
    config = write("backfill.toml", _source(f"file://{shop.path}", pattern="v*", hotfix_pattern="*-hotfix"))
    assert plan_for(config).plan.events.height == 6
    caches = list((tmp_path / ".backfill" / "repos").iterdir())
    assert len(caches) == 1 and caches[0].name.startswith("repo-") and caches[0].name.endswith(".git")
    shop.commit("later", "2024-06-01T10:00:00Z")
    shop.tag("v2.0.0", message="2.0.0", date="2024-06-01T10:00:00Z")
    assert plan_for(config).plan.events.get_column("build_id").to_list()[-1] == "v2.0.0"


def test_a_git_bundle_works_like_a_clone_url(write: WriteFile, shop: GitRepo, tmp_path: Path) -> None:
    shop.git("bundle", "create", str(tmp_path / "shop.bundle"), "--all")
    config = write("backfill.toml", _source("shop.bundle", pattern="v*", hotfix_pattern="*-hotfix"))
    assert plan_for(config).plan.events.height == 6


def test_a_failed_clone_shows_the_line_that_says_what_failed(write: WriteFile, tmp_path: Path) -> None:
    """git starts with a harmless warning (the server ignores --filter); the cause comes after it."""
    source = GitRepo(tmp_path / "broken")
    (source.path / "file").write_text("content", encoding="utf-8")
    source.git("add", "file")
    source.commit("one", "2024-01-01T10:00:00Z")
    source.tag("v1", message="v1", date="2024-01-01T10:00:00Z")
    blob = source.git("rev-parse", "HEAD:file")
    (source.path / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    result = plan_for(write("backfill.toml", _source(f"file://{source.path}")))
    message = str(result.failures[0])
    assert message.startswith(f"source 'tags': cannot fetch file://{source.path} (")
    assert "warning:" not in message
    assert any(word in message for word in ("fatal:", "error:")), message


def test_a_corrupt_bundle_is_a_source_error_and_the_others_still_run(write: WriteFile, tmp_path: Path) -> None:
    good = GitRepo(tmp_path / "good")
    good.commit("one", "2024-01-01T10:00:00Z")
    good.tag("v1", message="v1", date="2024-01-01T10:00:00Z")
    good.git("bundle", "create", str(tmp_path / "good.bundle"), "--all")
    whole = (tmp_path / "good.bundle").read_bytes()
    write("header.bundle", b"# v2 git bundle\n\xff\xfe refs/heads/main\n\n")  # not UTF-8, as git echoes it
    write("cut.bundle", whole[: len(whole) // 2])
    write("noise.bundle", bytes(range(256)))
    text = "".join(
        _source(name).replace('"tags"', f'"{name.split(".")[0]}"')
        for name in ("header.bundle", "cut.bundle", "noise.bundle", "good.bundle")
    )
    result = plan_for(write("backfill.toml", text))
    failures = [str(failure) for failure in result.failures]
    assert [failure.split(":")[0] for failure in failures] == ["source 'header'", "source 'cut'", "source 'noise'"]
    for failure, name in zip(failures, ("header", "cut", "noise"), strict=True):
        assert failure.startswith(f"source '{name}': cannot fetch {tmp_path / name}.bundle ("), failure
        assert failure.endswith("); check repo and your access to it")
    assert result.plan.events.get_column("build_id").to_list() == ["v1"]


def test_without_git_on_path_the_source_fails_clearly(
    write: WriteFile, shop: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-git"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = plan_for(write("backfill.toml", _source()))
    assert [str(failure) for failure in result.failures] == [
        "source 'tags': git is not installed (no git on PATH); install it (apt-get install git) to read tags"
    ]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"env": None}, "sources[0].env (source 'tags'): set env = \"production\", or env_from_tag"),
        (
            {"env_from_tag": "^deploy/([a-z]+)/"},
            "sources[0].env_from_tag (source 'tags'): must be a regular expression",
        ),
        ({"time_source": "author"}, "sources[0].time_source (source 'tags'): is 'author'; use one of"),
        (
            {"pattern": "re:v[0-9"},
            "sources[0].pattern (source 'tags'): 'v[0-9' is not a regular expression backfill can use "
            "(unterminated character set at position 1)",
        ),
        (
            {"pattern": "re:^v(?=1)"},
            "sources[0].pattern (source 'tags'): '^v(?=1)' is not a regular expression backfill can use "
            "(look-around, including look-ahead and look-behind, is not supported)",
        ),
        ({"exclude": ["re:(?<!x)rc"]}, "sources[0].exclude (source 'tags'): '(?<!x)rc' is not a regular expression"),
        (
            {"hotfix_pattern": "re:(?P<x>a)(?P=x)"},
            "sources[0].hotfix_pattern (source 'tags'): '(?P<x>a)(?P=x)' is not a regular expression",
        ),
        (
            {"env_from_tag": "re:^deploy/(?P<env>[a-z]+)(?=/)"},
            "sources[0].env_from_tag (source 'tags'): '^deploy/(?P<env>[a-z]+)(?=/)' is not a regular expression",
        ),
    ],
)
def test_config_mistakes(write: WriteFile, keys: dict[str, object], message: str) -> None:
    path = write("backfill.toml", _source(**keys))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)


def test_many_tags_on_one_commit_are_many_events(write: WriteFile, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("one", "2024-01-01T10:00:00Z")
    stream = "".join(f"create refs/tags/t{i} HEAD\n" for i in range(300))
    subprocess.run(["git", "update-ref", "--stdin"], cwd=repo.path, input=stream, text=True, check=True)
    events = plan_for(write("backfill.toml", _source())).plan.events
    assert events.height == 300
    assert pl.Series(events.get_column("build_id")).n_unique() == 300


PRE_RELEASES = [
    "2.0.0rc1",
    "24.1b1",
    "v2.12.0a1",
    "8.1.0.dev0",
    "rel_2_0_0b1",
    "rel_0_4beta1",
    "curl-7_9_3-pre1",
    "8.0-m01",
    "v1.15.0-dev",
    "v1.5.0-alpha20230405",
]
FINALS = ["v2.0.0", "2.0", "curl-7_9_3", "1.0.post1", "v1.2.3+build.5", "rel_1_4_0", "release-2024-01-15"]


@pytest.fixture
def conventions(tmp_path: Path) -> GitRepo:
    """Tag names as real projects write them, pre-releases and finals, one commit each."""
    repo = GitRepo(tmp_path / "repo")
    for day, name in enumerate([*PRE_RELEASES, *FINALS], start=1):
        repo.commit(name, f"2024-01-{day:02d}T10:00:00Z")
        repo.tag(name, message=f"Release {name}", date=f"2024-01-{day:02d}T11:00:00Z")
    return repo


def test_pre_releases_are_skipped_whatever_their_spelling(write: WriteFile, conventions: GitRepo) -> None:
    plan = plan_for(write("backfill.toml", _source())).plan
    assert sorted(plan.events.get_column("build_id").to_list()) == sorted(FINALS)
    skipped = dict(plan.skips.select("reason", "rows").iter_rows())
    assert skipped == {
        "pre-release 2.0.0rc1 (PEP 440)": 1,
        "pre-release 24.1b1 (PEP 440)": 1,
        "pre-release 2.12.0a1 (PEP 440)": 1,
        "pre-release 8.1.0.dev0 (PEP 440)": 1,
        "pre-release 2.0.0b1 (PEP 440)": 1,
        "pre-release 0.4b1 (PEP 440)": 1,
        "pre-release 7.9.3rc1 (PEP 440)": 1,
        "pre-release 8.0-m01 (SemVer)": 1,
        "pre-release 1.15.0.dev0 (PEP 440)": 1,
        "pre-release 1.5.0a20230405 (PEP 440)": 1,
    }


def test_include_prereleases_opts_in_and_exclude_stays_the_users(write: WriteFile, conventions: GitRepo) -> None:
    text = _source(exclude=["curl-*"]).replace('env = "production"', 'env = "production"\ninclude_prereleases = true')
    plan = plan_for(write("backfill.toml", text)).plan
    expected = [name for name in [*PRE_RELEASES, *FINALS] if not name.startswith("curl-")]
    assert sorted(plan.events.get_column("build_id").to_list()) == sorted(expected)
    assert plan.skips.select("reason", "rows").rows() == [("tag matches exclude curl-*", 2)]


def test_a_hotfix_tag_is_a_deployment_even_when_semver_reads_it_as_a_pre_release(
    write: WriteFile, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("one", "2024-01-01T10:00:00Z")
    repo.tag("v1.0.0", message="1.0.0", date="2024-01-01T11:00:00Z")
    repo.commit("fix", "2024-01-02T10:00:00Z")
    repo.tag("v1.0.0-hotfix.1", message="hotfix", date="2024-01-02T11:00:00Z")
    repo.commit("next", "2024-01-03T10:00:00Z")
    repo.tag("v1.1.0-hotfix-rc1", message="a release candidate of a hotfix", date="2024-01-03T11:00:00Z")
    without = plan_for(write("a.toml", _source())).plan
    assert without.events.get_column("build_id").to_list() == ["v1.0.0"]
    assert without.skips.get_column("reason").to_list() == [
        "pre-release 1.0.0-hotfix.1 (SemVer)",
        "pre-release 1.1.0-hotfix-rc1 (SemVer)",
    ]
    marked = plan_for(write("b.toml", _source(hotfix_pattern="*-hotfix.*"))).plan
    assert marked.events.select("build_id", "deployment_type").rows() == [
        ("v1.0.0", None),
        ("v1.0.0-hotfix.1", "hotfix"),
    ]


def test_skipped_tags_are_listed_in_the_json_summary_and_beside_the_review(
    write: WriteFile, conventions: GitRepo, tmp_path: Path
) -> None:
    from helpers import invoke

    config = write("backfill.toml", _source(pattern=["2*", "v*", "8*"]))
    result = invoke("run", "-c", str(config), "--dry-run", str(tmp_path / "review.csv"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    reasons = summary["sources"][0]["skip_reasons"]
    assert reasons["pre-release 2.0.0rc1 (PEP 440)"] == 1
    assert reasons["tag matches none of 2*, v*, 8*"] == 7
    skipped_csv = tmp_path / "review.skipped.csv"
    assert summary["skipped_csv"] == str(skipped_csv)
    skipped = pl.read_csv(skipped_csv, infer_schema=False)
    assert skipped.columns[:4] == ["source", "row", "reason", "timestamp"]
    assert skipped.height == summary["sources"][0]["skipped"]
    rows = dict(skipped.select("build_id", "reason").iter_rows())
    assert rows["v1.15.0-dev"] == "pre-release 1.15.0.dev0 (PEP 440)"
    assert rows["curl-7_9_3-pre1"] == "tag matches none of 2*, v*, 8*"
    assert "v2.0.0" not in rows and "2.0" not in rows


def _tag_without_tagger(repo: GitRepo, name: str, at: str = "HEAD") -> None:
    """An annotated tag with no tagger line, as git's own v0.99 is (git tag cannot make one)."""
    target = repo.git("rev-parse", at)
    body = f"object {target}\ntype commit\ntag {name}\n\nGIT {name}\n"
    made = subprocess.run(
        ["git", "hash-object", "-t", "tag", "-w", "--literally", "--stdin"],
        cwd=repo.path,
        input=body,
        capture_output=True,
        text=True,
        check=True,
    )
    repo.git("update-ref", f"refs/tags/{name}", made.stdout.strip())


def test_an_annotated_tag_without_a_tagger_takes_its_commit_date(write: WriteFile, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("first", "2005-07-10T12:00:00-07:00")
    _tag_without_tagger(repo, "v0.99")
    repo.commit("second", "2005-07-11T12:00:00-07:00")
    repo.tag("v0.99.1", message="GIT 0.99.1", date="2005-07-11T13:00:00-07:00")
    result = plan_for(write("backfill.toml", _source()))
    assert result.plan.events.select("build_id", "timestamp", "description").rows() == [
        ("v0.99", "2005-07-10T19:00:00Z", "GIT v0.99"),
        ("v0.99.1", "2005-07-11T20:00:00Z", "GIT 0.99.1"),
    ]
    assert result.plan.rejects.height == 0
    assert result.warnings == [
        "source 'tags': 1 annotated tag has no tagger date (v0.99); the commit's date is used instead"
    ]
    strict = plan_for(write("strict.toml", _source(time_source="tagger"))).plan
    assert strict.rejects.select("build_id", "reason").rows() == [
        ("v0.99", 'the annotated tag has no tagger date; use time_source = "auto" or "commit"')
    ]


def test_a_repository_without_tags_warns_and_names_the_fix(write: WriteFile, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("one", "2024-01-01T10:00:00Z")
    result = plan_for(write("backfill.toml", _source()))
    assert result.plan.events.height == 0 and not result.failures
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith(f"source 'tags': {tmp_path / 'repo'} has no tags")
    assert "fetch-depth: 0" in result.warnings[0] and "git fetch --tags" in result.warnings[0]


def test_a_shallow_clone_warns_that_history_is_missing(write: WriteFile, shop: GitRepo, tmp_path: Path) -> None:
    subprocess.run(
        [
            "git",
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--no-single-branch",
            f"file://{shop.path}",
            str(tmp_path / "shallow"),
        ],
        check=True,
    )
    subprocess.run(["git", "-C", str(tmp_path / "shallow"), "fetch", "--quiet", "--tags"], check=True)
    result = plan_for(write("backfill.toml", _source("shallow", pattern="v*", hotfix_pattern="*-hotfix")))
    assert result.plan.events.height == 6
    shallow = [warning for warning in result.warnings if "shallow" in warning]
    assert len(shallow) == 1
    assert shallow[0].startswith(f"source 'tags': {tmp_path / 'shallow'} is a shallow clone")
    assert "fetch-depth: 0" in shallow[0] and "git fetch --unshallow" in shallow[0]
