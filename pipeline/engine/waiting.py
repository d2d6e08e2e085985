"""The conversations of one (channel, queue) waiting for a first response, with the oldest start
kept incrementally: a heap with lazy deletion, so the live queue state and every partial
snapshot cost O(log n) per change instead of a min() over every waiting conversation."""

from __future__ import annotations

import heapq
from typing import Any

from pipeline.engine.pickling import by_attributes


class WaitingSet:
    """conversation_id -> start, and the earliest start."""

    __slots__ = ("_heap", "_starts")

    def __init__(self) -> None:
        self._starts: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # may hold entries no longer current

    def __reduce__(self) -> tuple[Any, ...]:
        return by_attributes(self, ())

    def __len__(self) -> int:
        return len(self._starts)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._starts

    def add(self, conversation_id: str, start: float) -> None:
        if self._starts.get(conversation_id) != start:
            self._starts[conversation_id] = start
            heapq.heappush(self._heap, (start, conversation_id))

    def discard(self, conversation_id: str) -> None:
        self._starts.pop(conversation_id, None)
        if not self._starts:
            self._heap.clear()
        elif len(self._heap) > 2 * len(self._starts) + 64:  # mostly stale: rebuild
            self._heap = [(start, cid) for cid, start in self._starts.items()]
            heapq.heapify(self._heap)

    def oldest(self) -> float | None:
        heap, starts = self._heap, self._starts
        while heap and starts.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None
