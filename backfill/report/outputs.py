"""Where a run writes its files, checked before anything is read.

The review and the rejects are written to a temporary file renamed onto the
path given, so whatever that path named is replaced: a device such as
/dev/null, a pipe, the config, a source's export, the state file. An output
path is therefore refused when it exists and is not a regular file, when it is
one of the run's inputs, or when it is inside a folder the run reads whole (a
git repository, the cache of clones); paths are compared after resolving
symlinks and ``..``, and by inode, so that a hard link is caught too. A symlink to a
regular file is followed: the file it points to is replaced, the link stays.

``-`` sends the review to stdout; its rejects then go to ``--rejects PATH`` if
given, else they are only counted in the summary.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from backfill.config import Config
from backfill.errors import ConfigError
from backfill.extract.base import SourceConfig
from backfill.extract.git.remote import is_url
from backfill.report.review import rejects_path_for, skipped_path_for

STDOUT = Path("-")
_REVIEW = "the review (--dry-run)"

# SQLite keeps these beside the state file (write-ahead log, shared memory, rollback journal).
_STATE_COMPANIONS = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class Output:
    """A file the run writes: the path as given (for messages), and where it is really written."""

    path: Path
    target: Path | None  # None: stdout
    what: str


@dataclass(frozen=True)
class RunOutputs:
    review: Output | None  # None for a sending run
    rejects: Output | None  # None: rejected rows are only counted
    skipped: Output | None = None  # a dry run's rows that are not deployments, beside its review file


def run_outputs(config: Config, dry_run: Path | None, rejects: Path | None, *, as_json: bool) -> RunOutputs:
    """The outputs of a dry run (``dry_run`` given) or a sending run; raise ConfigError for a bad one."""
    if rejects == STDOUT:
        raise ConfigError("--rejects -: the rejected rows go to a file; give its path")
    wanted: list[tuple[Path, str]] = []
    if dry_run == STDOUT:
        if as_json:
            raise ConfigError(
                "--json and --dry-run - would both write to stdout; write the review to a file, or drop --json"
            )
    elif dry_run is not None:
        wanted.append((dry_run, _REVIEW))
    if rejects is not None:
        wanted.append((rejects, "the rejects file (--rejects)"))
    elif dry_run is None:
        default = Path(config.state.path).with_name("rejects.csv")
        wanted.append((default, "the rejects file (rejects.csv beside the state file)"))
    elif dry_run != STDOUT:
        wanted.append((rejects_path_for(dry_run), "the review's rejects file"))
    if dry_run is not None and dry_run != STDOUT:
        wanted.append((skipped_path_for(dry_run), "the review's skipped-rows file"))
    checked = check_outputs(wanted, run_inputs(config), run_folders(config))
    if dry_run is None:
        return RunOutputs(review=None, rejects=checked[0])
    review = Output(STDOUT, None, "the review") if dry_run == STDOUT else checked.pop(0)
    skipped = checked.pop() if dry_run != STDOUT else None
    return RunOutputs(review=review, rejects=checked[0] if checked else None, skipped=skipped)


def run_inputs(config: Config) -> list[tuple[Path, str]]:
    """Every local file the run reads or keeps, with what it is to the run."""
    state = Path(config.state.path)
    inputs = [(config.path, "the config file"), (state, "the state file")]
    inputs += [(state.with_name(state.name + suffix), "the state file's journal") for suffix in _STATE_COMPANIONS]
    inputs.append((state.with_name(state.name + ".lock"), "the state file's lock"))
    if config.devgrid.api_key_file:
        inputs.append((Path(config.devgrid.api_key_file), "the API key file"))
    for source in config.sources:
        inputs += [(path, f"the {key} of source '{source.name}'") for key, path in source_paths(source)]
    return inputs


def run_folders(config: Config) -> list[tuple[Path, str]]:
    """Folders whose every file the run reads or keeps: git repositories, and the cache of clones."""
    folders: list[tuple[Path, str]] = []
    for source in config.sources:
        if source.type != "git-tags":
            continue
        cache = (Path(config.state.path).parent / "repos", "the cache of cloned repositories")
        folders += [cache] if cache not in folders else []
        for _, path in source_paths(source):
            if (path / ".git").is_dir():
                folders.append((path / ".git", f"the git folder of source '{source.name}'"))
            elif (path / "HEAD").is_file() and (path / "objects").is_dir():
                folders.append((path, f"the git repository of source '{source.name}'"))
    return folders


def source_paths(source: SourceConfig) -> Iterator[tuple[str, Path]]:
    """The local paths a source reads (a ``file://`` URL too), by config key; a clone URL names none."""
    for key in source.path_keys:
        value = getattr(source, key)
        if not isinstance(value, str) or not value:
            continue
        if value.startswith("file://"):
            yield key, Path(unquote(urlsplit(value).path))
        elif not is_url(value):  # a clone URL names no local file
            yield key, Path(value)


def check_outputs(
    wanted: Sequence[tuple[Path, str]],
    inputs: Sequence[tuple[Path, str]],
    folders: Sequence[tuple[Path, str]] = (),
) -> list[Output]:
    """Each wanted output, resolved; ConfigError (one line, naming the path) for the first that cannot be used."""
    known = [(_identity(path), path, what) for path, what in inputs]
    outputs: list[Output] = []
    for path, what in wanted:
        target = _resolved(path, what)
        _check_kind(path, target, what)
        for folder, folder_what in folders:
            if target.is_relative_to(_identity(folder)[0]):
                raise ConfigError(
                    f"{path}: is inside {folder_what} ({folder}); writing {what} there could break it; "
                    "give another path"
                )
        identity = _identity(target)
        for other, other_path, other_what in known:
            if _same(identity, other):
                named = f" ({other_path})" if other_path != path else ""
                raise ConfigError(
                    f"{path}: is {other_what}{named}; writing {what} there would replace it; give another path"
                )
        _check_writable(path, target, what)
        known.append((identity, path, what))
        outputs.append(Output(path, target, what))
    return outputs


_Identity = tuple[Path, tuple[int, int] | None]


def _identity(path: Path) -> _Identity:
    """The resolved path, and the file's (device, inode) when it exists."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        resolved = path.absolute()
    try:
        info = os.stat(resolved)
    except OSError:
        return resolved, None
    return resolved, (info.st_dev, info.st_ino)


def _same(one: _Identity, other: _Identity) -> bool:
    return one[0] == other[0] or (one[1] is not None and one[1] == other[1])


def _resolved(path: Path, what: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a loop of symlinks
        raise ConfigError(f"{path}: cannot be resolved (a loop of symlinks?); give another path for {what}") from None


def _check_kind(path: Path, target: Path, what: str) -> None:
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return  # a new file; whether its folder can be made is checked next
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be used for {what} ({exc.strerror})") from None
    if stat.S_ISREG(mode):
        return
    kind = _KINDS.get(stat.S_IFMT(mode), "something else")
    dash = ", or - for stdout" if what == _REVIEW else ""
    raise ConfigError(f"{path}: is {kind}, not a regular file; give a file's path for {what}{dash}")


_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
}


def _check_writable(path: Path, target: Path, what: str) -> None:
    """The nearest folder that exists must be a folder this process may create files in."""
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{path}: cannot be written: {folder} is not a folder; give another path for {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: cannot be written: no permission to create files in {folder}")
