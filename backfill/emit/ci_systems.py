"""The CI systems ``backfill emit`` knows: how each is recognised, and what its variables say about the run.

Each system is one small class in :data:`SYSTEMS`, tried in that order; the
first whose variables are set wins. Jenkins is last: its variables
(``BUILD_NUMBER``, ``BUILD_URL``) have generic names that other tools set too.

The build id is the one a backfill of the same system's run export reads (see
:mod:`backfill.extract.exports.presets`), so that an event sent live and the same run
imported later have the same key ``(entityId, env, build_id)``:

- GitHub Actions: the run's ``id`` (``GITHUB_RUN_ID``). A re-run keeps the id and
  counts attempts in ``GITHUB_RUN_ATTEMPT``: attempt 1 keeps the bare id, a later
  attempt is ``ID-ATTEMPT``, so each attempt is its own deployment and a retry of
  the same job in the same attempt gives the same key again.
- GitLab CI: the pipeline's ``id`` (``CI_PIPELINE_ID``).
- Jenkins: ``fullDisplayName`` (``folder » job #31``), built from ``JOB_NAME`` and
  ``BUILD_DISPLAY_NAME``: build numbers restart per job.
- CircleCI: the job's ``id`` (``CIRCLE_WORKFLOW_JOB_ID``), else ``CIRCLE_BUILD_NUM``.
- Azure Pipelines: ``Build.BuildId``; ``Build.BuildNumber`` is a display label that repeats.
- Bitbucket Pipelines: ``BITBUCKET_BUILD_NUMBER``; Buildkite: ``BUILDKITE_BUILD_ID``.

Several deploy jobs of one run are told apart by their environment (each names
its own ``--env``) or entity; two jobs of one run that deploy the same entity to
the same environment are one deployment, as a backfill of the run counts it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from backfill.emit.ci_names import ALIASES, NAMES
from backfill.emit.commits import Resolved, WorkingCopy, resolve_commit

Environ = Mapping[str, str]


@dataclass(frozen=True)
class RunFacts:
    """What a CI system's variables say about the run; None where they say nothing."""

    system: str
    build_id: str | None = None
    commit: Resolved = field(default_factory=lambda: Resolved(None))
    build_url: str | None = None
    initiator: str | None = None
    description: str | None = None
    notes: tuple[str, ...] = field(default=())


