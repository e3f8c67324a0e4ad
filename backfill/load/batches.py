"""Cutting the send order into batches for several batches in flight.

Two ways to cut:

* in send order (``per_stream=False``): batches of consecutive events, as a
  single sender would send them; with one batch in flight this is exactly the
  order DevGrid sees, and with several (``same_stream``) batches of one stream
  may be answered out of order;
* per (entityId, env) stream (``per_stream=True``): every batch holds the events
  of one stream only, oldest first, so that a stream can be kept to one batch
  in flight while other streams are sent side by side.

Events of an entity DevGrid said it does not know are never cut into a batch:
they are handed back as *held*.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Lane = tuple[str, str]  # (entityId, env)
Unknown = Callable[[str], str | None]  # the reason DevGrid does not know an entity, or None


class Cutter:
    """Batches of event indexes, taken a few at a time; events given back are cut again first."""

    def __init__(self, lanes: Sequence[Lane], *, per_stream: bool) -> None:
        self._lanes = lanes
        self._per_stream = per_stream
        self._position = 0
        self._returned: list[int] = []
        # Per stream: the batch being filled, by stream (dicts keep the order streams first appeared in).
        self._open: dict[Lane, list[int]] = {}

    @property
    def per_stream(self) -> bool:
        return self._per_stream

    def lane_of(self, index: int) -> Lane:
        return self._lanes[index]

    def exhausted(self) -> bool:
        return not self._returned and self._position >= len(self._lanes) and not self._open

    def left(self) -> int:
        """Events not cut into a batch yet."""
        return len(self._returned) + len(self._lanes) - self._position + sum(map(len, self._open.values()))

    def give_back(self, indexes: Sequence[int]) -> None:
        """Events of batches released before their POST: cut again (they are older than what is left)."""
        self._returned = sorted([*self._returned, *indexes])

    def cut(self, count: int, size: int, unknown: Unknown, held: dict[int, str]) -> list[list[int]]:
        """Up to ``count`` batches of at most ``size`` events; events of unknown entities go to ``held``."""
        batches: list[list[int]] = []
        if self._per_stream:
            self._cut_per_stream(count, size, unknown, held, batches)
        else:
            self._cut_in_order(count, size, unknown, held, batches)
        return batches

    def _next(self) -> int | None:
        if self._returned:
            return self._returned.pop(0)
        if self._position < len(self._lanes):
            self._position += 1
            return self._position - 1
        return None

    def _cut_in_order(
        self, count: int, size: int, unknown: Unknown, held: dict[int, str], batches: list[list[int]]
    ) -> None:
        batch: list[int] = []
        while len(batches) < count:
            index = self._next()
            if index is None:
                break
            reason = unknown(self._lanes[index][0])
            if reason is not None:
                held[index] = reason
                continue
            batch.append(index)
            if len(batch) == size:
                batches.append(batch)
                batch = []
        if batch:
            batches.append(batch)

    def _cut_per_stream(
        self, count: int, size: int, unknown: Unknown, held: dict[int, str], batches: list[list[int]]
    ) -> None:
        while len(batches) < count:
            index = self._next()
            if index is None:
                break
            lane = self._lanes[index]
            reason = unknown(lane[0])
            if reason is not None:
                held[index] = reason
                continue
            batch = self._open.setdefault(lane, [])
            batch.append(index)
            if len(batch) >= size:
                batches.extend(self._take(lane, size, unknown, held, whole_only=True))
        if self._position >= len(self._lanes) and not self._returned:
            # Everything is read: the streams' last, short batches go out oldest first.
            while self._open and len(batches) < count:
                lane = min(self._open, key=lambda lane: self._open[lane][0])
                batches.extend(self._take(lane, size, unknown, held, whole_only=False))

    def _take(
        self, lane: Lane, size: int, unknown: Unknown, held: dict[int, str], *, whole_only: bool
    ) -> list[list[int]]:
        """The stream's open batch in batches of ``size`` (a 413 may have made it smaller since it was begun)."""
        batch = self._open.pop(lane)
        reason = unknown(lane[0])
        if reason is not None:
            # DevGrid said it does not know the entity while the batch was being filled.
            for index in batch:
                held[index] = reason
            return []
        parts = [batch[start : start + size] for start in range(0, len(batch), size)]
        if whole_only and len(parts[-1]) < size:
            self._open[lane] = parts.pop()  # newer than the parts that go now: it stays open
        return parts
