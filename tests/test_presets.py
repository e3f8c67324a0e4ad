"""Each CI preset on real API dumps (tests/fixtures/ci, recorded by Apache DevLake)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pytest
from helpers import FIXTURES, WriteFile, plan_for, source_block

CI = FIXTURES / "ci"


def _config(write: WriteFile, fixture: str, preset: str, **keys: object) -> Path:
    return write("backfill.toml", source_block("runs", str(CI / fixture), preset=preset, **keys))


def _row(events: pl.DataFrame, build_id: str) -> dict[str, object]:
    rows = events.filter(pl.col("build_id") == build_id).to_dicts()
    assert len(rows) == 1, f"expected one event for build {build_id}, got {len(rows)}"
    return rows[0]


def test_github_actions_runs_api_dump(write: WriteFile) -> None:
    result = plan_for(_config(write, "github_actions_runs_panjf2000_ants.json", "github-actions", env="production"))
    plan = result.plan
    counts = plan.counts.row(0, named=True)
    # 35 runs: 18 succeeded, 5 failed (failure, timed_out, startup_failure), 12 are not deployments
    # (cancelled, skipped, neutral, stale, action_required, or no conclusion yet).
    assert counts == {"source": "runs", "read": 35, "skipped": 12, "rejected": 0, "duplicates": 0, "events": 23}
    assert plan.events.get_column("status").value_counts().sort("status").rows() == [("failed", 5), ("success", 18)]

    event = _row(plan.events, "2983238245")
    assert event == {
        "timestamp": "2022-09-03T05:16:16Z",
        "entityId": "shop",
        "env": "production",
        "status": "success",
        "build_id": "2983238245",
        "build_commit_sha": "06e6934c35c336b1a2bd3005fb21dc3914a45747",
        "change_id": None,
        "build_url": "https://github.com/panjf2000/ants/actions/runs/2983238245",
        "description": "CodeQL",
        "initiator": "panjf2000",
        "deployment_type": None,
        "source": "runs",
        "original_env": "production",
        "_ts": event["_ts"],
    }


def test_github_actions_match_keeps_only_the_deploy_workflow(write: WriteFile) -> None:
    config = _config(
        write, "github_actions_runs_panjf2000_ants.json", "github-actions", env="production", match={"name": "CodeQL"}
    )
    plan = plan_for(config).plan
    counts = plan.counts.row(0, named=True)
    assert counts["events"] == 18
    assert counts["read"] == counts["events"] + counts["skipped"] + counts["rejected"] + counts["duplicates"]
    assert set(plan.events.get_column("description")) == {"CodeQL"}
    reasons = dict(plan.skips.select("reason", "rows").iter_rows())
    assert reasons["name matches none of CodeQL"] == 6


def test_gitlab_deployments_use_environment_and_job_finish_time(write: WriteFile) -> None:
    plan = plan_for(_config(write, "gitlab_deployments_gitlab_com.json", "gitlab-ci")).plan
    events = plan.events
    assert events.select("build_id", "env", "status").rows() == [
        ("13426753", "staging", "success"),
        ("13432768", "staging", "failed"),
    ]
    first = _row(events, "13426753")
    # deployable.finished_at (14:17:47.640), not the deployment's updated_at (14:17:47.647).
    assert first["timestamp"] == "2019-03-13T14:17:47Z"
    assert first["build_commit_sha"] == "add237f6852e6108ee8e0246780a54ce909c6087"
    assert first["initiator"] == "hackwaly"
    assert first["description"] == "Merge branch 'update-gitlab-ci' into 'master'"
    assert first["build_url"] == "https://gitlab.com/merico-dev/ee/vdev.co/-/jobs/176919795"
    # canceled, created, running and blocked are not deployments; 'completed' and 'undeployed'
    # are not GitLab statuses, so they are rejected rather than guessed.
    rejected = dict(plan.rejects.select("build_id", "reason").iter_rows())
    assert rejected == {
        "13432654": "unknown status 'completed'; say what it means with status_map in this source",
        "13436915": "unknown status 'undeployed'; say what it means with status_map in this source",
    }
    assert plan.counts.row(0, named=True)["skipped"] == 4


def test_gitlab_status_map_decides_an_unknown_word(write: WriteFile) -> None:
    config = _config(write, "gitlab_deployments_gitlab_com.json", "gitlab-ci", status_map={"completed": "success"})
    events = plan_for(config).plan.events
    assert _row(events, "13432654")["status"] == "success"


def test_gitlab_deployments_agree_with_devlake_where_both_see_a_deployment(write: WriteFile) -> None:
    events = plan_for(_config(write, "gitlab_deployments_gitlab_com.json", "gitlab-ci")).plan.events
    with (CI / "devlake_gitlab_cicd_deployments.csv").open(encoding="utf-8") as handle:
        devlake = {row["id"].rsplit(":", 1)[1]: row for row in csv.DictReader(handle)}
    for event in events.iter_rows(named=True):
        expected = devlake[event["build_id"]]
        assert event["status"] == {"SUCCESS": "success", "FAILURE": "failed"}[expected["result"]]
        assert event["env"] == expected["environment"]
        assert event["description"] == expected["display_title"]


def test_gitlab_pipelines_need_an_env_from_the_config(write: WriteFile) -> None:
    plan = plan_for(_config(write, "gitlab_pipelines_gitlab_com.json", "gitlab-ci", env="staging")).plan
    counts = plan.counts.row(0, named=True)
    # 29 pipelines: 1 success, 17 failed, 11 not deployments (running, canceled, skipped, manual...).
    assert (counts["events"], counts["skipped"], counts["rejected"]) == (18, 11, 0)
    event = _row(plan.events, "485932863")
    assert event["status"] == "success"
    assert event["timestamp"] == "2022-03-07T09:41:36Z"
    assert event["build_url"] == "https://gitlab.com/merico-dev/ee/charts/-/pipelines/485932863"
    assert event["build_commit_sha"] == "12fc3a42080bb98ca520817bd4fe0ca33c0bb271"


def test_jenkins_end_time_is_start_plus_duration(write: WriteFile) -> None:
    plan = plan_for(_config(write, "jenkins_builds.json", "jenkins", env="production")).plan
    events = plan.events
    build = _row(events, "Test-jenkins-dir » test-jenkins-sub-dir » test-sub-sub-dir » devlake #31")
    # timestamp 1650024049161 ms + duration 1587 ms = 12:00:50.748 UTC.
    assert build["timestamp"] == "2022-04-15T12:00:50Z"
    assert build["build_commit_sha"] == "0f886c74949c3ee7e489188911c7dc0c1d547418"
    assert build["initiator"] == "merico"
    assert build["status"] == "success"
    statuses = dict(events.select(pl.col("build_id").str.extract(r"#(\d+)$"), "status").iter_rows())
    assert statuses["10002"] == "failed"
    assert statuses["10005"] == "success"  # UNSTABLE: the deploy step ran
    assert "10003" not in statuses and "10004" not in statuses  # ABORTED, NOT_BUILD
    assert plan.counts.row(0, named=True)["skipped"] == 2


def test_jenkins_build_numbers_from_two_jobs_do_not_collide(write: WriteFile) -> None:
    builds = json.loads((CI / "jenkins_builds.json").read_text(encoding="utf-8"))
    other_job = [dict(build, fullDisplayName=f"deploy-payments #{build['number']}") for build in builds]
    write("payments.json", json.dumps(other_job))
    config = write(
        "backfill.toml",
        source_block("shop-jenkins", str(CI / "jenkins_builds.json"), preset="jenkins", env="production")
        + source_block("payments-jenkins", "payments.json", preset="jenkins", env="production"),
    )
    counts = plan_for(config).plan.counts
    assert counts.get_column("duplicates").to_list() == [0, 0]
    assert counts.get_column("events").to_list() == [12, 12]


def test_circleci_jobs_have_outcomes_and_pipelines_do_not(write: WriteFile) -> None:
    jobs = plan_for(_config(write, "circleci_jobs.json", "circleci", env="production")).plan
    assert jobs.events.get_column("status").value_counts().sort("status").rows() == [("failed", 5), ("success", 4)]
    job = _row(jobs.events, "7b96e45b-b10e-47a0-95d0-96580b88bdda")
    assert (job["timestamp"], job["description"]) == ("2023-03-25T17:12:23Z", "say-hello")

    pipelines = plan_for(_config(write, "circleci_pipelines.json", "circleci", env="production")).plan
    counts = pipelines.counts.row(0, named=True)
    assert (counts["read"], counts["skipped"], counts["events"]) == (10, 10, 0)


def test_azure_devops_builds_keyed_by_id_not_build_number(write: WriteFile) -> None:
    plan = plan_for(_config(write, "azuredevops_builds.json", "azure-devops", env="production")).plan
    events = plan.events
    # buildNumber is "azure-job" for all seven builds; the four completed ones are four events.
    assert events.get_column("build_id").to_list() == ["12", "13", "14", "15"]
    build = _row(events, "12")
    assert build["timestamp"] == "2023-02-25T06:23:04Z"
    assert build["build_commit_sha"] == "40c59264e73fc5e1a6cab192f1622d26b7bd5c2a"
    assert build["initiator"] == "john.dow@merico.dev"
    assert build["description"] == "deploy_to_prod"
    skipped = dict(plan.skips.select("reason", "rows").iter_rows())
    assert skipped == {
        "no status: the run had not finished when it was exported": 2,
        "status 'canceled' is not a deployment": 1,
    }


def test_azure_devops_agrees_with_devlake_on_successes(write: WriteFile) -> None:
    events = plan_for(_config(write, "azuredevops_builds.json", "azure-devops", env="production")).plan.events
    with (CI / "devlake_azuredevops_cicd_pipelines.csv").open(encoding="utf-8") as handle:
        devlake = {row["id"].rsplit(":", 1)[1]: row["result"] for row in csv.DictReader(handle)}
    assert {build: devlake[build] for build in events.get_column("build_id")} == dict.fromkeys(
        ["12", "13", "14", "15"], "SUCCESS"
    )
    assert devlake["18"] == "FAILURE"  # DevLake counts canceled as failed; backfill skips it


@pytest.mark.parametrize(
    ("preset", "export", "build_id"),
    [
        (
            "github-actions",
            "databaseId,updatedAt,conclusion,headSha,url,displayTitle\n0042,2023-11-14T22:13:20Z,success,abc,u,Deploy\n",
            "0042",
        ),
        (
            "gitlab-ci",
            "id,updated_at,status,sha,web_url,name\n0042,2023-11-14T22:13:20Z,success,abc,u,Deploy\n",
            "0042",
        ),
        # Jenkins prefers the url to the bare build number, which restarts per job.
        (
            "jenkins",
            "number,timestamp,duration,result,url\n0042,1700000000000,0,SUCCESS,https://ci/job/x/42/\n",
            "https://ci/job/x/42/",
        ),
        ("azure-devops", "id,finishTime,result,sourceVersion\n0042,2023-11-14T22:13:20Z,succeeded,abc\n", "0042"),
    ],
)
def test_presets_read_csv_exports_too(write: WriteFile, preset: str, export: str, build_id: str) -> None:
    write("runs.csv", export)
    config = write("backfill.toml", source_block("runs", "runs.csv", preset=preset, env="production"))
    event = plan_for(config).plan.events.row(0, named=True)
    assert (event["timestamp"], event["status"], event["build_id"]) == ("2023-11-14T22:13:20Z", "success", build_id)


def test_github_actions_runs_of_2020_are_described_by_their_commit(write: WriteFile) -> None:
    # Runs recorded in 2020 carry neither name nor display_title (GitHub added them later).
    plan = plan_for(_config(write, "github_actions_runs_pygithub_2020.json", "github-actions", env="production")).plan
    described = dict(plan.events.select("build_id", "description").iter_rows())
    assert described["110932306"] == "Remove RateLimit.rate (#1529)"
    assert described["110932159"] == "PullRequestReview is not a completable object (#1528)"
    assert all(plan.events.get_column("description").to_list())
    assert "\n" not in "".join(plan.events.get_column("description").to_list())


def test_gitlab_job_listings_carry_the_commit_under_commit_id(write: WriteFile) -> None:
    plan = plan_for(_config(write, "gitlab_jobs_gitlab_com.json", "gitlab-ci", env="production")).plan
    event = _row(plan.events, "176919795")
    assert (event["status"], event["build_commit_sha"], event["timestamp"]) == (
        "failed",
        "add237f6852e6108ee8e0246780a54ce909c6087",
        "2019-03-13T14:17:47Z",
    )
    assert all(plan.events.get_column("build_commit_sha").to_list())


def test_circleci_api_v1_builds(write: WriteFile) -> None:
    # What CircleCI server installs still return: build_num, stop_time, outcome, vcs_revision.
    plan = plan_for(_config(write, "circleci_v1_builds_mtchavez.json", "circleci", env="production")).plan
    counts = plan.counts.row(0, named=True)
    assert (counts["read"], counts["skipped"], counts["rejected"], counts["events"]) == (5, 1, 0, 4)
    event = _row(plan.events, "231")
    assert event["timestamp"] == "2016-07-29T00:17:52Z"
    assert event["status"] == "success"  # no_tests: the job ran to its end with no test step
    assert event["build_commit_sha"] == "b601b390c86a917d6615f160f2dc1de11b62b7c8"
    assert event["build_url"] == "https://circleci.com/gh/mtchavez/circleci/231"
    assert event["initiator"] == "none"
    assert event["description"] == "Add note for minimum ruby version"
    assert dict(plan.skips.select("reason", "rows").iter_rows()) == {"status 'not_run' is not a deployment": 1}


def test_an_unfiltered_run_listing_that_mixes_workflows_branches_and_events_is_warned(write: WriteFile) -> None:
    result = plan_for(_config(write, "github_actions_runs_panjf2000_ants.json", "github-actions", env="production"))
    assert [warning for warning in result.warnings if "no match is set" in warning] == [
        "source 'runs': no match is set, and the runs mix 3 workflows (CodeQL 29, Lint 3, Tests 3), 3 branches "
        "(Fix_rm_redundancy_code 17, master 17, CodeQL 1) and 3 events (pull_request 21, schedule 11, push 3); "
        "every one would be sent as a deployment (test runs, feature branches and pull requests too). To keep "
        "only the deploy workflow on the default branch, add to this source: "
        'match = { name = "<your deploy workflow>", head_branch = "master", event = "push" }'
    ]


def test_the_suggested_match_names_a_deploy_workflow_and_main(write: WriteFile) -> None:
    header = "id,name,head_branch,event,updated_at,conclusion,head_sha\n"
    rows = [
        "1,Tests,feature/x,pull_request,2025-01-01T00:00:00Z,success,a\n",
        "2,Deploy to production,main,push,2025-01-02T00:00:00Z,success,b\n",
        "3,Tests,main,push,2025-01-02T00:00:00Z,success,b\n",
        "4,Deploy to production,main,push,2025-01-03T00:00:00Z,failure,c\n",
    ]
    write("runs.csv", header + "".join(rows))
    result = plan_for(write("backfill.toml", source_block("runs", "runs.csv", env="production")))
    warning = next(warning for warning in result.warnings if "no match is set" in warning)
    assert "2 workflows (Deploy to production 2, Tests 2), 2 branches (main 3, feature/x 1)" in warning
    assert warning.endswith('match = { name = "Deploy to production", head_branch = "main", event = "push" }')
    # Following the advice keeps the two deployments.
    keep = {"name": "Deploy to production", "head_branch": "main", "event": "push"}
    followed = plan_for(write("backfill.toml", source_block("runs", "runs.csv", env="production", match=keep)))
    assert followed.plan.events.get_column("build_id").to_list() == ["2", "4"]
    assert not [warning for warning in followed.warnings if "no match is set" in warning]


def test_one_workflow_on_one_branch_is_not_warned(write: WriteFile) -> None:
    header = "id,name,head_branch,event,updated_at,conclusion,head_sha\n"
    rows = "1,Deploy,main,push,2025-01-01T00:00:00Z,success,a\n2,Deploy,main,push,2025-01-02T00:00:00Z,failure,b\n"
    write("runs.csv", header + rows)
    result = plan_for(write("backfill.toml", source_block("runs", "runs.csv", env="production")))
    assert not [warning for warning in result.warnings if "no match is set" in warning]


def test_only_what_is_mixed_is_named(write: WriteFile) -> None:
    # PyGithub's 2020 runs: one event (push), no workflow name, but branches other than master.
    result = plan_for(_config(write, "github_actions_runs_pygithub_2020.json", "github-actions", env="production"))
    warning = next(warning for warning in result.warnings if "no match is set" in warning)
    assert "the runs mix 3 branches (master 3, " in warning and "workflow" not in warning.split(";")[0]
    assert warning.endswith('match = { head_branch = "master", event = "push" }')
