"""End-to-end throughput of one `ccpipe worker` process on a real (embedded) broker.

Pre-loads N simulated events into a fresh topic, starts one worker, and measures from the
first processed event to the last (group-join time excluded), by polling the worker's
/metrics. Checks the totals at the end.

Usage: python bench/stream.py [--events 100000] [--partitions 4]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
import urllib.request
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ccpipe-bench-"))
    broker = start_broker(log_path=workdir / "broker.log")
    port = free_port()
    env = dict(os.environ)
    env.update({
        "CCPIPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "CCPIPE_PARTITIONS": str(args.partitions),
        "CCPIPE_METRICS_PORT": str(port),
        "CCPIPE_DATA_DIR": str(workdir),
        "CCPIPE_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
    })  # fmt: skip
    worker = None
    try:
        settings = WorkerSettings.from_env(env)
        ensure_topics(settings)
        events = itertools.islice(
            Simulator(SimulationSettings(conversations=args.events // 8)).events(), args.events
        )
        loaded = send_lines(settings, (orjson.dumps(e) for e in events))
        print(f"pre-loaded: {loaded}", flush=True)
        worker = spawn_cli(["worker"], env, workdir / "worker.log")
        url = f"http://{LOOPBACK}:{port}/metrics"
        wait_for_port(LOOPBACK, port, timeout=60)
        deadline = time.monotonic() + TIMEOUT
        first_at = None
        done = 0.0
        while time.monotonic() < deadline:
            done = processed(url)
            now = time.monotonic()
            if done and first_at is None:
                first_at, first_count = now, done
            if done >= args.events:
                break
            time.sleep(POLL)
        assert first_at is not None and done >= args.events, f"processed {done} of {args.events}"
        seconds = time.monotonic() - first_at
        rate = (done - first_count) / seconds
        print(f"one worker, {args.partitions} partitions: {done:.0f} events, {rate:,.0f} events/s end to end")
        print(f"events={args.events} partitions={args.partitions} worker_eps={rate:.0f}")
    finally:
        if worker is not None:
            stop_process(worker, timeout=30)
        broker.stop()


if __name__ == "__main__":
    main()
