"""End-to-end figures of ccpipe against its baselines, side by side in one run.

On one embedded broker, with the same simulated events (all types, about 30% customer messages
with text, most texts unique, about a quarter agent states), each consumer reading them from a
pre-loaded topic:

- ceiling: bare aiokafka getmany + orjson + dict counts;
- faust floor: Faust `take(2000)`, raw values, orjson, dict counts, no tables;
- naive Faust: per-event group_by(channel) + a windowed table, on a topic of its own holding
  just the (fewer) events it is timed on: on a longer topic its first stage would keep
  re-partitioning events past the last one counted, and its rate would come out 2-3x too low;
- ccpipe, one worker process (worker_eps) and one per core (machine_eps), including validation,
  engine, sentiment, ClickHouse writes (chDB), checkpoints, partials and gauges; every event
  accounted for in the workers' counters and every valid event's row written.

The floor and one worker are timed in alternated rounds (--rounds, 3): each figure moves by a
fifth between runs on a busy machine, and their medians make floor_ratio.

The full run (without --quick) adds: the Quix Streams peer (group_by channel and queue, a
tumbling 60 s count and mean; its ~30 s group join on this broker is not timed), latency
produce→gauge and produce→row at half of one worker's rate (nominal: bench/stream.py says how
the rate measured while the probes run falls below it), peak RSS with 100k and 1M open
conversations, and the CPU shares of one worker (py-spy), and prints them as a Markdown table.
Usage: python bench/run.py [--quick]; the last line holds the throughput figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cpu import Profiler
from stream import Latency, Workers, latency, simulated_lines, throughput

from pipeline.broker import start_broker
from pipeline.produce import send_lines
from pipeline.settings import WorkerSettings
from pipeline.stream.topics import ensure_topics

BASELINE_TIMEOUT = 600.0
HERE = Path(__file__).parent


def preload(bootstrap: str, lines: list[bytes], partitions: int) -> str:
    topic = f"baseline-{uuid.uuid4().hex[:6]}"
    env = {"CCPIPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CCPIPE_INPUT_TOPIC": topic,
           "CCPIPE_PARTITIONS": str(partitions)}  # fmt: skip
    settings = WorkerSettings.from_env(env)
    ensure_topics(settings)
    send_lines(settings, lines)
    return topic


def baseline(kind: str, bootstrap: str, topic: str, events: int) -> float:
    """Events/s of one baseline consumer process (first to last event)."""
    # The Quix Streams peer may need an interpreter of its own (`make bench` makes one).
    python = os.environ.get("QUIX_PYTHON", sys.executable) if kind == "quix" else sys.executable
    command = [python, str(HERE / "baselines.py"), kind, "--bootstrap", bootstrap, "--topic", topic]
    command += ["--events", str(events)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=BASELINE_TIMEOUT, check=False)
    found = re.search(r"events=(\d+) seconds=([\d.]+)", result.stdout)  # Faust may print a spinner first
    if found is None:
        raise RuntimeError(f"{kind} baseline failed: {result.stderr[-2000:]}")
    return int(found.group(1)) / float(found.group(2))


def memory(open_conversations: int) -> tuple[float, int]:
    """(bytes per open conversation, peak RSS in bytes) of an engine holding that many, measured
    in a fresh process."""
    command = [sys.executable, str(HERE / "engine.py"), "--memory-only", "--open", str(open_conversations)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BASELINE_TIMEOUT, check=True)
    output = done.stdout
    found = re.search(r"bytes_per_open_conversation=(\d+) peak_rss_bytes=(\d+)", output)
    assert found is not None, output
    return float(found.group(1)), int(found.group(2))


def profiled(bootstrap: str, partitions: int, lines: list[bytes], workdir: Path) -> dict[str, float]:
    """CPU shares of one worker processing `lines`, sampled from first to last event."""
    workers = Workers(bootstrap, 1, partitions, workdir)
    profilers: list[Profiler] = []

    def attach() -> None:
        profilers.append(Profiler(workers.processes[0].pid, workdir / "worker.pyspy"))

    try:
        throughput(workers, lines, on_start=attach)
    finally:
        found = [profiler.stop() for profiler in profilers]
    return found[0]


@dataclass
class Figures:
    setup: str
    workers: int
    ceiling: float
    floor: float
    naive: float
    worker: float
    machine: float
    quix: float | None = None
    delays: Latency | None = None
    rss: dict[int, tuple[float, int]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"workers={self.workers} worker_eps={self.worker:.0f} machine_eps={self.machine:.0f} "
            f"faust_floor_eps={self.floor:.0f} naive_faust_eps={self.naive:.0f} "
            f"ceiling_eps={self.ceiling:.0f} speedup_vs_naive_faust={self.machine / self.naive:.1f} "
            f"floor_ratio={self.worker / self.floor:.2f} ceiling_ratio={self.worker / self.ceiling:.3f}"
            + (f" quix_eps={self.quix:.0f} vs_quix={self.machine / self.quix:.2f}" if self.quix else "")
        )

    def markdown(self) -> str:
        rows = [
            ("aiokafka getmany + orjson (ceiling)", f"{self.ceiling:,.0f} events/s"),
            ("Faust floor: take(2000), no state", f"{self.floor:,.0f} events/s"),
            ("textbook Faust: group_by + windowed table", f"{self.naive:,.0f} events/s"),
            *([("Quix Streams: group_by + tumbling count and mean", f"{self.quix:,.0f} events/s")]
              if self.quix else []),
            ("ccpipe, 1 worker (`worker_eps`)",
             f"{self.worker:,.0f} events/s = {self.worker / self.floor:.2f} x Faust floor"),
            (f"ccpipe, {self.workers} workers (`machine_eps`)",
             f"{self.machine:,.0f} events/s = {self.machine / self.naive:.1f} x textbook Faust"
             + (f", {self.machine / self.quix:.2f} x Quix Streams" if self.quix else "")),
        ]  # fmt: skip
        if self.delays is not None:
            d = self.delays
            rows += [
                (f"produce → gauge at {d.rate:,.0f} events/s (simulation asked {d.asked:,.0f}), p50 / p99",
                 f"{d.gauge_p50:.2f} s / {d.gauge_p99:.2f} s ({d.probes} probes, after {d.catch_up:.0f} s"
                 " catching up with the simulation's start)"),
                ("produce → row queryable, p50 / p99", f"{d.row_p50:.2f} s / {d.row_p99:.2f} s"),
            ]  # fmt: skip
        for count, (per_conversation, peak) in self.rss.items():
            each = f"{per_conversation / 1024:.2f} KiB each, peak RSS {peak / 2**20:,.0f} MiB"
            rows.append((f"{count:,} open conversations (engine)", each))
        if self.cpu:
            ranked = sorted(self.cpu.items(), key=lambda item: -item[1])
            shares = ", ".join(f"{part} {share:.0%}" for part, share in ranked)
            rows.append(("CPU of one worker (py-spy)", shares))
        lines = ["| figure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
        return f"{self.setup}\n\n" + "\n".join(lines)


STARTED = time.monotonic()


def progress(stage: str, rate: float | None = None) -> float:
    """Tell the person at the terminal what is done (on stderr: stdout holds the figures)."""
    figure = f": {rate:,.0f} events/s" if rate is not None else ""
    print(f"[{time.monotonic() - STARTED:4.0f} s] {stage}{figure}", file=sys.stderr, flush=True)
    return rate or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="throughput only, fewer events: 2-3 min")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="floor and worker timings, alternated (median)")
    args = parser.parse_args()
    events = 100_000 if args.quick else 200_000
    naive_events = 5_000 if args.quick else 30_000
    cores = os.cpu_count() or 1
    workdir = Path(tempfile.mkdtemp(prefix="ccpipe-run-"))
    lines = simulated_lines(events)
    setup = (f"{platform.machine()}, {cores} cores, Python {platform.python_version()}; {events:,} events "
             f"({naive_events:,} for textbook Faust), {args.partitions} partitions; floor and 1 worker: "
             f"median of {args.rounds} alternated rounds")  # fmt: skip
    broker = start_broker(log_path=workdir / "broker.log")
    try:
        bootstrap = broker.bootstrap
        topic = preload(bootstrap, lines, args.partitions)
        progress("pre-loaded")
        ceiling = progress("ceiling", baseline("ceiling", bootstrap, topic, events))
        naive_topic = preload(bootstrap, lines[:naive_events], args.partitions)
        naive = progress("textbook Faust", baseline("naive", bootstrap, naive_topic, naive_events))
        # floor_ratio compares two figures that each move by a fifth between runs on a busy
        # machine: the median of rounds, each timing the floor and then a worker.
        floors, singles = [], []
        for n in range(1, args.rounds + 1):
            floors.append(progress(f"Faust floor, round {n}", baseline("floor", bootstrap, topic, events)))
            rate = throughput(Workers(bootstrap, 1, args.partitions, workdir), lines)
            singles.append(progress(f"ccpipe, 1 worker, round {n}", rate))
        floor, worker = statistics.median(floors), statistics.median(singles)
        machine = worker
        if cores > 1:
            machine = throughput(Workers(bootstrap, cores, args.partitions, workdir), lines)
            progress(f"ccpipe, {cores} workers", machine)
        figures = Figures(setup, cores, ceiling, floor, naive, worker, machine)
        if not args.quick:
            figures.quix = progress("Quix Streams", baseline("quix", bootstrap, topic, events))
            with Workers(bootstrap, 1, args.partitions, workdir) as workers:
                workers.wait_for_assignment()
                figures.delays = latency(workers, rate=worker / 2, seconds=60)
            progress("latency")
            figures.cpu = profiled(bootstrap, args.partitions, lines, workdir)
            progress("CPU profile")
    finally:
        broker.stop()
    if not args.quick:
        figures.rss = {count: memory(count) for count in (100_000, 1_000_000)}
        progress("memory")
        print(figures.markdown())
    print(f"{setup}; {time.monotonic() - STARTED:.0f} s in all", file=sys.stderr)
    print(figures.line())


if __name__ == "__main__":
    main()
