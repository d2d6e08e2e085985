"""Tumbling event-time windows per (channel, queue), and their exact merge into rolling views.

A window row is a record of accumulators (counts, sums and sample distributions: FRT,
business-hours FRT, resolution time) with three verbs: `apply` (add or retract one sample),
`merge` (combine two windows exactly) and `result` (the contract's fields). Each accumulator
is declared once in ACCUMULATORS (name, column, type, how it merges) and each field once in
FIELDS (how it comes from the accumulators, the rolling gauge that shows it); the rows, the
partials' wire format, the store's columns and the exporter read those declarations. Windows
keep their samples exactly (a minute of a key is a short list), so a sample can be retracted
while the window is open (out-of-order events within the allowed lateness move samples), a
final window's row is exact, and a window can travel to the worker that merges a key's
partitions. Merges — the rolling 5m/15m/1h views, across partitions and workers — go through
a DDSketch.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ddsketch import DDSketch

from pipeline.engine.pickling import by_attributes, by_fields
from pipeline.engine.sentiment import NEGATIVE_THRESHOLD
from pipeline.settings import ROLLING_SPANS

Key = tuple[str, str]  # (channel, queue)

# Sample kinds: what one conversation or message contributes to the window holding its time.
START, FRT, ABANDON, RESOLUTION, SENTIMENT, SURVEY, RESOLUTION_TIME = range(7)

# Half the contract's 1% tolerance, so bucket rounding never reaches the limit.
SKETCH_RELATIVE_ACCURACY = 0.005
QUANTILES = ((0.5, "frt_p50_seconds"), (0.9, "frt_p90_seconds"), (0.99, "frt_p99_seconds"))


class ExactSamples:
    """Sorted FRT samples of an open window: exact quantiles, and a sample can be retracted."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[float] = []

    def __reduce__(self) -> tuple[Any, ...]:
        return by_attributes(self, ())

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

    def __reduce__(self) -> tuple[Any, ...]:
        return by_attributes(self, ())

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
        value = self.sketch.get_quantile_value(q)
        assert value is not None, "a sketch with samples has every quantile"
        return min(max(value, self.low), self.high)

    def maximum(self) -> float:
        return self.high


@dataclass(frozen=True, slots=True)
class Accumulator:
    """One accumulator of a window, declared once: its name (attribute, and key in the partials'
    wire format), its column and ClickHouse type in `metrics_window_partials`, and whether it is
    a sample distribution (exact sorted samples in a window, a DDSketch once merged) or a number
    (merged by adding)."""

    name: str
    column: str
    type: str
    samples: bool = False


ACCUMULATORS = (
    Accumulator("started", "conversations_started", "UInt32"),
    Accumulator("frt_n", "first_responses", "UInt32"),
    Accumulator("frt_sum", "frt_sum", "Float64"),
    Accumulator("frt_sla_ok", "frt_sla_ok", "UInt32"),
    Accumulator("frt", "frt_samples", "Array(Float64)", samples=True),
    Accumulator("abandoned", "abandoned", "UInt32"),
    Accumulator("resolved", "resolved", "UInt32"),
    Accumulator("fcr_ok", "fcr_ok", "UInt32"),
    Accumulator("sentiment_n", "sentiment_samples", "UInt32"),
    Accumulator("sentiment_sum", "sentiment_sum", "Float64"),
    Accumulator("sentiment_negative", "sentiment_negative", "UInt32"),
    Accumulator("surveys", "surveys", "UInt32"),
    Accumulator("csat_n", "csat_n", "UInt32"),
    Accumulator("csat_sum", "csat_sum", "UInt32"),
    Accumulator("csat_good", "csat_good", "UInt32"),
    Accumulator("nps_n", "nps_n", "UInt32"),
    Accumulator("nps_promoters", "nps_promoters", "UInt32"),
    Accumulator("nps_detractors", "nps_detractors", "UInt32"),
    Accumulator("ces_n", "ces_n", "UInt32"),
    Accumulator("ces_sum", "ces_sum", "UInt32"),
    # Contract §6: resolution time, short abandons, business-hours FRT.
    Accumulator("resolution_n", "resolutions_timed", "UInt32"),
    Accumulator("resolution_sum", "resolution_sum", "Float64"),
    Accumulator("resolution", "resolution_samples", "Array(Float64)", samples=True),
    Accumulator("abandoned_short", "abandoned_short", "UInt32"),
    Accumulator("frt_business_sum", "frt_business_sum", "Float64"),
    Accumulator("frt_business_sla_ok", "frt_business_sla_ok", "UInt32"),
    Accumulator("frt_business", "frt_business_samples", "Array(Float64)", samples=True),
    # Contract §7.2: agent seconds handling this key's contacts (on contact and after-contact work).
    Accumulator("handle", "handle_seconds", "Float64"),
)
# The positional wire format of ccpipe before contract §6, read during a rolling upgrade.
_POSITIONAL = (
    "abandoned", "ces_n", "ces_sum", "csat_good", "csat_n", "csat_sum", "fcr_ok", "frt_n", "frt_sla_ok",
    "frt_sum", "nps_detractors", "nps_n", "nps_promoters", "resolved", "sentiment_n", "sentiment_negative",
    "sentiment_sum", "started", "surveys", "frt",
)  # fmt: skip
_NAMES = tuple(a.name for a in ACCUMULATORS)
# Every accumulator's value in one call (a window's row and partial are built from it).
_VALUES = operator.attrgetter(*(f"{a.name}.values" if a.samples else a.name for a in ACCUMULATORS))
_NUMBERS = tuple(a.name for a in ACCUMULATORS if not a.samples)
_SAMPLES = tuple(a.name for a in ACCUMULATORS if a.samples)
_NUMBER_NAMES = frozenset(_NUMBERS)
_SAMPLE_NAMES = frozenset(_SAMPLES)


