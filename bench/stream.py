"""End-to-end throughput of `ccpipe worker` processes on a real (embedded) broker.

Starts N workers in one consumer group, lets the group settle, sends N simulated events, and
measures from the first processed event to the last, by polling the workers' /metrics (their
counters must add up to every event sent).

Usage: python bench/stream.py [--events 100000] [--partitions 6] [--workers 1]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson

from pipeline.broker import LOOPBACK, free_port, start_broker, wait_for_port
from pipeline.processes import spawn_cli, stop_process
from pipeline.produce import send_lines
from pipeline.settings import WorkerSettings
from pipeline.simulate import SimulationSettings, Simulator
from pipeline.stream.topics import ensure_topics

POLL = 0.2
TIMEOUT = 600.0


def processed(url: str) -> float:
    """Events the worker has accounted for: valid, invalid and duplicates."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(
            ("ccpipe_events_total{", "ccpipe_events_invalid_total{", "ccpipe_events_duplicate_total ")
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure(bootstrap: str, workers: int, partitions: int, events: int, workdir: Path) -> float:
    """Events/s of `workers` ccpipe workers on a fresh topic, first to last event processed."""
    tag = uuid.uuid4().hex[:6]
    env = dict(os.environ)
    env.update({
        "CCPIPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CCPIPE_PARTITIONS": str(partitions),
        "CCPIPE_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        "CCPIPE_INPUT_TOPIC": f"bench-{tag}",
        "CCPIPE_DLQ_TOPIC": f"bench-{tag}.dlq",
        "CCPIPE_CHECKPOINT_TOPIC": f"bench-{tag}.checkpoints",
        "CCPIPE_PARTIALS_TOPIC": f"bench-{tag}.partials",
        "CCPIPE_GROUP_ID": f"bench-{tag}",
    })  # fmt: skip
    processes = []
    try:
        settings = WorkerSettings.from_env(env)
        ensure_topics(settings)
        urls = []
        for n in range(workers):
            port = free_port()
            worker_env = env | {"CCPIPE_METRICS_PORT": str(port), "CCPIPE_QUERY_PORT": str(free_port()),
                                "CCPIPE_DATA_DIR": str(workdir / f"{tag}-w{n}")}  # fmt: skip
            processes.append(spawn_cli(["worker"], worker_env, workdir / f"{tag}-worker{n}.log"))
            urls.append(f"http://{LOOPBACK}:{port}/metrics")
            wait_for_port(LOOPBACK, port, timeout=60)
        time.sleep(15)  # let the group settle: every worker joined and assigned
        simulator = Simulator(SimulationSettings(conversations=events // 8))
        send_lines(settings, (orjson.dumps(e) for e in itertools.islice(simulator.events(), events)))
        deadline = time.monotonic() + TIMEOUT
        first_at = None
        done = first_count = 0.0
        while time.monotonic() < deadline:
            done = sum(processed(url) for url in urls)
            if done and first_at is None:
                first_at, first_count = time.monotonic(), done
            if done >= events:
                break
            time.sleep(POLL)
        assert first_at is not None and done >= events, f"processed {done} of {events}"
        return (done - first_count) / (time.monotonic() - first_at)
    finally:
        for process in processes:
            stop_process(process, timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1, help="worker processes in one consumer group")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ccpipe-bench-"))
    broker = start_broker(log_path=workdir / "broker.log")
    try:
        rate = measure(broker.bootstrap, args.workers, args.partitions, args.events, workdir)
    finally:
        broker.stop()
    setup = f"{args.workers} worker(s), {args.partitions} partitions"
    print(f"{setup}: {args.events} events, {rate:,.0f} events/s end to end")
    print(f"events={args.events} partitions={args.partitions} workers={args.workers} eps={rate:.0f}")


if __name__ == "__main__":
    main()
