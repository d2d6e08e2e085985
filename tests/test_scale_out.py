"""Scale-out on a real broker: three worker processes in one consumer group over six
partitions give the numbers one engine gives, each series exported by exactly one worker,
also after one of them is SIGKILLed; the ClickHouse views of their rows equal too."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from storage import assert_views_equal_compute
from streaming import Sample, WorkerProcess, differences, expected_rolling, rolling_part, scenario, wait_until

from pipeline.broker import EmbeddedBroker
from pipeline.engine import Engine
from pipeline.produce import send_lines
from pipeline.settings import WorkerSettings
from pipeline.store.backends import open_backend
from pipeline.store.migrations import migrate
from pipeline.store.rows import TABLES
from pipeline.stream.topics import ensure_topics

PARTITIONS = "6"
KEYED = ("ccpipe_conversations_waiting", "ccpipe_oldest_waiting_seconds")


def union_problems(workers: list[WorkerProcess], expected: tuple[dict[Sample, float], Engine]) -> list[str]:
    """What keeps the workers' gauges together from being the one-engine answer (`expected`:
    `expected_rolling` of the lines sent, computed once)."""
    want, engine = expected
    waiting = {key: count for key, (count, _) in engine.waiting(time.time()).items()}
    scrapes = [worker.scrape() for worker in workers]
    exported = Counter(
        key for samples in scrapes for key in samples if key in rolling_part(samples) or key[0] in KEYED
    )
    problems = [f"{key} exported by {n} workers" for key, n in exported.items() if n > 1]
    union = {key: value for samples in scrapes for key, value in rolling_part(samples).items()}
    problems += differences(union, want)
    for (channel, queue), count in waiting.items():
        labels = (("channel", channel), ("queue", queue))
        seen = [
            s[("ccpipe_conversations_waiting", labels)]
            for s in scrapes
            if ("ccpipe_conversations_waiting", labels) in s
        ]
        if seen != [count]:
            problems.append(f"waiting {channel}/{queue}: {seen} != [{count}]")
    return problems


def merge_stores(workers: list[WorkerProcess], into: Path) -> None:
    """Every worker's rows in one store, as a shared ClickHouse server would hold them."""
    exports = []
    for n, worker in enumerate(workers):
        store = open_backend(f"chdb://{worker.env['CCPIPE_DATA_DIR']}/chdb")
        for table in TABLES:
            path = into.parent / f"{table}-{n}.native"
            columns = ", ".join(c.name for c in TABLES[table])
            store.execute(f"SELECT {columns} FROM {table} INTO OUTFILE '{path}' FORMAT Native")
            exports.append((table, columns, path))
        store.close()
    merged = open_backend(f"chdb://{into}")
    migrate(merged, ttl_days=400)
    for table, columns, path in exports:
        merged.execute(f"INSERT INTO {table} ({columns}) FROM INFILE '{path}' FORMAT Native")
    merged.close()


@pytest.mark.timeout(900)
def test_three_workers_equal_one_engine_across_a_sigkill(
    broker: EmbeddedBroker, topics: dict[str, str], tmp_path: Path
) -> None:
    env = {"CCPIPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "CCPIPE_PARTITIONS": PARTITIONS, **topics}
    settings = WorkerSettings.from_env(env)
    ensure_topics(settings)
    lines = scenario(900, seed=21)
    half = len(lines) // 2
    first_half, whole = expected_rolling(lines[:half]), expected_rolling(lines)
    workers = []
    for n in range(3):
        (tmp_path / f"w{n}").mkdir()
        workers.append(
            WorkerProcess(broker.bootstrap, tmp_path / f"w{n}", CCPIPE_PARTITIONS=PARTITIONS, **topics)
        )
    try:
        for worker in workers:
            worker.start()
        send_lines(settings, lines[:half])
        wait_until(lambda: union_problems(workers, first_half), timeout=240, what="three workers, first half")

        workers[1].kill()
        survivors = [workers[0], workers[2]]
        send_lines(settings, lines[half:])
        wait_until(lambda: union_problems(survivors, whole), timeout=300, what="two workers after a SIGKILL")
    finally:
        for worker in workers:
            worker.stop()

    merged = tmp_path / "merged" / "chdb"
    merged.parent.mkdir()
    merge_stores(workers, merged)
    store = open_backend(f"chdb://{merged}")
    try:
        assert_views_equal_compute(store, lines)
    finally:
        store.close()
