"""Partials as chained updates: between complete messages a key's update carries only what its
windows gained or lost, and the owner applies it only onto the message it follows."""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import agent_msg, bot_msg, decoded, event
from test_engine_properties import LATENESS, SETTINGS, _close, scenarios

from pipeline.engine import Engine
from pipeline.engine.windows import (
    _NUMBERS,
    _SAMPLES,
    WindowAggregate,
    detached,
    sorted_difference,
    state_changes,
)
from pipeline.stream.partials import MergedViews, PublishState, oldest_viewed, publication

SAMPLE_LISTS = st.lists(st.sampled_from([0.5, 1.0, 2.0, 2.0, 7.25, 60.0, 3600.0]), max_size=12).map(sorted)


@given(SAMPLE_LISTS, SAMPLE_LISTS)
def test_the_sorted_difference_of_two_sample_lists_is_their_multiset_difference(
    before: list[float], after: list[float]
) -> None:
    added, removed = sorted_difference(before, after)
    remaining = list(before)
    for sample in removed:
        remaining.remove(sample)
    assert sorted(remaining + added) == after
    assert not set(added) & set(removed)


@given(
    st.fixed_dictionaries({name: SAMPLE_LISTS for name in _SAMPLES}),
    st.fixed_dictionaries({name: SAMPLE_LISTS for name in _SAMPLES}),
    st.lists(st.sampled_from(_NUMBERS), unique=True),
    st.integers(-3, 40),
)
def test_a_window_changed_by_its_changes_is_the_window_after(
    before_samples: dict[str, list[float]],
    after_samples: dict[str, list[float]],
    moved: list[str],
    value: int,
) -> None:
    before = WindowAggregate().state() | before_samples
    after = dict(before) | after_samples | dict.fromkeys(moved, value)
    window = WindowAggregate.from_state(before)
    changes = state_changes(before, after)
    window.change(orjson.loads(orjson.dumps(changes)))  # as the wire carries them
    assert window.state() == after
    assert set(changes) <= set(moved) | {name for name in _SAMPLES if before[name] != after[name]}


def test_a_detached_state_keeps_the_samples_it_had() -> None:
    window = WindowAggregate.from_state({"frt": [1.0, 2.0], "frt_n": 2})
    kept = detached(window.state())
    window.frt.add(3.0)
    assert kept["frt"] == [1.0, 2.0] and window.state()["frt"] == [1.0, 2.0, 3.0]


def publish(engine: Engine, policy: PublishState, offset: int, partition: int = 0) -> list[bytes]:
    """The keyed partials due now, as the worker sends them (the timer forced)."""
    policy.published = -math.inf
    due = publication("in", partition, offset, engine, publish=policy, changed=policy.due(engine, 0.0))
    return [value for _, value in due.keyed]


def held(views: MergedViews, key: tuple[str, str], source: int = 0) -> dict[float, dict[str, Any]]:
    return {start: w.state() for start, w in views._owned[0][key][source].windows.items()}


def assert_owner_holds_the_engine(views: MergedViews, engine: Engine) -> None:
    """Every window a rolling view still reaches is, on the owner, the engine's to the last
    sample; and so are the rolling views (their sums to the last bits the order of adding
    windows leaves)."""
    oldest = oldest_viewed(engine.newest, engine.settings.window_seconds)
    for key, start, window in engine.windows.all_windows():
        if start > oldest:
            assert held(views, key)[start] == window.state(), (key, start)
    now = views.clock()
    if now is None:  # nothing was published (a bot's reply alone): nothing to view either
        assert not engine.windows.keys() and not any(engine.waiting_by_key.values())
    else:
        merged, engines = views.rolling(), engine.rolling(now)
        assert {w: set(keys) for w, keys in merged.items()} == {w: set(keys) for w, keys in engines.items()}
        for window, keys in merged.items():
            for key, fields in keys.items():
                theirs = engines[window][key]
                assert fields.keys() == theirs.keys()
                assert all(_close(fields[f], theirs[f]) for f in fields), (window, key, fields, theirs)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.randoms(use_true_random=False), st.integers(1, 6))
@example(events=[bot_msg("b", "c0", 5, channel="phone")], rnd=random.Random(0), batch_size=1)
def test_chained_updates_hold_the_owner_equal_to_the_engine(
    events: list[dict[str, Any]], rnd: random.Random, batch_size: int
) -> None:
    """Disorder within the lateness moves and retracts samples of open windows; whatever the
    batches, an owner that read every update holds what the engine holds, with no gap."""
    arriving = sorted(events, key=lambda e: e["timestamp"] + rnd.uniform(0, LATENESS * 0.999))
    items = decoded(arriving)
    engine, policy, views = Engine(SETTINGS), PublishState(), MergedViews(SETTINGS, source="in")
    for offset, start in enumerate(range(0, len(items), batch_size)):
        policy.mark(engine.process(items[start : start + batch_size]))
        for value in publish(engine, policy, offset):
            views.absorb(0, value)
    assert views.gaps == 0
    assert_owner_holds_the_engine(views, engine)


BODIES = [event(f"s{i}", "conversation_started", f"c{i}", 7 * i) for i in range(10)] + [
    agent_msg(f"r{i}", f"c{i}", 7 * i + 3 + i) for i in range(10)
]


