"""The GitLab CI and Kubernetes recipes and the Dockerfile, run as their schedulers run them.

Each recipe's script lines run in bash, on a real git repository built in
tmp_path, against the real `backfill serve`, with the state in a real
S3-compatible server on 127.0.0.1 (tests/s3server.py). A new runner (or pod) is
a new folder: nothing is kept between runs but the bucket.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gitrepo import GitRepo
from helpers import REPO
from receivers import KEY, LocalReceiver
from s3server import BUCKET, SECRET, LocalS3, start_s3

from backfill.config import load_config
from backfill.errors import EXIT_OK, EXIT_STATE

GITLAB = REPO / "configs" / "catch-up.gitlab-ci.yml"
KUBERNETES = REPO / "configs" / "catch-up.k8s.yaml"
DOCKERFILE = REPO / "Dockerfile"
S3_CONFIG = REPO / "configs" / "catch-up.s3.toml"


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[LocalS3]:
    yield from start_s3(tmp_path / "s3.log")


def _history(repo: GitRepo) -> None:
    repo.commit("First release", "2024-01-10T09:00:00+01:00")
    repo.tag("v1.0.0", message="Release 1.0.0", date="2024-01-10T10:00:00+01:00")
    repo.commit("Add search", "2024-02-01T12:00:00-05:00")
    repo.tag("v1.1.0-rc1", message="Release candidate", date="2024-02-01T13:00:00-05:00")
    repo.tag("v1.1.0", message="Release 1.1.0", date="2024-02-02T08:30:00-05:00")


def _release(repo: GitRepo, version: str, day: int) -> None:
    repo.commit(f"Work for {version}", f"2024-03-{day:02d}T10:00:00+00:00")
    repo.tag(version, message=f"Release {version}", date=f"2024-03-{day:02d}T11:00:00+00:00")


def sent(receiver: LocalReceiver) -> list[str]:
    return [str(item["event"]["attributes"]["build_id"]) for item in receiver.events()]  # type: ignore[index]


def _base_environ(s3: LocalS3, receiver: LocalReceiver) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "GITHUB_", "CI"))}
    return {
        **environ,
        **s3.environ(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_SYSTEM": os.devnull,
        "DEVGRID_URL": receiver.url,
        "DEVGRID_API_KEY": KEY,
    }


def _check_output(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert "Traceback" not in result.stderr, result.stderr
    for text in (result.stdout, result.stderr):
        assert KEY not in text and SECRET not in text
    return result


# -- GitLab CI ---------------------------------------------------------------------------------------------


def _gitlab_job() -> dict[str, Any]:
    loaded = yaml.safe_load(GITLAB.read_text(encoding="utf-8"))
    (job,) = loaded.values()
    assert isinstance(job, dict)
    return job


@pytest.fixture
def gitlab_project(tmp_path: Path) -> GitRepo:
    """The project's repository, with the recipe's files committed as a user commits their copy."""
    upstream = GitRepo(tmp_path / "project")
    (upstream.path / "configs").mkdir()
    for name in ("catch-up.sh", "catch-up.s3.toml"):
        shutil.copy(REPO / "configs" / name, upstream.path / "configs" / name)
    upstream.git("add", "configs")
    upstream.git("commit", "--quiet", "-m", "Add the DevGrid catch-up", date="2024-01-01T08:00:00+00:00")
    _history(upstream)
    return upstream


def gitlab_pipeline(
    project: GitRepo, runner: Path, s3: LocalS3, receiver: LocalReceiver, **variables: str
) -> subprocess.CompletedProcess[str]:
    """One pipeline of the job on a fresh runner: clone as GitLab does (GIT_DEPTH 0), then the script lines."""
    job = _gitlab_job()
    depth = int(job["variables"]["GIT_DEPTH"])
    clone = ["git", "clone", "--quiet", project.path.as_uri(), str(runner)]
    if depth:
        clone[2:2] = ["--depth", str(depth)]
    subprocess.run(clone, check=True, capture_output=True)
    environ = {
        **_base_environ(s3, receiver),
        **{name: str(value) for name, value in job["variables"].items()},
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_PIPELINE_SOURCE": "schedule",
        **variables,
    }
    script = "set -e\n" + "\n".join(job["script"])
    return _check_output(
        subprocess.run(
            ["bash", "-c", script], cwd=runner, env=environ, capture_output=True, text=True, timeout=180, check=False
        )
    )


def test_gitlab_first_pipeline_creates_the_state_and_each_schedule_sends_what_is_new(
    gitlab_project: GitRepo, s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    before = gitlab_pipeline(gitlab_project, tmp_path / "runner-0", s3, receiver)
    assert before.returncode == EXIT_STATE  # no state yet: a schedule never sends all history by itself
    assert sent(receiver) == []

    first = gitlab_pipeline(gitlab_project, tmp_path / "runner-1", s3, receiver, FIRST_RUN="true")
    assert first.returncode == EXIT_OK, first.stderr
    assert sent(receiver) == ["v1.0.0", "v1.1.0"]

    _release(gitlab_project, "v1.2.0", 1)
    later = gitlab_pipeline(gitlab_project, tmp_path / "runner-2", s3, receiver)
    assert later.returncode == EXIT_OK, later.stderr
    assert sent(receiver) == ["v1.0.0", "v1.1.0", "v1.2.0"]

    again = gitlab_pipeline(gitlab_project, tmp_path / "runner-3", s3, receiver)
    assert again.returncode == EXIT_OK, again.stderr
    assert sent(receiver) == ["v1.0.0", "v1.1.0", "v1.2.0"]
    assert receiver.duplicates() == []

    # FIRST_RUN by mistake, later on: refused, nothing sent, the state untouched.
    state = s3.read("shop/catch-up-state.db")
    mistake = gitlab_pipeline(gitlab_project, tmp_path / "runner-4", s3, receiver, FIRST_RUN="true")
    assert mistake.returncode == EXIT_STATE
    assert "already exists" in mistake.stderr
    assert s3.read("shop/catch-up-state.db") == state


def test_the_gitlab_job_clones_everything_runs_alone_and_keeps_no_secret() -> None:
    job = _gitlab_job()
    assert job["variables"]["GIT_DEPTH"] == "0"
    assert job["variables"]["BACKFILL_CONFIG"] == "configs/catch-up.s3.toml"
    assert job["script"] == ["bash configs/catch-up.sh"]
    assert {rule["if"] for rule in job["rules"]} == {
        '$CI_PIPELINE_SOURCE == "schedule"',
        '$CI_PIPELINE_SOURCE == "web"',
    }
    assert job["resource_group"]
    assert any("[s3]" in line for line in job["before_script"])
    assert any("install" in line and " git" in line for line in job["before_script"])
    for name in ("DEVGRID_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        assert name not in job["variables"]  # CI/CD variables, masked: never in the file


def test_the_s3_config_keeps_the_state_in_the_bucket() -> None:
    config = load_config(S3_CONFIG)
    assert config.state.url == f"s3://{BUCKET}/shop/catch-up-state.db"
    (source,) = config.sources
    assert source.type == "git-tags"
    assert Path(source.repo).resolve() == REPO.resolve()  # type: ignore[attr-defined]


# -- Kubernetes --------------------------------------------------------------------------------------------


def _kubernetes() -> tuple[dict[str, Any], dict[str, Any]]:
    documents = list(yaml.safe_load_all(KUBERNETES.read_text(encoding="utf-8")))
    (config_map,) = [item for item in documents if item["kind"] == "ConfigMap"]
    (cron_job,) = [item for item in documents if item["kind"] == "CronJob"]
    return config_map, cron_job


def _pod() -> dict[str, Any]:
    pod = _kubernetes()[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert isinstance(pod, dict)
    return pod


def _container() -> dict[str, Any]:
    (container,) = _pod()["containers"]
    assert isinstance(container, dict)
    return container


def _mount(name: str) -> str:
    (mount,) = [item for item in _container()["volumeMounts"] if item["name"] == name]
    return str(mount["mountPath"])


def kubernetes_pod(
    pod: Path, upstream: GitRepo, s3: LocalS3, receiver: LocalReceiver, **env: str
) -> subprocess.CompletedProcess[str]:
    """One pod of the CronJob: its volumes are folders under ``pod``, its command runs in sh."""
    config_map, _ = _kubernetes()
    container = _container()
    config_dir, work = pod / "etc-backfill", pod / "work"
    config_dir.mkdir(parents=True)
    work.mkdir()
    # The image's paths, mapped to this pod's folders.
    paths = {
        _mount("config"): str(config_dir),
        _mount("work"): str(work),
        "/usr/local/share/backfill/catch-up.sh": str(REPO / "configs" / "catch-up.sh"),
    }

    def local(text: str) -> str:
        for image_path, folder in paths.items():
            text = text.replace(image_path, folder)
        return text

    for name, content in config_map["data"].items():
        (config_dir / name).write_text(local(content), encoding="utf-8")
    environ = _base_environ(s3, receiver)
    for item in container["env"]:
        if "value" in item:
            environ[item["name"]] = item["value"]
        else:
            assert item["valueFrom"]["secretKeyRef"]["name"]  # from the Secret: here, from the test's environment
    environ |= {"REPO_URL": upstream.path.as_uri(), "DEVGRID_URL": receiver.url, **env}
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    return _check_output(
        subprocess.run(
            ["sh", "-c", local(script)],
            cwd=local(container["workingDir"]),
            env=environ,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    )


def test_the_cron_job_s_first_pod_creates_the_state_and_later_pods_send_what_is_new(
    s3: LocalS3, receiver: LocalReceiver, tmp_path: Path
) -> None:
    upstream = GitRepo(tmp_path / "shop")
    _history(upstream)
    scheduled = kubernetes_pod(tmp_path / "pod-0", upstream, s3, receiver)
    assert scheduled.returncode == EXIT_STATE
    assert sent(receiver) == []

    first = kubernetes_pod(tmp_path / "pod-1", upstream, s3, receiver, FIRST_RUN="true")
    assert first.returncode == EXIT_OK, first.stderr
    assert sent(receiver) == ["v1.0.0", "v1.1.0"]

    _release(upstream, "v1.2.0", 1)
    _release(upstream, "v1.3.0", 2)
    later = kubernetes_pod(tmp_path / "pod-2", upstream, s3, receiver)
    assert later.returncode == EXIT_OK, later.stderr
    assert sent(receiver) == ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"]
    assert receiver.duplicates() == []
    for path in tmp_path.rglob("*"):
        if path.is_file() and "pod-" in str(path):
            assert SECRET.encode() not in path.read_bytes() and KEY.encode() not in path.read_bytes(), path


def test_the_cron_job_runs_alone_never_retries_at_once_and_takes_secrets_from_a_secret() -> None:
    _, cron_job = _kubernetes()
    spec = cron_job["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    pod = _pod()
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] >= 60  # time to stop cleanly and upload the state
    env = {item["name"]: item for item in _container()["env"]}
    for name in ("DEVGRID_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["key"] == name
    assert env["FIRST_RUN"]["value"] == "false"
    config_map, _ = _kubernetes()
    (script,) = _container()["args"]
    assert f"{_mount('config')}/backfill.toml" in script
    assert "backfill.toml" in config_map["data"]
    assert "url = " in config_map["data"]["backfill.toml"]


# -- the Dockerfile ----------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    joined = re.sub(r"\\\n\s*", " ", text)
    result = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _dockerignore_allows(path: str) -> bool:
    """.dockerignore's rules, last match wins (the subset it uses: *, !path, **/name)."""
    allowed = True
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if pattern == "*" or path == pattern or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


