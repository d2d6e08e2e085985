"""The streaming pipeline on a real Tansu broker: a worker process's gauges equal
`ccpipe compute` on the same events, across a SIGKILL and a restart; invalid events land in
the dead-letter topic; a spike on one channel raises its FRT p90; mis-keyed events are re-keyed."""

from __future__ import annotations

import signal
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
from pipeline.settings import WorkerSettings
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


def test_the_rows_of_a_drained_backlog_are_stored_at_once(
    broker: EmbeddedBroker, topics: dict[str, str], workdir: Path
) -> None:
    """A worker catching up on a pre-loaded topic stores its last rows once it reaches the end,
    although they are fewer than a batch and the writer's timer and checkpoints are 10 min away."""
    settings = settings_for(broker, topics)
    ensure_topics(settings)
    lines = scenario(300)
    send_lines(settings, lines)
    later = {"CCPIPE_STORE_FLUSH_SECONDS": "600", "CCPIPE_CHECKPOINT_INTERVAL_SECONDS": "600"}
    worker = WorkerProcess(broker.bootstrap, workdir, **later, **topics).start()

    def stored() -> list[str]:
        samples = worker.scrape()

        def total(*names: str) -> float:
            return sum(value for (name, _), value in samples.items() if name in names)

        valid = total("ccpipe_events_total")  # each has its row (and so has each duplicate)
        processed = valid + total("ccpipe_events_duplicate_total", "ccpipe_events_invalid_total")
        written = samples.get(("ccpipe_store_rows_written_total", (("table", "interactions"),)), 0)
        done = processed == len(lines) and written >= valid
        return [] if done else [f"{processed} of {len(lines)} events processed, {written} rows stored"]

    try:
        wait_until(stored, timeout=120, what="the backlog's rows")
    finally:
        worker.stop()


def test_section_6_gauges_and_columns_equal_compute_with_the_same_settings(
    broker: EmbeddedBroker, topics: dict[str, str], workdir: Path
) -> None:
    """Short abandons and business hours from the example calendars file: a worker's §6 gauges
    and the §6 columns of the views equal `ccpipe compute` with the same settings."""
    calendars = Path(__file__).parents[1] / "deploy" / "calendars.example.yaml"
    env = {"CCPIPE_SHORT_ABANDON_SECONDS": "5", "CCPIPE_CALENDARS_FILE": str(calendars)}
    engine = WorkerSettings.from_env(env).engine()
    settings = settings_for(broker, topics)
    ensure_topics(settings)
    lines = scenario(900, seed=13)
    send_lines(settings, lines)
    worker = WorkerProcess(broker.bootstrap, workdir, **topics, **env).start()
    try:
        wait_until(gauges_match(worker, lines, engine), timeout=120, what="§6 gauges")
        samples = worker.scrape()
        names = {name for name, _ in samples}
        assert {"ccpipe_resolution_seconds", "ccpipe_resolution_mean_seconds", "ccpipe_service_level_ratio",
                "ccpipe_frt_business_seconds", "ccpipe_frt_business_sla_ratio"} <= names  # fmt: skip
    finally:
        worker.stop()
    store = open_backend(f"chdb://{workdir}/chdb")
    try:
        assert_views_equal_compute(store, lines, engine)
        short = store.select("SELECT sum(abandoned_short), sum(resolutions_timed) FROM metrics_window").rows[
            0
        ]
        assert int(short[0]) > 0 and int(short[1]) > 0  # the scenario exercises them
    finally:
        store.close()


def test_the_store_holds_the_engines_latest_facts_after_each_kind_of_stop(
    broker: EmbeddedBroker, topics: dict[str, str], workdir: Path
) -> None:
    """FCR horizons (20 minutes) pass all along the second half of a 40-minute replay on 3
    partitions. After a clean stop (SIGINT) at half time, and after a SIGKILL mid-stream, a
    restart and a SIGTERM, every field of `conversations_latest` (fcr_final too) and
    `metrics_window` equals `ccpipe compute` on what was sent."""
    env = {"CCPIPE_FCR_HORIZON_SECONDS": "1200", "CCPIPE_PARTITIONS": "3", **topics}
    settings = WorkerSettings.from_env({"CCPIPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, **env})
    engine = settings.engine()
    ensure_topics(settings)
    lines = scenario(2400, seed=17)
    half = len(lines) // 2
    first, second = lines[:half], lines[half:]

    def stored_equals_compute(sent: list[bytes]) -> tuple[int, int]:
        store = open_backend(f"chdb://{workdir}/chdb")
        try:
            assert_views_equal_compute(store, sent, engine)
            final, provisional = store.select(
                "SELECT countIf(fcr_final), countIf(NOT fcr_final AND resolved_at IS NOT NULL) "
                "FROM conversations_latest"
            ).rows[0]
            return int(final), int(provisional)
        finally:
            store.close()

    send_lines(settings, first)
    worker = WorkerProcess(broker.bootstrap, workdir, **env).start()
    try:
        wait_until(gauges_match(worker, first, engine), timeout=120, what="gauges of the first half")
    finally:
        assert worker.process is not None
        worker.process.send_signal(signal.SIGINT)  # Ctrl-C: the clean stop
        assert worker.process.wait(40) in (0, 130), worker.process.returncode
    assert stored_equals_compute(first)[1] > 0  # resolved, not final yet

    killed = WorkerProcess(broker.bootstrap, workdir, **env).start()
    sender = threading.Thread(target=send_lines, args=(settings, second))
    try:
        sender.start()
        time.sleep(1.0)
        killed.kill()
    finally:
        sender.join(60)
        killed.stop()
    restarted = WorkerProcess(broker.bootstrap, workdir, **env).start()
    try:
        wait_until(gauges_match(restarted, lines, engine), timeout=150, what="gauges after the restart")
    finally:
        restarted.stop()  # SIGTERM
    final, provisional = stored_equals_compute(lines)
    assert final > 100 and provisional > 0, (final, provisional)  # horizons passed mid-stream
