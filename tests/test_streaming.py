"""The streaming pipeline on a real Tansu broker: a worker process's gauges equal
`ccpipe compute` on the same events, across a SIGKILL and a restart; invalid events land in
the dead-letter topic; a spike on one channel raises its FRT p90; mis-keyed events are re-keyed."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer
from streaming import (
    WorkerProcess,
    differences,
    expected_rolling,
    rolling_part,
    wait_until,
)

from pipeline.broker import EmbeddedBroker
from pipeline.produce import send_lines
from pipeline.settings import WorkerSettings
from pipeline.simulate import SimulationSettings, Simulator
from pipeline.stream.topics import ensure_topics

T0 = 1_772_442_000.0  # 09:00 UTC, a busy hour of the simulated day
IDS = b'"conversation_id": "c", "customer_id": "u", "timestamp": 1772442100'
INVALID = [
    b"{not json",
    b"[1, 2]",
    b'{"event_id": "bad-1", "type": "teleport", "channel": "chat", ' + IDS + b"}",
    b'{"event_id": "bad-2", "type": "message", "channel": "Chat!", ' + IDS + b"}",
]


def scenario(seconds: float, spike: str | None = None, seed: int = 11) -> list[bytes]:
    """Simulated events over `seconds` of event time, cut so the newest lies early in a minute."""
    settings = SimulationSettings(
        seed=seed, start=T0, conversations=60_000, jitter_seconds=2.0, duplicate_rate=0.01,
        spike_channel=spike, spike_start=T0 + seconds / 3, spike_seconds=seconds,
    )  # fmt: skip
    cut = T0 + seconds - seconds % 60 + 5
    events = itertools.takewhile(lambda e: e["timestamp"] < cut + 10, Simulator(settings).events())
    return [orjson.dumps(e) for e in events if e["timestamp"] < cut]


def settings_for(broker: EmbeddedBroker, topics: dict[str, str]) -> WorkerSettings:
    env = {"CCPIPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "CCPIPE_PARTITIONS": "4", **topics}
    return WorkerSettings.from_env(env)


def gauges_match(worker: WorkerProcess, lines: list[bytes]) -> Any:
    want, engine = expected_rolling(lines)
    waiting = {key: count for key, (count, _) in engine.waiting(time.time()).items()}

    def check() -> list[str]:
        got = worker.scrape()
        problems = differences(rolling_part(got), want)
        for (channel, queue), count in waiting.items():
            labels = (("channel", channel), ("queue", queue))
            seen = got.get(("ccpipe_conversations_waiting", labels))
            if seen != count:
                problems.append(f"waiting {channel}/{queue}: {seen} != {count}")
        return problems

    return check


def test_gauges_equal_compute_across_a_sigkill_and_restart(
    broker: EmbeddedBroker, topics: dict[str, str], workdir: Path
) -> None:
    settings = settings_for(broker, topics)
    ensure_topics(settings)
    lines = scenario(900, spike="phone")
    half = len(lines) // 2
    first, second = lines[:half] + INVALID, lines[half:]

    send_lines(settings, first)
    worker = WorkerProcess(broker.bootstrap, workdir, **topics).start()
    try:
        wait_until(gauges_match(worker, first), timeout=120, what="gauges after the first half")
        assert worker.scrape()[("ccpipe_events_invalid_total", (("reason", "not_json"),))] == 1

        # Kill the worker while it is in the middle of the second half.
        sender = threading.Thread(target=send_lines, args=(settings, second))
        sender.start()
        time.sleep(0.5)
        worker.kill()
        sender.join(60)
    finally:
        worker.stop()

    restarted = WorkerProcess(broker.bootstrap, workdir, **topics).start()
    try:
        wait_until(gauges_match(restarted, lines + INVALID), timeout=150, what="gauges after the restart")
        samples = restarted.scrape()
    finally:
        restarted.stop()

    # The spike on phone shows in its FRT p90 against the same traffic without one.
    calm, _ = expected_rolling(scenario(900))
    key = (
        "ccpipe_frt_seconds",
        (("channel", "phone"), ("quantile", "0.9"), ("queue", "billing"), ("window", "5m")),
    )
    assert samples[key] > 3 * calm[key]

    dead = KafkaConsumer(settings.dlq_topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                         consumer_timeout_ms=3000)  # fmt: skip
    letters = [orjson.loads(record.value) for record in dead]
    dead.close()
    reasons = sorted({(letter["reason"], letter["payload"].encode()) for letter in letters})
    assert [r for r, _ in reasons] == ["not_json", "not_object", "out_of_range", "unknown_type"]
    assert {payload for _, payload in reasons} == set(INVALID)
    assert all(letter["topic"] == settings.input_topic and letter["offset"] >= 0 for letter in letters)


def test_events_keyed_by_something_else_are_rekeyed_once(
    broker: EmbeddedBroker, topics: dict[str, str], workdir: Path
) -> None:
    settings = settings_for(broker, topics)
    ensure_topics(settings)
    lines = scenario(240, seed=5)
    from kafka import KafkaProducer  # noqa: PLC0415

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for line in lines:  # keyed by conversation, not customer
        producer.send(settings.input_topic, key=orjson.loads(line)["conversation_id"].encode(), value=line)
    producer.flush()
    producer.close()
    worker = WorkerProcess(broker.bootstrap, workdir, **topics).start()
    try:
        wait_until(gauges_match(worker, lines), timeout=120, what="gauges of re-keyed events")
    finally:
        worker.stop()
