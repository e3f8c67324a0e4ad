"""The scheduled catch-up recipe, run as its workflow runs it.

configs/catch-up.github-actions.yml calls configs/catch-up.sh with its inputs as
environment variables, on a checkout of the repository whose tags are the
deployments (configs/catch-up.toml). Here the very same script and config run
in bash, in a real git repository built in tmp_path, against the real
`backfill serve`; losing the state is deleting the folder the cache holds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gitrepo import GitRepo
from helpers import REPO, WriteFile, invoke, source_block
from receivers import KEY, LocalReceiver, start_receiver

from backfill.config import load_config
from backfill.errors import EXIT_LOCKED, EXIT_OK, EXIT_STATE, EXIT_USAGE
from backfill.state.lock import StateLock
from backfill.state.store import Store

WORKFLOW = REPO / "configs" / "catch-up.github-actions.yml"
SCRIPT = "configs/catch-up.sh"
CONFIG = "configs/catch-up.toml"
STATE = Path(".backfill/catch-up-state.db")  # where configs/catch-up.toml keeps it, in the cached folder
CLOSED_PORT = "http://127.0.0.1:9"  # for runs that must stop before they send anything


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[LocalReceiver]:
    (tmp_path / "receiver").mkdir()
    yield from start_receiver(tmp_path / "receiver")


def _with_recipe(repo: GitRepo) -> GitRepo:
    """The recipe's files, committed as a user would commit their copy."""
    (repo.path / "configs").mkdir(exist_ok=True)
    for name in ("catch-up.sh", "catch-up.toml"):
        shutil.copy(REPO / "configs" / name, repo.path / "configs" / name)
    repo.git("add", "configs")
    repo.git("commit", "--quiet", "-m", "Add the DevGrid catch-up", date="2024-01-01T08:00:00+00:00")
    return repo


def _history(repo: GitRepo) -> None:
    """Three releases, a release candidate (not a deployment) and a tag that is not a release."""
    repo.commit("First release", "2024-01-10T09:00:00+01:00")
    repo.tag("v1.0.0", message="Release 1.0.0", date="2024-01-10T10:00:00+01:00")
    repo.commit("Add search", "2024-02-01T12:00:00-05:00")
    repo.tag("v1.1.0-rc1", message="Release candidate", date="2024-02-01T13:00:00-05:00")
    repo.tag("v1.1.0", message="Release 1.1.0", date="2024-02-02T08:30:00-05:00")
    repo.tag("docs-2024", message="Docs snapshot", date="2024-02-02T09:00:00-05:00")
    repo.commit("Fix rounding", "2024-02-05T23:30:00+09:00")
    repo.tag("v1.1.1")  # lightweight: the commit's date


@pytest.fixture
def checkout(tmp_path: Path) -> GitRepo:
    """The repository as actions/checkout leaves it with fetch-depth: 0 (here: the repository itself)."""
    repo = _with_recipe(GitRepo(tmp_path / "checkout"))
    _history(repo)
    return repo


