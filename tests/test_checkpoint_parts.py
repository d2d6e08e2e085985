"""Checkpoints in parts (pipeline/stream/checkpoints.py): a checkpoint writes only the parts of
the state that changed since the partition's last one, recovery from it (on a real broker)
gives the state as it was, and every FULL_EVERY_SECONDS the image is written whole."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from streaming import fresh_topics, settings_for
from support import outputs

from pipeline.broker import EmbeddedBroker
from pipeline.engine import Engine
from pipeline.simulate import SimulationSettings, Simulator
from pipeline.stream.checkpoints import (
    FULL_EVERY_SECONDS,
    RUN_SIZE,
    CheckpointStore,
    image,
    restore,
    unpack,
)
from pipeline.stream.kafka import aiokafka_options
from pipeline.stream.runtime import PartitionEngine
from pipeline.stream.topics import ensure_topics

T0 = SimulationSettings().start
WAITING = 5 * RUN_SIZE  # conversations that start and wait: several runs that do not change


def waiting(count: int) -> list[str]:
    return [
        orjson.dumps({"event_id": f"w-{i}", "type": "conversation_started", "conversation_id": f"w-{i}",
                      "customer_id": f"wc-{i % 997}", "channel": "email", "queue": "backlog",
                      "timestamp": T0 + i * 0.01}).decode()
        for i in range(count)
    ]  # fmt: skip


def traffic(count: int) -> list[str]:
    events = Simulator(SimulationSettings(seed=5, conversations=400)).events()
    return [orjson.dumps(e).decode() for e in itertools.islice(events, count)]


def customers(engine: Engine) -> dict[str, list[str]]:
    return {customer: [c.conversation_id for c in held] for customer, held in engine.customers.items()}


def test_an_image_in_parts_restores_the_state_and_a_later_one_reuses_the_parts_that_did_not_change() -> None:
    lines = traffic(3000)
    engine = Engine()
    outputs(waiting(WAITING) + lines[:1000], 200, engine, flush=False)
    first = image(engine)
    assert len(first) > 5  # the base, then runs of conversations
    stored = {digest for digest, _ in first}
    restored = unpack(first)
    assert isinstance(restored, Engine)
    assert list(restored.conversations) == list(engine.conversations)
    assert customers(restored) == customers(engine)

    outputs(lines[1000:1500], 100, engine, flush=False)  # new conversations, a few old ones move
    second = image(engine, stored)
    reused = [digest for digest, payload in second if payload is None]
    assert len(reused) >= 4, "the runs of conversations that only wait are not written again"
    payloads = {digest: payload for digest, payload in first} | {d: p for d, p in second if p is not None}
    again = unpack([payloads[digest] for digest, _ in second])
    assert isinstance(again, Engine)
    assert customers(again) == customers(engine)
    rest = lines[1500:]
    assert outputs(rest, 100, again) == outputs(rest, 100, engine)


def test_checkpoints_on_the_broker_write_what_changed_and_recover_the_state(broker: EmbeddedBroker) -> None:
    settings = settings_for(broker, fresh_topics())
    ensure_topics(settings)
    lines = traffic(3000)
    engine = Engine()
    outputs(waiting(WAITING) + lines[:1000], 200, engine, flush=False)
    state = PartitionEngine(partition=1, engine=engine, applied_offset=100)
    now = [1_000_000.0]

    async def scenario() -> tuple[list[int], Any]:
        store = CheckpointStore(settings.checkpoint_topic, aiokafka_options(settings), clock=lambda: now[0])
        await store.start()
        try:
            written = [await store.save(1, 100, image(state, store.stored_parts(1)))]
            outputs(lines[1000:1500], 100, engine, flush=False)
            state.applied_offset = 200
            written.append(await store.save(1, 200, image(state, store.stored_parts(1))))
            loaded = await CheckpointStore(settings.checkpoint_topic, aiokafka_options(settings)).load(1)
            now[0] += FULL_EVERY_SECONDS  # a whole image is due again
            written.append(await store.save(1, 200, image(state, store.stored_parts(1))))
            return written, loaded
        finally:
            await store.stop()

    (full, changed, whole), loaded = asyncio.run(scenario())
    assert changed < full / 2, f"{changed} bytes written of {full}"
    assert whole > 2 * changed
    assert loaded is not None and loaded.applied_offset == 200
    recovered = restore(loaded)
    assert isinstance(recovered, PartitionEngine) and recovered.partition == 1
    assert customers(recovered.engine) == customers(engine)
    rest = lines[1500:]
    assert outputs(rest, 100, recovered.engine) == outputs(rest, 100, engine)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 50),
    cuts=st.lists(st.integers(100, 1100), min_size=1, max_size=4),
    run=st.sampled_from([1, 3, 16, RUN_SIZE]),
)
def test_a_chain_of_checkpoints_in_parts_restores_to_the_state_it_captured(
    seed: int, cuts: list[int], run: int
) -> None:
    """Wherever checkpoints are taken, each writing only the parts the one before lacked, the
    last of them restores to an engine that goes on exactly as the one it was taken from."""
    events = Simulator(SimulationSettings(seed=seed, conversations=300, duplicate_rate=0.05)).events()
    lines = [orjson.dumps(e).decode() for e in itertools.islice(events, 1400)]
    engine = Engine()
    payloads: dict[str, bytes] = {}
    stored: set[str] = set()
    done = 0
    for cut in sorted(set(cuts)):
        outputs(lines[done:cut], 50, engine, flush=False)
        done = cut
        parts = image(engine, stored, run_size=run)
        payloads.update((digest, payload) for digest, payload in parts if payload is not None)
        stored = {digest for digest, _ in parts}
    restored = unpack([payloads[digest] for digest, _ in parts])
    assert isinstance(restored, Engine)
    assert customers(restored) == customers(engine)
    for ids in ("event_ids", "closed"):
        for name in ("_buckets", "_bucket_of"):
            assert getattr(getattr(restored, ids), name) == getattr(getattr(engine, ids), name)
    assert restored.waiting_by_key.keys() == engine.waiting_by_key.keys()
    for key, waiting in engine.waiting_by_key.items():
        assert restored.waiting_by_key[key]._starts == waiting._starts
        assert restored.waiting_by_key[key].oldest() == waiting.oldest()
    rest = lines[done:]
    assert outputs(rest, 50, restored) == outputs(rest, 50, engine)
