"""Tumbling event-time windows per (channel, queue), and their exact merge into rolling views.

A window row is a record of accumulators (counts, sums and an FRT distribution) with three
verbs: `apply` (add or retract one sample), `merge` (combine two windows exactly) and
`result` (the contract §3 fields). Windows keep their FRT samples exactly (a minute of first
responses per key is a short list), so a sample can be retracted while the window is open
(out-of-order events within the allowed lateness move samples), a final window's row is
exact, and a window can travel to the worker that merges a key's partitions. Merges — the
rolling 5m/15m/1h views, across partitions and workers — go through a DDSketch.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ddsketch import DDSketch

from pipeline.engine.sentiment import NEGATIVE_THRESHOLD
from pipeline.settings import ROLLING_SPANS

Key = tuple[str, str]  # (channel, queue)

# Sample kinds: what one conversation or message contributes to the window holding its time.
START, FRT, ABANDON, RESOLUTION, SENTIMENT, SURVEY = range(6)

# Half the contract's 1% tolerance, so bucket rounding never reaches the limit.
SKETCH_RELATIVE_ACCURACY = 0.005
QUANTILES = ((0.5, "frt_p50_seconds"), (0.9, "frt_p90_seconds"), (0.99, "frt_p99_seconds"))


class ExactSamples:
    """Sorted FRT samples of an open window: exact quantiles, and a sample can be retracted."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, value: float) -> None:
        bisect.insort(self.values, value)

    def remove(self, value: float) -> None:
        index = bisect.bisect_left(self.values, value)
        if index < len(self.values) and self.values[index] == value:
            del self.values[index]

    def quantile(self, q: float) -> float:
        """The sample at 0-based rank floor(q·(n-1)), as the contract defines it."""
        return self.values[math.floor(q * (len(self.values) - 1))]

    def maximum(self) -> float:
        return self.values[-1]


class SketchSamples:
    """FRT distribution as a DDSketch: mergeable, quantiles within 1% relative error."""

    __slots__ = ("high", "low", "sketch")

    def __init__(self) -> None:
        self.sketch = DDSketch(relative_accuracy=SKETCH_RELATIVE_ACCURACY)
        self.low = math.inf
        self.high = -math.inf

    def add(self, value: float) -> None:
        self.sketch.add(value)
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def remove(self, value: float) -> None:
        raise TypeError("a sealed window cannot retract a sample")

    def merge(self, other: ExactSamples | SketchSamples) -> None:
        if isinstance(other, SketchSamples):
            if other.sketch.count:
                self.sketch.merge(other.sketch)
                self.low = min(self.low, other.low)
                self.high = max(self.high, other.high)
        else:
            for value in other.values:
                self.add(value)

    def quantile(self, q: float) -> float:
        # Bucket midpoints can fall a hair outside the data; clamp to what was seen.
        return min(max(self.sketch.get_quantile_value(q), self.low), self.high)

    def maximum(self) -> float:
        return self.high


