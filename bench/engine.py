"""Throughput of the pure engine and its memory per open conversation.

Measured side by side in one run on the same generated day of traffic (all event types,
about 30% customer messages with text, most texts unique so VADER really runs):

- baseline: orjson decode + a dict count per (type, channel): the least a Python consumer
  of these events can do;
- validate: decode + validation into `Event`s;
- engine: decode + validation + `Engine.process` in batches of 1000 (what `ccpipe compute`
  and the streaming agents run), plus the same with sentiment scores served from cache;
  first with CPython's default garbage-collector thresholds, then (and for everything after)
  with the policy `ccpipe compute` and the workers set (pipeline/gcpolicy.py);
- memory: RSS growth for N open conversations (started + a customer message each, so each
  also holds two remembered event ids), divided by N.

Usage: python bench/engine.py [--events 300000] [--open 100000] [--memory-only]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import platform
import time
from collections import Counter
from collections.abc import Callable

import orjson

from pipeline import gcpolicy
from pipeline.engine import Engine
from pipeline.engine.sentiment import vader_compound
from pipeline.events import decode_event
from pipeline.simulate import SimulationSettings, Simulator

BATCH = 1000


def memory_bytes(field: str, pid: int | str = "self") -> int:
    """A memory figure of /proc/PID/status: VmRSS (resident now) or VmHWM (the peak, which
    unlike ru_maxrss is not inherited from the process that forked this one)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def generate(count: int) -> list[bytes]:
    events = itertools.islice(Simulator(SimulationSettings(conversations=count // 8)).events(), count)
    return [orjson.dumps(e) for e in events]


def baseline(lines: list[bytes]) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    for line in lines:
        event = orjson.loads(line)
        counts[(event["type"], event.get("channel"))] += 1


def validate(lines: list[bytes]) -> None:
    for line in lines:
        decode_event(line)


def engine(lines: list[bytes]) -> None:
    eng = Engine()
    for start in range(0, len(lines), BATCH):
        eng.process([decode_event(line) for line in lines[start : start + BATCH]])
    eng.flush()


def timed(run: Callable[[list[bytes]], None], lines: list[bytes], repeat: int = 3) -> float:
    """Best events/s of `repeat` runs."""
    best = 0.0
    for _ in range(repeat):
        gc.collect()
        began = time.perf_counter()
        run(lines)
        best = max(best, len(lines) / (time.perf_counter() - began))
    return best


def open_conversations(count: int) -> list[bytes]:
    """Events of `count` open conversations: a start and a scored customer message each."""
    lines = []
    for i in range(count):
        ids = f'"conversation_id":"conv-{i:08d}","customer_id":"cust-{i:08d}"'
        common = f'{ids},"channel":"chat","queue":"billing"'
        t = 1_772_442_000 + i * 0.01
        lines.append(
            f'{{"event_id":"s-{i:08d}","type":"conversation_started",{common},"timestamp":{t}}}'.encode()
        )
        lines.append(
            f'{{"event_id":"m-{i:08d}","type":"message",{common},"timestamp":{t + 0.005},'
            f'"direction":"inbound","author":"customer","sentiment":-0.4}}'.encode()
        )
    return lines


def memory_per_open_conversation(count: int) -> float:
    lines = open_conversations(count)
    eng = Engine()
    gc.collect()
    before = memory_bytes("VmRSS")
    for start in range(0, len(lines), BATCH):
        eng.process([decode_event(line) for line in lines[start : start + BATCH]])
    gc.collect()
    grown = memory_bytes("VmRSS") - before  # `lines` is still alive, so its memory is in neither figure
    assert len(eng.conversations) == count
    return grown / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--open", type=int, default=100_000, help="open conversations for the memory figure")
    parser.add_argument("--memory-only", action="store_true", help="memory figures only")
    args = parser.parse_args()
    if args.memory_only:
        per_conversation = memory_per_open_conversation(args.open)
        peak = memory_bytes("VmHWM")
        print(f"open={args.open} bytes_per_open_conversation={per_conversation:.0f} peak_rss_bytes={peak}")
        return

    lines = generate(args.events)
    texts = sum(b'"author":"customer"' in line and b'"text"' in line for line in lines)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"workload: {len(lines)} events, {texts / len(lines):.0%} customer messages with text")

    base = timed(baseline, lines)
    valid = timed(validate, lines)
    vader_compound.cache_clear()
    default_gc = timed(engine, lines, repeat=1)  # CPython's default collector thresholds
    gcpolicy.for_long_lived_state()  # as `ccpipe compute` and the workers run
    vader_compound.cache_clear()
    cold = timed(engine, lines, repeat=1)  # every distinct text scored once by VADER
    warm = timed(engine, lines)  # texts already scored: the engine's own cost
    per_conversation = memory_per_open_conversation(args.open)

    print(f"baseline (orjson + dict count): {base:>10,.0f} events/s")
    print(f"decode + validate:              {valid:>10,.0f} events/s  ({valid / base:.2f} of baseline)")
    share = default_gc / base
    print(f"engine, VADER, default GC:      {default_gc:>10,.0f} events/s  ({share:.2f} of baseline)")
    print(f"engine, VADER scoring:          {cold:>10,.0f} events/s  ({cold / base:.2f} of baseline)")
    print(f"engine, sentiment cached:       {warm:>10,.0f} events/s  ({warm / base:.2f} of baseline)")
    print(f"memory per open conversation:   {per_conversation:>10,.0f} bytes ({args.open:,} open)")
    print(
        f"events={len(lines)} baseline_eps={base:.0f} validate_eps={valid:.0f} "
        f"engine_default_gc_eps={default_gc:.0f} engine_eps={cold:.0f} "
        f"engine_cached_eps={warm:.0f} bytes_per_open_conversation={per_conversation:.0f}"
    )


if __name__ == "__main__":
    main()
