"""Progress on a terminal, silence in a pipe or a CI log.

A thin layer over rich's progress display so that library code only says
what it is doing (``with display.step("reading shop-runs")``) or how far it
got (``display.advance(15)``), and never decides whether anyone is watching.
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
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RateColumn(ProgressColumn):
    """Items per second, computed when the display redraws rather than on every advance."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f}/s" if task.speed else "")


class Display:
    """Spinner steps and counting bars, drawn only when ``console`` is a terminal."""

    def __init__(self, console: Console) -> None:
        disabled = not console.is_terminal
        self._enabled = not disabled
        self._steps = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=disabled,
        )
        self._bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            _RateColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=disabled,
        )
        self._bar: TaskID | None = None

    def __enter__(self) -> Display:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._steps.stop()
        self._bars.stop()

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        self._steps.start()
        task = self._steps.add_task(escape(description), total=None)
        try:
            yield
        finally:
            self._steps.remove_task(task)
            self._steps.stop()

    def start_bar(self, description: str, total: int, unit: str = "events") -> None:
        self._bars.start()
        self._bar = self._bars.add_task(escape(description), total=total, unit=unit)

    def advance(self, amount: int) -> None:
        if self._bar is not None and self._enabled:
            self._bars.advance(self._bar, amount)

    def stop_bar(self) -> None:
        if self._bar is not None:
            self._bars.remove_task(self._bar)
            self._bar = None
        self._bars.stop()
