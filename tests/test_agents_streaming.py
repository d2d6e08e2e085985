"""Contract §7 on real processes: two workers in one group over four partitions, agent events
keyed by agent and conversations by customer (the recommended keys), one worker SIGKILLed
mid-stream and restarted. Together they export the §7.4 gauges the one-engine reference gives,
each series by one worker, and their stores hold agent windows and handle seconds equal to
`ccpipe compute`."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from storage import assert_views_equal_compute, close, epoch, select
from streaming import (
    AGENT_GAUGES,
    Sample,
    WorkerProcess,
    differences,
    expected_merged,
    partitioned,
    partitioned_runs,
    rolling_part,
    scenario,
    wait_until,
)
from test_scale_out import merge_stores

from pipeline.broker import EmbeddedBroker
from pipeline.engine.agents import AgentWindow
from pipeline.settings import WorkerSettings
from pipeline.store.backends import open_backend
from pipeline.stream.topics import ensure_topics

PARTITIONS = "4"


def send_keyed(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    """Each event keyed as the contract recommends: agent events by agent, others by customer."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_in_flight_requests_per_connection=1
    )
    for line in lines:
        event = orjson.loads(line)
        producer.send(topic, key=(event.get("customer_id") or event["agent_id"]).encode(), value=line)
    producer.flush()
    producer.close()


def problems(workers: list[WorkerProcess], want: dict[Sample, float]) -> list[str]:
    scrapes = [worker.scrape() for worker in workers]
    ours = [{k: v for k, v in s.items() if k in rolling_part(s) or k[0] in AGENT_GAUGES} for s in scrapes]
    exported = Counter(key for samples in ours for key in samples)
    found = [f"{key} exported by {n} workers" for key, n in exported.items() if n > 1]
    union = {key: value for samples in ours for key, value in samples.items()}
    return found + differences(union, want)


@pytest.mark.timeout(900)
def test_two_workers_give_the_agent_gauges_and_rows_of_one_engine_across_a_sigkill(
    broker: EmbeddedBroker, topics: dict[str, str], tmp_path: Path
) -> None:
    env = {"CCPIPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "CCPIPE_PARTITIONS": PARTITIONS, **topics}
    settings = WorkerSettings.from_env(env)
    ensure_topics(settings)
    lines = scenario(900, seed=23, agents=True)
    half = len(lines) // 2
    first_half, whole = (
        expected_merged(partitioned(part, int(PARTITIONS))) for part in (lines[:half], lines)
    )
    dirs = [tmp_path / name for name in ("w0", "w1", "w1-again")]
    for directory in dirs:
        directory.mkdir()
    first = WorkerProcess(broker.bootstrap, dirs[0], CCPIPE_PARTITIONS=PARTITIONS, **topics).start()
    second = WorkerProcess(broker.bootstrap, dirs[1], CCPIPE_PARTITIONS=PARTITIONS, **topics).start()
    again = WorkerProcess(broker.bootstrap, dirs[2], CCPIPE_PARTITIONS=PARTITIONS, **topics)
    try:
        send_keyed(broker.bootstrap, settings.input_topic, lines[:half])
        wait_until(lambda: problems([first, second], first_half), timeout=240, what="two workers, first half")
        sender = threading.Thread(
            target=send_keyed, args=(broker.bootstrap, settings.input_topic, lines[half:])
        )
        sender.start()
        time.sleep(0.5)
        second.kill()
        sender.join(60)
        again.start()
        wait_until(lambda: problems([first, again], whole), timeout=300, what="after a SIGKILL and a restart")
        samples = {k: v for w in (first, again) for k, v in w.scrape().items()}
        assert any(name == "ccpipe_agents_required" and value > 0 for (name, _), value in samples.items())
    finally:
        for worker in (first, second, again):
            worker.stop()

    merged = tmp_path / "merged" / "chdb"
    merged.parent.mkdir()
    merge_stores([first, second, again], merged)
    store = open_backend(f"chdb://{merged}")
    try:
        # Agent time in the windows still open runs to each partition's own newest event (§7.2):
        # handle seconds and agent windows are held to engines partitioned as the workers were.
        assert_views_equal_compute(store, lines, except_fields=("handle_seconds",))
        handled = {(epoch(r["window_start"]), r["channel"], r["queue"]): r["handle_seconds"]
                   for r in select(store, "SELECT * FROM metrics_window")}  # fmt: skip
        stored = {
            (epoch(r["window_start"]), r["queue"]): r for r in select(store, "SELECT * FROM agent_window")
        }
    finally:
        store.close()
    want_handle: dict[tuple[float, str, str], float] = {}
    want_agents: dict[tuple[float, str], AgentWindow] = {}
    for batch in partitioned_runs(lines, int(PARTITIONS)):
        for row in batch.windows:
            key = (row.window_start, row.channel, row.queue)
            want_handle[key] = want_handle.get(key, 0.0) + row.fields["handle_seconds"]
        for agent_row in batch.agent_windows:
            want_agents.setdefault((agent_row.window_start, agent_row.queue), AgentWindow()).merge(
                agent_row.window
            )
    assert {k: v for k, v in handled.items() if v} == pytest.approx(
        {k: v for k, v in want_handle.items() if v}
    )
    assert stored.keys() == want_agents.keys() and len(want_agents) > 20
    for key, window in want_agents.items():
        for field, value in window.result().items():
            assert close(stored[key][field], value), (key, field, stored[key][field], value)
