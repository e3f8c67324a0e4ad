"""What each CI system's run exports look like: column names and status words.

A preset maps every event field to candidate columns. Nested JSON fields are
flattened to dotted names (``actor.login``); a list of objects becomes
``list[].field`` holding the first non-empty value among the list's items.
Where several candidates exist in a file, each row takes the first that is not
empty (GitLab deployments: ``deployable.finished_at``, else ``updated_at``).

Status words map to ``success``, ``failed`` or ``skip`` (not a deployment:
cancelled, skipped, still running...). A word that is in no list is rejected
as unknown rather than guessed; ``status_map`` in a source adds or overrides
words. The empty status means the run had not finished when it was exported.

Where these choices differ from how Apache DevLake maps the same records, the
preset says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from backfill.model import Outcome


@dataclass(frozen=True)
class Preset:
    name: str
    columns: Mapping[str, tuple[str, ...]]
    statuses: Mapping[str, Outcome]
    # Keys under which an API page wraps its list of records ({"value": [...]}).
    record_keys: tuple[str, ...] = ()
    # The review CSV escapes formula-like cells; only the events preset undoes it.
    unescape_formulas: bool = False
    # Columns that hold a commit message: only its first line is used.
    first_line: tuple[str, ...] = ()
    # Where a run names its workflow, branch and triggering event (see ci_scope).
    scope: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = field(default=())


def _vocab(success: tuple[str, ...], failed: tuple[str, ...], skip: tuple[str, ...]) -> dict[str, Outcome]:
    vocab: dict[str, Outcome] = {"": "skip"}
    vocab.update({word: "success" for word in success})
    vocab.update({word: "failed" for word in failed})
    vocab.update({word: "skip" for word in skip})
    return vocab


GITHUB_ACTIONS = Preset(
    name="github-actions",
    # API shape (gh api .../actions/runs) first, then `gh run list --json` names.
    columns={
        "build_id": ("id", "databaseId"),
        "timestamp": ("updated_at", "updatedAt"),
        "status": ("conclusion",),
        "env": ("environment",),
        "build_commit_sha": ("head_sha", "headSha"),
        # html_url is the page a person opens; `url` is the API address in the
        # API shape and the page in the gh CLI shape, so it only fills a gap.
        "build_url": ("html_url", "url"),
        "initiator": ("actor.login", "actor_login", "triggering_actor.login"),
        # Runs from before 2021 have neither title nor name: the commit's subject line stands in.
        "description": ("display_title", "displayTitle", "name", "workflowName", "head_commit.message"),
    },
    statuses=_vocab(
        success=("success",),
        failed=("failure", "timed_out", "startup_failure"),
        # Run statuses as well: exports that fold status into conclusion say "in_progress".
        skip=(
            "cancelled",
            "skipped",
            "neutral",
            "action_required",
            "stale",
            "queued",
            "in_progress",
            "requested",
            "waiting",
            "pending",
        ),
    ),
    record_keys=("workflow_runs",),
    first_line=("head_commit.message",),
    scope={"workflow": ("name", "workflowName"), "branch": ("head_branch", "headBranch"), "event": ("event",)},
    notes=(
        "DevLake counts cancelled runs as failures; a cancelled run deployed nothing, so it is skipped here.",
        "A run re-run keeps its id: the latest attempt wins the dedupe.",
    ),
)

GITLAB_CI = Preset(
    name="gitlab-ci",
    # Covers both /pipelines and /deployments listings.
    columns={
        "build_id": ("id",),
        "timestamp": ("deployable.finished_at", "finished_at", "updated_at"),
        "status": ("status",),
        "env": ("environment.name", "environment"),
        # Deployments and pipelines name it sha; job listings only under commit.id.
        "build_commit_sha": ("sha", "deployable.commit.id", "commit.id"),
        "build_url": ("deployable.web_url", "web_url", "deployable.pipeline.web_url"),
        "initiator": ("user.username", "deployable.user.username"),
        "description": ("deployable.commit.title", "name"),
    },
    statuses=_vocab(
        success=("success",),
        failed=("failed",),
        skip=(
            "canceled",
            "canceling",
            "skipped",
            "manual",
            "created",
            "pending",
            "running",
            "preparing",
            "waiting_for_resource",
            "scheduled",
            "blocked",
        ),
    ),
    scope={"branch": ("ref", "deployable.ref"), "event": ("source",)},
    notes=(
        "DevLake counts a canceled deployment as a failure; it deployed nothing, so it is skipped here.",
        "DevLake reads the undocumented deployment status 'completed' as success; it is rejected as "
        "unknown here until a status_map says what it means.",
    ),
)

JENKINS = Preset(
    name="jenkins",
    columns={
        # Build numbers restart per job; fullDisplayName ("folder » job #31") does not.
        "build_id": ("fullDisplayName", "url", "number"),
        # Jenkins records the start time and the duration, both in milliseconds.
        "timestamp": ("timestamp",),
        "duration_ms": ("duration",),
        "status": ("result",),
        "build_commit_sha": ("actions[].lastBuiltRevision.SHA1", "GIT_COMMIT", "commit"),
        "build_url": ("url",),
        "initiator": ("actions[].causes[].userId", "actions[].causes[].userName"),
        "description": ("displayName", "fullDisplayName"),
    },
    statuses=_vocab(
        success=("success", "unstable"),
        failed=("failure",),
        skip=("aborted", "not_built", "not_build"),
    ),
    record_keys=("builds", "allBuilds"),
    notes=(
        "UNSTABLE means the build ran to its end with test or quality-gate failures, so the deploy step "
        "ran: it counts as a successful deployment (DevLake leaves it unclassified). Map it with "
        "status_map if your pipeline stops before deploying.",
    ),
)

CIRCLECI = Preset(
    name="circleci",
    # API v2 workflows and jobs carry an outcome (status); pipelines only a state. API v1.1
    # builds (what CircleCI server installs return) have build_num, stop_time and outcome.
    columns={
        "build_id": ("id", "build_num"),
        "timestamp": ("stopped_at", "stop_time", "updated_at", "created_at"),
        # v1.1's outcome is set once a build finishes; its status also says "fixed" or "retried".
        "status": ("outcome", "status", "state"),
        "build_commit_sha": ("vcs.revision", "pipeline.vcs.revision", "revision", "vcs_revision"),
        "build_url": ("web_url", "url", "build_url"),
        "initiator": ("trigger.actor.login", "started_by", "user.login"),
        "description": ("name", "vcs.commit.subject", "subject"),
    },
    statuses=_vocab(
        # no_tests: the build ran to its end with no test step, as deploy jobs do.
        success=("success", "successful", "fixed", "no_tests"),
        failed=("failed", "error", "failing", "infrastructure_fail", "timedout"),
        skip=(
            "canceled",
            "cancelled",
            "not_run",
            "on_hold",
            "running",
            "queued",
            "blocked",
            "unauthorized",
            "not_running",
            "retried",
            "scheduled",
            # Pipeline states say a pipeline was set up, not how a deployment went.
            "created",
            "errored",
            "setup-pending",
            "setup",
            "pending",
        ),
    ),
    record_keys=("items",),
    notes=(
        "Pipeline `state` values (created, errored, setup...) are not outcomes: export workflows or "
        "jobs to get deployments.",
    ),
)

AZURE_DEVOPS = Preset(
    name="azure-devops",
    columns={
        # buildNumber is a label that repeats (e.g. "azure-job"); the id is unique.
        "build_id": ("id",),
        "timestamp": ("finishTime",),
        "status": ("result",),
        "build_commit_sha": ("sourceVersion",),
        "build_url": ("_links.web.href", "url"),
        "initiator": ("requestedFor.uniqueName", "requestedFor.displayName"),
        "description": ("definition.name", "buildNumber"),
    },
    statuses=_vocab(
        success=("succeeded", "partiallysucceeded"),
        failed=("failed",),
        skip=("canceled", "none"),
    ),
    record_keys=("value",),
    scope={"workflow": ("definition.name",), "branch": ("sourceBranch",), "event": ("reason",)},
    notes=(
        "partiallySucceeded ran to its end with failing non-critical tasks, so it counts as a "
        "successful deployment, as Jenkins' UNSTABLE does.",
        "DevLake counts canceled builds as failures; they deployed nothing, so they are skipped here.",
    ),
)

EVENTS = Preset(
    name="events",
    columns={
        "entity": ("entityId",),
        "build_id": ("build_id",),
        "timestamp": ("timestamp",),
        "status": ("status",),
        "env": ("env",),
        "build_commit_sha": ("build_commit_sha",),
        "change_id": ("change_id",),
        "build_url": ("build_url",),
        "description": ("description",),
        "initiator": ("initiator",),
        "deployment_type": ("deployment_type",),
    },
    # A review CSV holds events only: anything else is a mistake made while editing it.
    statuses={"success": "success", "failed": "failed"},
    unescape_formulas=True,
)

PRESETS: Final[Mapping[str, Preset]] = {
    preset.name: preset for preset in (GITHUB_ACTIONS, GITLAB_CI, JENKINS, CIRCLECI, AZURE_DEVOPS, EVENTS)
}
