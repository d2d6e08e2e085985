"""Contract §7.2: agent time windows and handle time, on the worked example, hand-computed
scenarios and Hypothesis properties (time conserved, occupancy in [0, 1], arrival order within
the lateness changes no row)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import T0, Run, customer_msg, decoded

from pipeline.engine import Engine
from pipeline.engine.agents import STATES
from pipeline.settings import EngineSettings

EXAMPLE = Path(__file__).parent / "data" / "example" / "agents"


def agent(event_id: str, who: str, state: str, t: float, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "agent_state", "agent_id": who, "state": state,
            "timestamp": T0 + t, **fields}  # fmt: skip


class AgentRun(Run):
    """A run whose agent rows are read by minute and queue."""

    def row(self, minute: int, queue: str) -> dict[str, Any]:
        return self.agents[(T0 + 60 * minute, queue)]


def test_compute_writes_the_worked_example_field_by_field(tmp_path: Path) -> None:
    out = {name: tmp_path / f"{name}.jsonl" for name in ("windows", "conversations", "agents")}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "compute", "--input", str(EXAMPLE / "events.jsonl"),
         "--windows-out", str(out["windows"]), "--conversations-out", str(out["conversations"]),
         "--agent-windows-out", str(out["agents"])], capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and b"line 17: out_of_range: state 'lunch'" in result.stderr
    want = [json.loads(line) for line in (EXAMPLE / "agent_windows.jsonl").read_text().splitlines()]
    got = [json.loads(line) for line in out["agents"].read_text().splitlines()]
    assert [(r["window_start"], r["queue"]) for r in got] == [(r["window_start"], r["queue"]) for r in want]
    for mine, theirs in zip(got, want, strict=True):
        assert mine.keys() == theirs.keys()
        for field, value in theirs.items():
            assert mine[field] == pytest.approx(value, abs=1e-6) if value is not None else mine[field] is None
    windows = {(r["window_start"], r["channel"], r["queue"]): r
               for r in map(json.loads, out["windows"].read_text().splitlines())}  # fmt: skip
    handled = {k: r["handle_seconds"] for k, r in windows.items() if r["handle_seconds"]}
    expected = {(r["window_start"], r["channel"], r["queue"]): r["handle_seconds"]
                for r in map(json.loads, (EXAMPLE / "handle_seconds.jsonl").read_text().splitlines())}  # fmt: skip
    assert handled == expected
    only_handle = windows[("2026-03-02T09:04:00Z", "email", "default")]
    assert only_handle["conversations_started"] == 0 and only_handle["first_responses"] == 0


def test_a_state_split_over_windows_and_a_queue_change_mid_state() -> None:
    run = AgentRun([
        agent("a1", "ana", "available", 30, queues=["billing"]),
        agent("a2", "ana", "on_contact", 90, conversation_id="c1", channel="chat", queue="billing"),
        agent("a3", "ana", "on_contact", 150, queues=["billing", "tech"], conversation_id="c1", channel="chat",
              queue="billing"),
        agent("a4", "ana", "offline", 200),
        customer_msg("m", "c9", 600),  # the newest event
    ])  # fmt: skip
    assert run.row(0, "billing")["available_seconds"] == 30
    assert (run.row(1, "billing")["available_seconds"], run.row(1, "billing")["on_contact_seconds"]) == (
        30,
        30,
    )
    assert run.row(2, "billing")["on_contact_seconds"] == 60 and (T0 + 60, "tech") not in run.agents
    assert (
        run.row(2, "tech")["on_contact_seconds"] == 30 and run.row(3, "billing")["on_contact_seconds"] == 20
    )
    assert (T0 + 240, "billing") not in run.agents  # offline counts nowhere
    handle = {k[0] - T0: v["handle_seconds"] for k, v in run.windows.items() if v["handle_seconds"]}
    assert handle == {60: 30, 120: 60, 180: 20}  # once per contact, whatever the queues served


def test_the_last_state_runs_to_the_newest_event_and_a_stale_agent_goes_offline() -> None:
    stale = EngineSettings(agent_stale_seconds=100)
    run = AgentRun([agent("a1", "bo", "away", 0, queues=["sales"]), customer_msg("m", "c9", 400)], stale)
    assert run.row(0, "sales")["away_seconds"] == 60 and run.row(1, "sales")["away_seconds"] == 40
    assert (T0 + 120, "sales") not in run.agents
    run = AgentRun([agent("a1", "bo", "available", 0, queues=["sales"]), customer_msg("m", "c9", 150)])
    assert [run.row(m, "sales")["available_seconds"] for m in range(3)] == [60, 60, 30]
    assert run.row(2, "sales")["occupancy_ratio"] == 0.0


def test_duplicates_disorder_and_a_late_agent_event() -> None:
    base = [agent("a1", "cy", "available", 0), agent("a2", "cy", "on_contact", 20, conversation_id="c", channel="sms"),
            agent("a3", "cy", "after_contact_work", 50, conversation_id="c", channel="sms"),
            agent("a4", "cy", "available", 70), customer_msg("m", "c9", 500)]  # fmt: skip
    reference = AgentRun(base).agents
    assert AgentRun([base[0], base[2], base[1], base[1], base[3], base[4]]).agents == reference
    late = AgentRun([base[0], base[4], agent("a5", "cy", "away", 10)])  # 490 s late: windows were final
    assert late.engine.stats.late == 1
    assert late.row(0, "default")["away_seconds"] == 0 and late.row(0, "default")["available_seconds"] == 60


def test_an_agent_in_two_queues_counts_in_each_and_occupancy_is_a_share() -> None:
    run = AgentRun([
        agent("a1", "di", "on_contact", 0, queues=["a", "b"], conversation_id="c", channel="chat", queue="a"),
        agent("a2", "di", "available", 45), customer_msg("m", "c9", 400),
    ])  # fmt: skip
    for queue in ("a", "b"):
        row = run.row(0, queue)
        assert (row["on_contact_seconds"], row["available_seconds"], row["staffed_seconds"]) == (45, 15, 60)
        assert row["occupancy_ratio"] == 0.75


agent_events = st.lists(
    st.tuples(st.sampled_from(["ana", "ben", "cy"]), st.sampled_from([*STATES, "offline"]),
              st.floats(0, 900).map(lambda t: round(t, 3)), st.sampled_from([None, ["q1"], ["q1", "q2"], ["q3"]])),
    min_size=1, max_size=40,
)  # fmt: skip


def _events(drawn: list[Any]) -> list[dict[str, Any]]:
    events = []
    for i, (who, state, t, queues) in enumerate(drawn):
        extra: dict[str, Any] = {"queues": queues} if queues else {}
        if state in ("on_contact", "after_contact_work"):
            extra |= {"conversation_id": f"c{i}", "channel": "chat", "queue": "q1"}
        events.append(agent(f"e{i}", who, state, t, **extra))
    return events


def _by_hand(
    events: list[dict[str, Any]], newest: float, stale: float
) -> dict[tuple[float, str], list[float]]:
    """Agent seconds by hand, per (minute window, queue) and state: each event to the agent's
    next one (or the newest event), at most `stale` seconds, in each of its queues."""
    rows: dict[tuple[float, str], list[float]] = {}
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for e in sorted(events, key=lambda e: (e["timestamp"], e["event_id"])):
        by_agent.setdefault(e["agent_id"], []).append(e)
    for timeline in by_agent.values():
        queues = ["default"]
        for i, e in enumerate(timeline):
            queues = e.get("queues", queues)
            begin = e["timestamp"]
            end = min(timeline[i + 1]["timestamp"] if i + 1 < len(timeline) else newest, begin + stale)
            if e["state"] == "offline":
                continue
            start = T0 + 60 * ((begin - T0) // 60)
            while start < end:
                for queue in queues:
                    seconds = rows.setdefault((start, queue), [0.0] * len(STATES))
                    seconds[STATES.index(e["state"])] += min(end, start + 60) - max(begin, start)
                start += 60
    return {key: seconds for key, seconds in rows.items() if any(seconds)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=agent_events, batch=st.integers(1, 12), stale=st.sampled_from([45.0, 200.0, 28800.0]))
def test_agent_time_is_conserved_and_occupancy_is_a_share(drawn: list[Any], batch: int, stale: float) -> None:
    events = sorted(_events(drawn), key=lambda e: e["timestamp"])  # in order: nothing is late
    newest = max(e["timestamp"] for e in events)
    run = AgentRun(events, EngineSettings(agent_stale_seconds=stale), batch_size=batch)
    want = _by_hand(events, newest, stale)
    assert set(run.agents) == set(want)
    for key, row in run.agents.items():
        assert [row[f"{state}_seconds"] for state in STATES] == pytest.approx(want[key], abs=1e-6)
        assert row["occupancy_ratio"] is None or 0 <= row["occupancy_ratio"] <= 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=agent_events, seed=st.integers(0, 2**16), batch=st.integers(1, 12))
def test_arrival_order_within_the_lateness_changes_no_row(drawn: list[Any], seed: int, batch: int) -> None:
    events = sorted(_events(drawn), key=lambda e: e["timestamp"])
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)  # everything lies within 900 s: a lateness of 1000 covers it
    lenient = EngineSettings(
        allowed_lateness_seconds=1000, idle_timeout_seconds=1000, agent_stale_seconds=200
    )
    assert AgentRun(shuffled, lenient, batch).agents == AgentRun(events, lenient).agents


def _open_values(engine: Engine) -> tuple[dict[Any, tuple[float, ...]], dict[Any, Any]]:
    """The open agent windows' seconds and the section 3 windows' handle seconds, after a settle."""
    engine.settle()
    agents = {(start, queue): tuple(window.seconds) for queue, start, window in engine.agents.all_windows()}
    handle = {(start, key): window.handle for key, start, window in engine.windows.all_windows()}
    return agents, handle


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=agent_events, batch=st.integers(1, 12), every=st.integers(1, 5),
       stale=st.sampled_from([45.0, 28800.0]))  # fmt: skip
def test_time_owed_until_a_read_changes_no_row_and_every_change_is_marked(
    drawn: list[Any], batch: int, every: int, stale: float
) -> None:
    """Batches that hold their rows back leave the runs' time owed; a read settles it. The rows
    equal those of batches that settle each time, and every window a read finds changed was
    listed as held by a batch since the last read (so partials publish it)."""
    events = sorted(_events(drawn), key=lambda e: e["timestamp"])
    config = EngineSettings(agent_stale_seconds=stale)
    engine, items = Engine(config), decoded(events)
    final: dict[tuple[float, str], dict[str, Any]] = {}
    marked_agents: set[float] = set()
    marked_handle: set[tuple[float, Any]] = set()
    before = _open_values(engine)
    for i, start in enumerate(range(0, len(items), batch)):
        held = engine.process(items[start : start + batch], window_rows=False)
        marked_agents.update(held.agents_held)
        marked_handle.update(held.held)
        for row in held.agent_windows:
            final[(row.window_start, row.queue)] = row.window.result()
            marked_agents.add(row.window_start)
        marked_handle.update((row.window_start, (row.channel, row.queue)) for row in held.windows)
        if i % every == 0:
            after = _open_values(engine)
            assert {key[0] for key, _ in after[0].items() - before[0].items()} <= marked_agents
            assert {key for key, value in after[1].items() if before[1].get(key) != value} <= marked_handle
            before, marked_agents, marked_handle = after, set(), set()
    for row in engine.flush().agent_windows:
        final[(row.window_start, row.queue)] = row.window.result()
    assert final == AgentRun(events, config, batch).agents


def test_time_a_run_owes_is_marked_held_and_counted_once() -> None:
    """Hand-computed: cy and bo run the same state; the run's time moves on with no agent event
    in a batch (held back, so listed as held), and when cy's state goes stale the run pays up to
    there, so bo's new event in that batch takes out his time up to that bound, not to the last
    batch's newest event."""
    engine = Engine(EngineSettings(agent_stale_seconds=80))
    contact = {"conversation_id": "c1", "channel": "chat", "queue": "q1", "queues": ["q1"]}
    started = [agent("a1", "cy", "on_contact", 0, **contact), agent("a2", "bo", "on_contact", 30, **contact)]
    engine.process(decoded(started), window_rows=False)
    engine.window_rows()  # taken: nothing is held back now
    moved = engine.process(decoded([customer_msg("m1", "c9", 50)]), window_rows=False)
    assert T0 in moved.agents_held and (T0, ("chat", "q1")) in moved.held
    later = engine.process(decoded([agent("a3", "bo", "away", 100)]), window_rows=False)
    assert T0 + 60 in later.agents_held and (T0 + 60, ("chat", "q1")) in later.held
    engine.settle()
    seconds = {(start, queue): list(window.seconds) for queue, start, window in engine.agents.all_windows()}
    on_contact, away = STATES.index("on_contact"), STATES.index("away")
    # cy on contact 0-80 (her stale bound), bo 30-100 and away from then on
    assert seconds[(T0, "q1")][on_contact] == 60 + 30
    assert seconds[(T0 + 60, "q1")][on_contact] == 20 + 40
    assert seconds[(T0 + 60, "q1")][away] == 0  # 100 is the newest event time
    handle = {
        start: window.handle for key, start, window in engine.windows.all_windows() if key == ("chat", "q1")
    }
    assert handle == {T0: 90.0, T0 + 60: 60.0}


def test_an_input_without_agent_events_gives_every_earlier_number_unchanged() -> None:
    from streaming import scenario

    lines = scenario(600)
    with_agents = [*lines, orjson.dumps(agent("z", "zed", "away", 0))]
    plain, mixed = (
        AgentRun([orjson.loads(x) for x in lines]),
        AgentRun([orjson.loads(x) for x in with_agents]),
    )
    assert all(row["handle_seconds"] == 0 for row in plain.windows.values())
    assert {k: {f: v for f, v in r.items()} for k, r in plain.windows.items()} == mixed.windows
