"""Contract §6 in the engine, hand-computed: resolution time (also after a reopen), service level
with short abandons (an abandon at exactly S seconds is not short), business-hours FRT in window
rows and conversation records; defaults change nothing of sections 2-5."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from support import T0, Run, agent_msg, customer_msg, event

from pipeline.calendars import load_calendars
from pipeline.settings import EngineSettings

# T0 is Monday 2026-03-02 09:00 UTC, 10:00 in Berlin.


def test_resolution_time_is_measured_to_the_latest_resolution_and_moves_with_it() -> None:
    run = Run([
        event("s", "conversation_started", "A", 0),
        agent_msg("r", "A", 30),
        event("x1", "conversation_resolved", "A", 100),
        event("o", "conversation_reopened", "A", 150),
        event("x2", "conversation_resolved", "A", 250),
        event("s2", "conversation_started", "B", 10),
        event("y", "conversation_resolved", "B", 70),
        event("z", "conversation_resolved", "C", 20),  # no start: no resolution time
        event("t", "conversation_started", "D", 40),  # resolved before its start: none either
        event("u", "conversation_resolved", "D", 30),
        event("late", "conversation_started", "E", 400),
    ])  # fmt: skip
    assert run.conversation("A")["resolution_seconds"] == 250
    assert run.conversation("B")["resolution_seconds"] == 60
    assert run.conversation("C")["resolution_seconds"] is None
    assert run.conversation("D")["resolution_seconds"] is None
    # B's sample in the window of its resolution; A's moved from minute 1 to minute 4.
    assert run.window(1)["resolutions_timed"] == 1 and run.window(1)["resolution_mean_seconds"] == 60
    assert run.window(1)["resolved"] == 2  # A's first resolution still counts as a resolution
    assert run.window(4)["resolutions_timed"] == 1 and run.window(4)["resolution_p90_seconds"] == 250
    assert run.window(0)["resolutions_timed"] == 0 and run.window(0)["resolution_mean_seconds"] is None


def test_a_resolution_long_after_a_final_window_goes_to_its_own_window() -> None:
    """The first resolution's window is final when the second arrives: it keeps its sample (final
    windows never change) and the second resolution's window gets the current one."""
    run = Run([
        event("s", "conversation_started", "A", 0),
        event("x1", "conversation_resolved", "A", 100),
        event("o", "conversation_reopened", "A", 3000),
        event("x2", "conversation_resolved", "A", 3700),
    ])  # fmt: skip
    assert run.conversation("A")["resolution_seconds"] == 3700
    assert run.window(1)["resolution_mean_seconds"] == 100
    assert run.window(61)["resolution_mean_seconds"] == 3700


def test_resolution_quantiles_over_several_conversations() -> None:
    events = []
    for n, seconds in enumerate([10, 20, 30, 40, 50, 60, 70, 80, 90, 100]):
        events += [event(f"s{n}", "conversation_started", f"c{n}", 120 - seconds),
                   event(f"r{n}", "conversation_resolved", f"c{n}", 120)]  # fmt: skip
    row = Run(events).window(2)
    assert row["resolutions_timed"] == 10 and row["resolution_mean_seconds"] == 55
    assert row["resolution_p50_seconds"] == 50 and row["resolution_p90_seconds"] == 90  # floor(p(n-1))


def _service_level_events() -> list[dict[str, object]]:
    return [
        event("a0", "conversation_started", "fast", 0, channel="phone"), agent_msg("a1", "fast", 10, channel="phone"),
        event("b0", "conversation_started", "slow", 1, channel="phone"), agent_msg("b1", "slow", 31, channel="phone"),
        event("c0", "conversation_started", "short", 2, channel="phone"),
        event("c1", "conversation_abandoned", "short", 6.9, channel="phone"),
        event("d0", "conversation_started", "edge", 3, channel="phone"),
        event("d1", "conversation_abandoned", "edge", 8, channel="phone"),  # exactly S = 5 s: not short
        event("e0", "conversation_started", "long", 4, channel="phone"),
        event("e1", "conversation_abandoned", "long", 50, channel="phone"),
        event("f1", "conversation_abandoned", "nostart", 5, channel="phone"),  # no start: never short
    ]  # fmt: skip


