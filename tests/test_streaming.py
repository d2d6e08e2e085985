"""The streaming pipeline on a real Tansu broker: a worker process's gauges equal
`ccpipe compute` on the same events, across a SIGKILL and a restart; invalid events land in
the dead-letter topic; a spike on one channel raises its FRT p90; mis-keyed events are re-keyed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
from kafka import KafkaConsumer
from storage import assert_views_equal_compute
from streaming import (
    WorkerProcess,
    expected_rolling,
    gauges_match,
    scenario,
    settings_for,
    sql_problems,
    wait_until,
)

from pipeline.broker import EmbeddedBroker
from pipeline.produce import send_lines
from pipeline.store.backends import open_backend
from pipeline.stream.topics import ensure_topics

IDS = b'"conversation_id": "c", "customer_id": "u", "timestamp": 1772442100'
INVALID = [
    b"{not json",
    b"[1, 2]",
    b'{"event_id": "bad-1", "type": "teleport", "channel": "chat", ' + IDS + b"}",
    b'{"event_id": "bad-2", "type": "message", "channel": "Chat!", ' + IDS + b"}",
]


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
    unique = len({orjson.loads(line)["event_id"] for line in lines})
    try:
        wait_until(gauges_match(restarted, lines + INVALID), timeout=150, what="gauges after the restart")
        samples = restarted.scrape()
        assert samples[("ccpipe_partition_recoveries_total", ())] >= 1
        # While the worker holds the chDB files, `ccpipe sql` asks it over loopback.
        wait_until(lambda: sql_problems(restarted, "SELECT count() AS n FROM interactions_dedup", str(unique)),
                   timeout=30, what="events in the store")  # fmt: skip
    finally:
        restarted.stop()

    # Stopped: the same query opens the files itself; the views equal `ccpipe compute`.
    assert sql_problems(restarted, "SELECT count() AS n FROM interactions_dedup", str(unique)) == []
    store = open_backend(f"chdb://{workdir}/chdb")
    try:
        assert_views_equal_compute(store, lines)
        letters = store.select(
            "SELECT reason FROM dead_letters ORDER BY reason LIMIT 1 BY topic, partition, offset"
        )
        assert [row[0] for row in letters.rows] == ["not_json", "not_object", "out_of_range", "unknown_type"]
    finally:
        store.close()

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
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for line in lines:  # keyed by conversation, not customer
        producer.send(settings.input_topic, key=orjson.loads(line)["conversation_id"].encode(), value=line)
    producer.flush()
    producer.close()
    worker = WorkerProcess(broker.bootstrap, workdir, **topics).start()
    try:
        wait_until(gauges_match(worker, lines), timeout=120, what="gauges of re-keyed events")
        assert worker.scrape()[("ccpipe_events_rekeyed_total", ())] > 0
    finally:
        worker.stop()
