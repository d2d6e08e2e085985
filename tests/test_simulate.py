"""The simulator's agents tell the same story as its conversations (pipeline/workforce.py): each
answered conversation is handled by one agent of its queue and channel, who goes on contact with
it, replies, wraps up and is free again; agents follow their queue's business hours; a normal
hour is staffed, and a spike ("fewer agents") leaves the channel short, so its customers wait."""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from functools import cache
from typing import Any

import orjson
from streaming import expected_merged

from pipeline.calendars import ALWAYS_OPEN, Calendars, load_calendars
from pipeline.engine.engine import Engine
from pipeline.events import decode_event
from pipeline.simulate import SimulationSettings, Simulator

NINE = 1_772_442_000.0  # Monday 2026-03-02 09:00 UTC, a busy hour
SPIKE_START = NINE + 1800


@cache
def day(spike: str | None = None) -> tuple[Any, ...]:
    return simulated(spike)


def simulated(
    spike: str | None = None, hours: float = 1.0, calendars: Calendars = ALWAYS_OPEN
) -> tuple[Any, ...]:
    settings = SimulationSettings(
        seed=5, start=NINE, conversations=30_000, jitter_seconds=2.0, spike_channel=spike,
        spike_start=SPIKE_START, spike_seconds=1800, calendars=calendars,
    )  # fmt: skip
    end = NINE + hours * 3600
    return tuple(itertools.takewhile(lambda e: e["timestamp"] < end + 10, Simulator(settings).events()))


def by_agent(events: tuple[Any, ...]) -> dict[str, list[dict[str, Any]]]:
    agents: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in sorted(events, key=lambda e: e["timestamp"]):
        if e["type"] == "agent_state":
            agents[e["agent_id"]].append(e)
    return agents


def test_each_agent_handles_one_contact_at_a_time_from_on_contact_to_wrap_up_to_free() -> None:
    agents = by_agent(day())
    assert len(agents) > 100
    for agent, states in agents.items():
        times = [e["timestamp"] for e in states]
        assert len(set(times)) == len(times), f"{agent} has two states at one instant"
        for before, after in itertools.pairwise(states):
            if before["state"] == "on_contact":
                assert after["state"] == "after_contact_work", agent
                assert after["conversation_id"] == before["conversation_id"]
            if before["state"] == "after_contact_work":
                assert after["state"] in ("available", "away", "offline"), agent
            if after["state"] == "on_contact":
                assert before["state"] in ("available", "after_contact_work") or before is states[0], agent
                assert after["queue"] in before.get("queues", after["queues"]), "serves the contact's queue"


def test_every_answered_conversation_is_handled_by_an_agent_of_its_queue_and_channel() -> None:
    events = day()
    contacts = {(e["agent_id"], e["conversation_id"]): e for e in events
                if e["type"] == "agent_state" and e["state"] == "on_contact"}  # fmt: skip
    wraps = {(e["agent_id"], e["conversation_id"]): e for e in events
             if e["type"] == "agent_state" and e["state"] == "after_contact_work"}  # fmt: skip
    assigned = [
        e for e in events if e["type"] == "agent_assigned" and e["timestamp"] < NINE + 3500
    ]  # not at the cut
    assert len(assigned) > 1000
    first_reply: dict[str, float] = {}
    for e in events:
        if e["type"] == "message" and e.get("author") == "agent":
            first_reply.setdefault(e["conversation_id"], e["timestamp"])
    for e in assigned:
        on = contacts[(e["agent_id"], e["conversation_id"])]
        assert on["timestamp"] == e["timestamp"]
        assert (on["channel"], on["queue"]) == (e["channel"], e["queue"])
        assert on["channels"] == [e["channel"]] and on["queues"] == [e["queue"]]
        reply = first_reply.get(e["conversation_id"])
        wrap = wraps.get((e["agent_id"], e["conversation_id"]))
        if reply is not None and wrap is not None:
            assert on["timestamp"] <= reply <= wrap["timestamp"]
    share = sum(e["type"] == "agent_state" for e in events) / len(events)
    assert 0.15 < share < 0.4, f"agent events are {share:.0%} of the stream"


def gauges_at(events: tuple[Any, ...], cuts: tuple[float, ...]) -> list[dict[Any, float]]:
    """The engine's rolling and staffing gauges after the events before each cut, in turn."""
    engine, done, seen = Engine(), 0, []
    ordered = sorted(events, key=lambda e: e["timestamp"])
    times = [e["timestamp"] for e in ordered]
    for cut in cuts:
        end = bisect.bisect_left(times, cut)
        engine.process([decode_event(orjson.dumps(e)) for e in ordered[done:end]])
        done = end
        seen.append(expected_merged([engine]))
    return seen