def test_service_level_counts_abandons_as_misses_unless_short() -> None:
    row = Run(_service_level_events(), EngineSettings(short_abandon_seconds=5)).window(0, channel="phone")
    assert row["first_responses"] == 2 and row["abandoned"] == 4 and row["abandoned_short"] == 1
    assert row["frt_sla_ratio"] == 0.5  # answered only: 10 s within 20 s, 30 s not
    assert row["service_level_ratio"] == pytest.approx(1 / (2 + 4 - 1))


def test_without_a_threshold_no_abandon_is_short() -> None:
    row = Run(_service_level_events()).window(0, channel="phone")
    assert row["abandoned_short"] == 0 and row["service_level_ratio"] == pytest.approx(1 / 6)


def test_service_level_is_null_without_contacts_and_short_abandons_alone() -> None:
    events = [event("c0", "conversation_started", "x", 0, channel="phone"),
              event("c1", "conversation_abandoned", "x", 2, channel="phone")]  # fmt: skip
    row = Run(events, EngineSettings(short_abandon_seconds=5)).window(0, channel="phone")
    assert row["abandoned_short"] == 1 and row["service_level_ratio"] is None


BERLIN_WEEKDAYS = load_calendars({
    "calendars": {"default": {"timezone": "Europe/Berlin",
                              "hours": {d: ["08:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")}}},
    "queues": {},
})  # fmt: skip


def berlin(text: str) -> float:
    """Seconds after T0 of a Berlin wall time."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("Europe/Berlin")).timestamp() - T0


def test_business_frt_skips_a_closed_night() -> None:
    night = [customer_msg("m", "N", berlin("2026-03-02T22:00"), channel="email"),
             agent_msg("r", "N", berlin("2026-03-03T08:05"), channel="email"),
             customer_msg("m2", "D", berlin("2026-03-03T08:01"), channel="email"),
             agent_msg("r2", "D", berlin("2026-03-03T08:05"), channel="email")]  # fmt: skip
    run = Run(night, EngineSettings(calendars=BERLIN_WEEKDAYS))
    assert run.conversation("N")["frt_seconds"] == 10 * 3600 + 300
    assert run.conversation("N")["frt_business_seconds"] == 300
    minute = round((berlin("2026-03-03T08:05")) / 60)
    row = run.window(minute, channel="email")
    assert row["frt_mean_seconds"] == (36300 + 240) / 2
    assert row["frt_business_mean_seconds"] == (300 + 240) / 2
    assert row["frt_business_p90_seconds"] == 240  # rank floor(0.9 * 1) = 0 of [240, 300]
    assert row["frt_business_sla_ratio"] == 1.0 and row["frt_sla_ratio"] == 0.5  # email target 3600 s


def test_an_always_open_queue_has_business_frt_equal_to_frt() -> None:
    run = Run([customer_msg("m", "A", 0), agent_msg("r", "A", 42.5)])
    assert run.conversation("A")["frt_business_seconds"] == run.conversation("A")["frt_seconds"] == 42.5
    assert (
        run.window(0)["frt_business_p90_seconds"] == 42.5 and run.window(0)["frt_business_sla_ratio"] == 1.0
    )


def test_a_conversation_moving_queue_is_measured_on_its_new_queue_calendar() -> None:
    calendars = load_calendars({
        "calendars": {"closed": {"timezone": "UTC", "hours": {}}},
        "queues": {"billing": "closed"},
    })  # fmt: skip
    # The reply arrives first under queue "tech" (open); the earlier customer message says "billing".
    run = Run([agent_msg("r", "A", 60, queue="tech"), customer_msg("m", "A", 0, queue="billing")],
              EngineSettings(calendars=calendars))  # fmt: skip
    assert run.conversation("A")["queue"] == "billing" and run.conversation("A")["frt_business_seconds"] == 0
    assert run.window(1)["frt_business_mean_seconds"] == 0
    assert (T0 + 60, "chat", "tech") not in run.windows
