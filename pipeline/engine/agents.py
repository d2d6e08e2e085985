"""Agents (contract §7): each agent's states in event time, split into tumbling windows.

An agent's event holds from its time to the agent's next event (in event time), the latest one
until the newest event time, and none longer than the stale bound; `offline` time counts
nowhere. Agent time goes to the window rows of every queue the agent serves (`agent_window`),
and the time in `on_contact` and `after_contact_work` also to the handle time of the contact's
(channel, queue) in the section 3 window rows.

Windows that are final never change, so only the open part — from the watermark's window
boundary to the newest event time — ever changes: agents whose latest state runs on are moved
on together per distinct run, and an agent with a new event has its timeline from that event on
taken out of the open windows and put in again with the event. Results do not depend on arrival
order within the allowed lateness nor on how the input is cut into batches, since a window is
sealed only after every agent's time up to that moment has been added.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.engine.pickling import by_attributes, by_fields
from pipeline.events import DEFAULT_QUEUE, HANDLING, Event

Key = tuple[str, str]  # (channel, queue)
Served = tuple[str, tuple[str, ...], tuple[str, ...] | None]  # (state, queues, channels or None: all)
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

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)


# The run of an agent's latest state, as agent time needs it: (state, queues, contact).
RunKey = tuple[str, tuple[str, ...], Key | None]


@dataclass(slots=True)
class Run:
    """The agents running one latest state: how many, up to when their time is accounted for,
    and the agent seconds per window start accounted for but not yet in the windows (`settle`
    adds them; until then the time costs one addition per window, not one per queue and read)."""

    count: int
    ran: float
    owed: dict[float, float] = field(default_factory=dict)

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)


@dataclass(slots=True)
class Agent:
    """One agent's events from the last one before the open windows on, in event time."""

    events: list[AgentEvent] = field(default_factory=list)
    # What the pruned events left: the queues and channels in force before `events[0]`.
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    channels: tuple[str, ...] | None = None
    # Events received but not yet in the windows (the next refresh puts them there).
    fresh: list[AgentEvent] = field(default_factory=list)
    # The run of the latest state the windows are being given, None when offline or stale.
    running: RunKey | None = None
    served: Served | None = None  # its state, queues and channels while running

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)

    def latest(self) -> tuple[AgentEvent, tuple[str, ...], tuple[str, ...] | None]:
        """The latest event with the queues and channels in force from it on."""
        queues, channels = self.queues, self.channels
        for event in self.events:
            queues = event.queues if event.queues is not None else queues
            channels = event.channels if event.channels is not None else channels
        return self.events[-1], queues, channels


