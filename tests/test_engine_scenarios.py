"""Hand-computed scenarios, one per metric rule of contract §2 and §3."""

from __future__ import annotations

import pytest
from support import T0, Run, agent_msg, bot_msg, customer_msg, decoded, event

from pipeline.engine import Engine
from pipeline.settings import EngineSettings


def test_first_response_time_ignores_bot_and_system_replies() -> None:
    run = Run([
        event("e1", "conversation_started", "c1", 5),
        customer_msg("e2", "c1", 7, text="my invoice is wrong"),
        bot_msg("e3", "c1", 8, text="An agent will be with you shortly"),
        event("e4", "message", "c1", 9, direction="outbound", author="system"),
        agent_msg("e5", "c1", 35, agent="a7"),
        agent_msg("e6", "c1", 50, agent="a8"),
    ])  # fmt: skip
    record = run.conversation("c1")
    assert record["started_at"] == T0 + 5
    assert record["first_response_at"] == T0 + 35
    assert record["frt_seconds"] == 30
    assert record["first_agent_id"] == "a7"
    assert (record["messages_inbound"], record["messages_outbound"]) == (1, 4)
    row = run.window(0)
    assert row["conversations_started"] == 1
    assert row["first_responses"] == 1
    assert row["frt_mean_seconds"] == row["frt_p50_seconds"] == row["frt_max_seconds"] == 30
    assert row["frt_sla_ratio"] == 1.0  # chat target 60 s


def test_only_a_bot_answered_means_no_first_response_and_still_waiting() -> None:
    events = [event("e1", "conversation_started", "c1", 0), bot_msg("e2", "c1", 1)]
    engine = Engine()
    batch = engine.process(decoded(events))
    assert batch.conversations[0]["first_response_at"] is None
    assert engine.waiting(now=T0 + 100) == {("chat", "billing"): (1, 100.0)}


def test_agent_reply_arriving_before_the_customer_message_it_answers() -> None:
    run = Run([
        agent_msg("e2", "c1", 50),  # arrives first, event time later
        customer_msg("e1", "c1", 20),
    ])  # fmt: skip
    record = run.conversation("c1")
    assert record["started_at"] == T0 + 20
    assert record["frt_seconds"] == 30
    assert run.window(0)["first_responses"] == 1


def test_agent_message_before_the_start_is_not_a_response() -> None:
    run = Run([
        agent_msg("e1", "c1", 10),  # outbound before the customer ever wrote
        customer_msg("e2", "c1", 20),
        agent_msg("e3", "c1", 95),
    ])  # fmt: skip
    assert run.conversation("c1")["frt_seconds"] == 75
    assert run.window(1)["first_responses"] == 1
    assert run.window(0)["first_responses"] == 0


def test_reopen_then_resolve_again() -> None:
    run = Run([
        event("e1", "conversation_started", "c1", 0),
        agent_msg("e2", "c1", 10),
        event("e3", "conversation_resolved", "c1", 100),
        event("e4", "conversation_reopened", "c1", 200),
        event("e5", "conversation_resolved", "c1", 300),
    ], EngineSettings(fcr_horizon_seconds=600))  # fmt: skip
    record = run.conversation("c1")
    assert record["resolved_at"] == T0 + 300
    assert record["reopened"] is True
    assert record["fcr"] is False
    # The first resolution was a first-contact resolution when it happened; the second was not.
    assert (run.window(1)["resolved"], run.window(1)["fcr_ratio"]) == (1, 1.0)
    assert (run.window(5)["resolved"], run.window(5)["fcr_ratio"]) == (1, 0.0)


def test_repeat_contact_on_another_channel_breaks_fcr_of_the_first() -> None:
    horizon = 3600
    run = Run([
        event("a1", "conversation_started", "A", 0, channel="chat"),
        agent_msg("a2", "A", 20),
        event("a3", "conversation_resolved", "A", 100),
        event("b1", "conversation_started", "B", 1000, channel="phone", queue="tech"),
        event("b2", "message", "B", 1010, channel="phone", queue="tech", direction="outbound",
              author="agent", agent_id="a2"),
        event("b3", "conversation_resolved", "B", 1200, channel="phone", queue="tech"),
        event("x1", "conversation_started", "X", 1500, customer="u2"),
    ], EngineSettings(fcr_horizon_seconds=horizon))  # fmt: skip
    first, second = run.conversation("A"), run.conversation("B")
    assert (first["repeat_contact"], first["fcr"], first["fcr_final"]) == (False, False, False)
    assert (second["repeat_contact"], second["fcr"]) == (True, True)
    assert run.conversation("X")["repeat_contact"] is False
    # Real-time view: A's resolution counted as FCR then; B's is a repeat contact.
    assert run.window(1)["fcr_ratio"] == 1.0
    assert run.window(20, "phone", "tech")["fcr_ratio"] == 0.0