def test_the_dockerfile_is_small_has_git_and_copies_only_what_exists() -> None:
    instructions = _instructions()
    known = {"FROM", "RUN", "COPY", "WORKDIR", "USER", "ENTRYPOINT", "CMD", "ENV", "ARG", "LABEL"}
    assert {word for word, _ in instructions} <= known
    assert instructions[0][0] == "FROM"
    assert re.fullmatch(r"python:3\.1[1-9]-slim", instructions[0][1])
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "apt-get install -y --no-install-recommends git" in runs
    assert "rm -rf /var/lib/apt/lists/*" in runs
    assert '".[s3]"' in runs
    copies = [rest.split() for word, rest in instructions if word == "COPY"]
    assert copies
    for *sources, _target in copies:
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert _dockerignore_allows(source), f"COPY {source}: excluded by .dockerignore"
    # The script the CronJob runs is where the image puts it.
    assert ["configs/catch-up.sh", "/usr/local/share/backfill/catch-up.sh"] in copies
    (script,) = _container()["args"]
    assert "/usr/local/share/backfill/catch-up.sh" in script
    assert ("USER", "backfill") in instructions
    assert _pod()["securityContext"]["runAsUser"] == 10001
    assert "--uid 10001" in runs
    assert instructions[-2:] == [("ENTRYPOINT", '["backfill"]'), ("CMD", '["--help"]')]