def detached(state: dict[str, Any]) -> dict[str, Any]:
    """A `state()` that the window's later changes do not reach (its sample lists copied)."""
    copied = dict(state)
    for name in _SAMPLES:
        copied[name] = list(state[name])
    return copied


def state_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What turns the window `before` describes into the one `after` describes (both from
    `state()`): each number that changed, and each sample distribution's [added, removed]."""
    changes: dict[str, Any] = {name: after[name] for name in _NUMBERS if after[name] != before[name]}
    for name in _SAMPLES:
        added, removed = sorted_difference(before[name], after[name])
        if added or removed:
            changes[name] = [added, removed]
    return changes


def sorted_difference(before: list[float], after: list[float]) -> tuple[list[float], list[float]]:
    """(the samples only `after` holds, those only `before` holds), as multisets of two sorted
    lists: one walk, as a window mostly gains a sample or two between two publishes."""
    added: list[float] = []
    removed: list[float] = []
    i = j = 0
    while i < len(before) and j < len(after):
        old, new = before[i], after[j]
        if old == new:
            i += 1
            j += 1
        elif old < new:
            removed.append(old)
            i += 1
        else:
            added.append(new)
            j += 1
    removed.extend(before[i:])
    added.extend(after[j:])
    return added, removed


class WindowAggregate:
    """All accumulators of one window (or of a merge of windows) for one (channel, queue)."""

    # The accumulators' types and empty values, for the type checker and the compiler
    # (ACCUMULATORS declares them; tests/test_native.py keeps the two the same). A window is
    # made for every key and minute of every partition: compiled, the defaults cost nothing.
    started: int = 0
    frt_n: int = 0
    frt_sum: float = 0.0
    frt_sla_ok: int = 0
    frt: ExactSamples | SketchSamples
    abandoned: int = 0
    resolved: int = 0
    fcr_ok: int = 0
    sentiment_n: int = 0
    sentiment_sum: float = 0.0
    sentiment_negative: int = 0
    surveys: int = 0
    csat_n: int = 0
    csat_sum: int = 0
    csat_good: int = 0
    nps_n: int = 0
    nps_promoters: int = 0
    nps_detractors: int = 0
    ces_n: int = 0
    ces_sum: int = 0
    resolution_n: int = 0
    resolution_sum: float = 0.0
    resolution: ExactSamples | SketchSamples
    abandoned_short: int = 0
    frt_business_sum: float = 0.0
    frt_business_sla_ok: int = 0
    frt_business: ExactSamples | SketchSamples
    handle: float = 0.0

    def __init__(self, sketches: bool = False) -> None:
        """A window (exact, retractable samples) or, with `sketches`, a merge of windows."""
        samples = SketchSamples if sketches else ExactSamples
        self.frt = samples()
        self.resolution = samples()
        self.frt_business = samples()

    def __reduce__(self) -> tuple[Any, ...]:
        return by_attributes(self, ())

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
            frt, business = value
            self._sample(self.frt, frt, sign)
            self.frt_n += sign
            self.frt_sum += sign * frt
            if frt <= sla_target:
                self.frt_sla_ok += sign
            self._sample(self.frt_business, business, sign)
            self.frt_business_sum += sign * business
            if business <= sla_target:
                self.frt_business_sla_ok += sign
        elif kind == RESOLUTION:
            self.resolved += sign
            if value:
                self.fcr_ok += sign
        elif kind == RESOLUTION_TIME:
            self._sample(self.resolution, value, sign)
            self.resolution_n += sign
            self.resolution_sum += sign * value
        elif kind == ABANDON:
            self.abandoned += sign
            if value:  # a short abandon
                self.abandoned_short += sign
        elif kind == SURVEY:
            self._apply_survey(value, sign)
        # A retraction that empties a part resets its float sums, so no -0.0 or 1e-17 remains.
        if self.frt_n == 0:
            self.frt_sum = self.frt_business_sum = 0.0
        if self.sentiment_n == 0:
            self.sentiment_sum = 0.0
        if self.resolution_n == 0:
            self.resolution_sum = 0.0

    @staticmethod
    def _sample(samples: ExactSamples | SketchSamples, value: float, sign: int) -> None:
        if sign > 0:
            samples.add(value)
        else:
            samples.remove(value)

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
        """Fold another window into this one (this one must hold sketches)."""
        for name in _NUMBERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in _SAMPLES:
            getattr(self, name).merge(getattr(other, name))

    def values(self) -> tuple[Any, ...]:
        """Every accumulator in ACCUMULATORS order, as plain values (exact samples as lists)."""
        return _VALUES(self)

    def state(self) -> dict[str, Any]:
        """Every accumulator by name, as plain JSON-able values (exact samples as lists): the
        partials' wire format. Keyed by name, so two versions of ccpipe can exchange it."""
        return dict(zip(_NAMES, _VALUES(self), strict=True))

    def change(self, changes: dict[str, Any]) -> None:
        """Apply what `state_changes` found: the owner's side of a partial update. Names this
        version does not know are ignored, as in `from_state`."""
        for name, value in changes.items():
            if name in _SAMPLE_NAMES:
                added, removed = value
                samples = getattr(self, name)
                for sample in removed:
                    samples.remove(sample)
                for sample in added:
                    samples.add(sample)
            elif name in _NUMBER_NAMES:
                setattr(self, name, value)

    @classmethod
    def from_state(cls, state: dict[str, Any] | list[Any]) -> WindowAggregate:
        """The window a `state()` describes; accumulators it lacks are empty, unknown ones ignored.
        A list is the positional format of workers before contract §6 (a rolling upgrade): their
        windows know no business hours, so business FRT is their FRT."""
        if isinstance(state, list):
            state = dict(zip(_POSITIONAL, state, strict=True))
        if "frt" in state and "frt_business" not in state:
            state = state | {"frt_business": state["frt"], "frt_business_sum": state.get("frt_sum", 0.0),
                             "frt_business_sla_ok": state.get("frt_sla_ok", 0)}  # fmt: skip
        aggregate = cls()
        for name in _NUMBERS:
            if name in state:
                setattr(aggregate, name, state[name])
        for name in _SAMPLES:
            getattr(aggregate, name).values = list(state.get(name, ()))
        return aggregate

    @property
    def activity(self) -> int:
        """How many samples this window holds; zero means the window has no row."""
        handled = 1 if self.handle else 0  # a row holding only handle time is activity too (§7.2)
        return (
            self.started
            + self.frt_n
            + self.abandoned
            + self.resolved
            + self.sentiment_n
            + self.surveys
            + handled
        )

    def result(self) -> dict[str, Any]:
        """The contract's window fields (without the key); a statistic with no samples is None."""
        return {field.name: field.value(self) for field in FIELDS if field.row}


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _mean(total: str, count: str) -> Callable[[WindowAggregate], float | None]:
    return lambda a: _ratio(getattr(a, total), getattr(a, count))


