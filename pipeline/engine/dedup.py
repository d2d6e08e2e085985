"""De-duplication by event_id, with memory bounded by an event-time horizon."""

from __future__ import annotations

import math
from typing import Any

from pipeline.engine.pickling import by_attributes

# The horizon is cut into this many buckets; memory overshoots the horizon by one bucket at most.
BUCKETS_PER_HORIZON = 16


class EventIdSet:
    """Remembers event ids for `horizon` seconds of event time after their own event time."""

    __slots__ = ("_bucket_of", "_buckets", "_oldest", "horizon", "width")

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self.width = horizon / BUCKETS_PER_HORIZON
        self._bucket_of: dict[str, int] = {}
        self._buckets: dict[int, list[str]] = {}
        self._oldest = -math.inf

    def __reduce__(self) -> tuple[Any, ...]:
        return by_attributes(self, (self.horizon,))

    def __len__(self) -> int:
        return len(self._bucket_of)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._bucket_of

    def add(self, event_id: str, t: float) -> bool:
        """Remember the id; False when it was already remembered (a duplicate)."""
        if event_id in self._bucket_of:
            return False
        bucket = int(t // self.width)
        self._bucket_of[event_id] = bucket
        ids = self._buckets.get(bucket)
        if ids is None:
            self._buckets[bucket] = [event_id]
        else:
            ids.append(event_id)
        return True

    def expire(self, newest: float) -> None:
        """Forget ids whose event time is more than the horizon behind `newest`."""
        cutoff = (newest - self.horizon) // self.width  # a float: bucket numbers compare with it
        if cutoff <= self._oldest:
            return
        self._oldest = cutoff
        for bucket in [b for b in self._buckets if b < cutoff]:
            for event_id in self._buckets.pop(bucket):
                if self._bucket_of.get(event_id) == bucket:
                    del self._bucket_of[event_id]