def _get(environ: Environ, *names: str) -> str | None:
    """The first of ``names`` that is set to something other than blanks, trimmed."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def _first_line(text: str | None) -> str | None:
    if not text:
        return None
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return line or None


def _web_url(value: str | None) -> str | None:
    return value if value and value.startswith(("https://", "http://")) else None


class CiSystem:
    """One CI system: its name for ``--ci``, the ci-export preset of its run exports, and its variables."""

    name: ClassVar[str]
    label: ClassVar[str]
    preset: ClassVar[str | None] = None

    def detects(self, environ: Environ) -> bool:
        raise NotImplementedError

    def facts(self, environ: Environ, copy: WorkingCopy) -> RunFacts:
        raise NotImplementedError


class GitHubActions(CiSystem):
    name, label, preset = "github", "GitHub Actions", "github-actions"
    # Events whose GITHUB_SHA is not the commit deployed: a merge commit GitHub made for
    # the pull request, or the base branch's last commit (pull_request_target).
    _PULL_REQUEST_EVENTS = ("pull_request", "pull_request_target", "pull_request_review", "pull_request_review_comment")

    def detects(self, environ: Environ) -> bool:
        return environ.get("GITHUB_ACTIONS") == "true"

    def facts(self, environ: Environ, copy: WorkingCopy) -> RunFacts:
        notes: list[str] = []
        run_id = _get(environ, "GITHUB_RUN_ID")
        attempt = _attempt(_get(environ, "GITHUB_RUN_ATTEMPT"))
        build_id = run_id if run_id is None or attempt <= 1 else f"{run_id}-{attempt}"
        event_name = _get(environ, "GITHUB_EVENT_NAME") or ""
        payload = _payload(_get(environ, "GITHUB_EVENT_PATH"), notes)
        sha, where = _get(environ, "GITHUB_SHA"), "GITHUB_SHA"
        description = None
        if event_name in self._PULL_REQUEST_EVENTS:
            pull = payload.get("pull_request") if isinstance(payload.get("pull_request"), dict) else {}
            head = _dig(pull, "head", "sha")
            if head:
                sha, where = head, "pull_request.head.sha of the event"
            else:
                notes.append(
                    f"a {event_name} run's GITHUB_SHA is a merge commit GitHub made, and the event payload "
                    "names no head commit: pass --commit with the commit deployed"
                )
            description = _dig(pull, "title")
        elif event_name == "workflow_run":
            run = payload.get("workflow_run") if isinstance(payload.get("workflow_run"), dict) else {}
            head = _dig(run, "head_sha")
            if head:
                sha, where = head, "workflow_run.head_sha of the event"
            else:
                notes.append(
                    "a workflow_run run's GITHUB_SHA is the default branch's last commit, and the event payload "
                    "names no head_sha: pass --commit with the commit deployed"
                )
            description = _dig(run, "display_title") or _first_line(_dig(run, "head_commit", "message"))
        else:
            description = _first_line(_dig(payload, "head_commit", "message"))
        server, repository = (
            _get(environ, "GITHUB_SERVER_URL") or "https://github.com",
            _get(environ, "GITHUB_REPOSITORY"),
        )
        build_url = None
        if run_id and repository:
            build_url = f"{server.rstrip('/')}/{repository}/actions/runs/{run_id}"
            if attempt > 1:
                build_url += f"/attempts/{attempt}"
        # A re-run's triggering actor is the person who re-ran it.
        initiator = _get(environ, "GITHUB_TRIGGERING_ACTOR", "GITHUB_ACTOR") if attempt > 1 else None
        return RunFacts(
            system=self.name,
            build_id=build_id,
            commit=resolve_commit(sha, where, copy),
            build_url=build_url,
            initiator=initiator or _get(environ, "GITHUB_ACTOR"),
            description=description or _get(environ, "GITHUB_WORKFLOW"),
            notes=tuple(notes),
        )


class GitLabCi(CiSystem):
    name, label, preset = "gitlab", "GitLab CI", "gitlab-ci"

    def detects(self, environ: Environ) -> bool:
        return environ.get("GITLAB_CI") == "true"

    def facts(self, environ: Environ, copy: WorkingCopy) -> RunFacts:
        # A merged-results pipeline (or merge train) runs on a merge commit GitLab made;
        # the commit of the merge request is CI_MERGE_REQUEST_SOURCE_BRANCH_SHA.
        source_sha = _get(environ, "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA")
        sha: str | None
        if source_sha:
            sha, where = source_sha, "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA"
            description = _get(environ, "CI_MERGE_REQUEST_TITLE", "CI_COMMIT_TITLE")
        else:
            sha, where = _get(environ, "CI_COMMIT_SHA"), "CI_COMMIT_SHA"
            description = _get(environ, "CI_COMMIT_TITLE")
        return RunFacts(
            system=self.name,
            build_id=_get(environ, "CI_PIPELINE_ID"),
            commit=resolve_commit(sha, where, copy),
            build_url=_web_url(_get(environ, "CI_PIPELINE_URL")),
            initiator=_get(environ, "GITLAB_USER_LOGIN", "GITLAB_USER_EMAIL"),
            description=description,
        )


class CircleCi(CiSystem):
    name, label, preset = "circleci", "CircleCI", "circleci"

    def detects(self, environ: Environ) -> bool:
        return environ.get("CIRCLECI") == "true"

    def facts(self, environ: Environ, copy: WorkingCopy) -> RunFacts:
        return RunFacts(
            system=self.name,
            build_id=_get(environ, "CIRCLE_WORKFLOW_JOB_ID", "CIRCLE_BUILD_NUM"),
            commit=resolve_commit(_get(environ, "CIRCLE_SHA1"), "CIRCLE_SHA1", copy),
            build_url=_web_url(_get(environ, "CIRCLE_BUILD_URL")),
            initiator=_get(environ, "CIRCLE_USERNAME"),
            description=_get(environ, "CIRCLE_JOB"),
        )


class AzurePipelines(CiSystem):
    name, label, preset = "azure", "Azure Pipelines", "azure-devops"

    def detects(self, environ: Environ) -> bool:
        return environ.get("TF_BUILD", "").lower() == "true"

    def facts(self, environ: Environ, copy: WorkingCopy) -> RunFacts:
        build_id = _get(environ, "BUILD_BUILDID")
        # A pull request build checks out a merge commit; the pull request's own commit is this one.
        pr_sha = (
            _get(environ, "SYSTEM_PULLREQUEST_SOURCECOMMITID") if environ.get("BUILD_REASON") == "PullRequest" else None
        )
        sha, where = (
            (pr_sha, "SYSTEM_PULLREQUEST_SOURCECOMMITID")
            if pr_sha
            else (
                _get(environ, "BUILD_SOURCEVERSION"),
                "BUILD_SOURCEVERSION",
            )
        )
        collection = _get(environ, "SYSTEM_COLLECTIONURI", "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI")
        project = _get(environ, "SYSTEM_TEAMPROJECT")
        build_url = None
        if collection and project and build_id:
            build_url = f"{collection.rstrip('/')}/{quote(project)}/_build/results?buildId={build_id}"
        return RunFacts(
            system=self.name,
            build_id=build_id,
            commit=resolve_commit(sha, where, copy),
            build_url=_web_url(build_url),
            initiator=_get(environ, "BUILD_REQUESTEDFOREMAIL", "BUILD_REQUESTEDFOR"),
            description=_get(environ, "BUILD_DEFINITIONNAME"),
        )


class BitbucketPipelines(CiSystem):
    name, label = "bitbucket", "Bitbucket Pipelines"

    def detects(self, environ: Environ) -> bool:
        return bool(_get(environ, "BITBUCKET_BUILD_NUMBER", "BITBUCKET_PIPELINE_UUID"))

    def facts(self, environ: Environ, copy: WorkingCopy) -> RunFacts:
        number = _get(environ, "BITBUCKET_BUILD_NUMBER")
        origin = _get(environ, "BITBUCKET_GIT_HTTP_ORIGIN")
        if not origin and _get(environ, "BITBUCKET_REPO_FULL_NAME"):
            origin = f"https://bitbucket.org/{_get(environ, 'BITBUCKET_REPO_FULL_NAME')}"
        return RunFacts(
            system=self.name,
            build_id=number,
            # BITBUCKET_COMMIT may be abbreviated: resolve_commit makes it whole with git.
            commit=resolve_commit(_get(environ, "BITBUCKET_COMMIT"), "BITBUCKET_COMMIT", copy),
            build_url=_web_url(f"{origin.rstrip('/')}/pipelines/results/{number}" if origin and number else None),
            initiator=_get(environ, "BITBUCKET_STEP_TRIGGERER_UUID"),
        )


class Buildkite(CiSystem):
    name, label = "buildkite", "Buildkite"

    def detects(self, environ: Environ) -> bool:
        return environ.get("BUILDKITE") == "true"

    def facts(self, environ: Environ, copy: WorkingCopy) -> RunFacts:
        return RunFacts(
            system=self.name,
            build_id=_get(environ, "BUILDKITE_BUILD_ID"),
            # A build started without a commit says HEAD: resolve_commit asks git which commit that is.
            commit=resolve_commit(_get(environ, "BUILDKITE_COMMIT"), "BUILDKITE_COMMIT", copy),
            build_url=_web_url(_get(environ, "BUILDKITE_BUILD_URL")),
            initiator=_get(environ, "BUILDKITE_BUILD_CREATOR_EMAIL", "BUILDKITE_BUILD_CREATOR"),
            description=_first_line(_get(environ, "BUILDKITE_MESSAGE")),
        )


class Jenkins(CiSystem):
    name, label, preset = "jenkins", "Jenkins", "jenkins"

    def detects(self, environ: Environ) -> bool:
        # JENKINS_URL is unset on a Jenkins whose URL was never configured; BUILD_TAG always says jenkins-.
        return bool(_get(environ, "JENKINS_URL", "JENKINS_HOME")) or environ.get("BUILD_TAG", "").startswith("jenkins-")

    def facts(self, environ: Environ, copy: WorkingCopy) -> RunFacts:
        notes: list[str] = []
        job, number = _get(environ, "JOB_NAME"), _get(environ, "BUILD_NUMBER")
        display = _get(environ, "BUILD_DISPLAY_NAME") or (f"#{number}" if number else None)
        build_id = f"{' » '.join(job.split('/'))} {display}" if job and display else None
        given = _get(environ, "GIT_COMMIT")
        if given:
            # GIT_COMMIT comes from the job's last checkout, which may be another repository.
            commit = resolve_commit(given, "GIT_COMMIT", copy, check_exists=True)
        else:
            head = copy.rev_parse("HEAD")
            commit = Resolved(head, f"GIT_COMMIT is not set: used git HEAD {head}" if head else None)
        build_url = _web_url(_get(environ, "BUILD_URL"))
        if build_url is None:
            notes.append(
                "BUILD_URL is empty (Jenkins URL not configured in Manage Jenkins » System): "
                "the event is sent without build_url"
            )
        return RunFacts(
            system=self.name,
            build_id=build_id,
            commit=commit,
            build_url=build_url,
            initiator=_get(environ, "BUILD_USER_ID", "BUILD_USER"),
            description=display,
            notes=tuple(notes),
        )


class NoCi(CiSystem):
    """A run outside CI (``--ci none``): every value from flags; the commit from git."""

    name, label = "none", "no CI system"

    def detects(self, environ: Environ) -> bool:
        return True

    def facts(self, environ: Environ, copy: WorkingCopy) -> RunFacts:
        head = copy.rev_parse("HEAD")
        return RunFacts(system=self.name, commit=Resolved(head, f"used git HEAD {head}" if head else None))


# Detection order: the first that matches wins; Jenkins' generic variables come last.
SYSTEMS: tuple[CiSystem, ...] = (
    GitHubActions(),
    GitLabCi(),
    CircleCi(),
    AzurePipelines(),
    BitbucketPipelines(),
    Buildkite(),
    Jenkins(),
)
NONE = NoCi()
if (*(system.name for system in SYSTEMS), NONE.name) != NAMES:
    raise AssertionError("ci_names.NAMES must name the systems in SYSTEMS, in order, then none")


def detect(environ: Environ, forced: str | None = None) -> CiSystem:
    """The system named by ``forced`` (``--ci``), else the first whose variables are set, else none."""
    if forced is not None:
        name = ALIASES.get(forced.lower(), forced.lower())
        return next(system for system in (*SYSTEMS, NONE) if system.name == name)
    return next((system for system in SYSTEMS if system.detects(environ)), NONE)


def _attempt(value: str | None) -> int:
    try:
        return max(int(value or "1"), 1)
    except ValueError:
        return 1


def _payload(path: str | None, notes: list[str]) -> dict[str, Any]:
    """The webhook payload GitHub writes for the run (GITHUB_EVENT_PATH), or {} when it cannot be read."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"GITHUB_EVENT_PATH {path}: cannot be read ({type(exc).__name__}); GITHUB_SHA is used")
        return {}
    return data if isinstance(data, dict) else {}


def _dig(data: Any, *keys: str) -> str | None:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data.strip() if isinstance(data, str) and data.strip() else None
