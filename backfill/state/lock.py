"""One run at a time per state file.

The lock is an OS file lock (``flock``) on ``STATE.lock``, taken through
filelock: the operating system drops it when the process that held it dies,
however it dies, so a lock left behind by a crashed or killed run is never
obeyed forever.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from backfill.errors import StateLockedError


class StateLock:
    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._lock = FileLock(self.path, timeout=0)

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
