"""The simulator's agents: a roster that staffs each (channel, queue) hour by hour with what
Erlang C asks for its forecast load, and each agent's day told as `agent_state` events.

Agent i of a channel works an hour when that hour needs more than i of the channel's agents;
the queues take the working agents in a fixed order, so when their needs shift, an agent
changes queue at the hour (a queue change). Each block of work has a 15-minute break in its
third hour. In a spike ("fewer agents") all but 1/factor of each queue's agents on the channel
are pulled into a meeting. Contacts are claimed in arrival order by the agent of the queue who
can start first; when every one is busy, the customer waits (or hangs up), so understaffing
shows as it does in a real center: longer first replies, abandons, a service level going bad.

Events of an agent's schedule (log on, break, queue change, log off) are planned an hour ahead;
a contact claimed later cancels the planned ones it covers, and the agent's state after the
wrap-up is the schedule's at that moment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pipeline.staffing import required_agents

HOUR = 3600.0
BREAK_SECONDS = 900.0
PICKUP_SECONDS = 2.0  # between an agent becoming free (or logging on) and the next contact
ROSTER_SERVICE_LEVEL = 0.95  # the roster aims above the contract's default (0.8) ...
ROSTER_ANSWER_SHARE = 0.25  # ... within a quarter of the channel's target (at most a minute:
ROSTER_ANSWER_MAX = 60.0  # a long target alone would leave no room for chance),
ROSTER_SHRINKAGE = 0.2  # ... with a margin for breaks, as a planner would

Segment = tuple[float, float, str, str]  # start, end, state (available, away, offline), queue
Emit = Callable[[float, dict[str, Any]], int]  # (event time, event) -> a handle to cancel it


@dataclass(frozen=True, slots=True)
class Spike:
    """`keep` of each queue's agents on `channel` stay; the others are in a meeting."""

    channel: str | None = None
    start: float = 0.0
    end: float = 0.0
    keep: float = 1.0


@dataclass(slots=True)
class Agent:
    agent_id: str
    channel: str
    index: int
    free_at: float = -math.inf  # end of the current contact's wrap-up
    planned: list[tuple[float, int]] = field(default_factory=list)  # (time, handle) of schedule events


