"""Agents (contract §7): each agent's states in event time, split into tumbling windows.

An agent's event holds from its time to the agent's next event (in event time), the latest one
until the newest event time, and none longer than the stale bound; `offline` time counts
nowhere. Agent time goes to the window rows of every queue the agent serves (`agent_window`),
and the time in `on_contact` and `after_contact_work` also to the handle time of the contact's
(channel, queue) in the section 3 window rows.

Windows that are final never change, so only the open part — from the watermark's window
boundary to the newest event time — is recomputed: each agent remembers what it added to open
windows and applies the difference, like a conversation's samples. Results do not depend on
arrival order within the allowed lateness nor on how the input is cut into batches, since a
window is sealed only after every agent's time up to that moment has been added.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.events import DEFAULT_QUEUE, HANDLING, Event

Key = tuple[str, str]  # (channel, queue)
Served = tuple[str, tuple[str, ...], tuple[str, ...] | None]  # (state, queues, channels or None: all)
# What an agent adds to windows: (start, queue, state index) -> seconds, (start, (channel, queue)) -> seconds.
Added = tuple[dict[tuple[float, str, int], float], dict[tuple[float, Key], float]]
STATES = ("available", "on_contact", "after_contact_work", "away")  # every state that counts somewhere
STAFFED = frozenset({"available", "on_contact", "after_contact_work"})
_INDEX = {state: i for i, state in enumerate(STATES)}
# Agent seconds are kept to the microsecond, so adding and retracting a part leaves no residue.
_DIGITS = 6


@dataclass(slots=True)
class AgentEvent:
    """One agent event as the timeline needs it (queues/channels None: carried over)."""

    t: float
    event_id: str
    state: str
    queues: tuple[str, ...] | None
    channels: tuple[str, ...] | None
    contact: Key | None  # the (channel, queue) of the contact handled, for handle time


@dataclass(slots=True)
class Agent:
    """One agent's events from the last one before the open windows on, in event time."""

    events: list[AgentEvent] = field(default_factory=list)
    # What the pruned events left: the queues and channels in force before `events[0]`.
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    channels: tuple[str, ...] | None = None
    # What this agent added to open windows: (start, queue, state index) -> seconds, and
    # (start, (channel, queue)) -> handle seconds.
    parts: dict[tuple[float, str, int], float] = field(default_factory=dict)
    handle: dict[tuple[float, Key], float] = field(default_factory=dict)
    # `parts` and `handle` hold the time up to `settled`; with no event since (`dirty` false)
    # only the latest state (`tail`, with the queues in force) runs on, and the windows hold it
    # up to `until` (added for all such agents at once, not kept per agent).
    settled: float = -math.inf
    until: float = -math.inf
    dirty: bool = True
    tail: tuple[AgentEvent, tuple[str, ...]] | None = None

    def add(self, event: AgentEvent) -> None:
        bisect.insort(self.events, event, key=lambda e: (e.t, e.event_id))
        self.dirty = True

    def timeline(self) -> Iterator[tuple[AgentEvent, tuple[str, ...], tuple[str, ...] | None]]:
        """Each event with the queues and channels in force from it on."""
        queues, channels = self.queues, self.channels
        for event in self.events:
            queues = event.queues if event.queues is not None else queues
            channels = event.channels if event.channels is not None else channels
            yield event, queues, channels

    def current(
        self, newest: float, stale: float
    ) -> tuple[str, tuple[str, ...], tuple[str, ...] | None] | None:
        """The latest event's state, queues and channels; None when offline or stale."""
        latest = None
        for latest in self.timeline():  # noqa: B007 - the last one is wanted
            pass
        if latest is None or latest[0].state == "offline" or newest - latest[0].t > stale:
            return None
        return latest[0].state, latest[1], latest[2]