def test_repeat_after_the_horizon_is_a_new_contact_and_fcr_turns_final() -> None:
    horizon = 3600
    run = Run([
        event("a1", "conversation_started", "A", 0),
        event("a2", "conversation_resolved", "A", 100),
        event("b1", "conversation_started", "B", 100 + horizon + 1),
    ], EngineSettings(fcr_horizon_seconds=horizon))  # fmt: skip
    assert run.conversation("B")["repeat_contact"] is False
    first = run.conversation("A")
    assert (first["fcr"], first["fcr_final"]) == (True, True)


def test_fcr_stays_provisional_until_the_horizon_has_passed() -> None:
    run = Run([
        event("a1", "conversation_started", "A", 0),
        event("a2", "conversation_resolved", "A", 100),
        event("z1", "conversation_started", "Z", 3699, customer="u9"),
    ], EngineSettings(fcr_horizon_seconds=3600))  # fmt: skip
    assert (run.conversation("A")["fcr"], run.conversation("A")["fcr_final"]) == (True, False)


def test_abandon_before_any_response() -> None:
    run = Run([
        event("e1", "conversation_started", "c1", 0, channel="phone"),
        event("e2", "conversation_abandoned", "c1", 40, channel="phone"),
        event("f1", "conversation_started", "c2", 10, channel="phone"),
        event("f2", "message", "c2", 25, channel="phone", direction="outbound", author="agent"),
        event("f3", "conversation_abandoned", "c2", 50, channel="phone"),  # after a response
    ])  # fmt: skip
    assert run.conversation("c1")["abandoned"] is True
    assert run.conversation("c2")["abandoned"] is False
    row = run.window(0, "phone")
    assert (row["abandoned"], row["first_responses"], row["abandonment_ratio"]) == (1, 1, 0.5)
    assert row["frt_sla_ratio"] == 1.0  # 15 s within the phone target of 20 s


def test_surveys_csat_nps_ces() -> None:
    answers = [
        {"csat": 5, "nps": 10},
        {"csat": 4, "nps": 9, "ces": 3},
        {"csat": 2, "nps": 6, "ces": 5},
        {"nps": 8},
    ]
    run = Run([event(f"s{i}", "survey", f"c{i}", 10 + i, **a) for i, a in enumerate(answers)])
    row = run.window(0)
    assert row["surveys"] == 4
    assert row["csat_mean"] == pytest.approx(11 / 3)
    assert row["csat_ratio"] == pytest.approx(2 / 3)
    assert row["nps"] == pytest.approx(25.0)  # (2 promoters - 1 detractor) / 4
    assert row["ces_mean"] == 4.0
    assert run.conversation("c1")["csat"] == 4


def test_latest_survey_answer_wins_on_the_record() -> None:
    run = Run([
        event("s2", "survey", "c1", 20, csat=5),
        event("s1", "survey", "c1", 10, csat=1, nps=3),
    ])  # fmt: skip
    record = run.conversation("c1")
    assert (record["csat"], record["nps"]) == (5, 3)


def test_samples_exactly_on_a_window_boundary_go_to_the_later_window() -> None:
    run = Run([
        event("e1", "conversation_started", "c1", 60),
        agent_msg("e2", "c1", 120),
        event("e3", "conversation_started", "c2", 59.999),
    ])  # fmt: skip
    assert run.window(0)["conversations_started"] == 1
    assert run.window(1)["conversations_started"] == 1
    assert run.window(2)["first_responses"] == 1
    assert (T0 + 60, "chat", "billing") in run.windows


def test_rfc3339_offsets_and_epoch_numbers_are_the_same_instant() -> None:
    run = Run([
        event("e1", "conversation_started", "c1", 0) | {"timestamp": "2026-03-02T14:30:00+05:30"},
        agent_msg("e2", "c1", 0) | {"timestamp": "2026-03-02t04:00:12.5-05:00"},
        event("e3", "conversation_resolved", "c1", 0) | {"timestamp": T0 + 20},
        event("e4", "survey", "c1", 0, csat=5) | {"timestamp": "2026-03-02T09:00:30z"},
    ])  # fmt: skip
    record = run.conversation("c1")
    assert record["started_at"] == T0
    assert record["frt_seconds"] == 12.5
    assert record["resolved_at"] == T0 + 20
    assert run.window(0)["surveys"] == 1