def _quantile(samples: str, count: str, q: float) -> Callable[[WindowAggregate], float | None]:
    return lambda a: getattr(a, samples).quantile(q) if getattr(a, count) else None


def _service_level_contacts(a: WindowAggregate) -> int:
    """Answered plus abandoned, short abandons left out: the service level's denominator."""
    return a.frt_n + a.abandoned - a.abandoned_short


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a window, declared once: how it comes from the accumulators, and the
    rolling Prometheus gauge that shows it (with its `quantile` label), if any. `row=False`:
    a gauge only, not a column of the contract's window rows."""

    name: str
    value: Callable[[WindowAggregate], Any]
    gauge: str | None = None
    help: str = ""
    quantile: str | None = None
    row: bool = True


FIELDS = (
    Field("conversations_started", lambda a: a.started),
    Field("first_responses", lambda a: a.frt_n, "ccpipe_first_responses",
          "First responses (FRT samples) in the rolling window"),
    Field("frt_mean_seconds", _mean("frt_sum", "frt_n"), "ccpipe_frt_mean_seconds",
          "Rolling mean first response time"),
    Field("frt_max_seconds", lambda a: a.frt.maximum() if a.frt_n else None),
    *(Field(name, _quantile("frt", "frt_n", q), "ccpipe_frt_seconds", "Rolling first response time quantiles",
            quantile=f"{q:g}") for q, name in QUANTILES),
    Field("frt_sla_ratio", _mean("frt_sla_ok", "frt_n"), "ccpipe_frt_sla_ratio",
          "Rolling share of first responses within the channel target"),
    Field("abandoned", lambda a: a.abandoned),
    Field("abandonment_ratio", lambda a: _ratio(a.abandoned, a.abandoned + a.frt_n),
          "ccpipe_abandonment_ratio", "Rolling abandoned / (abandoned + first responses)"),
    # Sample counts behind the ratios, so dashboards can weight queues into a channel total.
    Field("resolved", lambda a: a.resolved, "ccpipe_resolutions", "Resolutions in the rolling window"),
    Field("fcr_ratio", _mean("fcr_ok", "resolved"), "ccpipe_fcr_ratio",
          "Rolling real-time first-contact resolution ratio"),
    Field("sentiment_samples", lambda a: a.sentiment_n, "ccpipe_sentiment_samples",
          "Scored customer messages in the rolling window"),
    Field("sentiment_mean", _mean("sentiment_sum", "sentiment_n"), "ccpipe_sentiment_mean",
          "Rolling mean customer sentiment (-1..1)"),
    Field("sentiment_negative_ratio", _mean("sentiment_negative", "sentiment_n"),
          "ccpipe_sentiment_negative_ratio", "Rolling share of customer messages scored <= -0.05"),
    Field("surveys", lambda a: a.surveys),
    Field("csat_mean", _mean("csat_sum", "csat_n"), "ccpipe_csat_mean", "Rolling mean CSAT (1..5)"),
    Field("csat_ratio", _mean("csat_good", "csat_n")),
    Field("nps", lambda a: 100.0 * (a.nps_promoters - a.nps_detractors) / a.nps_n if a.nps_n else None,
          "ccpipe_nps", "Rolling NPS (-100..100)"),
    Field("ces_mean", _mean("ces_sum", "ces_n")),
    # Contract §6.1: resolution time, one sample per conversation in the window of its resolved_at.
    Field("resolutions_timed", lambda a: a.resolution_n),
    Field("resolution_mean_seconds", _mean("resolution_sum", "resolution_n"),
          "ccpipe_resolution_mean_seconds", "Rolling mean resolution time (start to latest resolution)"),
    *(Field(f"resolution_p{q * 100:g}_seconds", _quantile("resolution", "resolution_n", q),
            "ccpipe_resolution_seconds", "Rolling resolution time quantiles", quantile=f"{q:g}")
      for q in (0.5, 0.9)),
    # Contract §6.2: service level, an abandon counting as a miss unless it was short.
    Field("abandoned_short", lambda a: a.abandoned_short),
    Field("service_level_ratio", lambda a: _ratio(a.frt_sla_ok, _service_level_contacts(a)),
          "ccpipe_service_level_ratio",
          "Rolling share of contacts answered within the channel target, abandons (not short) as misses"),
    Field("service_level_contacts", _service_level_contacts, "ccpipe_service_level_contacts",
          "Answered plus abandoned (short abandons excluded) in the rolling window", row=False),
    # Contract §6.3: FRT in business hours of the queue's calendar.
    Field("frt_business_mean_seconds", _mean("frt_business_sum", "frt_n")),
    Field("frt_business_p50_seconds", _quantile("frt_business", "frt_n", 0.5), "ccpipe_frt_business_seconds",
          "Rolling first response time in business hours, quantiles", quantile="0.5", row=False),
    Field("frt_business_p90_seconds", _quantile("frt_business", "frt_n", 0.9), "ccpipe_frt_business_seconds",
          "Rolling first response time in business hours, quantiles", quantile="0.9"),
    Field("frt_business_sla_ratio", _mean("frt_business_sla_ok", "frt_n"), "ccpipe_frt_business_sla_ratio",
          "Rolling share of first responses within the channel target in business hours"),
    # Contract §7.2: handle time, and AHT = handle seconds per answered contact.
    Field("handle_seconds", lambda a: a.handle),
    Field("handle_time_mean_seconds", lambda a: a.handle / a.frt_n if a.handle and a.frt_n else None,
          "ccpipe_handle_time_mean_seconds", "Rolling average handle time (handle seconds per answer)",
          row=False),
)  # fmt: skip
ROW_FIELDS = tuple(field.name for field in FIELDS if field.row)


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

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)

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

    __slots__ = ("_changed", "final", "final_before", "open", "retention", "sla_target", "width")

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

    def __reduce__(self) -> tuple[Any, ...]:
        return by_attributes(self, (self.width, self.sla_target, self.retention))

    def start_of(self, t: float) -> float:
        return math.floor(t / self.width) * self.width

    def is_final(self, t: float) -> bool:
        return t < self.final_before

    def apply(self, key: Key, t: float, kind: int, value: Any, sign: int) -> bool:
        """Add or retract a sample in the window holding `t`; False when that window is final."""
        if t < self.final_before:
            return False
        self._open_window(key, self.start_of(t)).apply(kind, value, sign, self.sla_target(key[0]))
        return True

    def add_handle(self, key: Key, start: float, seconds: float) -> None:
        """Handle seconds (a change, kept to the µs) to the open window of `key` at `start`
        (pipeline/engine/agents.py); agent time never reaches a final window."""
        aggregate = self._open_window(key, start)
        aggregate.handle = round(aggregate.handle + seconds, 6)

    def _open_window(self, key: Key, start: float) -> WindowAggregate:
        """The open window of `key` at `start` (made when new), marked changed."""
        windows = self.open.get(start)
        if windows is None:
            windows = self.open[start] = {}
        aggregate = windows.get(key)
        if aggregate is None:
            aggregate = windows[key] = WindowAggregate()
        self._changed.add((start, key))
        return aggregate

    def boundary(self, watermark: float) -> float | None:
        """Where `advance(watermark)` would move the final boundary to; None: it would not move."""
        if watermark < self.final_before + self.width:
            return None
        boundary = self.start_of(watermark) if math.isfinite(watermark) else math.inf
        return boundary if boundary > self.final_before else None

    def advance(self, watermark: float) -> list[WindowRow]:
        """Seal every open window whose end is at or before the watermark; their final rows (and
        the empty provisional row of each one emptied since its last row)."""
        boundary = self.boundary(watermark)
        if boundary is None:
            return []
        self.final_before = boundary
        rows: list[WindowRow] = []
        for start in sorted(s for s in self.open if s < boundary):
            kept: dict[Key, WindowAggregate] = {}
            for key, aggregate in sorted(self.open.pop(start).items()):
                changed = (start, key) in self._changed
                self._changed.discard((start, key))
                if aggregate.activity:
                    rows.append(self._row(start, key, aggregate, final=True))
                    kept[key] = aggregate
                elif changed:
                    # Emptied since its last row (its samples moved to another queue) and sealed
                    # at once: the empty row a batch ending in between would have given.
                    rows.append(self._row(start, key, aggregate, final=False))
            if kept:
                self.final[start] = kept
        horizon = boundary - self.retention - self.width
        for start in [s for s in self.final if s < horizon]:
            del self.final[start]
        return rows

    def pending(self) -> list[tuple[float, Key]]:
        """(start, key) of the open windows changed since `changed_rows` was last called."""
        return list(self._changed)

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
                    target = merged[key] = WindowAggregate(sketches=True)
                target.merge(aggregate)
        views[name] = {key: gauge_fields(agg) for key, agg in merged.items() if agg.activity}
    return views


def gauge_fields(aggregate: WindowAggregate) -> dict[str, Any]:
    """Every field of a (merged) window, the gauge-only ones too: what a rolling view shows."""
    return {field.name: field.value(aggregate) for field in FIELDS}