def test_a_normal_hour_is_staffed_and_a_spike_leaves_its_channel_short_and_waiting() -> None:
    def of(samples: dict[Any, float], name: str, channel: str, queue: str) -> float:
        return samples[(name, (("channel", channel), ("queue", queue)))]

    during = SPIKE_START + 900
    *calms, normal = gauges_at(day(), (NINE + 900, NINE + 1200, SPIKE_START, during))
    pools = list(itertools.product(("phone", "chat"), ("billing", "tech", "sales")))
    # A calm half hour (the rows need 15 minutes). Chance moves the agents Erlang C asks for from
    # minute to minute; the roster has room for it.
    ratios = [of(calm, "ccpipe_agents_staffed", *pool) / of(calm, "ccpipe_agents_required", *pool)
              for calm in calms for pool in pools]  # fmt: skip
    assert sum(ratios) / len(ratios) > 1.1 and sum(r >= 1 for r in ratios) >= 0.8 * len(ratios), ratios
    occupancy = [v for (name, labels), v in calms[-1].items() if name == "ccpipe_agent_occupancy_ratio"
                 and ("window", "15m") in labels]  # fmt: skip
    assert occupancy and all(0.3 < v < 0.95 for v in occupancy)

    (short,) = gauges_at(day("phone"), (during,))
    for queue in ("billing", "tech", "sales"):
        assert of(short, "ccpipe_agents_staffed", "phone", queue) < of(
            short, "ccpipe_agents_required", "phone", queue
        )
        chat = of(normal, "ccpipe_agents_staffed", "chat", queue)  # the same roster, other contacts
        assert abs(of(short, "ccpipe_agents_staffed", "chat", queue) - chat) <= 0.1 * chat
    p90 = (
        "ccpipe_frt_seconds",
        (("channel", "phone"), ("quantile", "0.9"), ("queue", "billing"), ("window", "5m")),
    )
    assert short[p90] > 3 * normal[p90]
    level = ("ccpipe_service_level_ratio", (("channel", "phone"), ("queue", "billing"), ("window", "15m")))
    assert short[level] < 0.5 < normal[level]
    away = ("ccpipe_agents", (("queue", "billing"), ("state", "away")))
    assert short[away] > normal[away]


def test_agents_work_only_while_their_queue_is_open() -> None:
    sales_from_ten = load_calendars({
        "calendars": {"us": {"timezone": "UTC", "hours": {"mon": ["10:00-17:00"]}}},
        "queues": {"sales": "us"},
    })  # fmt: skip
    events = simulated(hours=2.0, calendars=sales_from_ten)
    ten = NINE + 3600
    sales = [e for e in events if e["type"] == "agent_state" and "sales" in e.get("queues", ())]
    assert sales and all(e["timestamp"] >= ten for e in sales), "no sales agent before the queue opens"
    answered = [e for e in events if e["type"] == "agent_assigned" and e["queue"] == "sales"]
    assert answered and min(e["timestamp"] for e in answered) >= ten
    waiting = [e for e in events if e["type"] == "conversation_started" and e["queue"] == "sales"
               and e["timestamp"] < ten and e["channel"] == "email"]  # fmt: skip
    assert waiting, "emails to sales before ten wait for the opening"


def test_a_warmed_up_day_starts_mid_flow_with_whole_conversations_and_busy_agents() -> None:
    settings = SimulationSettings(seed=9, start=NINE, conversations=30_000, jitter_seconds=2.0, warm_up=1800)
    events = list(itertools.takewhile(lambda e: e["timestamp"] < NINE + 600, Simulator(settings).events()))
    assert min(e["timestamp"] for e in events) == NINE
    started = {e["conversation_id"] for e in events if e["type"] == "conversation_started"}
    others = {e["conversation_id"] for e in events if e["type"] != "agent_state"}
    assert started and others <= started, "only conversations whose start is sent"
    first = {}
    for e in sorted((e for e in events if e["type"] == "agent_state"), key=lambda e: e["timestamp"]):
        first.setdefault(e["agent_id"], e)
    busy = [e for e in first.values() if e["timestamp"] == NINE and e["state"] == "on_contact"]
    assert len(busy) > 0.3 * len(first), "agents are busy from the first second"
