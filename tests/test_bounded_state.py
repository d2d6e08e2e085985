"""State stays bounded: conversations, customers and event ids leave memory on time."""

from __future__ import annotations

from support import agent_msg, decoded, event

from pipeline.engine import Engine
from pipeline.settings import EngineSettings

HORIZON, LATENESS, IDLE = 1800.0, 300.0, 3600.0
SETTINGS = EngineSettings(
    fcr_horizon_seconds=HORIZON, allowed_lateness_seconds=LATENESS, idle_timeout_seconds=IDLE,
    dedup_horizon_seconds=600.0,
)  # fmt: skip


def test_resolved_conversation_leaves_after_the_fcr_horizon_with_a_final_record() -> None:
    engine = Engine(SETTINGS)
    engine.process(decoded([
        event("e1", "conversation_started", "c1", 0),
        agent_msg("e2", "c1", 10),
        event("e3", "conversation_resolved", "c1", 100),
    ]))  # fmt: skip
    assert "c1" in engine.conversations
    batch = engine.process(
        decoded([event("k1", "conversation_started", "keep", 100 + HORIZON, customer="u2")])
    )
    assert [r["fcr_final"] for r in batch.conversations if r["conversation_id"] == "c1"] == [True]
    assert "c1" in engine.conversations  # a repeat contact may still arrive within the lateness
    batch = engine.process(
        decoded([event("k2", "agent_assigned", "keep", 100 + HORIZON + LATENESS, customer="u2")])
    )
    assert "c1" not in engine.conversations and "u1" not in engine.customers
    (record,) = [r for r in batch.conversations if r["conversation_id"] == "c1"]
    assert (record["fcr"], record["fcr_final"]) == (True, True)
    assert batch.evicted == 1


def test_idle_unresolved_conversation_leaves_after_the_idle_timeout() -> None:
    engine = Engine(SETTINGS)
    engine.process(decoded([event("e1", "conversation_started", "idle", 0)]))
    engine.process(decoded([event(f"t{i}", "conversation_started", f"other{i}", 600 * i, customer=f"x{i}")
                            for i in range(1, 10)]))  # fmt: skip
    assert "idle" not in engine.conversations
    assert "other9" in engine.conversations
    assert "idle" not in engine.waiting_by_key[("chat", "billing")]


def test_event_ids_are_forgotten_after_the_dedup_horizon() -> None:
    engine = Engine(SETTINGS)
    engine.process(decoded([event(f"e{i}", "agent_assigned", "c1", 10 * i) for i in range(200)]))
    assert len(engine.event_ids) <= (600 + 600 / 16) / 10 + 1
    assert engine.stats.duplicates == 0


def test_final_windows_are_kept_only_for_the_longest_rolling_view() -> None:
    engine = Engine(SETTINGS)
    engine.process(decoded([event(f"s{i}", "conversation_started", f"c{i}", 60 * i, customer=f"u{i}")
                            for i in range(300)]))  # fmt: skip
    assert len(engine.windows.final) <= 3600 / 60 + 2
    assert len(engine.windows.open) <= LATENESS / 60 + 2
