"""backfill emit: each CI system read from its real variable names, and the traps each one sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gitrepo import GitRepo
from helpers import FIXTURES

from backfill.config import Normalize
from backfill.emit.ci_systems import NAMES, SYSTEMS, RunFacts, detect
from backfill.emit.commits import WorkingCopy
from backfill.emit.event import Given, build_event
from backfill.errors import ConfigError

SHA = "5b3c8d0e6f1a2b4c9d7e8f0a1b2c3d4e5f6a7b8c"
PR_HEAD = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"  # pull_request.head.sha of the recorded payload
MERGE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "checkout")
    repo.commit("first", "2025-01-01T10:00:00+00:00")
    repo.commit("deploy me", "2025-01-02T10:00:00+00:00")
    return repo


def facts(environ: dict[str, str], repo: GitRepo | None = None, ci: str | None = None) -> RunFacts:
    copy = WorkingCopy(repo.path if repo else Path("/nonexistent-folder-for-emit-tests"))
    return detect(environ, ci).facts(environ, copy)


def event_of(environ: dict[str, str], repo: GitRepo | None = None, **given: str) -> dict[str, object]:
    given.setdefault("entity", "shop")
    given.setdefault("env", "production")
    given.setdefault("status", "success")
    return build_event(facts(environ, repo), Given(**given), Normalize()).as_dict()


GITHUB = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_RUN_ID": "2983238245",
    "GITHUB_RUN_ATTEMPT": "1",
    "GITHUB_JOB": "deploy",
    "GITHUB_SHA": SHA,
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "panjf2000/ants",
    "GITHUB_ACTOR": "panjf2000",
    "GITHUB_TRIGGERING_ACTOR": "panjf2000",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_WORKFLOW": "Deploy",
}


# -- detection ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"GITHUB_ACTIONS": "true"}, "github"),
        ({"GITLAB_CI": "true"}, "gitlab"),
        ({"CIRCLECI": "true"}, "circleci"),
        ({"TF_BUILD": "True"}, "azure"),
        ({"BITBUCKET_BUILD_NUMBER": "17"}, "bitbucket"),
        ({"BUILDKITE": "true"}, "buildkite"),
        ({"JENKINS_URL": "https://ci.example.com/"}, "jenkins"),
        # A Jenkins whose URL was never configured still says so in BUILD_TAG.
        ({"BUILD_TAG": "jenkins-shop-deploy-31", "BUILD_NUMBER": "31"}, "jenkins"),
        ({}, "none"),
        # BUILD_NUMBER and BUILD_URL alone are generic names, not Jenkins.
        ({"BUILD_NUMBER": "4", "BUILD_URL": "https://example.com/4"}, "none"),
    ],
)
def test_each_system_is_recognised_by_its_own_variables(environ: dict[str, str], name: str) -> None:
    assert detect(environ).name == name


def test_the_first_match_wins_and_jenkins_comes_last() -> None:
    # A GitHub Actions job on a runner that also carries Jenkins variables (a self-hosted box).
    both = {"GITHUB_ACTIONS": "true", "JENKINS_URL": "https://ci.example.com/", "BUILD_NUMBER": "3"}
    assert detect(both).name == "github"
    assert detect({"BUILDKITE": "true", "JENKINS_HOME": "/var/jenkins"}).name == "buildkite"
    assert [system.name for system in SYSTEMS][-1] == "jenkins"


def test_ci_forces_a_system_and_none_reads_no_variables(repo: GitRepo) -> None:
    assert detect(GITHUB, "gitlab").name == "gitlab"
    assert detect({}, "github-actions").name == "github" and detect({}, "Azure-DevOps").name == "azure"
    local = facts(GITHUB, repo, ci="none")
    assert local.build_id is None
    assert local.commit.sha == repo.git("rev-parse", "HEAD")
    assert set(NAMES) == {"github", "gitlab", "circleci", "azure", "bitbucket", "buildkite", "jenkins", "none"}


# -- GitHub Actions -------------------------------------------------------------------------------


def test_github_reads_what_a_backfill_of_its_runs_reads() -> None:
    attributes = event_of(GITHUB)["attributes"]
    assert attributes == {
        "env": "production",
        "status": "success",
        "build_id": "2983238245",
        "build_commit_sha": SHA,
        "build_url": "https://github.com/panjf2000/ants/actions/runs/2983238245",
        "description": "Deploy",
        "initiator": "panjf2000",
    }


def test_github_attempts_are_told_apart_and_a_retry_of_one_job_is_stable() -> None:
    first = event_of(GITHUB)["attributes"]
    again = event_of(dict(GITHUB))["attributes"]
    rerun = event_of({**GITHUB, "GITHUB_RUN_ATTEMPT": "2", "GITHUB_TRIGGERING_ACTOR": "octocat"})["attributes"]
    assert first["build_id"] == again["build_id"] == "2983238245"
    assert rerun["build_id"] == "2983238245-2"
    assert rerun["build_url"] == "https://github.com/panjf2000/ants/actions/runs/2983238245/attempts/2"
    assert rerun["initiator"] == "octocat"


def test_github_deploy_jobs_of_one_run_are_told_apart_by_their_environment() -> None:
    staging = build_event(facts({**GITHUB, "GITHUB_JOB": "deploy-staging"}), _given("staging"), Normalize())
    production = build_event(facts({**GITHUB, "GITHUB_JOB": "deploy-prod"}), _given("prod"), Normalize())
    assert staging.key != production.key
    assert (staging.key.env, production.key.env) == ("staging", "production")
    assert staging.key.build_id == production.key.build_id == "2983238245"


def _given(env: str) -> Given:
    return Given(entity="shop", env=env, status="success")


def test_github_pull_request_uses_the_head_commit_not_the_merge_commit() -> None:
    environ = {
        **GITHUB,
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_SHA": MERGE_COMMIT,
        "GITHUB_EVENT_PATH": str(FIXTURES / "emit" / "github_pull_request_synchronize.json"),
    }
    attributes = event_of(environ)["attributes"]
    assert attributes["build_commit_sha"] == PR_HEAD
    assert attributes["description"] == "Update the README with new information."


def test_github_pull_request_target_also_reads_the_payload() -> None:
    environ = {
        **GITHUB,
        "GITHUB_EVENT_NAME": "pull_request_target",
        "GITHUB_SHA": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",  # the base branch's commit
        "GITHUB_EVENT_PATH": str(FIXTURES / "emit" / "github_pull_request_synchronize.json"),
    }
    assert event_of(environ)["attributes"]["build_commit_sha"] == PR_HEAD


def test_github_workflow_run_uses_the_triggering_runs_head_sha() -> None:
    environ = {
        **GITHUB,
        "GITHUB_EVENT_NAME": "workflow_run",
        "GITHUB_SHA": MERGE_COMMIT,  # the default branch's last commit
        "GITHUB_EVENT_PATH": str(FIXTURES / "emit" / "github_workflow_run_completed.json"),
    }
    attributes = event_of(environ)["attributes"]
    assert attributes["build_commit_sha"] == "3484a3fb816e0859fd6e1cea078d76385ff50625"
    assert attributes["description"] == "build(test): check workflow run event payload"
    # The run deploying is this one, not the run that triggered it.
    assert attributes["build_id"] == "2983238245"


def test_github_pull_request_without_a_readable_payload_says_so(tmp_path: Path) -> None:
    environ = {**GITHUB, "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(tmp_path / "gone.json")}
    found = facts(environ)
    assert any("GITHUB_EVENT_PATH" in note for note in found.notes)
    assert any("merge commit" in note and "--commit" in note for note in found.notes)


def test_github_push_description_is_the_head_commits_subject(tmp_path: Path) -> None:
    payload = tmp_path / "push.json"
    payload.write_text(json.dumps({"head_commit": {"message": "Ship the cart\n\nLong body"}}), encoding="utf-8")
    environ = {**GITHUB, "GITHUB_EVENT_PATH": str(payload)}
    assert event_of(environ)["attributes"]["description"] == "Ship the cart"


# -- GitLab CI --------------------------------------------------------------------------------------

GITLAB = {
    "GITLAB_CI": "true",
    "CI_PIPELINE_ID": "1045",
    "CI_JOB_ID": "88001",
    "CI_COMMIT_SHA": SHA,
    "CI_PIPELINE_URL": "https://gitlab.com/shop/web/-/pipelines/1045",
    "GITLAB_USER_LOGIN": "ada",
    "CI_COMMIT_TITLE": "Ship the cart",
}


def test_gitlab_reads_the_pipeline() -> None:
    attributes = event_of(GITLAB)["attributes"]
    assert attributes["build_id"] == "1045"
    assert attributes["build_commit_sha"] == SHA
    assert attributes["build_url"] == "https://gitlab.com/shop/web/-/pipelines/1045"
    assert (attributes["initiator"], attributes["description"]) == ("ada", "Ship the cart")


def test_gitlab_merged_results_pipeline_uses_the_source_branch_commit() -> None:
    environ = {
        **GITLAB,
        "CI_MERGE_REQUEST_EVENT_TYPE": "merged_result",
        "CI_COMMIT_SHA": MERGE_COMMIT,  # the merge GitLab made for the pipeline
        "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA": SHA,
        "CI_MERGE_REQUEST_TITLE": "Cart: ship it",
        "CI_COMMIT_TITLE": "Merge branch 'cart' into 'main'",
    }
    attributes = event_of(environ)["attributes"]
    assert attributes["build_commit_sha"] == SHA
    assert attributes["description"] == "Cart: ship it"


# -- Jenkins ----------------------------------------------------------------------------------------

JENKINS = {
    "JENKINS_URL": "https://ci.example.com/",
    "JENKINS_HOME": "/var/jenkins_home",
    "BUILD_TAG": "jenkins-shop-deploy-31",
    "JOB_NAME": "shop/deploy",
    "BUILD_NUMBER": "31",
    "BUILD_DISPLAY_NAME": "#31",
    "BUILD_URL": "https://ci.example.com/job/shop/job/deploy/31/",
}


def test_jenkins_build_id_is_the_full_display_name_a_backfill_reads(repo: GitRepo) -> None:
    head = repo.git("rev-parse", "HEAD")
    attributes = event_of({**JENKINS, "GIT_COMMIT": head}, repo)["attributes"]
    assert attributes["build_id"] == "shop » deploy #31"
    assert attributes["build_commit_sha"] == head
    assert attributes["build_url"] == "https://ci.example.com/job/shop/job/deploy/31/"


def test_jenkins_without_git_commit_uses_the_checkouts_head(repo: GitRepo) -> None:
    found = facts(JENKINS, repo)
    assert found.commit.sha == repo.git("rev-parse", "HEAD")
    assert found.commit.note is not None and "GIT_COMMIT is not set" in found.commit.note


def test_jenkins_git_commit_of_another_checkout_is_replaced_by_head(repo: GitRepo) -> None:
    # The job's last checkout was a shared library: GIT_COMMIT names a commit this repository lacks.
    found = facts({**JENKINS, "GIT_COMMIT": MERGE_COMMIT}, repo)
    assert found.commit.sha == repo.git("rev-parse", "HEAD")
    assert found.commit.note is not None and "is not a commit of this repository" in found.commit.note


def test_jenkins_git_commit_of_an_earlier_commit_is_kept(repo: GitRepo) -> None:
    earlier = repo.git("rev-parse", "HEAD~1")
    assert facts({**JENKINS, "GIT_COMMIT": earlier}, repo).commit.sha == earlier


def test_jenkins_with_no_configured_url_sends_no_build_url(repo: GitRepo) -> None:
    unconfigured = {key: value for key, value in JENKINS.items() if key not in ("JENKINS_URL", "BUILD_URL")}
    found = facts({**unconfigured, "BUILD_URL": ""}, repo)
    assert found.system == "jenkins"
    assert found.build_url is None
    assert any("BUILD_URL is empty" in note for note in found.notes)
    attributes = event_of({**unconfigured, "BUILD_URL": ""}, repo)["attributes"]
    assert "build_url" not in attributes


def test_jenkins_relative_build_url_is_not_sent(repo: GitRepo) -> None:
    # What an unconfigured Jenkins builds from an empty root URL.
    found = facts({**JENKINS, "BUILD_URL": "job/shop/job/deploy/31/"}, repo)
    assert found.build_url is None


# -- CircleCI, Azure, Bitbucket, Buildkite ----------------------------------------------------------------


def test_circleci_reads_the_job() -> None:
    environ = {
        "CIRCLECI": "true",
        "CIRCLE_BUILD_NUM": "233",
        "CIRCLE_WORKFLOW_ID": "1f6c2b9e-0000-4000-8000-000000000001",
        "CIRCLE_WORKFLOW_JOB_ID": "7d1f0c3a-0000-4000-8000-000000000002",
        "CIRCLE_SHA1": SHA,
        "CIRCLE_BUILD_URL": "https://circleci.com/gh/shop/web/233",
        "CIRCLE_USERNAME": "ada",
        "CIRCLE_JOB": "deploy",
    }
    attributes = event_of(environ)["attributes"]
    assert attributes["build_id"] == "7d1f0c3a-0000-4000-8000-000000000002"
    assert (attributes["build_commit_sha"], attributes["initiator"]) == (SHA, "ada")
    without_job_id = {key: value for key, value in environ.items() if key != "CIRCLE_WORKFLOW_JOB_ID"}
    assert event_of(without_job_id)["attributes"]["build_id"] == "233"


AZURE = {
    "TF_BUILD": "True",
    "BUILD_BUILDID": "4711",
    "BUILD_BUILDNUMBER": "20250102.3",
    "BUILD_SOURCEVERSION": SHA,
    "BUILD_REQUESTEDFOR": "Ada Lovelace",
    "BUILD_REQUESTEDFOREMAIL": "ada@example.com",
    "BUILD_DEFINITIONNAME": "shop-deploy",
    "BUILD_REASON": "IndividualCI",
    "SYSTEM_COLLECTIONURI": "https://dev.azure.com/shop/",
    "SYSTEM_TEAMPROJECT": "Web Shop",
}


def test_azure_uses_the_build_id_not_the_build_number() -> None:
    attributes = event_of(AZURE)["attributes"]
    assert attributes["build_id"] == "4711"
    assert attributes["build_url"] == "https://dev.azure.com/shop/Web%20Shop/_build/results?buildId=4711"
    assert (attributes["initiator"], attributes["description"]) == ("ada@example.com", "shop-deploy")
    # Two builds with the same display number are two deployments.
    other = event_of({**AZURE, "BUILD_BUILDID": "4712"})["attributes"]
    assert other["build_id"] != attributes["build_id"]


def test_azure_pull_request_build_uses_the_pull_requests_commit() -> None:
    environ = {
        **AZURE,
        "BUILD_REASON": "PullRequest",
        "BUILD_SOURCEVERSION": MERGE_COMMIT,
        "SYSTEM_PULLREQUEST_SOURCECOMMITID": SHA,
    }
    assert event_of(environ)["attributes"]["build_commit_sha"] == SHA


def test_bitbucket_short_sha_is_resolved_with_git(repo: GitRepo) -> None:
    head = repo.git("rev-parse", "HEAD")
    environ = {
        "BITBUCKET_BUILD_NUMBER": "17",
        "BITBUCKET_COMMIT": head[:12],
        "BITBUCKET_REPO_FULL_NAME": "shop/web",
        "BITBUCKET_GIT_HTTP_ORIGIN": "http://bitbucket.org/shop/web",
        "BITBUCKET_STEP_TRIGGERER_UUID": "{b5f1e0c4-0000-4000-8000-000000000003}",
        "BITBUCKET_PIPELINE_UUID": "{a1f1e0c4-0000-4000-8000-000000000004}",
    }
    found = facts(environ, repo)
    assert found.commit.sha == head
    assert found.commit.note is not None and "resolved with git" in found.commit.note
    attributes = event_of(environ, repo)["attributes"]
    assert attributes["build_id"] == "17"
    assert attributes["build_commit_sha"] == head
    assert attributes["build_url"] == "http://bitbucket.org/shop/web/pipelines/results/17"


def test_bitbucket_short_sha_without_a_repository_is_left_out() -> None:
    environ = {"BITBUCKET_BUILD_NUMBER": "17", "BITBUCKET_COMMIT": "5b3c8d0e6f1a"}
    found = facts(environ)
    assert found.commit.sha is None
    assert found.commit.note is not None and "without build_commit_sha" in found.commit.note
    assert "build_commit_sha" not in event_of(environ)["attributes"]


def test_buildkite_literal_head_is_resolved_with_git(repo: GitRepo) -> None:
    environ = {
        "BUILDKITE": "true",
        "BUILDKITE_BUILD_ID": "b81ed283-58b7-4925-aa4a-d3da0eafcf2b",
        "BUILDKITE_BUILD_NUMBER": "59034",
        "BUILDKITE_COMMIT": "HEAD",
        "BUILDKITE_BUILD_URL": "https://buildkite.com/shop/web/builds/59034",
        "BUILDKITE_BUILD_CREATOR_EMAIL": "ada@example.com",
        "BUILDKITE_MESSAGE": "Ship the cart\n\nDetails",
    }
    attributes = event_of(environ, repo)["attributes"]
    assert attributes["build_commit_sha"] == repo.git("rev-parse", "HEAD")
    assert attributes["build_id"] == "b81ed283-58b7-4925-aa4a-d3da0eafcf2b"
    assert attributes["description"] == "Ship the cart"


@pytest.mark.parametrize("value", ["HEAD", "main", "5b3c8d0", "not a sha", "-rf"])
def test_a_commit_that_is_not_40_hex_digits_is_never_sent_as_it_is(value: str) -> None:
    attributes = event_of({"BUILDKITE": "true", "BUILDKITE_BUILD_ID": "b1", "BUILDKITE_COMMIT": value})["attributes"]
    assert "build_commit_sha" not in attributes


def test_an_upper_case_sha_is_sent_lower_case() -> None:
    environ = {**GITLAB, "CI_COMMIT_SHA": SHA.upper()}
    assert event_of(environ)["attributes"]["build_commit_sha"] == SHA


# -- the event's rules are a backfill's ------------------------------------------------------------------


def test_env_aliases_and_case_are_normalized_as_a_backfill_does() -> None:
    assert event_of(GITHUB, env="Prod")["attributes"]["env"] == "production"


def test_an_unknown_env_is_refused_with_the_backfills_reason() -> None:
    with pytest.raises(ConfigError, match=r"env 'qa' is not one of production, staging, development"):
        event_of(GITHUB, env="qa")


def test_missing_values_name_the_flag_to_give() -> None:
    with pytest.raises(ConfigError, match="missing entityId; pass --entity"):
        build_event(facts(GITHUB), Given(env="production", status="success"), Normalize())
    with pytest.raises(ConfigError, match=r"missing build_id; .* --build-id"):
        build_event(facts({}), Given(entity="shop", env="production", status="success"), Normalize())
    with pytest.raises(ConfigError, match="missing status; pass --status"):
        build_event(facts(GITHUB), Given(entity="shop", env="production"), Normalize())


def test_a_timestamp_in_the_future_is_refused() -> None:
    with pytest.raises(ConfigError, match="future"):
        event_of(GITHUB, timestamp="2999-01-01T00:00:00Z")


def test_every_value_is_overridden_by_what_is_given() -> None:
    attributes = event_of(
        GITHUB,
        build_id="release-7",
        build_url="https://deploys.example.com/7",
        initiator="release-bot",
        description="Release 7",
        change_id="CHG0012345",
    )["attributes"]
    assert attributes["build_id"] == "release-7"
    assert attributes["build_url"] == "https://deploys.example.com/7"
    assert (attributes["initiator"], attributes["description"]) == ("release-bot", "Release 7")
    assert attributes["change_id"] == "CHG0012345"


def test_the_ci_choices_name_every_system_in_detection_order() -> None:
    from backfill.emit.ci_names import ALIASES
    from backfill.emit.ci_names import NAMES as CHOICES

    assert (*(system.name for system in SYSTEMS), "none") == CHOICES == NAMES
    assert set(ALIASES.values()) <= set(CHOICES)
