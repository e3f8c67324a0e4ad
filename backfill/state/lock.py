"""One run at a time per state file.

The lock is an OS file lock (``flock``) on ``STATE.lock``, taken through
filelock: the operating system drops it when the process that held it dies,
however it dies, so a lock left behind by a crashed or killed run is never
obeyed forever. The lock belongs to the file, not to the path that names it:
the path is resolved first, so two runs that reach one state file through a
symlink (or ``..``) take the same lock.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from backfill.errors import StateError, StateLockedError
from backfill.state.store import state_folder_problem


class StateLock:
    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path = state_path.resolve()
        self.path = state_path.with_name(state_path.name + ".lock")
        self._lock = FileLock(self.path, timeout=0, mode=0o600)

    def __enter__(self) -> StateLock:
        problem = state_folder_problem(self.state_path)
        if problem:
            raise StateError(problem)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"{self.path.parent}: cannot be created ({exc.strerror}); check [state] path") from None
        try:
            self._lock.acquire()
        except Timeout:
            raise StateLockedError(
                f"another backfill run is using {self.path.with_suffix('')} (it holds {self.path}); "
                "wait for it to finish, then run again"
            ) from None
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._lock.release()
