"""On a GitHub Actions runner a run writes a job summary, annotations and step outputs; elsewhere nothing changes.

The real CLI runs in a subprocess with the variables a runner sets, pointing at
files in tmp_path, and sends to the real `backfill serve`. The files are read
back the way the runner reads them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import WriteFile, source_block
from receivers import KEY, LocalReceiver

from backfill.errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from backfill.report.github import markdown_summary, output_lines, workflow_command

HEADER = "id,updated_at,conclusion,environment,head_sha\n"
RUNS = HEADER + "".join(
    f"{index},2025-01-0{index}T00:00:00Z,success,production,{'a' * 39}{index}\n" for index in range(1, 4)
)


def _backfill(tmp_path: Path, *args: str, actions: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("GITHUB_")}
    environ["DEVGRID_API_KEY"] = KEY
    if actions:
        environ |= {
            "GITHUB_ACTIONS": "true",
            "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary.md"),
            "GITHUB_OUTPUT": str(tmp_path / "github_output"),
        }
    environ |= env
    return subprocess.run(
        [sys.executable, "-m", "backfill", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def parse_outputs(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT read as the runner reads it: name=value, or name<<DELIMITER ... DELIMITER."""
    outputs: dict[str, str] = {}
    lines = iter(text.split("\n"))
    for line in lines:
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            for inner in lines:
                if inner == delimiter:
                    break
                value.append(inner)
            else:
                raise AssertionError(f"output {name} is never closed by {delimiter}")
            outputs[name] = "\n".join(value)
        else:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def parse_commands(stderr: str) -> list[tuple[str, dict[str, str], str]]:
    """The workflow commands the runner would see, one per line, unescaped as the runner unescapes them."""
    commands = []
    for line in stderr.splitlines():
        match = re.fullmatch(r"::(\w+)(?: ([^:]*))?::(.*)", line)
        if not match:
            continue
        properties = {}
        for item in (match[2] or "").split(","):
            if item:
                key, value = item.split("=", 1)
                properties[key] = _unescape(value)
        commands.append((match[1], properties, _unescape(match[3])))
    return commands


def _unescape(text: str) -> str:
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",").replace("%25", "%")


@pytest.fixture
def config(write: WriteFile) -> Path:
    write("runs.csv", RUNS)
    return write("backfill.toml", source_block("runs", "runs.csv"))


def test_a_run_on_github_actions_writes_the_summary_the_outputs_and_the_annotations(
    config: Path, tmp_path: Path, receiver: LocalReceiver
) -> None:
    result = _backfill(tmp_path, "run", "-c", str(config), "--url", receiver.url)
    assert result.returncode == EXIT_OK, result.stderr
    assert len(receiver.events()) == 3

    summary = (tmp_path / "step_summary.md").read_text(encoding="utf-8")
    assert summary.startswith("## backfill run\n")
    assert "### Sources" in summary
    assert "| runs | 3 | 0 | 0 | 0 | 3 |" in summary
    assert "| **total** | **3** |" in summary
    assert f"### Delivery to {receiver.url} (run 1): done" in summary
    assert "| sent (DevGrid stored them) | 3 |" in summary
    assert "| shop | production | 2025-01-01" in summary
    assert "change\\_id" in summary  # the completeness warning, as text

    outputs = parse_outputs((tmp_path / "github_output").read_text(encoding="utf-8"))
    assert outputs == {
        "sent": "3",
        "refused": "0",
        "held": "0",
        "possibly_duplicated": "0",
        "left_to_send": "0",
        "outcome": "done",
    }

    warnings = [message for kind, _, message in parse_commands(result.stderr) if kind == "warning"]
    assert any("have no change_id" in message for message in warnings)
    assert all(properties == {"title": "backfill"} for _, properties, _ in parse_commands(result.stderr))
    assert not [kind for kind, _, _ in parse_commands(result.stderr) if kind == "error"]
    for text in (summary, result.stdout, result.stderr, (tmp_path / "github_output").read_text(encoding="utf-8")):
        assert KEY not in text

    # The next run sends nothing new, and its outputs say so (appended: the runner reads the last value).
    again = _backfill(tmp_path, "run", "-c", str(config), "--url", receiver.url)
    assert again.returncode == EXIT_OK, again.stderr
    assert parse_outputs((tmp_path / "github_output").read_text(encoding="utf-8"))["sent"] == "0"
    assert (tmp_path / "step_summary.md").read_text(encoding="utf-8").count("## backfill run") == 2


