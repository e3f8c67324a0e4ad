"""Cutting the send order into batches for several batches in flight.

Two ways to cut:

* in send order (``per_stream=False``): batches of consecutive events, as a
  single sender would send them; with one batch in flight this is exactly the
  order DevGrid sees, and with several (``same_stream``) batches of one stream
  may be answered out of order;
* per (entityId, env) stream (``per_stream=True``): every batch holds the events
  of one stream only, oldest first, so that a stream can be kept to one batch
  in flight while other streams are sent side by side. Each stream is cut from
  its own queue, and a group of batches takes one batch of each stream in turn
  (the streams whose next event is oldest first, as many as the group holds):
  a stream whose history comes before the others' in time does not keep them
  waiting until it is done.

Events of an entity DevGrid said it does not know are never cut into a batch:
they are handed back as *held*.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Collection, Sequence

Lane = tuple[str, str]  # (entityId, env)
Unknown = Callable[[str], str | None]  # the reason DevGrid does not know an entity, or None


class Cutter:
    """Batches of event indexes, taken a few at a time; events given back are cut again first."""

    def __init__(self, lanes: Sequence[Lane], *, per_stream: bool) -> None:
        self._lanes = lanes
        self._per_stream = per_stream
        # In send order: the next event, and the events given back (older than what is left).
        self._position = 0
        self._returned: list[int] = []
        # Per stream: each stream's events in send order (8 bytes an event), and how many of them are cut
        # (dicts keep the order streams first appear in).
        self._queues: dict[Lane, array[int]] = {}
        self._cut: dict[Lane, int] = {}
        if per_stream:
            for index, lane in enumerate(lanes):
                queue = self._queues.get(lane)
                if queue is None:
                    queue = self._queues[lane] = array("q")
                queue.append(index)
            self._cut = dict.fromkeys(self._queues, 0)

    @property
    def per_stream(self) -> bool:
        return self._per_stream

    def lane_of(self, index: int) -> Lane:
        return self._lanes[index]

    def exhausted(self) -> bool:
        return self.left() == 0

    def left(self) -> int:
        """Events not cut into a batch yet."""
        if self._per_stream:
            return sum(len(queue) - self._cut[lane] for lane, queue in self._queues.items())
        return len(self._returned) + len(self._lanes) - self._position

    def lanes_left(self) -> set[Lane]:
        """The streams with events not cut yet (per stream only)."""
        return {lane for lane, queue in self._queues.items() if self._cut[lane] < len(queue)}

    def give_back(self, indexes: Sequence[int]) -> None:
        """Events of batches released before their POST: cut again (they are older than what is left)."""
        if not self._per_stream:
            self._returned = sorted([*self._returned, *indexes])
            return
        returned: dict[Lane, list[int]] = {}
        for index in indexes:
            returned.setdefault(self._lanes[index], []).append(index)
        for lane, events in returned.items():
            queue, cut = self._queues[lane], self._cut[lane]
            events.sort()
            if len(events) <= cut and queue[cut - len(events) : cut].tolist() == events:
                # As a rule the stream's events cut last: they are cut again from where they were.
                self._cut[lane] = cut - len(events)
            else:
                self._queues[lane] = array("q", sorted([*events, *queue[cut:]]))
                self._cut[lane] = 0

    def cut(
        self,
        count: int,
        size: int,
        unknown: Unknown,
        held: dict[int, str],
        only: Collection[Lane] | None = None,
    ) -> list[list[int]]:
        """Up to ``count`` batches of at most ``size`` events; events of unknown entities go to ``held``.

        ``only`` (per stream): cut batches of these streams alone.
        """
        if self._per_stream:
            return self._cut_per_stream(count, size, unknown, held, only)
        return self._cut_in_order(count, size, unknown, held)

    def _next(self) -> int | None:
        if self._returned:
            return self._returned.pop(0)
        if self._position < len(self._lanes):
            self._position += 1
            return self._position - 1
        return None

    def _cut_in_order(self, count: int, size: int, unknown: Unknown, held: dict[int, str]) -> list[list[int]]:
        batches: list[list[int]] = []
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
        return batches

    def _cut_per_stream(
        self, count: int, size: int, unknown: Unknown, held: dict[int, str], only: Collection[Lane] | None
    ) -> list[list[int]]:
        batches: list[list[int]] = []
        while len(batches) < count:
            lanes = [lane for lane in self.lanes_left() if only is None or lane in only]
            if not lanes:
                break
            # One batch of each stream in turn, the stream whose next event is oldest first.
            lanes.sort(key=lambda lane: self._queues[lane][self._cut[lane]])
            for lane in lanes[: count - len(batches)]:
                queue, start = self._queues[lane], self._cut[lane]
                reason = unknown(lane[0])
                if reason is not None:
                    # DevGrid does not know the entity: none of the stream's events will be sent.
                    held.update(dict.fromkeys(queue[start:].tolist(), reason))
                    self._cut[lane] = len(queue)
                    continue
                batches.append(queue[start : start + size].tolist())
                self._cut[lane] = min(start + size, len(queue))
        return batches