class AgentWindow:
    """Seconds per state of one (window, queue) — or of a merge of windows."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: list[float] | None = None) -> None:
        self.seconds = seconds if seconds is not None else [0.0] * len(STATES)

    def add(self, index: int, seconds: float) -> None:
        self.seconds[index] = round(self.seconds[index] + seconds, _DIGITS)

    def merge(self, other: AgentWindow) -> None:
        for index, seconds in enumerate(other.seconds):
            self.add(index, seconds)

    @property
    def activity(self) -> bool:
        return any(self.seconds)

    def state(self) -> list[float]:
        """The partials' wire format: seconds in STATES order."""
        return list(self.seconds)

    def result(self) -> dict[str, Any]:
        """The contract's §7.2 fields (without the key)."""
        available, on_contact, wrap_up, away = self.seconds
        busy = round(on_contact + wrap_up, _DIGITS)
        staffed = round(available + busy, _DIGITS)  # rounding is monotonic: busy <= staffed
        return {
            "available_seconds": available,
            "on_contact_seconds": on_contact,
            "after_contact_work_seconds": wrap_up,
            "away_seconds": away,
            "staffed_seconds": staffed,
            "occupancy_ratio": busy / staffed if staffed else None,
        }


@dataclass(slots=True)
class AgentRow:
    """One `agent_window` row: (window_start, queue); `final` once the watermark passed its end."""

    window_start: float
    window_seconds: float
    queue: str
    final: bool
    window: AgentWindow

    def as_dict(self) -> dict[str, Any]:
        return {"window_start": self.window_start, "window_seconds": self.window_seconds, "queue": self.queue,
                **self.window.result()}  # fmt: skip