class WindowAggregate:
    """All accumulators of one window (or of a merge of windows) for one (channel, queue)."""

    __slots__ = (
        "abandoned",
        "ces_n",
        "ces_sum",
        "csat_good",
        "csat_n",
        "csat_sum",
        "fcr_ok",
        "frt",
        "frt_n",
        "frt_sla_ok",
        "frt_sum",
        "nps_detractors",
        "nps_n",
        "nps_promoters",
        "resolved",
        "sentiment_n",
        "sentiment_negative",
        "sentiment_sum",
        "started",
        "surveys",
    )

    def __init__(self, frt: ExactSamples | SketchSamples | None = None) -> None:
        self.started = 0
        self.frt: ExactSamples | SketchSamples = frt if frt is not None else ExactSamples()
        self.frt_n = 0
        self.frt_sum = 0.0
        self.frt_sla_ok = 0
        self.abandoned = 0
        self.resolved = 0
        self.fcr_ok = 0
        self.sentiment_n = 0
        self.sentiment_sum = 0.0
        self.sentiment_negative = 0
        self.surveys = 0
        self.csat_n = 0
        self.csat_sum = 0
        self.csat_good = 0
        self.nps_n = 0
        self.nps_promoters = 0
        self.nps_detractors = 0
        self.ces_n = 0
        self.ces_sum = 0

    def apply(self, kind: int, value: Any, sign: int, sla_target: float) -> None:
        """Add (sign=+1) or retract (sign=-1) one sample."""
        if kind == SENTIMENT:
            self.sentiment_n += sign
            self.sentiment_sum += sign * value
            if value <= NEGATIVE_THRESHOLD:
                self.sentiment_negative += sign
        elif kind == START:
            self.started += sign
        elif kind == FRT:
            if sign > 0:
                self.frt.add(value)
            else:
                self.frt.remove(value)
            self.frt_n += sign
            self.frt_sum += sign * value
            if value <= sla_target:
                self.frt_sla_ok += sign
        elif kind == RESOLUTION:
            self.resolved += sign
            if value:
                self.fcr_ok += sign
        elif kind == ABANDON:
            self.abandoned += sign
        elif kind == SURVEY:
            self._apply_survey(value, sign)
        # A retraction that empties the FRT part resets its float sum, so no -0.0 or 1e-17 remains.
        if self.frt_n == 0:
            self.frt_sum = 0.0
        if self.sentiment_n == 0:
            self.sentiment_sum = 0.0

    def _apply_survey(self, answers: tuple[int | None, int | None, int | None], sign: int) -> None:
        csat, nps, ces = answers
        self.surveys += sign
        if csat is not None:
            self.csat_n += sign
            self.csat_sum += sign * csat
            if csat >= 4:
                self.csat_good += sign
        if nps is not None:
            self.nps_n += sign
            if nps >= 9:
                self.nps_promoters += sign
            elif nps <= 6:
                self.nps_detractors += sign
        if ces is not None:
            self.ces_n += sign
            self.ces_sum += sign * ces

    def merge(self, other: WindowAggregate) -> None:
        """Fold another window into this one (this one's FRT must be a sketch)."""
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.frt.merge(other.frt)  # type: ignore[union-attr]

    def state(self) -> list[Any]:
        """Counters and exact FRT samples, as plain JSON-able values (for per-partition partials)."""
        assert isinstance(self.frt, ExactSamples)
        return [*(getattr(self, name) for name in _COUNTERS), self.frt.values]

    @classmethod
    def from_state(cls, state: list[Any]) -> WindowAggregate:
        aggregate = cls()
        *counters, samples = state
        for name, value in zip(_COUNTERS, counters, strict=True):
            setattr(aggregate, name, value)
        aggregate.frt.values = list(samples)  # type: ignore[union-attr]
        return aggregate

    @property
    def activity(self) -> int:
        """How many samples this window holds; zero means the window has no row."""
        return self.started + self.frt_n + self.abandoned + self.resolved + self.sentiment_n + self.surveys

    def result(self) -> dict[str, Any]:
        """The contract §3 fields (without the key); a statistic with no samples is None."""
        frt_n = self.frt_n
        fields: dict[str, Any] = {
            "conversations_started": self.started,
            "first_responses": frt_n,
            "frt_mean_seconds": self.frt_sum / frt_n if frt_n else None,
            "frt_max_seconds": self.frt.maximum() if frt_n else None,
        }
        for q, name in QUANTILES:
            fields[name] = self.frt.quantile(q) if frt_n else None
        fields["frt_sla_ratio"] = _ratio(self.frt_sla_ok, frt_n)
        fields["abandoned"] = self.abandoned
        fields["abandonment_ratio"] = _ratio(self.abandoned, self.abandoned + frt_n)
        fields["resolved"] = self.resolved
        fields["fcr_ratio"] = _ratio(self.fcr_ok, self.resolved)
        fields["sentiment_samples"] = self.sentiment_n
        fields["sentiment_mean"] = _ratio(self.sentiment_sum, self.sentiment_n)
        fields["sentiment_negative_ratio"] = _ratio(self.sentiment_negative, self.sentiment_n)
        fields["surveys"] = self.surveys
        fields["csat_mean"] = _ratio(self.csat_sum, self.csat_n)
        fields["csat_ratio"] = _ratio(self.csat_good, self.csat_n)
        fields["nps"] = (
            100.0 * (self.nps_promoters - self.nps_detractors) / self.nps_n if self.nps_n else None
        )
        fields["ces_mean"] = _ratio(self.ces_sum, self.ces_n)
        return fields


_COUNTERS = tuple(name for name in WindowAggregate.__slots__ if name != "frt")


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


@dataclass(slots=True)
class WindowRow:
    """One (window_start, channel, queue) row; `final` once the watermark has passed its end.

    It carries the window's accumulators: a provisional row's keep changing after the batch
    that produced it, so a consumer reads it before the engine processes the next batch."""

    window_start: float
    window_seconds: float
    channel: str
    queue: str
    final: bool
    aggregate: WindowAggregate

    @property
    def fields(self) -> dict[str, Any]:
        """The contract §3 fields (without the key)."""
        return self.aggregate.result()

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_start": self.window_start,
            "window_seconds": self.window_seconds,
            "channel": self.channel,
            "queue": self.queue,
            **self.fields,
        }


