"""End-to-end throughput of ccpipe against its baselines, side by side in one run.

On one embedded broker, with the same simulated events (all types, about 30% customer messages
with text, most texts unique):

- ceiling: bare aiokafka getmany + orjson + dict counts;
- faust floor: Faust `take(2000)`, raw values, orjson, dict counts, no tables;
- naive Faust: per-event group_by(channel) + a windowed table (on fewer events: it is slow);
- ccpipe, one worker process (worker_eps) and one per core (machine_eps), including validation,
  engine, sentiment, ClickHouse writes (chDB), checkpoints, partials and gauges; every event
  accounted for in the workers' counters.

The baselines read a pre-loaded topic; ccpipe's workers are measured while the producer sends
(so their figures are conservative). Usage: python bench/run.py [--quick]; the last line
holds the figures.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from stream import measure

from pipeline.broker import start_broker
from pipeline.produce import send_lines
from pipeline.settings import WorkerSettings
from pipeline.simulate import SimulationSettings, Simulator
from pipeline.stream.topics import ensure_topics

BASELINE_TIMEOUT = 600.0


def preload(bootstrap: str, events: int, partitions: int) -> str:
    topic = f"baseline-{uuid.uuid4().hex[:6]}"
    env = {
        "CCPIPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CCPIPE_INPUT_TOPIC": topic,
        "CCPIPE_PARTITIONS": str(partitions),
    }
    settings = WorkerSettings.from_env(env)
    ensure_topics(settings)
    simulator = Simulator(SimulationSettings(conversations=events // 8))
    send_lines(settings, (orjson.dumps(e) for e in itertools.islice(simulator.events(), events)))
    return topic


def baseline(kind: str, bootstrap: str, topic: str, events: int) -> float:
    """Events/s of one baseline consumer process (first to last event)."""
    script = Path(__file__).parent / "baselines.py"
    command = [sys.executable, str(script), kind, "--bootstrap", bootstrap, "--topic", topic]
    command += ["--events", str(events)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=BASELINE_TIMEOUT, check=False)
    found = re.search(r"events=(\d+) seconds=([\d.]+)", result.stdout)  # Faust may print a spinner first
    if found is None:
        raise RuntimeError(f"{kind} baseline failed: {result.stderr[-2000:]}")
    return int(found.group(1)) / float(found.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer events: under about a minute and a half")
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    events = 30_000 if args.quick else 200_000
    naive_events = 3_000 if args.quick else 20_000
    cores = os.cpu_count() or 1
    workdir = Path(tempfile.mkdtemp(prefix="ccpipe-run-"))
    began = time.monotonic()
    broker = start_broker(log_path=workdir / "broker.log")
    try:
        topic = preload(broker.bootstrap, events, args.partitions)
        ceiling = baseline("ceiling", broker.bootstrap, topic, events)
        floor = baseline("floor", broker.bootstrap, topic, events)
        naive = baseline("naive", broker.bootstrap, topic, naive_events)
        worker = measure(broker.bootstrap, 1, args.partitions, events, workdir)
        machine = measure(broker.bootstrap, cores, args.partitions, events, workdir) if cores > 1 else worker
    finally:
        broker.stop()
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}; "
          f"{events} events ({naive_events} for naive Faust), {args.partitions} partitions, "
          f"{time.monotonic() - began:.0f} s in all", file=sys.stderr)  # fmt: skip
    print(
        f"workers={cores} worker_eps={worker:.0f} machine_eps={machine:.0f} faust_floor_eps={floor:.0f} "
        f"naive_faust_eps={naive:.0f} ceiling_eps={ceiling:.0f} speedup_vs_naive_faust={machine / naive:.1f} "
        f"floor_ratio={worker / floor:.2f} ceiling_ratio={worker / ceiling:.3f}"
    )


if __name__ == "__main__":
    main()
