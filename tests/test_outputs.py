"""Where a run writes: never over its inputs or over something that is not a file; `-` is stdout."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from gitrepo import GitRepo
from helpers import WriteFile, source_block
from mounts import fill, small_disk
from receivers import KEY

from backfill.cli import main
from backfill.config import load_config
from backfill.errors import EXIT_OK, EXIT_USAGE
from backfill.extract import REGISTRY
from backfill.model import relative_to_config
from backfill.report.outputs import run_inputs

HEADER = "id,updated_at,conclusion,environment,head_sha\n"
ROWS = "".join(f"{i},2025-01-0{1 + i % 3}T{i:02d}:00:00Z,success,production,sha{i}\n" for i in range(1, 7))
BAD_ROW = "7,not a time,success,production,sha7\n"


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def project(write: WriteFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config reading runs.csv, run from its own folder (so that a file named - would show)."""
    monkeypatch.chdir(tmp_path)
    write("runs.csv", HEADER + ROWS + BAD_ROW)
    return write("backfill.toml", source_block("runs", "runs.csv"))


def refused(result: Result, path: object, *words: str) -> str:
    """The one line a refused output gives; nothing read, nothing written to stdout."""
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}: "), line
    for word in words:
        assert word in line, line
    return line


# --- outputs that are not regular files ----------------------------------------------------------


