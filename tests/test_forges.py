"""GitHub and GitLab sources: the real PyGithub and python-gitlab clients against recorded answers.

The recordings (sample_data/forges, provenance in sample_data/SOURCES.md) are
served by backfill's replay server on 127.0.0.1, in a thread of the test.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from helpers import NOW, REPO, WriteFile, invoke

from backfill.config import load_config
from backfill.errors import EXIT_ERROR, EXIT_SOURCE_RETRY, ConfigError
from backfill.job import RunPlan, RunRequest, RunResult, plan_run, run
from backfill.rehearse.replay import Recordings, ReplayServer

FORGES = REPO / "sample_data" / "forges"


class Replay:
    def __init__(self, server: ReplayServer) -> None:
        self.server = server
        self.url = server.base_url

    def requests(self) -> list[str]:
        return list(json.loads(httpx.get(f"{self.url}/_replay/requests", timeout=10).text))

    def script(self, *responses: dict[str, object]) -> None:
        httpx.post(f"{self.url}/_replay/script", json={"responses": list(responses)}, timeout=10).raise_for_status()


def _serve(folder: Path) -> Iterator[Replay]:
    server = ReplayServer(("127.0.0.1", 0), Recordings.load(folder))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Replay(server)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def replay() -> Iterator[Replay]:
    yield from _serve(FORGES)


def _config(write: WriteFile, replay: Replay, kind: str, **keys: object) -> Path:
    lines = ["[[sources]]", f'name = "{keys.pop("name", "forge")}"', f'type = "{kind}"']
    address = "base_url" if kind.startswith("github") else "url"
    keys.setdefault(address, replay.url)
    keys.setdefault("entity_id", "app")
    keys.setdefault("max_rate_limit_wait", 60)
    if kind.startswith("github"):
        keys.setdefault("request_interval", 0)
    for key, value in keys.items():
        if value is not None:
            lines.append(f"{key} = {json.dumps(value)}")
    return write("backfill.toml", "\n".join(lines) + "\n")


def _plan(path: Path, since: datetime | None = None, sleeps: list[float] | None = None) -> RunPlan:
    config = load_config(path)
    reading_from = {config.sources[0].name: since} if since else None
    return plan_run(config, now=NOW, reading_from=reading_from, sleep=(sleeps if sleeps is not None else []).append)


def _releases(write: WriteFile, replay: Replay, **keys: object) -> Path:
    return _config(write, replay, "github-releases", repo="PyGithub/PyGithub", env="production", **keys)


def test_github_releases_every_page_with_the_largest_page_size(write: WriteFile, replay: Replay) -> None:
    result = _plan(_releases(write, replay))
    assert result.failures == []
    plan = result.plan
    counts = plan.counts.row(0, named=True)
    # 30 releases; the four 1.40 alphas are pre-releases.
    assert (counts["read"], counts["skipped"], counts["events"]) == (30, 4, 26)
    assert dict(plan.skips.select("reason", "rows").iter_rows()) == {
        "a pre-release (set include_prereleases = true to send them)": 4
    }
    first = plan.events.row(-1, named=True)
    assert (first["build_id"], first["timestamp"], first["initiator"]) == (
        "v1.55",
        "2021-04-26T04:44:57Z",
        "s-t-e-v-e-n-k",
    )
    assert first["build_url"] == "https://github.com/PyGithub/PyGithub/releases/tag/v1.55"
    requests = replay.requests()
    assert requests[0] == "/repos/PyGithub/PyGithub/releases?per_page=100"
    assert requests[1:3] == [
        "/repositories/3544490/releases?page=2&per_page=10",
        "/repositories/3544490/releases?page=3&per_page=10",
    ]


def test_release_commits_come_from_one_tags_listing(write: WriteFile, replay: Replay) -> None:
    result = _plan(_releases(write, replay))
    shas = dict(result.plan.events.select("build_id", "build_commit_sha").iter_rows())
    # The recorded first page of tags holds nine of the releases' tags; the next page was never recorded.
    assert shas["v1.55"] == "31538337faaa61e104afede75a5fac802c9a1ab3"
    assert shas["v1.47"] == "afb1259a4e52d7bbee8415a523d78c3a428968a8"
    assert sum(1 for sha in shas.values() if sha) == 9
    assert [request for request in replay.requests() if "tags" in request] == [
        "/repos/PyGithub/PyGithub/tags?per_page=100",
        "/repositories/3544490/tags?page=2",
    ]
    assert result.warnings[-1] == (
        "PyGithub/PyGithub: the tags listing failed (404) before every release's tag was found; "
        "17 releases carry no build_commit_sha"
    )


def test_pre_releases_when_asked(write: WriteFile, replay: Replay) -> None:
    plan = _plan(_releases(write, replay, include_prereleases=True)).plan
    assert plan.counts.row(0, named=True)["events"] == 30


def test_an_incremental_run_stops_paging_early(write: WriteFile, replay: Replay) -> None:
    plan = _plan(_releases(write, replay), since=datetime(2020, 11, 1, tzinfo=UTC)).plan
    assert plan.events.get_column("build_id").to_list() == ["v1.54", "v1.54.1", "v1.54.0.1", "v1.55"]
    assert all(plan.events.get_column("build_commit_sha").to_list())
    # One page of releases, one page of tags: every wanted tag was on it.
    assert replay.requests() == [
        "/repos/PyGithub/PyGithub/releases?per_page=100",
        "/repos/PyGithub/PyGithub/tags?per_page=100",
    ]


def test_a_short_rate_limit_is_waited_out_and_said(write: WriteFile, replay: Replay) -> None:
    reset = int(time.time()) + 20
    replay.script(
        {
            "path_prefix": "/repositories/3544490/releases",
            "status": 403,
            "headers": {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
            "body": {"message": "API rate limit exceeded"},
        }
    )
    sleeps: list[float] = []
    result = _plan(_releases(write, replay), sleeps=sleeps)
    assert result.failures == []
    assert result.plan.counts.row(0, named=True)["read"] == 30
    assert len(sleeps) == 1 and 15 <= sleeps[0] <= 22
    assert any(warning.startswith("127.0.0.1 rate limit reached: waiting") for warning in result.warnings)


def test_a_secondary_rate_limit_honours_retry_after(write: WriteFile, replay: Replay) -> None:
    replay.script(
        {
            "path_prefix": "/repos/PyGithub/PyGithub/releases",
            "status": 403,
            "headers": {"Retry-After": "7"},
            "body": {"message": "You have exceeded a secondary rate limit"},
        }
    )
    sleeps: list[float] = []
    assert _plan(_releases(write, replay), sleeps=sleeps).failures == []
    assert sleeps == [7.0]


def test_a_long_rate_limit_stops_with_the_reset_time(write: WriteFile, replay: Replay) -> None:
    reset = int(time.time()) + 3600
    replay.script(
        {
            "path_prefix": "/repositories/3544490/releases",
            "status": 403,
            "headers": {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
        }
    )
    sleeps: list[float] = []
    result = _plan(_releases(write, replay), sleeps=sleeps)
    assert sleeps == []
    when = datetime.fromtimestamp(reset + 1, tz=UTC)
    message = str(result.failures[0])
    assert message.startswith("source 'forge': 127.0.0.1 rate limit reached; it resets at ")
    resets_at = datetime.strptime(message.split("resets at ")[1][:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert abs((resets_at - when).total_seconds()) <= 2
    assert message.endswith("UTC. Run again after that (or raise max_rate_limit_wait)")


def test_401_names_the_token_variable_and_never_the_token(
    write: WriteFile, replay: Replay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_do-not-print-me")
    replay.script(
        {
            "path_prefix": "/repos/PyGithub/PyGithub/releases",
            "status": 401,
            "body": {"message": "Bad credentials ghp_do-not-print-me"},
        }
    )
    result = _plan(_releases(write, replay))
    port = replay.url.rsplit(":", 1)[1]
    assert [str(failure) for failure in result.failures] == [
        f"source 'forge': 127.0.0.1:{port} refused the token (401); check $GITHUB_TOKEN"
    ]
    assert all("ghp_do-not-print-me" not in warning for warning in result.warnings)


def test_404_says_the_repository_was_not_found_or_not_visible(write: WriteFile, replay: Replay) -> None:
    result = _plan(_config(write, replay, "github-releases", repo="acme/nope", env="production"))
    port = replay.url.rsplit(":", 1)[1]
    assert str(result.failures[0]) == (
        f"source 'forge': repository acme/nope was not found on 127.0.0.1:{port}, "
        "or the token in $GITHUB_TOKEN cannot see it"
    )


def test_a_network_failure_names_the_host_and_other_sources_still_run(write: WriteFile, replay: Replay) -> None:
    from loopback import free_port

    port = free_port()
    path = write(
        "backfill.toml",
        f"""
        [[sources]]
        name = "down"
        type = "github-releases"
        repo = "acme/shop"
        base_url = "http://127.0.0.1:{port}"
        request_interval = 0
        entity_id = "shop"
        env = "production"

        [[sources]]
        name = "up"
        type = "github-deployments"
        repo = "octocat/example"
        base_url = "{replay.url}"
        request_interval = 0
        entity_id = "example"
    """,
    )
    result = _plan(path, sleeps=[])
    assert len(result.failures) == 1
    assert str(result.failures[0]).startswith(f"source 'down': cannot reach 127.0.0.1:{port} (")
    assert result.plan.events.get_column("source").to_list() == ["up"]


def test_github_deployments_take_the_outcome_from_the_statuses(write: WriteFile, replay: Replay) -> None:
    plan = _plan(_config(write, replay, "github-deployments", repo="octocat/example")).plan
    assert plan.events.select("build_id", "env", "status", "build_commit_sha", "timestamp", "initiator").rows() == [
        ("1", "production", "success", "a84d88e7554fc1fa21bcbc4efae3c782a70d2b9d", "2012-07-20T01:19:13Z", "octocat")
    ]
    assert replay.requests() == [
        "/repos/octocat/example/deployments?per_page=100",
        "/repos/octocat/example/deployments/1/statuses?per_page=100",
    ]


def test_gitlab_releases(write: WriteFile, replay: Replay) -> None:
    plan = _plan(_config(write, replay, "gitlab-releases", project="root/awesome-app", env="production")).plan
    assert plan.events.select("build_id", "timestamp", "build_commit_sha", "description", "initiator").rows() == [
        ("v0.1", "2019-01-03T01:55:18Z", "f8d3d94cbd347e924aa7b715845e439d00e80ca4", "Awesome app v0.1 alpha", "root"),
        ("v0.2", "2019-01-03T01:56:19Z", "079e90101242458910cccd35eab0e211dfc359c0", "Awesome app v0.2 beta", "root"),
    ]
    assert replay.requests()[0].startswith("/api/v4/projects/root%2Fawesome-app/releases?")
    assert "per_page=100" in replay.requests()[0]


@pytest.fixture
def paged_gitlab(tmp_path: Path) -> Iterator[Replay]:
    """The eight recorded deployments, three to a page, under a project path with a slash and a space."""
    (tmp_path / "replay.toml").write_text(
        f'[[pages]]\npath = "/api/v4/projects/merico-dev%2Fee%20team%2Fvdev.co/deployments"\n'
        f'file = "{REPO / "sample_data" / "gitlab_deployments.json"}"\nmax_per_page = 3\n',
        encoding="utf-8",
    )
    yield from _serve(tmp_path)


def test_gitlab_deployments_over_three_pages_for_a_path_with_a_slash_and_a_space(
    write: WriteFile, paged_gitlab: Replay
) -> None:
    path = _config(write, paged_gitlab, "gitlab-deployments", project="merico-dev/ee team/vdev.co")
    plan = _plan(path).plan
    counts = plan.counts.row(0, named=True)
    assert (counts["read"], counts["events"], counts["skipped"], counts["rejected"]) == (8, 2, 4, 2)
    assert plan.events.select("build_id", "env", "status").rows() == [
        ("13426753", "staging", "success"),
        ("13432768", "staging", "failed"),
    ]
    requests = paged_gitlab.requests()
    assert len(requests) == 3
    assert all(
        request.startswith("/api/v4/projects/merico-dev%2Fee%20team%2Fvdev.co/deployments?") for request in requests
    )


def test_gitlab_deployments_stop_paging_at_the_cursor(write: WriteFile, paged_gitlab: Replay) -> None:
    path = _config(write, paged_gitlab, "gitlab-deployments", project="merico-dev/ee team/vdev.co")
    _plan(path, since=datetime(2019, 3, 13, 15, 24, tzinfo=UTC))
    requests = paged_gitlab.requests()
    assert len(requests) == 1 and "updated_after=2019-03-13T15%3A24%3A00%2B00%3A00" in requests[0]


def test_gitlab_429_waits_for_the_reset(write: WriteFile, paged_gitlab: Replay) -> None:
    paged_gitlab.script(
        {"path_prefix": "/api/v4/projects", "status": 429, "headers": {"RateLimit-Reset": str(int(time.time()) + 10)}}
    )
    sleeps: list[float] = []
    result = _plan(
        _config(write, paged_gitlab, "gitlab-deployments", project="merico-dev/ee team/vdev.co"), sleeps=sleeps
    )
    assert result.failures == [] and result.plan.counts.row(0, named=True)["read"] == 8
    assert len(sleeps) == 1 and 5 <= sleeps[0] <= 12


def test_without_a_token_it_warns_and_goes_on(
    write: WriteFile, replay: Replay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    result = _plan(_config(write, replay, "gitlab-releases", project="root/awesome-app", env="production"))
    assert result.warnings[0] == (
        "source 'forge': $GITLAB_TOKEN is not set; reading without a token (lower rate limits, public data only)"
    )
    assert result.plan.events.height == 2


@pytest.mark.parametrize(
    ("kind", "keys", "message"),
    [
        ("github-releases", {"repo": "acme"}, "sources[0].repo (source 'forge'): string should match pattern"),
        ("github-releases", {"repo": "acme/shop"}, "sources[0].env (source 'forge'): is required"),
        ("gitlab-releases", {"project": "acme/shop"}, "sources[0].env (source 'forge'): is required"),
        ("gitlab-deployments", {"project": ""}, "sources[0].project (source 'forge'): string should have at least 1"),
        ("github-deployments", {"repo": "a/b", "token": "x"}, "sources[0].token (source 'forge'): unknown key"),
    ],
)
def test_config_mistakes(write: WriteFile, kind: str, keys: dict[str, object], message: str) -> None:
    lines = ["[[sources]]", 'name = "forge"', f'type = "{kind}"', 'entity_id = "app"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    with pytest.raises(ConfigError) as error:
        load_config(write("backfill.toml", "\n".join(lines) + "\n"))
    assert message in str(error.value)


def test_the_offline_forge_demo(write: WriteFile, replay: Replay) -> None:
    text = (REPO / "configs" / "forges.toml").read_text(encoding="utf-8").replace("http://127.0.0.1:8181", replay.url)
    config = load_config(write("configs/forges.toml", text))
    # GitHub's pause between requests is for github.com, not for a replay on this machine.
    quick = [
        source.model_copy(update={"request_interval": 0}) if source.type.startswith("github") else source
        for source in config.sources
    ]
    result = plan_run(config.model_copy(update={"sources": quick}), now=NOW)
    assert result.failures == []
    assert result.plan.counts.get_column("events").to_list() == [26, 1, 2, 2]


@pytest.fixture
def recorded() -> Iterator[Replay]:
    """Recordings kept with the tests (tests/fixtures/forges)."""
    yield from _serve(REPO / "tests" / "fixtures" / "forges")


def test_a_github_deployment_is_dated_by_the_status_that_decided_it(write: WriteFile, recorded: Replay) -> None:
    # Deployment 801 of sigmavirus24/github3.py succeeded on 2014-02-25; success was posted again until 2018.
    path = _config(write, recorded, "github-deployments", repo="sigmavirus24/github3.py")
    result = _plan(path, since=datetime(2014, 2, 24, tzinfo=UTC))
    assert result.failures == []
    assert result.plan.events.select("build_id", "status", "timestamp", "build_commit_sha").rows() == [
        ("801", "success", "2014-02-25T02:57:29Z", "aa0b457c3c7692a0da05b6771ce44c980febd4a1")
    ]
    # One listing of statuses; no status is fetched again for a field the listing lacked.
    assert recorded.requests() == [
        "/repos/sigmavirus24/github3.py/deployments?per_page=100",
        "/repos/sigmavirus24/github3.py/deployments/801/statuses?per_page=100",
    ]


def test_a_deployment_whose_statuses_are_missing_is_named(write: WriteFile, recorded: Replay) -> None:
    path = _config(write, recorded, "github-deployments", repo="sigmavirus24/github3.py")
    result = _plan(path)
    port = recorded.url.rsplit(":", 1)[1]
    assert [str(failure) for failure in result.failures] == [
        f"source 'forge': the statuses of deployment 797 were not found on 127.0.0.1:{port}, "
        "or the token in $GITHUB_TOKEN cannot see them"
    ]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server on 127.0.0.1 that accepts connections and never answers."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


def _unreachable(write: WriteFile, kind: str, url: str, **keys: object) -> Path:
    address = "base_url" if kind.startswith("github") else "url"
    where = {"repo": "acme/shop"} if kind.startswith("github") else {"project": "acme/shop"}
    lines = ["[[sources]]", 'name = "down"', f'type = "{kind}"', f'{address} = "{url}"', 'entity_id = "shop"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in {**where, **keys}.items()]
    return write("backfill.toml", "\n".join(lines) + "\n")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["github-deployments", "gitlab-deployments"])
def test_a_closed_port_fails_after_a_few_quick_retries(write: WriteFile, kind: str) -> None:
    from loopback import free_port

    port = free_port()
    sleeps: list[float] = []
    result = _plan(_unreachable(write, kind, f"http://127.0.0.1:{port}"), sleeps=sleeps)
    assert len(sleeps) <= 3 and sum(sleeps) <= 10
    assert [str(failure).split(" (")[0] for failure in result.failures] == [
        f"source 'down': cannot reach 127.0.0.1:{port}"
    ]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["github-releases", "gitlab-deployments"])
def test_a_server_that_never_answers_fails_within_the_timeout(write: WriteFile, kind: str, silent_server: str) -> None:
    sleeps: list[float] = []
    keys: dict[str, object] = {"timeout": 1}
    if kind == "github-releases":
        keys["env"] = "production"
    result = _plan(_unreachable(write, kind, silent_server, **keys), sleeps=sleeps)
    assert len(sleeps) <= 3 and sum(sleeps) <= 10
    host = silent_server.removeprefix("http://")
    assert [str(failure) for failure in result.failures] == [
        f"source 'down': {host} did not answer within 1 s, 3 times; check the address and the network, "
        "or raise timeout in this source"
    ]


@pytest.mark.parametrize(
    ("kind", "address"),
    [("github-releases", "http://ghe.invalid/api/v3"), ("gitlab-releases", "http://gitlab.invalid")],
)
def test_a_token_is_never_sent_over_plain_http_to_another_machine(
    write: WriteFile, monkeypatch: pytest.MonkeyPatch, kind: str, address: str
) -> None:
    variable = "GITHUB_TOKEN" if kind.startswith("github") else "GITLAB_TOKEN"
    monkeypatch.setenv(variable, "tok-do-not-send")
    path = _unreachable(write, kind, address, env="production")
    message = str(_plan(path, sleeps=[]).failures[0])
    host = address.split("/")[2]
    assert message == (
        f"source 'down': {address} is plain http on another machine: the token in ${variable} would cross the "
        "network in clear text; use https, or set allow_http = true in this source (or pass --allow-http) if you "
        "really mean it"
    )
    assert "tok-do-not-send" not in message
    # Told to, it goes ahead (and here meets the tests' network guard).
    allowed = _unreachable(write, kind, address, env="production", allow_http=True)
    assert str(_plan(allowed, sleeps=[]).failures[0]).startswith(f"source 'down': cannot reach {host} (")
    # The run's --allow-http says the same for every source.
    path = _unreachable(write, kind, address, env="production")
    review = str(path.parent / "review.csv")
    refused = invoke("run", "-c", str(path), "--dry-run", review)
    assert "is plain http on another machine" in refused.stderr
    told = invoke("run", "-c", str(path), "--dry-run", review, "--allow-http")
    assert "is plain http" not in told.stderr and f"cannot reach {host}" in told.stderr
    assert "tok-do-not-send" not in refused.output + told.output


def test_a_token_goes_to_http_urls_only(write: WriteFile, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "tok-do-not-send")
    path = _unreachable(write, "github-releases", "ftp://ghe.invalid/api/v3", env="production")
    assert [str(failure) for failure in _plan(path, sleeps=[]).failures] == [
        "source 'down': ftp://ghe.invalid/api/v3 is not an http(s) URL; use https://HOST"
    ]


def test_without_a_token_plain_http_is_read(write: WriteFile, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    path = _unreachable(write, "gitlab-releases", "http://gitlab.invalid", env="production")
    assert str(_plan(path, sleeps=[]).failures[0]).startswith("source 'down': cannot reach gitlab.invalid (")


@pytest.mark.parametrize("value", ["sEcReT-first\n# a comment", "sEcReT\x07bell", "sEcReT with space"])
def test_a_token_that_is_not_one_word_fails_its_source_without_showing_it(
    write: WriteFile, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", value)
    path = _unreachable(write, "github-releases", "https://ghe.invalid/api/v3", env="production")
    [failure] = _plan(path, sleeps=[]).failures
    assert str(failure).startswith("source 'down': $GITHUB_TOKEN: the token holds a ")
    assert "sEcReT" not in str(failure)


def _dry_run(config: Path) -> RunResult:
    """The whole dry run, as `backfill run --dry-run` makes it, with the retries' waits skipped."""
    return run(load_config(config), RunRequest(review=config.parent / "review.csv"), sleep=lambda seconds: None)


def test_a_server_error_that_outlasts_the_retries_exits_7_so_a_scheduler_can_try_later(
    write: WriteFile, replay: Replay
) -> None:
    replay.script(*({"path_prefix": "/repos/PyGithub/PyGithub/releases", "status": 502} for _ in range(12)))
    result = _dry_run(_releases(write, replay))
    assert result.exit_code == EXIT_SOURCE_RETRY
    assert [failure.transient for failure in result.plan.failures] == [True]
    assert " answered 502 for " in result.summary["errors"][0]


def test_a_missing_repository_beside_a_server_error_exits_1_because_someone_must_fix_it(
    write: WriteFile, replay: Replay
) -> None:
    replay.script(*({"path_prefix": "/repos/PyGithub/PyGithub/releases", "status": 503} for _ in range(12)))
    busy = _releases(write, replay, name="busy").read_text()
    missing = _config(write, replay, "github-releases", name="missing", repo="acme/nope", env="production")
    result = _dry_run(write("backfill.toml", busy + "\n" + missing.read_text()))
    assert result.exit_code == EXIT_ERROR
    assert [(failure.source, failure.transient) for failure in result.plan.failures] == [
        ("busy", True),
        ("missing", False),
    ]