def test_elsewhere_nothing_changes(config: Path, tmp_path: Path, receiver: LocalReceiver) -> None:
    result = _backfill(tmp_path, "run", "-c", str(config), "--url", receiver.url, actions=False)
    assert result.returncode == EXIT_OK, result.stderr
    assert "::" not in result.stderr
    assert not (tmp_path / "step_summary.md").exists()
    assert not (tmp_path / "github_output").exists()
    # GITHUB_ACTIONS other than "true" (a local shell that copied a variable) is elsewhere too.
    local = _backfill(
        tmp_path,
        "run",
        "-c",
        str(config),
        "--url",
        receiver.url,
        actions=False,
        GITHUB_ACTIONS="false",
        GITHUB_OUTPUT=str(tmp_path / "github_output"),
    )
    assert local.returncode == EXIT_OK
    assert not (tmp_path / "github_output").exists()


def test_json_stays_on_stdout_and_the_annotations_go_to_stderr(
    config: Path, tmp_path: Path, receiver: LocalReceiver
) -> None:
    result = _backfill(tmp_path, "run", "-c", str(config), "--url", receiver.url, "--json")
    assert result.returncode == EXIT_OK, result.stderr
    assert json.loads(result.stdout)["delivery"]["sent"] == 3
    assert "::warning" in result.stderr


def test_events_held_back_are_an_annotation_and_an_output(
    write: WriteFile, tmp_path: Path, receiver: LocalReceiver
) -> None:
    receiver.entities("shop")
    write("runs.csv", RUNS)
    config = write("backfill.toml", source_block("runs", "runs.csv", entity_id="not-a-shop"))
    result = _backfill(tmp_path, "run", "-c", str(config), "--url", receiver.url)
    assert result.returncode == EXIT_INCOMPLETE, result.stderr
    outputs = parse_outputs((tmp_path / "github_output").read_text(encoding="utf-8"))
    assert outputs["sent"] == "0"
    assert int(outputs["held"]) + int(outputs["refused"]) == 3
    assert outputs["outcome"] == "refused-events"
    messages = [message for _, _, message in parse_commands(result.stderr)]
    assert any("not-a-shop" in message for message in messages)
    assert "not-a-shop" in (tmp_path / "step_summary.md").read_text(encoding="utf-8")


def test_a_dry_run_writes_the_summary_and_says_nothing_was_sent(config: Path, tmp_path: Path) -> None:
    result = _backfill(tmp_path, "run", "-c", str(config), "--dry-run", str(tmp_path / "review.csv"))
    assert result.returncode == EXIT_OK, result.stderr
    summary = (tmp_path / "step_summary.md").read_text(encoding="utf-8")
    assert summary.startswith("## backfill dry run (nothing sent)")
    assert "Delivery" not in summary
    assert parse_outputs((tmp_path / "github_output").read_text(encoding="utf-8"))["sent"] == "0"


def test_an_error_is_an_error_annotation_and_the_outputs_say_so(write: WriteFile, tmp_path: Path) -> None:
    config = write("backfill.toml", "[devgrid]\nbatch_size = 99\n" + source_block("runs", "runs.csv"))
    result = _backfill(tmp_path, "run", "-c", str(config), "--url", "http://127.0.0.1:9")
    assert result.returncode == EXIT_USAGE
    assert result.stderr.startswith("error: ")
    ((kind, _, message),) = parse_commands(result.stderr)
    assert kind == "error"
    assert "batch_size" in message
    outputs = parse_outputs((tmp_path / "github_output").read_text(encoding="utf-8"))
    assert outputs["outcome"] == "error"
    assert outputs["sent"] == "0"