def catch_up(workspace: Path, receiver: LocalReceiver | None, first_run: str | None = None, **inputs: str) -> Any:
    """Run the recipe's script as the workflow step does: bash, from the checkout's root, inputs in the env."""
    env = {
        **os.environ,
        # backfill as installed beside this Python, first on PATH, as pip leaves it on a runner.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_SYSTEM": os.devnull,
        "BACKFILL_CONFIG": CONFIG,
        "DEVGRID_URL": receiver.url if receiver else CLOSED_PORT,
        "DEVGRID_API_KEY": KEY,
        # A scheduled run has no inputs: GitHub renders ${{ inputs.first_run }} as ''.
        "FIRST_RUN": first_run or "",
        **inputs,
    }
    return subprocess.run(
        ["bash", SCRIPT], cwd=workspace, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def sent(receiver: LocalReceiver) -> list[str]:
    return [str(event["attributes"]["build_id"]) for event in _received(receiver)]


def _received(receiver: LocalReceiver) -> list[dict[str, Any]]:
    return [item["event"] for item in receiver.events()]  # type: ignore[misc]


def assert_no_secret(workspace: Path, *outputs: str) -> None:
    for output in outputs:
        assert KEY not in output
    for path in (workspace / ".backfill").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


# -- the runs ---------------------------------------------------------------------------------------


def test_the_first_run_creates_the_state_and_sends_the_history(checkout: GitRepo, receiver: LocalReceiver) -> None:
    result = catch_up(checkout.path, receiver, first_run="true")
    assert result.returncode == EXIT_OK, result.stderr
    assert sent(receiver) == ["v1.0.0", "v1.1.0", "v1.1.1"]  # oldest first; no candidate, no docs tag
    events = _received(receiver)
    assert {event["entityId"] for event in events} == {"shop"}
    assert {event["attributes"]["env"] for event in events} == {"production"}
    assert [event["timestamp"] for event in events] == [
        "2024-01-10T09:00:00Z",  # the tagger's date, in UTC
        "2024-02-02T13:30:00Z",
        "2024-02-05T14:30:00Z",  # lightweight: the commit's date
    ]
    assert (checkout.path / STATE).is_file()
    assert "created" in result.stderr
    assert_no_secret(checkout.path, result.stdout, result.stderr)


def test_a_scheduled_run_before_the_first_one_stops_and_says_how_to_start(
    checkout: GitRepo, receiver: LocalReceiver
) -> None:
    result = catch_up(checkout.path, receiver)
    assert result.returncode == EXIT_STATE
    assert sent(receiver) == []
    assert not (checkout.path / STATE).exists()
    assert "does not exist, and --require-state says it must" in result.stderr
    assert "backfill init" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_later_run_sends_only_the_new_tags(checkout: GitRepo, receiver: LocalReceiver) -> None:
    assert catch_up(checkout.path, receiver, first_run="true").returncode == EXIT_OK
    checkout.commit("Faster search", "2024-03-01T10:00:00+00:00")
    checkout.tag("v1.2.0-beta", message="Beta", date="2024-03-01T10:30:00+00:00")
    checkout.tag("v1.2.0", message="Release 1.2.0", date="2024-03-01T11:00:00+00:00")
    # Tagged late, on an old commit: its date is before everything already sent, and it is still new.
    checkout.tag("v0.9.0", at="HEAD~3")

    result = catch_up(checkout.path, receiver, first_run="false")
    assert result.returncode == EXIT_OK, result.stderr
    assert sent(receiver) == ["v1.0.0", "v1.1.0", "v1.1.1", "v0.9.0", "v1.2.0"]
    assert receiver.duplicates() == []

    again = catch_up(checkout.path, receiver)  # the next hour: nothing new
    assert again.returncode == EXIT_OK, again.stderr
    assert len(sent(receiver)) == 5
    assert_no_secret(checkout.path, result.stdout, result.stderr, again.stdout, again.stderr)


def test_a_run_whose_state_was_lost_stops_and_sends_nothing(checkout: GitRepo, receiver: LocalReceiver) -> None:
    assert catch_up(checkout.path, receiver, first_run="true").returncode == EXIT_OK
    shutil.rmtree(checkout.path / ".backfill")  # the cache was evicted
    checkout.commit("Faster search", "2024-03-01T10:00:00+00:00")
    checkout.tag("v1.2.0", message="Release 1.2.0", date="2024-03-01T11:00:00+00:00")

    result = catch_up(checkout.path, receiver)
    assert result.returncode == EXIT_STATE
    assert sent(receiver) == ["v1.0.0", "v1.1.0", "v1.1.1"]  # not one more, not history again
    assert str(STATE) in result.stderr
    assert "Restore the state file" in result.stderr
    assert not (checkout.path / STATE).exists()  # nothing that a save step could cache as the state


def test_a_first_run_over_an_existing_state_is_refused_and_sends_nothing(
    checkout: GitRepo, receiver: LocalReceiver
) -> None:
    assert catch_up(checkout.path, receiver, first_run="true").returncode == EXIT_OK
    before = (checkout.path / STATE).read_bytes()
    checkout.commit("Faster search", "2024-03-01T10:00:00+00:00")
    checkout.tag("v1.2.0", message="Release 1.2.0", date="2024-03-01T11:00:00+00:00")

    result = catch_up(checkout.path, receiver, first_run="true")
    assert result.returncode == EXIT_STATE
    assert "already exists" in result.stderr
    assert "without first_run" in result.stderr
    assert sent(receiver) == ["v1.0.0", "v1.1.0", "v1.1.1"]
    assert (checkout.path / STATE).read_bytes() == before

    # The scheduled run that follows carries on from the same state: the new tag, once.
    assert catch_up(checkout.path, receiver).returncode == EXIT_OK
    assert sent(receiver) == ["v1.0.0", "v1.1.0", "v1.1.1", "v1.2.0"]
    assert receiver.duplicates() == []


def test_tags_pushed_after_the_checkout_are_fetched(tmp_path: Path, receiver: LocalReceiver) -> None:
    upstream = _with_recipe(GitRepo(tmp_path / "upstream"))
    _history(upstream)
    workspace = tmp_path / "workspace"
    subprocess.run(["git", "clone", "--quiet", str(upstream.path), str(workspace)], check=True, capture_output=True)
    # What actions/checkout does to the tag a workflow runs on: the same commit, as a lightweight tag.
    subprocess.run(
        ["git", "tag", "--force", "v1.1.0", "v1.1.0^{commit}"], cwd=workspace, check=True, capture_output=True
    )
    assert catch_up(workspace, receiver, first_run="true").returncode == EXIT_OK
    assert _received(receiver)[1]["timestamp"] == "2024-02-02T13:30:00Z"  # the tagger's date, from the remote

    upstream.commit("Faster search", "2024-03-01T10:00:00+00:00")
    upstream.tag("v1.2.0", message="Release 1.2.0", date="2024-03-01T11:00:00+00:00")
    result = catch_up(workspace, receiver)
    assert result.returncode == EXIT_OK, result.stderr
    assert sent(receiver) == ["v1.0.0", "v1.1.0", "v1.1.1", "v1.2.0"]


def test_a_remote_that_cannot_be_fetched_stops_the_run(tmp_path: Path) -> None:
    upstream = _with_recipe(GitRepo(tmp_path / "upstream"))
    _history(upstream)
    workspace = tmp_path / "workspace"
    subprocess.run(["git", "clone", "--quiet", str(upstream.path), str(workspace)], check=True, capture_output=True)
    gone = tmp_path / "gone"
    subprocess.run(["git", "remote", "set-url", "origin", str(gone)], cwd=workspace, check=True)
    result = catch_up(workspace, None, first_run="true")
    assert result.returncode == 1
    assert "error: cannot fetch the tags from origin" in result.stderr
    assert not (workspace / STATE).exists()


def test_a_shallow_checkout_is_refused_before_anything_is_sent(tmp_path: Path, receiver: LocalReceiver) -> None:
    upstream = _with_recipe(GitRepo(tmp_path / "upstream"))
    _history(upstream)
    workspace = tmp_path / "workspace"
    subprocess.run(
        ["git", "clone", "--quiet", "--depth", "1", upstream.path.as_uri(), str(workspace)],
        check=True,
        capture_output=True,
    )
    result = catch_up(workspace, receiver, first_run="true")
    assert result.returncode == EXIT_USAGE
    assert "fetch-depth: 0" in result.stderr
    assert sent(receiver) == []
    assert not (workspace / STATE).exists()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"DEVGRID_URL": ""}, "DEVGRID_URL is not set"),
        ({"FIRST_RUN": "yes"}, "FIRST_RUN is 'yes'"),
        ({"BACKFILL_CONFIG": "configs/missing.toml"}, "configs/missing.toml"),
    ],
)
def test_a_wrong_input_stops_with_one_line(checkout: GitRepo, inputs: dict[str, str], message: str) -> None:
    result = catch_up(checkout.path, None, first_run="true", **inputs)
    assert result.returncode == EXIT_USAGE
    assert message in result.stderr
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.splitlines()) == 1
    assert not (checkout.path / STATE).exists()