class Agents:
    """Every agent of one engine, their open window parts, and the agent windows."""

    def __init__(self, width: float, stale: float, retention: float) -> None:
        self.width = width
        self.stale = stale
        self.retention = retention
        self.agents: dict[str, Agent] = {}
        self.open: dict[float, dict[str, AgentWindow]] = {}
        self.final: dict[float, dict[str, AgentWindow]] = {}
        self._changed: set[tuple[float, str]] = set()

    def observe(self, event: Event) -> None:
        assert event.agent_id is not None and event.state is not None
        contact = (event.channel, event.queue) if event.state in HANDLING else None
        agent = self.agents.get(event.agent_id)
        if agent is None:
            agent = self.agents[event.agent_id] = Agent()
        agent.add(
            AgentEvent(event.timestamp, event.event_id, event.state, event.queues, event.channels, contact)
        )

    # --- time ------------------------------------------------------------------------------

    def refresh(self, open_from: float, newest: float, handle: Callable[[Key, float, float], None]) -> None:
        """Bring every agent's parts of the open windows (from `open_from` on) up to `newest`;
        `handle(key, window_start, seconds)` adds handle time to a section 3 window. An agent with
        a new event is recomputed; every other one only runs its latest state on, and agents
        running the same state over the same span are added at once."""
        # (begin, end, state, queues, contact) -> (one such latest event, how many agents run it)
        running: dict[tuple[float, float, str, tuple[str, ...], Key | None], tuple[AgentEvent, int]] = {}
        for agent in self.agents.values():
            if agent.dirty or agent.tail is None:
                self._recompute(agent, open_from, newest, handle)
                continue
            event, queues = agent.tail
            begin, end = max(agent.until, open_from, event.t), min(newest, event.t + self.stale)
            agent.until = max(agent.until, newest)
            if event.state != "offline" and end > begin:
                key = (begin, end, event.state, queues, event.contact)
                running[key] = (event, running[key][1] + 1 if key in running else 1)
        for (begin, end, _, queues, _), (event, count) in running.items():
            added: dict[tuple[float, str, int], float] = {}
            handled: dict[tuple[float, Key], float] = {}
            self._add((added, handled), event, queues, begin, end)
            for (start, queue, index), seconds in added.items():
                self._window(start, queue).add(index, seconds * count)
            for (start, key), seconds in handled.items():
                handle(key, start, round(seconds * count, _DIGITS))

    def _recompute(self, agent: Agent, open_from: float, newest: float,
                   handle: Callable[[Key, float, float], None]) -> None:  # fmt: skip
        """The agent's parts of the open windows from its events, applied as a difference from
        what it added before (its parts and what its latest state ran on since)."""
        before, handled_before = self._added(agent, open_from)
        parts: dict[tuple[float, str, int], float] = {}
        handled: dict[tuple[float, Key], float] = {}
        timeline = list(agent.timeline())
        for i, (event, queues, _) in enumerate(timeline):
            end = timeline[i + 1][0].t if i + 1 < len(timeline) else newest
            self._add(
                (parts, handled),
                event,
                queues,
                max(event.t, open_from),
                min(end, event.t + self.stale, newest),
            )
        for (start, queue, index), seconds in _difference(before, parts):
            self._window(start, queue).add(index, seconds)
        for (start, key), seconds in _difference(handled_before, handled):
            handle(key, start, seconds)
        agent.parts, agent.handle = parts, handled
        agent.settled = agent.until = newest
        agent.dirty, agent.tail = False, timeline[-1][:2]

    def _added(self, agent: Agent, open_from: float) -> Added:
        """What the agent holds in the open windows: its parts and its latest state's run since
        `settled` (the same seconds a recomputation gives: every time is a decimal of at most
        `_DIGITS` places)."""
        parts = {k: v for k, v in agent.parts.items() if k[0] >= open_from}
        handled = {k: v for k, v in agent.handle.items() if k[0] >= open_from}
        if agent.tail is not None:
            event, queues = agent.tail
            begin = max(agent.settled, open_from, event.t)
            self._add((parts, handled), event, queues, begin, min(agent.until, event.t + self.stale))
        return parts, handled

    def _add(self, into: Added, event: AgentEvent, queues: tuple[str, ...], begin: float, end: float) -> None:
        """The seconds of `event`'s state in [begin, end), per window, into the parts (per queue)
        and, for a contact, the handle time of `into`."""
        parts, handled = into
        if end <= begin or event.state == "offline":
            return
        index = _INDEX[event.state]
        for start, seconds in self._split(begin, end):
            for queue in queues:
                part = (start, queue, index)
                parts[part] = round(parts.get(part, 0.0) + seconds, _DIGITS)
            if event.contact is not None:
                contact = (start, event.contact)
                handled[contact] = round(handled.get(contact, 0.0) + seconds, _DIGITS)

    def _split(self, begin: float, end: float) -> Iterator[tuple[float, float]]:
        """(window start, seconds) of [begin, end) cut at window boundaries."""
        start = math.floor(begin / self.width) * self.width
        while start < end:
            stop = start + self.width
            yield start, round(min(end, stop) - max(begin, start), _DIGITS)
            start = stop

    def _window(self, start: float, queue: str) -> AgentWindow:
        windows = self.open.setdefault(start, {})
        window = windows.get(queue)
        if window is None:
            window = windows[queue] = AgentWindow()
        self._changed.add((start, queue))
        return window

    def seal(self, boundary: float) -> list[AgentRow]:
        """Every open window starting before `boundary` becomes final; their final rows. The
        agents forget their parts there, and their events no longer needed."""
        rows = []
        for start in sorted(s for s in self.open if s < boundary):
            kept = {}
            for queue, window in sorted(self.open.pop(start).items()):
                self._changed.discard((start, queue))
                if window.activity:
                    rows.append(AgentRow(start, self.width, queue, True, window))
                    kept[queue] = window
            if kept:
                self.final[start] = kept
        for agent in self.agents.values():
            agent.parts = {k: v for k, v in agent.parts.items() if k[0] >= boundary}
            agent.handle = {k: v for k, v in agent.handle.items() if k[0] >= boundary}
            self._prune(agent, boundary)
        horizon = boundary - self.retention - self.width
        for start in [s for s in self.final if s < horizon]:
            del self.final[start]
        return rows

    def _prune(self, agent: Agent, boundary: float) -> None:
        """Drop the events whose time ended before `boundary` (their successor starts before it),
        keeping the queues and channels they leave in force."""
        events = agent.events
        cut = 0
        while cut + 1 < len(events) and events[cut + 1].t <= boundary:
            cut += 1
        for event in events[:cut]:
            agent.queues = event.queues if event.queues is not None else agent.queues
            agent.channels = event.channels if event.channels is not None else agent.channels
        del events[:cut]

    def forget_stale(self, newest: float, open_from: float) -> None:
        """Agents whose latest event is past the stale bound and who add to no open window."""
        gone = [name for name, agent in self.agents.items()
                if agent.events and newest - agent.events[-1].t > self.stale
                and not any(self._added(agent, open_from))]  # fmt: skip
        for name in gone:
            del self.agents[name]

    # --- output ----------------------------------------------------------------------------

    def changed_rows(self) -> list[AgentRow]:
        rows = []
        for start, queue in sorted(self._changed):
            window = self.open.get(start, {}).get(queue)
            if window is not None:
                rows.append(AgentRow(start, self.width, queue, False, window))
        self._changed.clear()
        return rows

    def pending(self) -> list[tuple[float, str]]:
        return list(self._changed)

    def all_windows(self) -> Iterable[tuple[str, float, AgentWindow]]:
        for group in (self.final, self.open):
            for start, windows in group.items():
                for queue, window in windows.items():
                    yield queue, start, window

    def current(self, newest: float) -> list[Served]:
        """Each agent's current (state, queues, channels), offline and stale agents left out."""
        found = (agent.current(newest, self.stale) for agent in self.agents.values())
        return [state for state in found if state is not None]