class Workforce:
    """The roster, the agents and their claims. `arrivals(channel, queue, hour)` is the
    forecast rate of offered contacts per second, `handle` each channel's mean handle time,
    `targets` each channel's FRT target."""

    def __init__(
        self,
        queues: tuple[str, ...],
        *,
        arrivals: Callable[[str, str, int], float],
        handle: Mapping[str, float],
        targets: Callable[[str], float],
        spike: Spike,
        emit: Emit,
        cancel: Callable[[int], None],
    ) -> None:
        self.queues = queues
        self.arrivals = arrivals
        self.handle = handle
        self.targets = targets
        self.spike = spike
        self.emit = emit
        self.cancel = cancel
        self.agents: dict[tuple[str, int], Agent] = {}
        self._planned_hour: int | None = None
        self._turn: dict[tuple[str, str], int] = {}
        self.need = lru_cache(maxsize=16384)(self._need)
        self.shares = lru_cache(maxsize=16384)(self._shares)
        self.segments = lru_cache(maxsize=65536)(self._segments)

    # The roster: pure functions of (channel, queue or agent, hour).

    def _need(self, channel: str, queue: str, hour: int) -> int:
        """Erlang C on the hour's forecast, or on the hour before while the queue stays open: agents
        stay on while the contacts of a busier hour are still being handled."""
        rate = self.arrivals(channel, queue, hour)
        if rate > 0:
            rate = max(rate, self.arrivals(channel, queue, hour - 1))
        load = rate * self.handle[channel]
        agents, _ = required_agents(
            load, self.handle[channel], min(ROSTER_ANSWER_SHARE * self.targets(channel), ROSTER_ANSWER_MAX),
            service_level=ROSTER_SERVICE_LEVEL, shrinkage=ROSTER_SHRINKAGE,
        )  # fmt: skip
        return agents

    def _shares(self, channel: str, hour: int) -> dict[str, range]:
        """The indexes of the channel's agents each queue takes in `hour`, in the queues' order."""
        shares, before = {}, 0
        for queue in self.queues:
            need = self.need(channel, queue, hour)
            shares[queue] = range(before, before + need)
            before += need
        return shares

    def duty(self, channel: str, index: int, hour: int) -> tuple[str, int] | None:
        """The queue agent `index` serves in `hour` and its rank among that queue's agents."""
        for queue, indexes in self.shares(channel, hour).items():
            if index in indexes:
                return queue, index - indexes.start
        return None

    def _segments(self, channel: str, index: int, hour: int) -> tuple[Segment, ...]:
        """The agent's schedule in `hour`: available for a queue, away (break, meeting) or offline."""
        h0 = hour * HOUR
        duty = self.duty(channel, index, hour)
        if duty is None:
            return ((h0, h0 + HOUR, "offline", ""),)
        queue, rank = duty
        away: list[tuple[float, float]] = []
        run = 1
        while run < 8 and self.duty(channel, index, hour - run) is not None:
            run += 1
        if run in (3, 7):  # a break in the third (and seventh) hour of a block
            begin = h0 + 300.0 + (index * 617) % 2400
            away.append((begin, begin + BREAK_SECONDS))
        spike = self.spike
        pulled = spike.channel == channel and rank >= math.ceil(self.need(channel, queue, hour) * spike.keep)
        if pulled and spike.start < h0 + HOUR and spike.end > h0:
            away.append((max(h0, spike.start), min(h0 + HOUR, spike.end)))
        cuts: list[Segment] = []
        at = h0
        for begin, end in sorted(away):
            if end <= at:
                continue
            if begin > at:
                cuts.append((at, begin, "available", queue))
            cuts.append((max(at, begin), end, "away", queue))
            at = end
        if at < h0 + HOUR:
            cuts.append((at, h0 + HOUR, "available", queue))
        return tuple(cuts)

    def state_at(self, agent: Agent, t: float) -> tuple[str, str]:
        for start, end, state, queue in self.segments(agent.channel, agent.index, int(t // HOUR)):
            if start <= t < end:
                return state, queue
        raise AssertionError("segments cover their hour")  # pragma: no cover

    # Planning the schedule's events an hour ahead.

    def plan_until(self, t: float) -> None:
        """Plan every agent's schedule events up to the end of the hour after `t`."""
        last = int(t // HOUR) + 1
        if self._planned_hour is None:
            self._begin(t)
        assert self._planned_hour is not None
        while self._planned_hour < last:
            self._planned_hour += 1
            self._plan_hour(self._planned_hour)

    def _begin(self, t: float) -> None:
        """Mid-flow: each agent at work when the simulation starts says so at its start."""
        hour = int(t // HOUR)
        for channel in self.handle:
            for index in range(self._staff(channel, hour)):
                agent = self._agent(channel, index)
                state, queue = self.state_at(agent, t)
                if state != "offline":
                    self._plan(agent, t, state, queue)
                for start, _, state, queue in self.segments(channel, index, hour):
                    if start > t:
                        self._plan(agent, start, state, queue)
        self._planned_hour = hour

    def _staff(self, channel: str, hour: int) -> int:
        return sum(len(indexes) for indexes in self.shares(channel, hour).values())

    def _plan_hour(self, hour: int) -> None:
        for channel in self.handle:
            staff = max(self._staff(channel, hour), self._staff(channel, hour - 1))
            for index in range(staff):
                agent = self._agent(channel, index)
                before = self.segments(channel, index, hour - 1)[-1][2:]
                for start, _, state, queue in self.segments(channel, index, hour):
                    if (state, queue) != before and start > agent.free_at:  # a busy agent says it later
                        self._plan(agent, start, state, queue)
                    before = (state, queue)

    def _agent(self, channel: str, index: int) -> Agent:
        key = (channel, index)
        if key not in self.agents:
            self.agents[key] = Agent(f"{channel}-{index:03d}", channel, index)
        return self.agents[key]

    def _plan(self, agent: Agent, t: float, state: str, queue: str) -> None:
        agent.planned = [(at, handle) for at, handle in agent.planned if at > t - HOUR]  # keep it short
        agent.planned.append((t, self.emit(t, self._event(agent, state, queue))))

    def _event(
        self, agent: Agent, state: str, serves: str, contact: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        event: dict[str, Any] = {"type": "agent_state", "agent_id": agent.agent_id, "state": state}
        if state != "offline":
            event |= {"queues": [serves], "channels": [agent.channel]}
        if state == "away":
            event["reason"] = "break"
        return event | (contact or {})

    # Claims.

    def claim(self, channel: str, queue: str, earliest: float, latest: float) -> tuple[Agent, float] | None:
        """The agent of (channel, queue) who can start first at or after `earliest`, and when;
        None when nobody can start before `latest` (the customer gives up)."""
        hour = int(earliest // HOUR)
        while hour * HOUR < latest:
            candidates = self.shares(channel, hour)[queue]
            if candidates:
                best: tuple[Agent, float] | None = None
                turn = self._turn.get((channel, queue), 0)
                floor = max(earliest, hour * HOUR)
                for k in range(len(candidates)):
                    agent = self._agent(channel, candidates[(turn + k) % len(candidates)])
                    start = self._start(agent, queue, hour, earliest)
                    if start is not None and (best is None or start < best[1]):
                        best = (agent, start)
                        if start <= floor + PICKUP_SECONDS:
                            self._turn[(channel, queue)] = turn + k + 1
                            break
                if best is not None:
                    return best if best[1] < latest else None
            hour += 1
        return None

    def _start(self, agent: Agent, queue: str, hour: int, earliest: float) -> float | None:
        ready = max(earliest, agent.free_at + PICKUP_SECONDS)
        for start, end, state, serves in self.segments(agent.channel, agent.index, hour):
            if state == "available" and serves == queue and end > ready:
                return max(ready, start + PICKUP_SECONDS)
        return None

    def handle_contact(
        self, agent: Agent, start: float, handle_end: float, wrap_up: float, contact: dict[str, Any]
    ) -> None:
        """The agent is on contact from `start`, wraps up from `handle_end` for `wrap_up`
        seconds, and is then in whatever state the schedule says."""
        free = handle_end + wrap_up
        for at, handle in agent.planned:
            if start <= at <= free:
                self.cancel(handle)
        agent.planned = [(at, handle) for at, handle in agent.planned if at > free]
        queue = contact["queue"]
        self.emit(start, self._event(agent, "on_contact", queue, contact))
        self.emit(handle_end, self._event(agent, "after_contact_work", queue, contact))
        state, now_serves = self.state_at(agent, free)
        self.emit(free, self._event(agent, state, now_serves or queue))
        agent.free_at = free