def test_sentiment_field_wins_over_text_and_only_customers_count() -> None:
    run = Run([
        customer_msg("e1", "c1", 1, text="this is terrible", sentiment=0.5),
        customer_msg("e2", "c1", 2, text="thanks, that was really helpful!"),
        customer_msg("e3", "c1", 3),  # neither score nor text: no sample
        customer_msg("e4", "c1", 4, sentiment=-0.05),  # exactly the negative threshold
        agent_msg("e5", "c1", 5, text="I hate this"),
        bot_msg("e6", "c1", 6, text="awful"),
    ])  # fmt: skip
    record = run.conversation("c1")
    assert record["sentiment_first"] == 0.5
    assert record["sentiment_last"] == -0.05
    assert record["sentiment_mean"] == pytest.approx((0.5 + 0.7419 - 0.05) / 3)
    row = run.window(0)
    assert row["sentiment_samples"] == 3
    assert row["sentiment_negative_ratio"] == pytest.approx(1 / 3)


def test_duplicates_count_once() -> None:
    message = customer_msg("e1", "c1", 1, sentiment=-0.9)
    run = Run([message, message, dict(message, timestamp="2026-03-02T09:00:01Z")])
    assert run.conversation("c1")["messages_inbound"] == 1
    assert run.window(0)["sentiment_samples"] == 1
    assert run.engine.stats.duplicates == 2


def test_late_event_updates_facts_but_not_final_windows() -> None:
    run = Run([
        event("e1", "conversation_started", "c1", 0),
        event("e2", "conversation_started", "c2", 1000),  # watermark now 700: minute 0 final
        agent_msg("e3", "c1", 30),  # 970 s behind the newest: late
    ])  # fmt: skip
    assert run.engine.stats.late == 1
    assert run.conversation("c1")["frt_seconds"] == 30
    assert run.window(0)["first_responses"] == 0


def test_out_of_order_within_lateness_moves_the_frt_sample() -> None:
    run = Run([
        event("e1", "conversation_started", "c1", 100),
        agent_msg("e2", "c1", 130),
        customer_msg("e0", "c1", 40),  # an earlier customer message arrives late
    ])  # fmt: skip
    assert run.conversation("c1")["frt_seconds"] == 90
    assert run.window(0)["conversations_started"] == 1
    assert (T0 + 60, "chat", "billing") not in run.windows  # the start moved out of minute 1
    assert run.window(2)["frt_mean_seconds"] == 90


def test_channel_and_queue_come_from_the_first_event() -> None:
    run = Run([
        event("e2", "message", "c1", 20, queue="tech", direction="inbound", author="customer"),
        event("e1", "conversation_started", "c1", 10, queue="sales"),  # earlier in event time
        event("e3", "agent_assigned", "c1", 30, queue="billing", agent_id="a1"),
    ])  # fmt: skip
    record = run.conversation("c1")
    assert record["queue"] == "sales"
    assert run.window(0, queue="sales")["conversations_started"] == 1
    assert (T0, "chat", "tech") not in run.windows


def test_waiting_state_and_oldest_waiting() -> None:
    engine = Engine()
    engine.process(decoded([
        event("e1", "conversation_started", "c1", 0),
        event("e2", "conversation_started", "c2", 30),
        event("e3", "conversation_started", "c3", 40),
        agent_msg("e4", "c3", 45),
        event("e5", "conversation_started", "c4", 50),
        event("e6", "conversation_abandoned", "c4", 55),
    ]))  # fmt: skip
    assert engine.waiting(now=T0 + 100) == {("chat", "billing"): (2, 100.0)}
    engine.process(decoded([event("e7", "conversation_resolved", "c1", 110)]))
    assert engine.waiting(now=T0 + 120) == {("chat", "billing"): (1, 90.0)}


def test_timestamp_far_in_the_future_is_invalid() -> None:
    engine = Engine()
    batch = engine.process(decoded([
        event("e1", "conversation_started", "c1", 0),
        event("e2", "conversation_started", "c2", 86400 + 1),
    ]))  # fmt: skip
    assert [bad.reason for bad in batch.invalid] == ["future_timestamp"]
    assert engine.stats.invalid == {"future_timestamp": 1}