def chain(partition: int = 0) -> tuple[Engine, PublishState, list[bytes]]:
    """Every body in a batch of its own, each followed by a publish: a chain of one key."""
    engine, policy, sent = Engine(SETTINGS), PublishState(), []
    for offset, item in enumerate(decoded(sorted(BODIES, key=lambda b: b["timestamp"]))):
        policy.mark(engine.process([item]))
        sent += publish(engine, policy, offset, partition)
    return engine, policy, sent


def test_updates_carry_what_changed_and_a_window_is_whole_only_once() -> None:
    _, _, sent = chain()
    bodies = [orjson.loads(value) for value in sent]
    assert bodies[0]["complete"] and not any(body["complete"] for body in bodies[1:])
    assert [body["since"] for body in bodies[1:]] == [body["sequence"] for body in bodies[:-1]]
    whole = [start for body in bodies for start, _ in body["windows"]]
    assert len(whole) == len(set(whole))  # each window whole once; changes afterwards
    changes = [change for body in bodies[1:] for _, change in body["changes"]]
    assert changes and all(set(change) < set(_NUMBERS) | set(_SAMPLES) for change in changes)
    assert any("frt" in change and change["frt"][1] == [] for change in changes)  # added, none removed


def test_a_lost_update_is_a_gap_until_the_next_complete_message(caplog: pytest.LogCaptureFixture) -> None:
    engine, policy, sent = chain()
    views = MergedViews(SETTINGS, source="in")
    with caplog.at_level(logging.WARNING, logger="pipeline.stream.partials"):
        for value in sent[:5] + sent[6:]:  # one update lost
            views.absorb(0, value)
    assert views.gaps == len(sent) - 6  # every later update is refused, each counted
    (line,) = caplog.messages  # and logged once
    assert "chat/billing from input partition 0" in line and "holds message" in line
    policy.republish()
    for value in publish(engine, policy, len(sent)):
        views.absorb(0, value)
    assert_owner_holds_the_engine(views, engine)
    assert not views._broken  # a chain that breaks again is logged again


def test_a_repeated_message_changes_nothing() -> None:
    engine, _, sent = chain()
    views = MergedViews(SETTINGS, source="in")
    for value in sent:
        views.absorb(0, value)
        views.absorb(0, value)  # delivered twice: the update does not follow itself
    assert views.gaps == len(sent) - 1
    assert_owner_holds_the_engine(views, engine)


def test_an_owner_reading_from_the_middle_waits_for_a_complete_message_without_a_gap() -> None:
    engine, policy, sent = chain()
    views = MergedViews(SETTINGS, source="in")
    for value in sent[4:]:  # a new owner of the partials partition reads from here
        views.absorb(0, value)
    assert views.gaps == 0 and not views._owned[0][("chat", "billing")]
    policy.republish()  # the rebalance that gave it the partition
    for value in publish(engine, policy, len(sent)):
        views.absorb(0, value)
    assert_owner_holds_the_engine(views, engine)


def test_a_recovered_partition_starts_a_new_chain_even_at_an_older_offset() -> None:
    """A partition recovered from a checkpoint republishes from an older offset under a new
    epoch: its complete message replaces what the owner held, and its updates follow it."""
    engine, _, sent = chain()
    views = MergedViews(SETTINGS, source="in")
    for value in sent:
        views.absorb(0, value)
    items = decoded(sorted(BODIES, key=lambda b: b["timestamp"]))
    recovered, policy = Engine(SETTINGS), PublishState()  # a new epoch
    recovered.process(items[:8])
    for value in publish(recovered, policy, 7):
        views.absorb(0, value)
    assert_owner_holds_the_engine(views, recovered)
    for offset, item in enumerate(items[8:], start=8):
        policy.mark(recovered.process([item]))
        for value in publish(recovered, policy, offset):
            views.absorb(0, value)
    assert views.gaps == 0
    assert_owner_holds_the_engine(views, engine)


def test_updates_of_a_worker_before_chained_updates_still_merge() -> None:
    """A rolling upgrade: a worker of the earlier version sends changed windows whole, with no
    epoch; they lay over what the owner holds, by offset."""
    engine, _, sent = chain()
    views = MergedViews(SETTINGS, source="in")
    for offset, value in enumerate(sent):
        body = orjson.loads(value)
        windows = {start: state for start, state in body["windows"]}
        for start, _ in body.get("changes", []):
            window = engine.windows.window(("chat", "billing"), start)
            assert window is not None
            windows[start] = window.state()  # (the final states: enough for the merge rule)
        legacy = {
            name: body[name] for name in ("source", "partition", "key", "newest", "complete", "waiting")
        }
        views.absorb(0, orjson.dumps(legacy | {"offset": offset, "windows": sorted(windows.items())}))
    assert views.gaps == 0
    assert_owner_holds_the_engine(views, engine)


def test_a_window_no_view_reaches_leaves_the_chain_and_returns_whole() -> None:
    """The publisher forgets windows that are final or older than every rolling view, so a
    change to one (after an owner dropped it) goes out whole."""
    late = [event(f"s{i}", "conversation_started", f"c{i}", 600 * i, customer=f"u{i}") for i in range(8)]
    engine, policy = Engine(SETTINGS), PublishState()
    for offset, item in enumerate(decoded(late)):
        policy.mark(engine.process([item]))
        publish(engine, policy, offset)
    (kept,) = policy.chains.values()
    assert set(kept.windows) <= set(engine.windows.open)
    assert min(start for start, _ in engine.windows.windows_of(("chat", "billing"))) < min(kept.windows)
