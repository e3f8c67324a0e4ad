"""The GitHub Action (action.yml), run as the runner runs its steps, and the example workflows that use it.

The composite action's backfill step is a bash script with the inputs in its
environment: here the same script runs in bash, with the environment the runner
would give it (inputs rendered from their values or defaults, GITHUB_ACTION_PATH,
GITHUB_OUTPUT, GITHUB_STEP_SUMMARY), against the real `backfill serve`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, WriteFile, source_block
from receivers import KEY, LocalReceiver
from test_github_actions import parse_commands, parse_outputs

from backfill.errors import EXIT_OK, EXIT_STATE, EXIT_USAGE
from backfill.report.github import OUTPUTS

ACTION = REPO / "action.yml"
EXAMPLES = {"emit": REPO / "configs" / "emit.github-actions.yml", "run": REPO / "configs" / "run.github-actions.yml"}
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
HEADER = "id,updated_at,conclusion,environment,head_sha\n"
RUNS = HEADER + "".join(f"{i},2025-01-0{i}T00:00:00Z,success,production,{i:040x}\n" for i in range(1, 4))


def _action() -> dict[str, Any]:
    loaded = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _step(step_id: str) -> dict[str, Any]:
    (step,) = [step for step in _action()["runs"]["steps"] if step.get("id") == step_id]
    return step


def _render(value: str, inputs: dict[str, str]) -> str:
    """``${{ inputs.NAME }}`` as the runner renders it: the value given, or the input's default."""
    declared = _action()["inputs"]

    def one(match: re.Match[str]) -> str:
        expression = match[1]
        assert expression.startswith("inputs."), expression
        name = expression.removeprefix("inputs.")
        assert name in declared, f"{name} is not an input of the action"
        return inputs.get(name, str(declared[name].get("default", "")))

    return EXPRESSION.sub(one, value)


def run_action(workspace: Path, tmp_path: Path, path: str = "", **inputs: str) -> subprocess.CompletedProcess[str]:
    """The action's backfill step, as the runner runs it, in ``workspace``."""
    step = _step("backfill")
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("GITHUB_", "INPUT_"))}
    environ |= {name: _render(str(value), inputs) for name, value in step["env"].items()}
    environ |= {
        "PATH": f"{path}{os.pathsep if path else ''}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_ACTIONS": "true",
        "GITHUB_ACTION_PATH": str(REPO),
        "GITHUB_OUTPUT": str(tmp_path / "github_output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary.md"),
    }
    assert step["shell"] == "bash"
    return subprocess.run(
        ["bash", "-c", step["run"]],
        cwd=workspace,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def workspace(write: WriteFile, tmp_path: Path) -> Path:
    write("workspace/runs.csv", RUNS)
    write("workspace/backfill.toml", '[state]\npath = "state/state.db"\n\n' + source_block("runs", "runs.csv"))
    return tmp_path / "workspace"


def _outputs(tmp_path: Path) -> dict[str, str]:
    return parse_outputs((tmp_path / "github_output").read_text(encoding="utf-8"))


# -- mode: run ----------------------------------------------------------------------------------------


def test_run_mode_sends_and_sets_the_outputs(workspace: Path, tmp_path: Path, receiver: LocalReceiver) -> None:
    inputs = {"mode": "run", "config": "backfill.toml", "devgrid-url": receiver.url, "api-key": KEY}
    before = run_action(workspace, tmp_path, **inputs)
    assert before.returncode == EXIT_STATE  # require-state is the default: no state, nothing sent
    assert receiver.events() == []

    first = run_action(workspace, tmp_path, **inputs, **{"first-run": "true"})
    assert first.returncode == EXIT_OK, first.stderr
    assert len(receiver.events()) == 3
    outputs = _outputs(tmp_path)
    assert outputs["sent"] == "3" and outputs["outcome"] == "done"
    assert set(OUTPUTS) <= set(outputs)
    assert "### Delivery to" in (tmp_path / "step_summary.md").read_text(encoding="utf-8")

    (workspace / "runs.csv").write_text(RUNS + "4,2025-01-04T00:00:00Z,success,production,abc\n", encoding="utf-8")
    later = run_action(workspace, tmp_path, **inputs)
    assert later.returncode == EXIT_OK, later.stderr
    assert _outputs(tmp_path)["sent"] == "1"
    assert receiver.duplicates() == []
    for text in (first.stdout, first.stderr, later.stderr, (tmp_path / "step_summary.md").read_text(encoding="utf-8")):
        assert KEY not in text


def test_run_mode_dry_run_sends_nothing(workspace: Path, tmp_path: Path, receiver: LocalReceiver) -> None:
    result = run_action(
        workspace, tmp_path, mode="run", config="backfill.toml", **{"api-key": KEY, "dry-run": "review.csv"}
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert (workspace / "review.csv").is_file()
    assert receiver.events() == []
    assert _outputs(tmp_path)["sent"] == "0"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"mode": "run"}, "the input config is required with mode: run"),
        ({"mode": "run", "config": "missing.toml"}, "missing.toml: no such file"),
        ({"mode": "run", "config": "backfill.toml", "first-run": "yes"}, "the input first-run is 'yes'"),
        ({"mode": "deploy"}, "the input mode is 'deploy'; use emit or run"),
        ({"mode": "emit", "strict": "1"}, "the input strict is '1'"),
    ],
)
def test_a_wrong_input_is_one_error_and_an_annotation(
    workspace: Path, tmp_path: Path, inputs: dict[str, str], message: str
) -> None:
    result = run_action(workspace, tmp_path, **{"api-key": KEY, **inputs})
    assert result.returncode == EXIT_USAGE
    ((kind, _, text),) = parse_commands(result.stderr)
    assert kind == "error" and message in text
    assert [line for line in result.stderr.splitlines() if line.startswith("error: ")] == [f"error: {text}"]


