"""What a checkpoint costs as the state grows: its size, and how long the event loop pauses.

For each count of open conversations (a start and a scored customer message each, so two
remembered event ids each), one engine holding them all, as one partition would:

- image: its parts pickled and compressed, bytes in all and per conversation;
- incremental: the bytes the next checkpoint writes after 1,000 more events (about 9 minutes of
  a contact center of 20,000 conversations a day: new conversations and replies, the others
  wait), the parts already stored not written again;
- synchronous: making the image on the event loop (what a checkpoint cost before the fork);
- capture: what the event loop pauses now (`Capture`: the fork), and how long until the forked
  copy has the image ready (on the other core, while the loop goes on);
- restore: unpickling it at recovery.

With --live-rate, for each nominal rate: one input partition of six of the live simulation
(agents on shift, whose states change all the time) after 90 s, its image split into the base
(which holds the agents) and the other parts, and what its next checkpoint writes after one
checkpoint interval (30 s) more of live traffic.

Usage: python bench/checkpoint.py [--open 100000 200000 ...] [--live-rate 3000 14000 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import platform
import time

import orjson
from engine import BATCH, memory_bytes, open_conversations
from stream import clean_live_simulation

from pipeline import native
from pipeline.engine import Engine
from pipeline.events import Event, decode_event
from pipeline.simulate import SimulationSettings, Simulator
from pipeline.stream.checkpoints import Capture, image, unpack
from pipeline.stream.routing import home_partition


def measure(count: int) -> dict[str, float]:
    lines = open_conversations(count)
    engine = Engine()
    for start in range(0, len(lines), BATCH):
        engine.process([decode_event(line) for line in lines[start : start + BATCH]])
    del lines
    gc.collect()
    gc.freeze()  # as a worker does: the state is not traversed by every collection
    began = time.perf_counter()
    parts = image(engine)
    synchronous = time.perf_counter() - began
    size = sum(len(payload or b"") for _, payload in parts)
    later = Simulator(SimulationSettings(seed=9, start=engine.newest or 0.0, conversations=20_000)).events()
    engine.process([decode_event(orjson.dumps(event)) for event in itertools.islice(later, 1000)])
    stored = {digest for digest, _ in parts}
    incremental = sum(len(payload or b"") for _, payload in image(engine, stored))

    async def capture() -> tuple[float, float]:
        began = time.perf_counter()
        taken = Capture(engine)
        paused = time.perf_counter() - began
        await taken.image()
        return paused, time.perf_counter() - began

    paused, ready = asyncio.run(capture())
    began = time.perf_counter()
    restored = unpack(parts)
    restore = time.perf_counter() - began
    assert isinstance(restored, Engine) and len(restored.conversations) == count
    return {"image_bytes": size, "incremental": incremental, "synchronous": synchronous, "paused": paused,
            "ready": ready, "restore": restore, "rss": memory_bytes("VmRSS")}  # fmt: skip


def live(rate: float, partitions: int = 6, warm: float = 90.0, interval: float = 30.0) -> dict[str, float]:
    """Image and next checkpoint of partition 0 of `partitions` of the live simulation at `rate`."""
    simulation = clean_live_simulation(rate)
    engine, pending = Engine(), []
    events = Simulator(simulation).events()
    stored: set[str] = set()
    found: dict[str, float] = {}
    for until in (warm, warm + interval):
        for raw in events:
            event = decode_event(orjson.dumps(raw))
            if isinstance(event, Event) and home_partition(event.routing_key, partitions) == 0:
                pending.append(event)
            past = raw["timestamp"] > simulation.start + until
            if len(pending) >= BATCH or past:
                engine.process(pending)
                pending = []
                if past:
                    break
        parts = image(engine, stored)
        written = [len(payload) for _, payload in parts if payload is not None]
        if not stored:
            found |= {"agents": len(engine.agents.agents), "conversations": len(engine.conversations),
                      "base": written[0], "others": sum(written[1:])}  # fmt: skip
        else:
            found["next"] = sum(written)
        stored = {digest for digest, _ in parts}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--open", type=int, nargs="+", default=[100_000, 200_000])
    parser.add_argument("--live-rate", type=float, nargs="*", default=[], help="nominal events/s")
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {native.MODE}")
    print(
        "| open conversations | image | per conversation | next checkpoint writes | on the loop before "
        "| loop pause now (fork) | image ready after | restore |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for count in args.open:
        m = measure(count)
        print(f"| {count:,} | {m['image_bytes'] / 2**20:.1f} MiB | {m['image_bytes'] / count:.0f} B "
              f"| {m['incremental'] / 2**10:,.0f} KiB | {m['synchronous']:.2f} s "
              f"| {m['paused'] * 1000:.1f} ms | {m['ready']:.2f} s "
              f"| {m['restore']:.2f} s |")  # fmt: skip
    if args.live_rate:
        print("\n| live simulation (nominal) | agents / conversations held | base (agents) | other parts "
              "| next checkpoint writes, 30 s later |")  # fmt: skip
        print("|---|---|---|---|---|")
    for rate in args.live_rate:
        m = live(rate)
        mib = {name: f"{m[name] / 2**20:.1f} MiB" for name in ("base", "others", "next")}
        print(f"| {rate:,.0f} events/s, partition 0 of 6 | {m['agents']:,.0f} / {m['conversations']:,.0f} "
              f"| {mib['base']} | {mib['others']} | {mib['next']} |")  # fmt: skip


if __name__ == "__main__":
    main()
