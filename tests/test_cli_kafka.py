"""`ccpipe replay`, `ccpipe simulate` and `ccpipe worker` as a user runs them, on a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import orjson
from kafka import KafkaConsumer

from pipeline.broker import EmbeddedBroker


def ccpipe(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], env={**os.environ, **env}, capture_output=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def consume(broker: EmbeddedBroker, topic: str) -> list[tuple[int, bytes | None, bytes]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)  # fmt: skip
    records = [(r.partition, r.key, r.value) for r in consumer]
    consumer.close()
    return records


def test_replay_keys_by_customer_and_keeps_order_per_key(
    broker: EmbeddedBroker, topics: dict[str, str], tmp_path: Path
) -> None:
    lines = [orjson.dumps({"event_id": f"e{i}", "customer_id": f"u{i % 5}", "n": i}) for i in range(200)]
    lines.insert(50, b"{not json")
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    env = {"CCPIPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, **topics}
    from pipeline.settings import WorkerSettings
    from pipeline.stream.topics import ensure_topics

    ensure_topics(WorkerSettings.from_env(env))
    result = ccpipe(["replay", str(source)], env)
    assert result.returncode == 0, result.stderr.decode()
    assert b"sent 201 events (1 without a customer_id key)" in result.stderr
    records = consume(broker, topics["CCPIPE_INPUT_TOPIC"])
    assert len(records) == 201
    by_key: dict[bytes | None, list[int]] = defaultdict(list)
    partitions: dict[bytes | None, set[int]] = defaultdict(set)
    for partition, key, value in records:
        if key is not None:
            body = orjson.loads(value)
            assert key == body["customer_id"].encode()
            by_key[key].append(body["n"])
            partitions[key].add(partition)
    assert all(numbers == sorted(numbers) for numbers in by_key.values())
    assert all(len(p) == 1 for p in partitions.values())


def test_simulate_sends_every_kind_of_traffic(broker: EmbeddedBroker, topics: dict[str, str]) -> None:
    env = {"CCPIPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, **topics}
    result = ccpipe(["simulate", "--rate", "100", "--duration", "20", "--events", "20000"], env)
    assert result.returncode == 0, result.stderr.decode()
    events = [orjson.loads(value) for _, _, value in consume(broker, topics["CCPIPE_INPUT_TOPIC"])]
    assert len(events) > 500
    types = Counter(e["type"] for e in events)
    assert {"conversation_started", "message", "agent_assigned", "agent_state"} <= set(types)
    conversations = [e for e in events if e["type"] != "agent_state"]
    assert len({e["channel"] for e in conversations}) >= 4
    assert len({e["queue"] for e in conversations}) >= 3
    assert {e["state"] for e in events if e["type"] == "agent_state"} >= {"available", "on_contact"}
    authors = Counter(e.get("author") for e in events if e["type"] == "message")
    assert authors["customer"] and authors["bot"] and authors["agent"]


def test_worker_refuses_a_bad_setting_naming_it() -> None:
    result = ccpipe(["worker"], {"CCPIPE_WINDOW_SECONDS": "a minute"}, timeout=60)
    assert result.returncode == 2
    assert b"CCPIPE_WINDOW_SECONDS must be a number of seconds, got 'a minute'" in result.stderr
    result = ccpipe(["worker"], {"CCPIPE_KAFKA_BOOTSTRAP_SERVERS": "kafka"}, timeout=60)
    assert result.returncode == 2
    assert b"CCPIPE_KAFKA_BOOTSTRAP_SERVERS must be a comma-separated list of host:port" in result.stderr
