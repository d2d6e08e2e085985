"""Partitions that have records to process but make no progress: logged, and a gauge.

A worker can stop advancing on a partition without an error of its own (a broker that never
answers a fetch for it, a consumer paused by a bug): lag grows and nothing says why. The watch
is told, every few seconds, each assigned partition's position (the next offset to process)
and the broker's end offset; a partition with records beyond its position whose position has
not moved is stalled, for as long as that lasts. Time is a parameter (`clock`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("ccpipe.worker")

Partition = tuple[str, int]  # (topic, partition)


@dataclass(slots=True)
class _Progress:
    position: int
    since: float  # when the position last moved (or records beyond it appeared)
    behind: bool  # the broker has records beyond the position
    logged: bool = False


class StallWatch:
    """Seconds each assigned partition has been stalled (0 while it progresses or is caught up)."""

    def __init__(self, bound: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound = bound  # stalled longer than this: logged once, until it moves again
        self.clock = clock
        self._progress: dict[Partition, _Progress] = {}

    def observe(self, positions: Mapping[Partition, int], ends: Mapping[Partition, int]) -> None:
        """The assigned partitions' positions and end offsets now (partitions not named leave)."""
        now = self.clock()
        for tp in self._progress.keys() - positions.keys():
            del self._progress[tp]
        for tp, position in positions.items():
            known = self._progress.get(tp)
            behind = ends.get(tp, position) > position
            if known is None or known.position != position or not (behind and known.behind):
                if known is not None and known.logged:
                    log.warning("%s partition %d moves again, at offset %d", tp[0], tp[1], position)
                self._progress[tp] = _Progress(position, now, behind)
                continue
            if not known.logged and now - known.since > self.bound:
                known.logged = True
                log.warning(
                    "%s partition %d stalled: no progress for %.0f s at offset %d, the broker has records "
                    "up to %d (ccpipe_partition_stalled_seconds; docs/runbooks.md, 'CcpipePartitionStalled')",
                    tp[0], tp[1], now - known.since, position, ends[tp] - 1,
                )  # fmt: skip

    def stalled(self) -> dict[Partition, float]:
        """Per assigned partition, how long it has had records to process and made no progress."""
        now = self.clock()
        return {tp: now - p.since if p.behind else 0.0 for tp, p in self._progress.items()}