def test_a_far_future_first_event_cannot_poison_a_streaming_partition() -> None:
    """Offline the first event sets the reference; streaming also bounds it by the wall clock."""
    far = [event("e1", "conversation_started", "c1", 400 * 86400)]
    offline = Engine().process(decoded(far))
    assert offline.invalid == []
    streaming = Engine()
    batch = streaming.process(decoded(far), wall_clock=T0)
    assert [bad.reason for bad in batch.invalid] == ["future_timestamp"]
    assert "ahead of the wall clock" in batch.invalid[0].detail
    assert streaming.newest is None  # the next real event is not late
    later = streaming.process(decoded([event("e2", "conversation_started", "c2", 10)]), wall_clock=T0 + 10)
    assert later.invalid == [] and streaming.stats.late == 0


def test_rolling_views_merge_the_last_tumbling_windows() -> None:
    events = []
    for i in range(20):  # one conversation a minute, FRT = 10 + i seconds
        events += [
            event(f"s{i}", "conversation_started", f"c{i}", 60 * i),
            agent_msg(f"r{i}", f"c{i}", 60 * i + 10 + i),
        ]
    engine = Engine()
    engine.process(decoded(events))
    views = engine.rolling(now=T0 + 60 * 19 + 30)
    five = views["5m"][("chat", "billing")]
    assert five["first_responses"] == 5  # minutes 15..19
    assert five["frt_mean_seconds"] == pytest.approx(sum(10 + i for i in range(15, 20)) / 5)
    assert five["frt_max_seconds"] == 29
    assert five["frt_p50_seconds"] == pytest.approx(27, rel=0.01)
    assert views["15m"][("chat", "billing")]["conversations_started"] == 15
    assert views["1h"][("chat", "billing")]["conversations_started"] == 20
    assert engine.rolling(now=T0 + 60 * 19 + 3600 + 1)["1h"] == {}


def test_an_event_of_a_conversation_that_left_memory_changes_nothing() -> None:
    """A survey more than H + lateness after the resolution: the conversation's record stays
    the final one (no new, partial conversation replaces it), and the survey is counted late."""
    settings = EngineSettings(fcr_horizon_seconds=600, allowed_lateness_seconds=60)
    events = [
        customer_msg("m1", "c1", 0),
        agent_msg("a1", "c1", 30),
        event("r1", "conversation_resolved", "c1", 100),
        event("o1", "conversation_started", "c2", 900, customer="u2"),  # moves time past 100 + 600 + 60
        event("s1", "survey", "c1", 905, csat=1),
        customer_msg("m2", "c1", 906, text="hello again"),
    ]
    run = Run(events, settings)
    record = run.conversation("c1")
    assert record["resolved_at"] == T0 + 100 and record["fcr_final"] and record["csat"] is None
    assert record["frt_seconds"] == 30 and record["messages_inbound"] == 1
    assert run.engine.stats.late == 2
    assert "c1" not in run.engine.waiting_by_key[("chat", "billing")]  # c2 waits, c1 does not


@pytest.mark.parametrize("split", [False, True])
def test_a_window_emptied_and_sealed_in_one_batch_gives_its_empty_row(split: bool) -> None:
    """An earlier event moves a conversation to another queue, emptying the first queue's
    window; the window's last row says it is empty whether or not a batch ended before the
    watermark sealed it (a store or a partials owner would otherwise keep the stale count)."""
    engine = Engine(EngineSettings(allowed_lateness_seconds=60))
    engine.process(decoded([event("s", "conversation_started", "c1", 10, queue="tech")]))
    moved = event("m", "message", "c1", 5, queue="billing", direction="inbound", author="customer")
    sealing = event("x", "conversation_started", "c2", 400)
    batches = [[moved], [sealing]] if split else [[moved, sealing]]
    rows = [row for batch in batches for row in engine.process(decoded(batch)).windows]
    tech = [row for row in rows if row.queue == "tech" and row.window_start == T0]
    assert tech and tech[-1].fields["conversations_started"] == 0 and not tech[-1].final
    assert engine.windows.window(("chat", "tech"), T0) is None
    billing = [row for row in rows if row.queue == "billing" and row.window_start == T0 and row.final]
    assert billing and billing[-1].fields["conversations_started"] == 1