def test_an_input_cannot_run_as_shell(workspace: Path, tmp_path: Path) -> None:
    hostile = "x.toml$(touch pwned)`touch pwned2`\n::set-output name=sent::9"
    result = run_action(workspace, tmp_path, mode="run", config=hostile, **{"api-key": KEY})
    assert result.returncode == EXIT_USAGE
    assert not (workspace / "pwned").exists() and not (workspace / "pwned2").exists()
    ((kind, _, text),) = parse_commands(result.stderr)  # the newline did not start a second command
    assert kind == "error" and hostile in text


# -- mode: emit ----------------------------------------------------------------------------------------


def _recording_backfill(folder: Path) -> Path:
    """A `backfill` first on PATH that records how it was called (emit belongs to the installed backfill)."""
    folder.mkdir()
    script = folder / "backfill"
    script.write_text(
        "#!/usr/bin/env bash\n"
        'printf "%s\\n" "$@" > "$RECORD.args"\n'
        'printf "BACKFILL_CONFIG=%s\\nDEVGRID_URL=%s\\nKEY_SET=%s\\n" "${BACKFILL_CONFIG:-}" "${DEVGRID_URL:-}" '
        '"${DEVGRID_API_KEY:+yes}" > "$RECORD.env"\n',
        encoding="utf-8",
    )
    script.chmod(0o755)
    return folder


def test_emit_mode_passes_the_inputs_as_emit_s_flags(workspace: Path, tmp_path: Path) -> None:
    stub = _recording_backfill(tmp_path / "bin")
    os.environ["RECORD"] = str(tmp_path / "called")
    try:
        result = run_action(
            workspace,
            tmp_path,
            path=str(stub),
            mode="emit",
            config="backfill.toml",
            env="production",
            status="failed",
            strict="true",
            **{"api-key": KEY, "entity-id": "shop", "devgrid-url": "https://api.dev.devgrid.io", "dry-run": "true"},
        )
    finally:
        del os.environ["RECORD"]
    assert result.returncode == EXIT_OK, result.stderr
    args = (tmp_path / "called.args").read_text(encoding="utf-8").splitlines()
    assert args == ["emit", "--env", "production", "--status", "failed", "--entity-id", "shop", "--strict", "--dry-run"]
    env = (tmp_path / "called.env").read_text(encoding="utf-8").splitlines()
    assert env == ["BACKFILL_CONFIG=backfill.toml", "DEVGRID_URL=https://api.dev.devgrid.io", "KEY_SET=yes"]


def test_emit_mode_with_no_optional_input_passes_no_flag(workspace: Path, tmp_path: Path) -> None:
    stub = _recording_backfill(tmp_path / "bin")
    os.environ["RECORD"] = str(tmp_path / "called")
    try:
        result = run_action(workspace, tmp_path, path=str(stub), mode="emit", **{"api-key": KEY})
    finally:
        del os.environ["RECORD"]
    assert result.returncode == EXIT_OK, result.stderr
    assert (tmp_path / "called.args").read_text(encoding="utf-8").splitlines() == ["emit"]


# -- the files ---------------------------------------------------------------------------------------------


def test_the_action_is_composite_and_no_input_is_pasted_into_a_command() -> None:
    action = _action()
    assert action["runs"]["using"] == "composite"
    assert action["inputs"]["api-key"]["required"] is True
    for step in action["runs"]["steps"]:
        assert "${{" not in str(step.get("run", "")), step
    install = [step for step in action["runs"]["steps"] if "pip install" in str(step.get("run", ""))]
    assert len(install) == 1 and '"${GITHUB_ACTION_PATH}[s3]"' in install[0]["run"]
    step = _step("backfill")
    assert step["env"]["DEVGRID_API_KEY"] == "${{ inputs.api-key }}"
    rendered = {EXPRESSION.fullmatch(str(value))[1] for value in step["env"].values()}  # type: ignore[index]
    # Every input but the installer's reaches the script.
    assert rendered == {f"inputs.{name}" for name in action["inputs"] if name != "python-version"}


def test_the_action_s_outputs_are_the_run_s_outputs() -> None:
    outputs = _action()["outputs"]
    assert set(outputs) == set(OUTPUTS)
    for name, output in outputs.items():
        assert output["value"] == f"${{{{ steps.backfill.outputs.{name} }}}}"


@pytest.mark.parametrize("mode", sorted(EXAMPLES))
def test_the_example_workflows_use_the_action_with_its_inputs(mode: str) -> None:
    workflow = yaml.safe_load(EXAMPLES[mode].read_text(encoding="utf-8"))
    (job,) = workflow["jobs"].values()
    (step,) = [step for step in job["steps"] if step.get("uses") == "./tools/backfill"]
    declared = _action()["inputs"]
    assert set(step["with"]) <= set(declared)
    assert {name for name, item in declared.items() if item.get("required") and "default" not in item} <= set(
        step["with"]
    )
    assert step["with"]["mode"] == mode
    assert step["with"]["api-key"] == "${{ secrets.DEVGRID_API_KEY }}"
    for other in job["steps"]:
        assert "DEVGRID_API_KEY" not in str(other.get("run", ""))
    if mode == "emit":
        assert step["if"] == "always()"  # a failed deployment is sent too
        assert "steps.deploy.outcome" in step["with"]["status"]
    else:
        assert step["with"]["config"] == "configs/catch-up.s3.toml"
        checkout = next(item for item in job["steps"] if str(item.get("uses", "")).startswith("actions/checkout@"))
        assert checkout["with"]["fetch-depth"] == 0