class WindowStore:
    """Open (retractable) and recently final windows, keyed by start and (channel, queue)."""

    def __init__(
        self, window_seconds: float, sla_target: Callable[[str], float], retention_seconds: float
    ) -> None:
        self.width = window_seconds
        self.sla_target = sla_target
        self.retention = retention_seconds
        self.open: dict[float, dict[Key, WindowAggregate]] = {}
        self.final: dict[float, dict[Key, WindowAggregate]] = {}
        # Every window starting before this instant is final.
        self.final_before = -math.inf
        self._changed: set[tuple[float, Key]] = set()

    def start_of(self, t: float) -> float:
        return math.floor(t / self.width) * self.width

    def is_final(self, t: float) -> bool:
        return t < self.final_before

    def apply(self, key: Key, t: float, kind: int, value: Any, sign: int) -> bool:
        """Add or retract a sample in the window holding `t`; False when that window is final."""
        if t < self.final_before:
            return False
        start = self.start_of(t)
        windows = self.open.get(start)
        if windows is None:
            windows = self.open[start] = {}
        aggregate = windows.get(key)
        if aggregate is None:
            aggregate = windows[key] = WindowAggregate()
        aggregate.apply(kind, value, sign, self.sla_target(key[0]))
        self._changed.add((start, key))
        return True

    def advance(self, watermark: float) -> list[WindowRow]:
        """Seal every open window whose end is at or before the watermark; their final rows."""
        if watermark < self.final_before + self.width:
            return []
        boundary = self.start_of(watermark) if math.isfinite(watermark) else math.inf
        if boundary <= self.final_before:
            return []
        self.final_before = boundary
        rows: list[WindowRow] = []
        for start in sorted(s for s in self.open if s < boundary):
            kept: dict[Key, WindowAggregate] = {}
            for key, aggregate in sorted(self.open.pop(start).items()):
                self._changed.discard((start, key))
                if aggregate.activity:
                    rows.append(self._row(start, key, aggregate, final=True))
                    kept[key] = aggregate
            if kept:
                self.final[start] = kept
        horizon = boundary - self.retention - self.width
        for start in [s for s in self.final if s < horizon]:
            del self.final[start]
        return rows

    def changed_rows(self) -> list[WindowRow]:
        """Provisional rows of open windows touched since the last call."""
        rows = []
        for start, key in sorted(self._changed):
            aggregate = self.open.get(start, {}).get(key)
            if aggregate is not None:
                rows.append(self._row(start, key, aggregate, final=False))
        self._changed.clear()
        return rows

    def windows_of(self, key: Key) -> list[tuple[float, WindowAggregate]]:
        """(start, window) of one key, final and open, oldest first."""
        found = [
            (start, windows[key])
            for group in (self.final, self.open)
            for start, windows in group.items()
            if key in windows
        ]
        return sorted(found, key=lambda item: item[0])

    def window(self, key: Key, start: float) -> WindowAggregate | None:
        """The open or final window of `key` starting at `start`, if still held."""
        for group in (self.open, self.final):
            found = group.get(start, {}).get(key)
            if found is not None:
                return found
        return None

    def keys(self) -> set[Key]:
        return {key for group in (self.final, self.open) for windows in group.values() for key in windows}

    def all_windows(self) -> Iterable[tuple[Key, float, WindowAggregate]]:
        """Every (key, start, window) still held, final or open."""
        for group in (self.final, self.open):
            for start, windows in group.items():
                for key, aggregate in windows.items():
                    yield key, start, aggregate

    def _row(self, start: float, key: Key, aggregate: WindowAggregate, final: bool) -> WindowRow:
        return WindowRow(start, self.width, key[0], key[1], final, aggregate)


def rolling_views(
    windows: Iterable[tuple[Key, float, WindowAggregate]], now: float, width: float
) -> dict[str, dict[Key, dict[str, Any]]]:
    """The 5m/15m/1h views at `now`: per key, the exact merge of the tumbling windows (of
    any number of partitions) whose start lies in (s - span, s], s being the start of the
    window holding `now`."""
    windows = list(windows)
    newest = math.floor(now / width) * width
    views: dict[str, dict[Key, dict[str, Any]]] = {}
    for name, span in ROLLING_SPANS.items():
        merged: dict[Key, WindowAggregate] = {}
        for key, start, aggregate in windows:
            if newest - span < start <= newest:
                target = merged.get(key)
                if target is None:
                    target = merged[key] = WindowAggregate(SketchSamples())
                target.merge(aggregate)
        views[name] = {key: agg.result() for key, agg in merged.items() if agg.activity}
    return views