def _difference(old: dict[Any, float], new: dict[Any, float]) -> Iterator[tuple[Any, float]]:
    """What to add to go from `old` to `new` (both: key -> seconds)."""
    for key in old.keys() | new.keys():
        delta = round(new.get(key, 0.0) - old.get(key, 0.0), _DIGITS)
        if delta:
            yield key, delta


@dataclass(slots=True)
class AgentSummary:
    """Agents now, as the gauges need them and partials carry them: per queue, agents by state,
    and the staffed ones by the channels they serve ("*": every channel)."""

    states: dict[str, dict[str, int]] = field(default_factory=dict)
    staffed: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, current: Iterable[Served]) -> AgentSummary:
        summary = cls()
        for state, queues, channels in current:
            for queue in queues:
                by_state = summary.states.setdefault(queue, {})
                by_state[state] = by_state.get(state, 0) + 1
                if state in STAFFED:
                    by_channel = summary.staffed.setdefault(queue, {})
                    for channel in channels if channels is not None else ("*",):
                        by_channel[channel] = by_channel.get(channel, 0) + 1
        return summary

    def add(self, other: AgentSummary) -> None:
        for mine, theirs in ((self.states, other.states), (self.staffed, other.staffed)):
            for queue, counts in theirs.items():
                target = mine.setdefault(queue, {})
                for name, count in counts.items():
                    target[name] = target.get(name, 0) + count

    def staffed_for(self, channel: str, queue: str) -> int:
        """Agents staffed now who serve `queue` and `channel` (contract §7.3)."""
        counts = self.staffed.get(queue, {})
        return counts.get("*", 0) + counts.get(channel, 0)

    def state(self) -> dict[str, Any]:
        return {"states": self.states, "staffed": self.staffed}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AgentSummary:
        return cls(states=dict(state.get("states", {})), staffed=dict(state.get("staffed", {})))


def agent_rolling(
    windows: Iterable[tuple[str, float, AgentWindow]], now: float, width: float, spans: dict[str, float]
) -> dict[str, dict[str, AgentWindow]]:
    """Per rolling span and queue, the merge of the agent windows whose start lies in
    (s - span, s], s being the start of the window holding `now` (as the section 3 views)."""
    newest = math.floor(now / width) * width
    views: dict[str, dict[str, AgentWindow]] = {}
    held = list(windows)
    for name, span in spans.items():
        merged: dict[str, AgentWindow] = {}
        for queue, start, window in held:
            if newest - span < start <= newest:
                merged.setdefault(queue, AgentWindow()).merge(window)
        views[name] = {queue: window for queue, window in merged.items() if window.activity}
    return views