def test_the_key_never_reaches_the_output_when_devgrid_refuses_it(checkout: GitRepo, receiver: LocalReceiver) -> None:
    result = catch_up(checkout.path, receiver, first_run="true", DEVGRID_API_KEY="not-the-key-7d1e")
    assert result.returncode == 4
    assert "DEVGRID_API_KEY" in result.stderr
    assert "not-the-key-7d1e" not in result.stdout + result.stderr
    assert sent(receiver) == []
    # The state was created and records nothing sent, so the next run (with the right key) sends it all.
    assert catch_up(checkout.path, receiver).returncode == EXIT_OK
    assert sent(receiver) == ["v1.0.0", "v1.1.0", "v1.1.1"]


# -- the files the workflow uses ----------------------------------------------------------------------


def _workflow() -> dict[str, Any]:
    loaded = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    # YAML 1.1 reads the key `on` as true.
    loaded["on"] = loaded.pop(True, loaded.get("on"))
    return loaded


def _steps() -> list[dict[str, Any]]:
    (job,) = _workflow()["jobs"].values()
    steps = job["steps"]
    assert isinstance(steps, list)
    return steps


def _step(uses: str) -> dict[str, Any]:
    (step,) = [step for step in _steps() if str(step.get("uses", "")).startswith(uses)]
    return step