class AgentWindow:
    """Seconds per state of one (window, queue) — or of a merge of windows."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: list[float] | None = None) -> None:
        self.seconds = seconds if seconds is not None else [0.0] * len(STATES)

    def __reduce__(self) -> tuple[Any, ...]:
        return by_attributes(self, ())

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

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)

    def as_dict(self) -> dict[str, Any]:
        return {"window_start": self.window_start, "window_seconds": self.window_seconds, "queue": self.queue,
                **self.window.result()}  # fmt: skip


class Agents:
    """Every agent of one engine and the agent windows.

    The open windows hold every agent's time up to `since` (the newest event time of the last
    refresh), but for what the runs owe them until the next `settle`. Agents whose latest state
    runs on are counted per run, so moving time on costs one addition per distinct run and
    window, not one per agent; an agent with new events is corrected from its earliest new
    event on: its old timeline there taken out, the new one put in (exact: every time is a
    decimal of at most `_DIGITS` places, each sum rounded to it)."""

    __slots__ = ("_changed", "_deadlines", "_fresh", "_idle", "_sequence", "agents", "final", "open",
                 "retention", "running", "serving", "settled", "since", "stale", "width")  # fmt: skip

    def __init__(self, width: float, stale: float, retention: float) -> None:
        self.width = width
        self.stale = stale
        self.retention = retention
        self.agents: dict[str, Agent] = {}
        self.open: dict[float, dict[str, AgentWindow]] = {}
        self.final: dict[float, dict[str, AgentWindow]] = {}
        self.since = -math.inf
        self.settled = -math.inf  # when the runs last paid what they owed
        self.running: dict[RunKey, Run] = {}
        self.serving: dict[Served, int] = {}  # running agents by (state, queues, channels)
        # (stale bound, sequence, agent, its latest event) of running agents; entries of an
        # agent's earlier latest events are skipped when they come up.
        self._deadlines: list[tuple[float, int, str, AgentEvent]] = []
        self._sequence = 0
        self._fresh: dict[str, Agent] = {}
        self._idle: set[str] = set()  # not running: offline or stale, forgotten once past the windows
        self._changed: set[tuple[float, str]] = set()

    def __reduce__(self) -> tuple[Any, ...]:
        return by_attributes(self, (self.width, self.stale, self.retention))

    def observe(self, event: Event) -> None:
        assert event.agent_id is not None and event.state is not None
        contact = (event.channel, event.queue) if event.state in HANDLING else None
        agent = self.agents.get(event.agent_id)
        if agent is None:
            agent = self.agents[event.agent_id] = Agent()
        agent.fresh.append(
            AgentEvent(event.timestamp, event.event_id, event.state, event.queues, event.channels, contact)
        )
        self._fresh[event.agent_id] = agent

    # --- time ------------------------------------------------------------------------------

    def refresh(self, open_from: float, newest: float, handle: Callable[[Key, float, float], None]) -> None:
        """Account for every agent's time in the open windows (from `open_from` on) up to
        `newest`, owed by the runs until `settle` where it can be. New events after an agent's
        last one and after `since` (nearly all) move the agent from run to run at their times,
        in time order with the runs' stale bounds; an agent with any other new event leaves its
        run at `since` and has its timeline from its earliest new event on taken out of the
        windows and put in again. `handle(key, window_start, seconds)` adds handle time to a
        section 3 window."""
        since = self.since
        moves: list[tuple[float, str, str, AgentEvent]] = []
        corrected: list[tuple[str, Agent]] = []
        for name, agent in self._fresh.items():
            earliest = min((event.t, event.event_id) for event in agent.fresh)
            last = agent.events[-1] if agent.events else None
            if earliest[0] >= since and (last is None or earliest > (last.t, last.event_id)):
                moves.extend((event.t, event.event_id, name, event) for event in agent.fresh)
            else:
                corrected.append((name, agent))
                if agent.running is not None:
                    self._accrue(self.running[agent.running], since, open_from)
                    self._stop(name, agent)
        moves.sort(key=lambda move: (move[0], move[1]))
        for t, _, name, event in moves:
            self._expire(t, open_from)
            agent = self.agents[name]
            if agent.running is not None:
                self._accrue(self.running[agent.running], t, open_from)
                self._stop(name, agent)
            agent.events.append(event)
            self._join(name, agent, t, open_from)
        self._expire(newest, open_from)
        for _, agent in corrected:
            # the timelines agree before the first new event: the old one out, the new one in
            first = max(min(since, *(event.t for event in agent.fresh)), open_from)
            self._timeline(agent, first, since, -1, handle)
            for event in agent.fresh:
                bisect.insort(agent.events, event, key=lambda e: (e.t, e.event_id))
            self._timeline(agent, first, newest, 1, handle)
        self.since = newest
        for name, agent in corrected:
            self._join(name, agent, newest, open_from)
        for agent in self._fresh.values():
            agent.fresh = []
            self._prune(agent, open_from)
        self._fresh = {}
        deadlines = self._deadlines
        if len(deadlines) > 2 * len(self.agents) + 64:  # drop the skipped entries
            self._deadlines = [entry for entry in deadlines if self._live(entry) is not None]
            heapq.heapify(self._deadlines)

    def _expire(self, until: float, open_from: float) -> None:
        """Runs of latest states whose stale bound comes before `until` lose them there."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] < until:
            entry = heapq.heappop(deadlines)
            agent = self._live(entry)
            if agent is not None and agent.running is not None:
                self._accrue(self.running[agent.running], entry[0], open_from)
                self._stop(entry[2], agent)

    def settle(
        self, open_from: float, handle: Callable[[Key, float, float], None], before: float = math.inf
    ) -> None:
        """Every run's time up to `since` into the windows starting before `before` (all: before
        they are read; those about to be sealed: at a window boundary)."""
        for key, run in list(self.running.items()):
            self._accrue(run, self.since, open_from)
            owed = run.owed
            for start in [start for start in owed if start < before]:
                self._apply(key, start, owed.pop(start), handle)
            if not run.count and not owed:
                del self.running[key]
        if before == math.inf:
            self.settled = self.since

    def owing(self, open_from: float) -> tuple[list[float], set[Key]]:
        """The window starts and the (channel, queue) of handle time that runs change until the
        next `settle`: what a batch holding back its rows must list as changed."""
        if not self.running:
            return [], set()
        starts = [start for start, _ in self._split(max(self.settled, open_from), self.since)]
        return starts, {key[2] for key in self.running if key[2] is not None}

    def _accrue(self, run: Run, until: float, open_from: float) -> None:
        """The run's agent seconds from where it stands to `until`, owed per window."""
        if run.count and until > run.ran:
            owed = run.owed
            for start, piece in self._split(max(run.ran, open_from), until):
                owed[start] = round(owed.get(start, 0.0) + piece * run.count, _DIGITS)
        run.ran = max(run.ran, until)

    def _live(self, entry: tuple[float, int, str, AgentEvent]) -> Agent | None:
        """The running agent whose latest event a deadline entry names, else None."""
        agent = self.agents.get(entry[2])
        live = agent is not None and agent.running is not None and agent.events[-1] is entry[3]
        return agent if live else None

    def _timeline(self, agent: Agent, begin: float, until: float, sign: int,
                  handle: Callable[[Key, float, float], None]) -> None:  # fmt: skip
        """Add (`sign` 1) or take out (-1) the agent's time in [begin, until)."""
        queues, events = agent.queues, agent.events
        for i, event in enumerate(events):
            queues = event.queues if event.queues is not None else queues
            end = min(events[i + 1].t if i + 1 < len(events) else until, event.t + self.stale, until)
            if end > begin and event.state != "offline":
                run = (event.state, queues, event.contact)
                for start, seconds in self._split(max(event.t, begin), end):
                    self._apply(run, start, seconds * sign, handle)

    def _join(self, name: str, agent: Agent, at: float, open_from: float) -> None:
        """Count the agent in the run of its latest state from `at` on, unless offline or stale."""
        event, queues, channels = agent.latest()
        deadline = event.t + self.stale
        if event.state == "offline" or deadline < at:
            self._idle.add(name)
            return
        self._idle.discard(name)
        key = agent.running = (event.state, queues, event.contact)
        served = agent.served = (event.state, queues, channels)
        self.serving[served] = self.serving.get(served, 0) + 1
        run = self.running.get(key)
        if run is None:
            run = self.running[key] = Run(0, at)
        self._accrue(run, at, open_from)
        run.count += 1
        self._sequence += 1
        heapq.heappush(self._deadlines, (deadline, self._sequence, name, event))

    def _stop(self, name: str, agent: Agent) -> None:
        """Take the agent out of the run it is counted in (its time accrued up to now)."""
        if agent.running is not None and agent.served is not None:
            self.running[agent.running].count -= 1
            count = self.serving.pop(agent.served) - 1
            if count:
                self.serving[agent.served] = count
            agent.running = agent.served = None
            self._idle.add(name)

    def _apply(self, run: RunKey, start: float, seconds: float,
               handle: Callable[[Key, float, float], None]) -> None:  # fmt: skip
        """Seconds of `run`'s state in the window at `start`: to each of its queues and, for a
        contact, to the handle time of its (channel, queue)."""
        seconds = round(seconds, _DIGITS)
        state, queues, contact = run
        index = _INDEX[state]
        for queue in queues:
            self._window(start, queue).add(index, seconds)
        if contact is not None:
            handle(contact, start, seconds)

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
        """Every open window starting before `boundary` becomes final; their final rows."""
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
        """Agents offline or stale whose time lies wholly before the open windows keep only the
        queues and channels in force (an agent's next event carries them over, §7.1)."""
        for name in list(self._idle):
            agent = self.agents[name]
            last, queues, channels = agent.latest()
            end = last.t if last.state == "offline" else last.t + self.stale
            if newest - last.t > self.stale and end <= open_from:
                agent.events, agent.queues, agent.channels = [], queues, channels
                self._idle.discard(name)

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

    def current(self) -> list[tuple[Served, int]]:
        """The agents' current (state, queues, channels) as of the last refresh, with how many
        agents are in each; offline and stale agents left out."""
        assert not self._fresh, "refresh before asking for the current states"
        return list(self.serving.items())


@dataclass(slots=True)
class AgentSummary:
    """Agents now, as the gauges need them and partials carry them: per queue, agents by state,
    and the staffed ones by the channels they serve ("*": every channel)."""

    states: dict[str, dict[str, int]] = field(default_factory=dict)
    staffed: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, current: Iterable[tuple[Served, int]]) -> AgentSummary:
        """From (state, queues, channels) and how many agents are in it."""
        summary = cls()
        for (state, queues, channels), count in current:
            for queue in queues:
                by_state = summary.states.setdefault(queue, {})
                by_state[state] = by_state.get(state, 0) + count
                if state in STAFFED:
                    by_channel = summary.staffed.setdefault(queue, {})
                    for channel in channels if channels is not None else ("*",):
                        by_channel[channel] = by_channel.get(channel, 0) + count
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
