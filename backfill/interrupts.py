"""Ctrl-C and SIGTERM, turned into :class:`~backfill.errors.Interrupted` only where stopping is safe.

A signal that arrives while the state file is being written is held until the
write is done; where nothing needs finishing (reading sources, waiting for
DevGrid's answer) it stops the work at once. Either way the run then records
what happened, prints its summary and exits 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

from backfill.errors import Interrupted

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Installed for the length of a ``with`` block (in the main thread; elsewhere it only counts)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._anywhere = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for number in _SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        if self._anywhere:
            raise Interrupted(signum)

    def check(self) -> None:
        """Stop here if a signal came in since."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    @contextmanager
    def anywhere(self) -> Iterator[None]:
        """A block that a signal may stop at any instant: nothing in it needs finishing."""
        self.check()
        self._anywhere += 1
        try:
            yield
        finally:
            self._anywhere -= 1