def test_a_named_pipe_is_refused_and_left_alone(project: Path, tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    refused(cli("run", "-c", str(project), "--dry-run", str(pipe)), pipe, "is a named pipe, not a regular file", "-")
    assert stat.S_ISFIFO(pipe.lstat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_device_like_dev_null_is_refused_and_left_alone(project: Path, tmp_path: Path) -> None:
    null = tmp_path / "null"  # /dev/null's twin, so that a failure cannot replace the real one
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    refused(cli("run", "-c", str(project), "--dry-run", str(null)), null, "is a character device")
    assert stat.S_ISCHR(null.lstat().st_mode)
    link = tmp_path / "quiet.csv"
    link.symlink_to(null)
    refused(cli("run", "-c", str(project), "--dry-run", str(link)), link, "is a character device")
    assert link.is_symlink() and stat.S_ISCHR(null.lstat().st_mode)


def test_dev_null_itself_is_refused(project: Path) -> None:
    """Checked before anything is written, so this cannot replace /dev/null even when it fails."""
    refused(cli("run", "-c", str(project), "--dry-run", os.devnull), os.devnull, "is a character device")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_a_folder_is_refused(project: Path, tmp_path: Path) -> None:
    (tmp_path / "reviews").mkdir()
    refused(cli("run", "-c", str(project), "--dry-run", "reviews"), "reviews", "is a folder, not a regular file")
    (tmp_path / "review.rejects.csv").mkdir()
    refused(cli("run", "-c", str(project), "--dry-run", "review.csv"), "review.rejects.csv", "is a folder")
    assert not (tmp_path / "review.csv").exists()


def test_a_rejects_path_that_is_not_a_file_is_refused_before_sending(
    write: WriteFile, tmp_path: Path, project: Path
) -> None:
    (tmp_path / ".backfill" / "rejects.csv").mkdir(parents=True)
    env = {"DEVGRID_API_KEY": KEY}
    result = cli("run", "-c", str(project), "--url", "http://127.0.0.1:9", env=env)
    refused(result, tmp_path / ".backfill" / "rejects.csv", "is a folder", "rejects")
    assert not (tmp_path / ".backfill" / "state.db").exists()
    pipe = tmp_path / "rejects.pipe"
    os.mkfifo(pipe)
    refused(cli("run", "-c", str(project), "--url", "http://127.0.0.1:9", "--rejects", str(pipe), env=env), pipe)


def test_an_output_inside_a_file_is_refused(project: Path) -> None:
    refused(cli("run", "-c", str(project), "--dry-run", "runs.csv/review.csv"), "runs.csv/review.csv", "not a folder")


# --- outputs that are inputs ----------------------------------------------------------------------


def test_the_messages_a_user_sees(project: Path, tmp_path: Path) -> None:
    assert cli("run", "-c", str(project), "--dry-run", "backfill.toml").stderr == (
        f"error: backfill.toml: is the config file ({project}); writing the review (--dry-run) there would "
        "replace it; give another path\n"
    )
    assert cli("run", "-c", str(project), "--dry-run", str(project)).stderr == (
        f"error: {project}: is the config file; writing the review (--dry-run) there would replace it; "
        "give another path\n"
    )
    assert cli("run", "-c", str(project), "--dry-run", os.devnull).stderr == (
        f"error: {os.devnull}: is a character device, not a regular file; give a file's path for the review "
        "(--dry-run), or - for stdout\n"
    )


def test_the_config_and_the_export_are_never_overwritten(project: Path, tmp_path: Path) -> None:
    before = {name: digest(tmp_path / name) for name in ("backfill.toml", "runs.csv")}
    (tmp_path / "sub").mkdir()
    (tmp_path / "alias.csv").symlink_to(tmp_path / "runs.csv")
    os.link(tmp_path / "runs.csv", tmp_path / "hardlink.csv")
    os.link(tmp_path / "backfill.toml", tmp_path / "config-link.toml")
    cases = {
        "backfill.toml": "the config file",
        str(tmp_path / "backfill.toml"): "the config file",
        "sub/../backfill.toml": "the config file",
        "config-link.toml": "the config file",
        "runs.csv": "the path of source 'runs'",
        "./sub/../runs.csv": "the path of source 'runs'",
        "alias.csv": "the path of source 'runs'",
        "hardlink.csv": "the path of source 'runs'",
    }
    for given, what in cases.items():
        result = cli("run", "-c", str(project), "--dry-run", given)
        refused(result, Path(given), f"is {what}", "would replace it")
    assert {name: digest(tmp_path / name) for name in before} == before
    assert (tmp_path / "alias.csv").is_symlink()


def test_the_rejects_file_beside_the_review_is_checked_too(write: WriteFile, tmp_path: Path, project: Path) -> None:
    write("review.rejects.csv", HEADER + ROWS)
    config = write("two.toml", source_block("runs", "runs.csv") + source_block("reviewed", "review.rejects.csv"))
    line = refused(cli("run", "-c", str(config), "--dry-run", "review.csv"), "review.rejects.csv")
    assert "the path of source 'reviewed'" in line and "the review's rejects file" in line
    assert not (tmp_path / "review.csv").exists()


def test_the_state_file_its_journal_and_its_lock_are_inputs(project: Path, tmp_path: Path) -> None:
    for name, what in [
        (".backfill/state.db", "the state file"),
        (".backfill/state.db-wal", "the state file's journal"),
        (".backfill/state.db.lock", "the state file's lock"),
    ]:
        refused(cli("run", "-c", str(project), "--dry-run", name), name, f"is {what}")
    assert not (tmp_path / ".backfill").exists()


def test_the_api_key_file_is_an_input(write: WriteFile, tmp_path: Path, project: Path) -> None:
    write("devgrid.key", KEY)
    config = write("keyed.toml", '[devgrid]\napi_key_file = "devgrid.key"\n' + source_block("runs", "runs.csv"))
    refused(cli("run", "-c", str(config), "--dry-run", "devgrid.key"), "devgrid.key", "is the API key file")
    assert (tmp_path / "devgrid.key").read_text() == KEY


def test_a_git_bundle_is_an_input_and_a_clone_url_is_not(write: WriteFile, tmp_path: Path, project: Path) -> None:
    write("app.bundle", b"# v2 git bundle\n")
    tags = '[[sources]]\nname = "tags"\ntype = "git-tags"\nrepo = "{}"\nentity_id = "shop"\nenv = "production"\n'
    config = write("tags.toml", tags.format("app.bundle"))
    refused(cli("run", "-c", str(config), "--dry-run", "app.bundle"), "app.bundle", "the repo of source 'tags'")
    config = write("url.toml", tags.format(f"file://{tmp_path / 'app.bundle'}"))
    refused(cli("run", "-c", str(config), "--dry-run", "app.bundle"), "app.bundle", "the repo of source 'tags'")
    assert (tmp_path / "app.bundle").read_bytes() == b"# v2 git bundle\n"


def test_nothing_is_written_inside_a_git_repository_or_the_clone_cache(write: WriteFile, tmp_path: Path) -> None:
    GitRepo(tmp_path / "app")
    subprocess.run(["git", "init", "--quiet", "--bare", str(tmp_path / "bare.git")], check=True)
    tags = '[[sources]]\nname = "{0}"\ntype = "git-tags"\nrepo = "{0}"\nentity_id = "shop"\nenv = "production"\n'
    config = write("tags.toml", tags.format("app") + tags.format("bare.git"))
    cases = {
        "app/.git/HEAD": "the git folder of source 'app'",
        "app/.git/review.csv": "the git folder of source 'app'",
        "bare.git/config": "the git repository of source 'bare.git'",
        ".backfill/repos/x.git/HEAD": "the cache of cloned repositories",
    }
    for given, what in cases.items():
        result = cli("run", "-c", str(config), "--dry-run", str(tmp_path / given))
        refused(result, tmp_path / given, f"is inside {what}", "could break it")
    result = cli("run", "-c", str(config), "--dry-run", str(tmp_path / "app" / "review.csv"))
    assert result.exit_code == EXIT_OK, result.output  # a working tree is no place to refuse


def test_outputs_are_refused_before_any_source_is_read(write: WriteFile, tmp_path: Path, project: Path) -> None:
    config = write("missing.toml", source_block("runs", "runs.csv") + source_block("gone", "gone.csv"))
    refused(cli("run", "-c", str(config), "--dry-run", "runs.csv"), "runs.csv")  # exit 2, not 1 for gone.csv


def test_the_review_and_the_rejects_cannot_be_one_file(project: Path) -> None:
    result = cli("run", "-c", str(project), "--dry-run", "out.csv", "--rejects", "out.csv")
    refused(result, "out.csv", "is the review (--dry-run)", "the rejects file (--rejects)")


def test_the_inputs_of_a_run(write: WriteFile, tmp_path: Path) -> None:
    tags = '[[sources]]\nname = "{}"\ntype = "git-tags"\nrepo = "{}"\nentity_id = "shop"\nenv = "production"\n'
    config = write(
        "all.toml",
        '[devgrid]\napi_key_file = "keys/devgrid"\n[state]\npath = "st/backfill.db"\n'
        + source_block("runs", "exports/runs.json")
        + tags.format("local", "repo")
        + tags.format("remote", "https://example.invalid/shop.git")
        + tags.format("scp", "git@example.invalid:acme/shop.git")
        + tags.format("file-url", "file:///srv/git/shop%20app.bundle")
        + '[[sources]]\nname = "gh"\ntype = "github-releases"\nrepo = "acme/shop"\nentity_id = "shop"\nenv = "production"\n',
    )
    assert run_inputs(load_config(config)) == [
        (config, "the config file"),
        (tmp_path / "st" / "backfill.db", "the state file"),
        (tmp_path / "st" / "backfill.db-wal", "the state file's journal"),
        (tmp_path / "st" / "backfill.db-shm", "the state file's journal"),
        (tmp_path / "st" / "backfill.db-journal", "the state file's journal"),
        (tmp_path / "st" / "backfill.db.lock", "the state file's lock"),
        (tmp_path / "keys" / "devgrid", "the API key file"),
        (tmp_path / "exports" / "runs.json", "the path of source 'runs'"),
        (tmp_path / "repo", "the repo of source 'local'"),
        (Path("/srv/git/shop app.bundle"), "the repo of source 'file-url'"),
    ]


def test_every_source_type_says_which_keys_name_local_files() -> None:
    for extractor in REGISTRY.values():
        model = extractor.config_model
        assert set(model.path_keys) <= set(model.model_fields)
        for name, field in model.model_fields.items():
            if any(getattr(check, "func", None) is relative_to_config for check in field.metadata):
                assert name in model.path_keys, f"{extractor.type_name}: {name} names a file but is not in path_keys"
    assert REGISTRY["ci-export"].config_model.path_keys == ("path",)
    assert REGISTRY["git-tags"].config_model.path_keys == ("repo",)


# --- outputs that are fine ------------------------------------------------------------------------


def test_a_symlink_to_a_file_is_written_through(project: Path, tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "review.csv").write_text("old\n")
    (tmp_path / "review.csv").symlink_to(tmp_path / "shared" / "review.csv")
    result = cli("run", "-c", str(project), "--dry-run", "review.csv")
    assert result.exit_code == EXIT_OK, result.output
    assert (tmp_path / "review.csv").is_symlink()
    assert (tmp_path / "shared" / "review.csv").read_text().startswith("timestamp,entityId")
    assert (tmp_path / "review.rejects.csv").read_text().startswith("source,row,reason")


def test_a_review_replaces_an_earlier_review_and_creates_its_folder(project: Path, tmp_path: Path) -> None:
    assert cli("run", "-c", str(project), "--dry-run", "out/review.csv").exit_code == EXIT_OK
    assert cli("run", "-c", str(project), "--dry-run", "out/review.csv").exit_code == EXIT_OK
    assert len((tmp_path / "out" / "review.csv").read_text().splitlines()) == 7
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "review.csv",
        "review.rejects.csv",
        "review.skipped.csv",
    ]


def test_rejects_can_go_elsewhere_in_a_dry_run(project: Path, tmp_path: Path) -> None:
    result = cli("run", "-c", str(project), "--dry-run", "review.csv", "--rejects", "bad/rows.csv")
    assert result.exit_code == EXIT_OK, result.output
    assert "rejects: bad/rows.csv" in result.stderr
    assert len((tmp_path / "bad" / "rows.csv").read_text().splitlines()) == 2
    assert not (tmp_path / "review.rejects.csv").exists()


@pytest.mark.parametrize("on_the_full_disk", ["review", "rejects"])
def test_a_file_that_cannot_be_written_leaves_every_earlier_file_as_it_was(
    project: Path, tmp_path: Path, on_the_full_disk: str
) -> None:
    """The review, its rejects and its skipped rows (beside the review) are replaced together or not at all."""
    skipped_row = "8,2025-01-02T00:00:00Z,cancelled,production,sha8\n"
    (tmp_path / "runs.csv").write_text(HEADER + ROWS + BAD_ROW + skipped_row)
    with small_disk(tmp_path / "disk", 64) as disk:
        folders = {"review": tmp_path, "rejects": tmp_path, on_the_full_disk: disk}
        review, rejects = folders["review"] / "review.csv", folders["rejects"] / "rows.csv"
        paths = [review, rejects, review.with_name("review.skipped.csv")]
        arguments = ["run", "-c", str(project), "--dry-run", str(review), "--rejects", str(rejects)]
        assert cli(*arguments).exit_code == EXIT_OK
        before = [path.read_bytes() for path in paths]
        # The next run's history is longer: every file would change; those on the full disk cannot.
        more = "".join(f"{i},2025-02-01T00:00:00Z,success,production,sha{i}\n" for i in range(9, 400))
        more += "400,later,success,production,sha400\n401,2025-02-02T00:00:00Z,skipped,production,sha401\n"
        (tmp_path / "runs.csv").write_text(HEADER + ROWS + BAD_ROW + skipped_row + more)
        fill(disk)
        result = cli(*arguments)
        assert result.exit_code != EXIT_OK
        [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert "cannot be written" in line and str(disk) in line, line
        assert [path.read_bytes() for path in paths] == before
        leftovers = [path.name for folder in (tmp_path, disk) for path in folder.iterdir() if path.suffix == ".tmp"]
        assert leftovers == []


# --- `-`: the review on stdout --------------------------------------------------------------------


def test_dash_writes_the_review_to_stdout_and_counts_the_rejects(project: Path, tmp_path: Path) -> None:
    to_file = cli("run", "-c", str(project), "--dry-run", "review.csv")
    result = cli("run", "-c", str(project), "--dry-run", "-")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == (tmp_path / "review.csv").read_text(encoding="utf-8")
    assert result.stdout.startswith("timestamp,entityId,env,status,build_id")
    assert len(result.stdout.splitlines()) == 7
    assert "Sources" in result.stderr and "Sources" not in result.stdout
    assert "review: written to stdout" in result.stderr
    assert "rejects: 1 rows rejected, counted above but written nowhere (--rejects PATH writes them)" in result.stderr
    assert not (tmp_path / "-").exists() and not (tmp_path / "-.rejects.csv").exists()
    assert to_file.exit_code == EXIT_OK


def test_dash_with_rejects_writes_them_there(project: Path, tmp_path: Path) -> None:
    result = cli("run", "-c", str(project), "--dry-run", "-", "--rejects", "rejects.csv")
    assert result.exit_code == EXIT_OK, result.output
    assert len(result.stdout.splitlines()) == 7
    assert "rejects: rejects.csv" in result.stderr
    assert (tmp_path / "rejects.csv").read_text().splitlines()[1].startswith("runs,7,")


def test_dash_with_rejects_on_an_input_is_refused(project: Path) -> None:
    refused(cli("run", "-c", str(project), "--dry-run", "-", "--rejects", "runs.csv"), "runs.csv", "source 'runs'")


def test_dash_and_json_would_mix_two_documents_and_are_refused(project: Path) -> None:
    for args in (["--dry-run", "-", "--json"], ["--json", "--dry-run", "-"]):
        result = cli("run", "-c", str(project), *args)
        assert result.exit_code == EXIT_USAGE
        assert result.stdout == ""
        assert result.stderr == (
            "error: --json and --dry-run - would both write to stdout; write the review to a file, or drop --json\n"
        )


def test_rejects_cannot_go_to_stdout(project: Path) -> None:
    result = cli("run", "-c", str(project), "--dry-run", "review.csv", "--rejects", "-")
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.startswith("error: --rejects -: ")


def test_a_reader_that_stops_early_is_not_an_error(write: WriteFile, tmp_path: Path) -> None:
    rows = "".join(f"{i},2025-01-01T00:00:{i % 60:02d}Z,success,production,sha{i}\n" for i in range(3000))
    write("runs.csv", HEADER + rows)
    config = write("backfill.toml", source_block("runs", "runs.csv"))
    process = subprocess.Popen(
        [sys.executable, "-m", "backfill", "run", "-c", str(config), "--dry-run", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"timestamp,entityId")
    process.stdout.close()  # like `| head -1`
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=60) == EXIT_OK, stderr
    assert "Traceback" not in stderr and "Sources" in stderr


def test_a_folder_named_repos_is_only_the_clone_cache_when_a_source_clones(project: Path, tmp_path: Path) -> None:
    result = cli("run", "-c", str(project), "--dry-run", ".backfill/repos/review.csv")
    assert result.exit_code == EXIT_OK, result.output
    assert (tmp_path / ".backfill" / "repos" / "review.csv").is_file()
