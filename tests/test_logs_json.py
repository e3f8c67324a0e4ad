"""-q / -v, --log-format json, and --json documents: versioned, one vocabulary, and errors as JSON too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import WriteFile, source_block
from receivers import KEY, LocalReceiver

from backfill.cli import main
from backfill.errors import EXIT_OK, EXIT_STATE, EXIT_USAGE
from backfill.json_output import COUNTS

CSV = (
    "id,updated_at,conclusion,environment,head_sha,head_branch\n"
    "1,2025-01-01T10:00:00Z,success,production,abc,main\n"
    "2,2025-01-02T10:00:00Z,failure,production,def,feature\n"
    "3,2025-01-03T10:00:00Z,success,qa,ghi,main\n"
)


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), env={"DEVGRID_API_KEY": KEY, **(env or {})}, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def config(write: WriteFile) -> Path:
    write("runs.csv", CSV)
    return write("backfill.toml", source_block("runs", "runs.csv"))


def dry_run(config: Path, *extra: str, env: dict[str, str] | None = None) -> Result:
    return cli("run", "-c", str(config), "--dry-run", str(config.parent / "review.csv"), *extra, env=env)


def test_quiet_keeps_warnings_and_drops_the_tables(config: Path) -> None:
    loud, quiet = dry_run(config), dry_run(config, "-q")
    assert loud.exit_code == quiet.exit_code == EXIT_OK
    assert "Sources" in loud.stderr and "Sources" not in quiet.stderr
    warnings = [line for line in loud.stderr.splitlines() if line.startswith("warning:")]
    assert warnings and [line for line in quiet.stderr.splitlines() if line.strip()] == warnings
    assert dry_run(config, env={"BACKFILL_QUIET": "1"}).stderr == quiet.stderr


def test_verbose_says_each_step(config: Path) -> None:
    result = dry_run(config, "-v")
    assert "reading runs" in result.stderr.splitlines() and "planning" in result.stderr.splitlines()
    assert "reading runs" not in dry_run(config).stderr.splitlines()


def test_json_log_format_is_one_object_per_line(config: Path) -> None:
    result = dry_run(config, "--log-format", "json")
    assert result.exit_code == EXIT_OK
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert all({"time", "level", "message"} <= set(record) for record in records)
    (summary,) = [record for record in records if record["message"] == "summary"]
    assert summary["summary"]["totals"]["events"] == 2
    assert {record["level"] for record in records} <= {"info", "warning"}
    assert any(record["level"] == "warning" and "no change_id" in record["message"] for record in records)
    assert not any("│" in line or "┃" in line for line in result.stderr.splitlines())


def test_json_log_format_errors_carry_their_exit_code(tmp_path: Path) -> None:
    result = cli("status", "-c", str(tmp_path / "missing.toml"), "--log-format", "json")
    assert result.exit_code == EXIT_USAGE
    (record,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert record["level"] == "error" and record["exit_code"] == EXIT_USAGE
    assert record["message"] == f"{tmp_path / 'missing.toml'}: no such config file"


def test_run_and_status_json_share_the_version_and_the_counts(config: Path, receiver: LocalReceiver) -> None:
    sent = cli("run", "-c", str(config), "--url", receiver.url, "--json")
    assert sent.exit_code == EXIT_OK, sent.output
    run = json.loads(sent.stdout)
    status = json.loads(cli("status", "-c", str(config), "--json").stdout)
    assert run["schema_version"] == status["schema_version"] == 1
    assert (run["command"], status["command"]) == ("run", "status")
    assert run["ok"] is True and status["ok"] is True
    assert tuple(run["counts"]) == tuple(status["counts"]) == COUNTS
    assert run["counts"]["sent"] == status["counts"]["sent"] == 2
    assert status["destinations"][0]["counts"] == status["counts"]
    assert run["delivery"]["refused"] == run["delivery"]["rejected_by_devgrid"] == 0


def test_a_failing_command_still_prints_a_json_document(config: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[[sources]]\nname = 1\n", encoding="utf-8")
    for command in ("run", "status"):
        result = cli(command, "-c", str(broken), "--json")
        assert result.exit_code == EXIT_USAGE
        document = json.loads(result.stdout)
        assert document["schema_version"] == 1 and document["command"] == command and document["ok"] is False
        assert document["error"]["exit_code"] == EXIT_USAGE and document["error"]["kind"] == "ConfigError"
        assert str(broken) in document["error"]["message"]
        assert result.stderr.startswith("error: ")


def test_a_state_error_is_a_json_document_with_its_own_exit_code(config: Path) -> None:
    (config.parent / ".backfill").mkdir()
    (config.parent / ".backfill" / "state.db").write_text("not a database", encoding="utf-8")
    result = cli("status", "-c", str(config), "--json")
    assert result.exit_code == EXIT_STATE
    assert json.loads(result.stdout)["error"]["exit_code"] == EXIT_STATE


def test_no_message_carries_the_key(config: Path, receiver: LocalReceiver) -> None:
    result = cli("run", "-c", str(config), "--url", receiver.url, "--json", "-v", "--log-format", "json")
    assert KEY not in result.output
