"""Records as a producer nobody here wrote sends them: librdkafka (confluent-kafka) with every
codec, keyless and mis-keyed records (placed by librdkafka's own partitioner), odd headers and
every odd record a topic can carry, interleaved with a simulated stretch of a day on 3
partitions. The worker stays up, every valid event is counted once, every odd record is a dead
letter with its reason, and the store equals `ccpipe compute` on the valid events, field by field."""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer
from storage import assert_views_equal_compute, select
from streaming import WorkerProcess, gauges_match, scenario, sql_problems, wait_until

from pipeline.broker import EmbeddedBroker
from pipeline.deadletter import PAYLOAD_BYTES
from pipeline.settings import WorkerSettings
from pipeline.store.backends import open_backend
from pipeline.stream.topics import ensure_topics

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
VALID = (
    b'{"event_id": "odd-%d", "type": "conversation_started", "conversation_id": "odd-c", '
    b'"customer_id": "odd-u", "channel": "chat", "timestamp": 1772442100}'
)
BIG = b'{"event_id": "big", "type": "message", "text": "' + b"x" * (1_200_000) + b'"}'
# (reason, key, value): one of each odd record.
ODD = [
    ("tombstone", b"u1", None),
    ("empty", b"u1", b""),
    ("not_utf8", None, b'{"text": "\xc3\x28"}'),
    ("not_object", b"u1", b'"just a string"'),
    ("not_finite", b"u1", b'{"event_id": "n", "sentiment": NaN}'),
    ("too_deep", b"u1", b"[" * 5000 + b"]" * 5000),
    ("too_large", b"u1", BIG),
    ("key_too_large", b"k" * 4000, VALID % 1),
    ("not_json", None, b"{half"),
]


def test_a_librdkafka_producer_with_every_codec_and_odd_records(
    broker: EmbeddedBroker, topics: dict[str, str], workdir: Path
) -> None:
    env = {"CCPIPE_PARTITIONS": "3", **topics}
    settings = WorkerSettings.from_env({"CCPIPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, **env})
    ensure_topics(settings)
    lines = scenario(600, seed=21)
    rng = random.Random(21)
    options = {"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "message.max.bytes": 4_000_000}
    producers = {codec: Producer(options | {"compression.type": codec}) for codec in CODECS}
    odd_at = dict(zip(rng.sample(range(len(lines)), len(ODD)), ODD, strict=True))
    worker = WorkerProcess(broker.bootstrap, workdir, **env).start()
    try:
        for i, line in enumerate(lines):
            event = orjson.loads(line)
            # Keyless, keyed by conversation, or by customer (librdkafka places it with CRC32).
            key = rng.choice([None, event["conversation_id"].encode(), event["customer_id"].encode()])
            headers = rng.choice(
                [None, [("trace", b"\x00\xff")], [("empty", None), ("dup", b"1"), ("dup", b"2")]]
            )
            producers[CODECS[i % len(CODECS)]].produce(
                settings.input_topic, value=line, key=key, headers=headers
            )
            if i in odd_at:
                _, odd_key, odd_value = odd_at[i]
                producers[rng.choice(CODECS)].produce(settings.input_topic, value=odd_value, key=odd_key)
            if i % 100 == 99:  # 10 minutes of traffic in about 25 s: a misplaced event reaches its
                time.sleep(0.5)  # home partition well within the allowed lateness (docs/engine.md)
        for producer in producers.values():
            assert producer.flush(30) == 0

        wait_until(gauges_match(worker, lines), timeout=180, what="gauges of the valid events")
        wait_until(lambda: _reasons(worker, {reason for reason, _, _ in ODD}), timeout=60,
                   what="every odd record counted by its reason")  # fmt: skip
        unique = len({orjson.loads(line)["event_id"] for line in lines})
        wait_until(lambda: sql_problems(worker, "SELECT count() FROM interactions_dedup", str(unique)),
                   timeout=60, what="every valid event stored once")  # fmt: skip
        samples = worker.scrape()
        assert samples[("ccpipe_events_rekeyed_total", ())] > 0  # misplaced records went home
        assert worker.process is not None and worker.process.poll() is None, "the worker stopped"
    finally:
        worker.stop()

    store = open_backend(f"chdb://{workdir}/chdb")
    try:
        assert_views_equal_compute(store, lines)
        letters = select(store, "SELECT reason, payload, payload_bytes FROM dead_letters "
                                "ORDER BY received_at LIMIT 1 BY topic, partition, offset")  # fmt: skip
    finally:
        store.close()
    assert sorted(letter["reason"] for letter in letters) == sorted(reason for reason, _, _ in ODD)
    (big,) = [letter for letter in letters if letter["reason"] == "too_large"]
    assert big["payload_bytes"] == len(BIG) and len(big["payload"]) == PAYLOAD_BYTES

    dlq = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"dlq-{time.time()}",
                    "auto.offset.reset": "earliest"})  # fmt: skip
    dlq.subscribe([settings.dlq_topic])
    dead = []
    deadline = time.monotonic() + 30
    while len(dead) < len(ODD) and time.monotonic() < deadline:
        record = dlq.poll(1.0)
        if record is not None and record.error() is None:
            dead.append((record.key(), orjson.loads(record.value())))
    dlq.close()
    assert sorted(letter["reason"] for _, letter in dead) == sorted(reason for reason, _, _ in ODD)
    assert all(key is None or len(key) <= 1024 for key, _ in dead)  # a key no customer has is not passed on
    assert all(len(orjson.dumps(letter)) < 2 * PAYLOAD_BYTES for _, letter in dead)


def _reasons(worker: WorkerProcess, wanted: set[str]) -> list[str]:
    counted = {dict(labels)["reason"]: value for (name, labels), value in worker.scrape().items()
               if name == "ccpipe_events_invalid_total"}  # fmt: skip
    problems = [f"{reason}: {counted.get(reason)}" for reason in sorted(wanted) if counted.get(reason) != 1]
    return problems + [f"unexpected {reason}" for reason in counted.keys() - wanted]
