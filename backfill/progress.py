"""Progress on a terminal, silence in a pipe or a CI log.

A thin layer over rich's progress display so that library code only says
what it is doing (``with progress.step("reading shop-runs")``) or how far it
got (``progress.advance(15)``), and never decides whether anyone is watching.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Display:
    """Spinner steps and one counting bar, drawn only when ``console`` is a terminal."""

    def __init__(self, console: Console) -> None:
        self._enabled = console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not self._enabled,
        )
        self._bar: TaskID | None = None

    def __enter__(self) -> Display:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._progress.stop()

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        task = self._progress.add_task(escape(description), total=None)
        try:
            yield
        finally:
            self._progress.remove_task(task)

    def start_bar(self, description: str, total: int) -> None:
        self._bar = self._progress.add_task(escape(description), total=total)

    def advance(self, amount: int) -> None:
        if self._bar is not None:
            self._progress.advance(self._bar, amount)