def test_the_workflow_checks_out_every_tag_and_calls_the_script() -> None:
    checkout = _step("actions/checkout@")
    assert checkout["with"]["fetch-depth"] == 0
    (send,) = [step for step in _steps() if "run" in step and SCRIPT in step["run"]]
    assert send["run"].strip() == f"bash {SCRIPT}"
    env = send["env"]
    assert env["BACKFILL_CONFIG"] == CONFIG
    assert env["DEVGRID_API_KEY"] == "${{ secrets.DEVGRID_API_KEY }}"
    assert env["DEVGRID_URL"] in ("${{ vars.DEVGRID_URL }}", "${{ secrets.DEVGRID_URL }}")
    assert env["FIRST_RUN"] == "${{ inputs.first_run }}"
    # The key is given to that step alone, as its environment: never on a command line.
    for step in _steps():
        assert "DEVGRID_API_KEY" not in str(step.get("run", ""))
        if step != send:
            assert "DEVGRID_API_KEY" not in step.get("env", {})


def test_the_first_run_is_a_manual_run_with_first_run_true() -> None:
    triggers = _workflow()["on"]
    assert "schedule" in triggers
    first_run = triggers["workflow_dispatch"]["inputs"]["first_run"]
    assert first_run["type"] == "boolean"
    assert first_run["default"] is False
    assert "exists" in first_run["description"]


def test_the_state_is_restored_before_and_saved_after_even_a_failed_run() -> None:
    steps = _steps()
    restore, save = _step("actions/cache/restore@"), _step("actions/cache/save@")
    (send,) = [step for step in steps if SCRIPT in str(step.get("run", ""))]
    assert steps.index(restore) < steps.index(send) < steps.index(save)
    assert save["if"] == "always()"
    assert restore["with"]["path"] == save["with"]["path"] == ".backfill"
    # A re-run of a failed run is a new attempt with the same run id: it must save under a new key.
    assert save["with"]["key"] == restore["with"]["key"]
    assert "github.run_attempt" in save["with"]["key"]
    assert save["with"]["key"].startswith(restore["with"]["restore-keys"])
    concurrency = _workflow()["concurrency"]
    assert concurrency["cancel-in-progress"] is False


def test_the_config_reads_the_checkout_and_keeps_the_state_in_the_cached_folder() -> None:
    config = load_config(REPO / CONFIG)
    (source,) = config.sources
    assert source.type == "git-tags"
    assert Path(source.repo).resolve() == REPO.resolve()  # type: ignore[attr-defined]
    state = Path(config.state.path).resolve()
    assert state == (REPO / STATE).resolve()
    assert state.is_relative_to((REPO / _step("actions/cache/save@")["with"]["path"]).resolve())


# -- backfill init --------------------------------------------------------------------------------------


def _config(write: WriteFile, state: str) -> Path:
    return write("backfill.toml", f'[state]\npath = "{state}"\n\n' + source_block("runs", "runs.csv"))


def test_init_creates_an_empty_state_file(write: WriteFile, tmp_path: Path) -> None:
    path = _config(write, "state/catch-up.db")
    result = invoke("init", "-c", str(path))
    assert result.exit_code == EXIT_OK, result.output
    assert "state/catch-up.db" in result.stderr
    store = Store.open(tmp_path / "state" / "catch-up.db", create=False)
    assert store is not None
    try:
        assert store.destinations() == []
    finally:
        store.close()
    status = invoke("status", "-c", str(path), "--json")
    assert status.exit_code == EXIT_OK, status.output
    assert json.loads(status.stdout)["destinations"] == []


def test_init_refuses_an_existing_state_and_leaves_it_untouched(write: WriteFile, tmp_path: Path) -> None:
    path = _config(write, "state.db")
    assert invoke("init", "-c", str(path)).exit_code == EXIT_OK
    before = (tmp_path / "state.db").read_bytes()
    result = invoke("init", "-c", str(path))
    assert result.exit_code == EXIT_STATE
    assert result.stderr.startswith("error: ")
    assert "state.db: already exists" in result.stderr
    assert (tmp_path / "state.db").read_bytes() == before


def test_init_refuses_a_file_that_is_not_a_state_file(write: WriteFile, tmp_path: Path) -> None:
    path = _config(write, "notes.txt")
    write("notes.txt", "not a state file\n")
    result = invoke("init", "-c", str(path))
    assert result.exit_code == EXIT_STATE
    assert "already exists" in result.stderr
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "not a state file\n"


def test_init_refuses_while_a_run_holds_the_state(write: WriteFile, tmp_path: Path) -> None:
    path = _config(write, "state.db")
    with StateLock(tmp_path / "state.db"):
        result = invoke("init", "-c", str(path))
    assert result.exit_code == EXIT_LOCKED
    assert not (tmp_path / "state.db").exists()


def test_init_names_a_state_path_that_is_a_folder(write: WriteFile, tmp_path: Path) -> None:
    path = _config(write, "state")
    (tmp_path / "state").mkdir()
    result = invoke("init", "-c", str(path))
    assert result.exit_code == EXIT_STATE
    assert "is a folder" in result.stderr
