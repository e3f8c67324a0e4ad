"""The installed ``backfill`` command (backfill.entry) lists the commands without importing them, and says the same."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from click.testing import CliRunner

from backfill import cli, entry

ARGUMENTS = [
    ["--help"],
    ["-h"],
    ["--version"],
    [],
    ["run", "--help"],
    ["emit", "--help"],
    ["status", "-h"],
    ["nope"],
    ["rn"],
    ["run"],
    ["--bogus"],
    ["run", "--bogus"],
    ["serve", "--port", "x"],
]


def test_every_command_is_listed_with_the_first_paragraph_of_its_help() -> None:
    assert sorted(entry.SUMMARIES) == sorted(cli.main.commands)
    for name, command in cli.main.commands.items():
        assert command.help is not None and not command.short_help and not command.hidden
        assert entry.SUMMARIES[name] == command.help.split("\n\n")[0], name


@pytest.mark.parametrize("width", [40, 60, 80, 120, 200])
@pytest.mark.parametrize("arguments", ARGUMENTS, ids=" ".join)
def test_the_installed_command_answers_as_the_commands_do(arguments: list[str], width: int) -> None:
    """Byte for byte, at any terminal width: the help, the version, every usage error."""
    runner = CliRunner()
    installed = runner.invoke(entry.main, arguments, prog_name="backfill", terminal_width=width)
    commands = runner.invoke(cli.main, arguments, prog_name="backfill", terminal_width=width)
    assert (installed.output, installed.exit_code) == (commands.output, commands.exit_code)
    assert installed.exit_code in (0, 2)


def test_the_group_help_and_the_version_import_no_command(tmp_path: Path) -> None:
    """Neither the commands, nor pathlib for their path options, nor what the commands import."""
    probe = (
        "import sys\nfrom backfill.entry import main\n"
        "try:\n    main(sys.argv[1:], prog_name='backfill')\nexcept SystemExit:\n    pass\n"
        "own = sorted(name for name in sys.modules if name.startswith('backfill'))\n"
        "heavy = sorted(name for name in ('pathlib', 'json', 'subprocess', 'dataclasses', 'shutil') if name in sys.modules)\n"
        "import json\nprint(json.dumps([own, heavy]), file=sys.stderr)\n"
    )
    for arguments in (["--help"], ["-h"], ["--version"], []):
        done = subprocess.run(
            [sys.executable, "-c", probe, *arguments], capture_output=True, text=True, timeout=60, check=False
        )
        own, heavy = json.loads(done.stderr.strip().splitlines()[-1])
        assert own == ["backfill", "backfill.entry"], arguments
        assert heavy == [], arguments


def test_a_command_runs_from_the_installed_command(tmp_path: Path) -> None:
    """The commands load when one is asked for: presets runs, with its log options."""
    result = CliRunner().invoke(entry.main, ["presets", "-q"], prog_name="backfill")
    assert result.exit_code == 0
    assert "github-actions" in result.output


def test_python_dash_m_is_the_installed_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backfill", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "backfill, version 0.1.0\n"


def _output(module: str, arguments: list[str], columns: str | None, terminal: int | None) -> bytes:
    """What `backfill ARGUMENTS` prints from ``module``'s group, with $COLUMNS and on a terminal that wide, or a pipe."""
    environ = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}
    if columns is not None:
        environ["COLUMNS"] = columns
    command = [sys.executable, "-c", f"import sys\nfrom {module} import main\nmain(sys.argv[1:], prog_name='backfill')"]
    if terminal is None:
        done = subprocess.run([*command, *arguments], env=environ, capture_output=True, timeout=60, check=False)
        return done.stdout + done.stderr + bytes([done.returncode])
    main_end, child_end = pty.openpty()
    fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, terminal, 0, 0))
    done = subprocess.run(
        [*command, *arguments], env=environ, stdout=child_end, stderr=child_end, timeout=60, check=False
    )
    os.close(child_end)
    chunks = []
    while True:
        try:
            chunk = os.read(main_end, 65536)
        except OSError:  # the terminal's other end is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_end)
    return b"".join(chunks) + bytes([done.returncode])


@pytest.mark.parametrize(
    ("columns", "terminal"),
    [(None, None), ("57", None), ("abc", None), ("0", None), ("300", None), (None, 63), (None, 120), ("70", 100)],
)
def test_the_help_is_as_wide_as_click_makes_it(columns: str | None, terminal: int | None) -> None:
    """The installed group works out the help's width itself (shutil stays out), as click does: $COLUMNS, the terminal."""
    for arguments in (["--help"], ["run", "--help"], ["rn"]):
        assert _output("backfill.entry", arguments, columns, terminal) == _output(
            "backfill.cli", arguments, columns, terminal
        )