def test_a_refused_key_is_an_error_and_the_key_is_in_no_file(
    config: Path, tmp_path: Path, receiver: LocalReceiver
) -> None:
    result = _backfill(tmp_path, "run", "-c", str(config), "--url", receiver.url, DEVGRID_API_KEY="wrong-key-51ab")
    assert result.returncode == 4
    assert any(kind == "error" for kind, _, _ in parse_commands(result.stderr))
    assert parse_outputs((tmp_path / "github_output").read_text(encoding="utf-8"))["outcome"] == "auth-refused"
    for path in (tmp_path / "step_summary.md", tmp_path / "github_output"):
        assert "wrong-key-51ab" not in path.read_text(encoding="utf-8")
    assert "wrong-key-51ab" not in result.stdout + result.stderr


# -- what no value can do ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "100% of events",
        "first line\nsecond line",
        "carriage\r\nreturn",
        "::error::injected",
        "%0A already escaped %25",
        "line\n::set-output name=sent::999",
    ],
)
def test_an_annotation_is_one_line_and_reads_back_as_written(message: str) -> None:
    command = workflow_command("warning", message, title="a: title, with commas")
    assert "\n" not in command and "\r" not in command
    ((kind, properties, text),) = parse_commands(command)
    assert (kind, properties, text) == ("warning", {"title": "a: title, with commas"}, message)


@pytest.mark.parametrize("value", ["3", "two\nlines", "ghadelimiter_x\nsent<<EOF", "", "a=b"])
def test_an_output_reads_back_as_written_and_injects_nothing(value: str) -> None:
    text = output_lines({"outcome": value, "sent": "1"})
    assert parse_outputs(text) == {"outcome": value, "sent": "1"}


def _summary(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "mode": "send",
        "window": {"since": None, "until": None},
        "sources": [
            {
                "source": "runs",
                "read": 1,
                "skipped": 0,
                "rejected": 0,
                "duplicates": 0,
                "outside_window": 0,
                "events": 1,
            }
        ],
        "totals": {"read": 1, "skipped": 0, "rejected": 0, "duplicates": 0, "outside_window": 0, "events": 1},
        "entities": [],
        "completeness": {},
        "env_rewrites": [],
        "env_rejected": [],
        "warnings": [],
        "errors": [],
    }
    return base | changes


def test_text_from_a_source_cannot_break_the_job_summary() -> None:
    hostile = "a|b\n### heading <script>alert(1)</script> [link](http://x) **bold**"
    summary = _summary(
        sources=[{**_summary()["sources"][0], "source": hostile}],
        warnings=[hostile],
    )
    text = markdown_summary(summary)
    (row,) = [line for line in text.splitlines() if line.startswith("| a\\|b")]
    assert row.count(" | ") == 5  # the name is one cell: its | is escaped
    assert "<script>" not in text
    assert "\n### heading" not in text
    assert "[link](http" not in text and " **bold**" not in text


def test_a_url_with_a_password_is_never_in_the_job_summary() -> None:
    delivery = {
        "destination": "https://user:p4ss-w0rd@devgrid.example/",
        "run_id": 1,
        "outcome": "done",
        **dict.fromkeys(
            (
                "already_sent",
                "outside_window",
                "to_send",
                "sent",
                "rejected_by_devgrid",
                "held",
                "unconfirmed",
                "possibly_duplicated",
            ),
            0,
        ),
        "left_to_send": 0,
        "rejected_events": [],
        "unconfirmed_events": [],
        "possibly_duplicated_events": [],
        "stopped": None,
    }
    text = markdown_summary(_summary(delivery=delivery))
    assert "p4ss-w0rd" not in text and "user:" not in text
    assert "Delivery to https://devgrid.example/" in text
