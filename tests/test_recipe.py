"""backfill init: the state file of a scheduled job, created on purpose for its first run."""

from __future__ import annotations

from pathlib import Path

from conftest import WriteFile
from helpers import invoke, source_block

from backfill.errors import EXIT_LOCKED, EXIT_OK, EXIT_STATE
from backfill.state.lock import StateLock
from backfill.state.store import Store

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
        assert store.cursors() == {}
    finally:
        store.close()
    status = invoke("status", "-c", str(path), "--json")
    assert status.exit_code == EXIT_OK, status.output


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


def test_init_waits_for_no_one_a_run_holds_the_state(write: WriteFile, tmp_path: Path) -> None:
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
