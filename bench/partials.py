"""The partials' bytes against the input's, for one input partition of simulated live traffic.

Every PUBLISH_EVERY of event time the partition publishes what its publish policy says is due
(pipeline/stream/partials.py), exactly as a worker does: the changed windows whole, with their
exact samples, and the agents partial to every partials partition. Printed per minute of event
time: what the partition read and what it would send.

Usage: python bench/partials.py [--rate 3000] [--seconds 240] [--partitions 6]
"""

from __future__ import annotations

import argparse
from collections import Counter

import orjson
from stream import clean_live_simulation

from pipeline import gcpolicy
from pipeline.engine import Engine
from pipeline.events import Event, decode_event
from pipeline.settings import EngineSettings
from pipeline.simulate import Simulator
from pipeline.stream.partials import PUBLISH_EVERY, PublishState, publication
from pipeline.stream.routing import home_partition


def published_bytes(engine: Engine, policy: PublishState, partitions: int) -> int:
    """The bytes of one publish that is due now, as a worker sends it."""
    policy.published = -float("inf")  # the timer is event time here
    due = publication("input", 0, 0, engine, publish=policy, changed=policy.due(engine, 0.0))
    agents = partitions * len(due.agents) if due.agents is not None else 0  # to every partials partition
    return agents + sum(len(value) for _, value in due.keyed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=3000.0, help="the simulation's nominal events/s")
    parser.add_argument("--seconds", type=float, default=240.0, help="event time simulated")
    parser.add_argument(
        "--partitions", type=int, default=6, help="input partitions (partition 0 is measured)"
    )
    args = parser.parse_args()
    gcpolicy.for_long_lived_state()
    simulation = clean_live_simulation(args.rate)
    engine, policy = Engine(EngineSettings()), PublishState()
    read: Counter[int] = Counter()
    sent: Counter[int] = Counter()
    pending: list[Event] = []
    next_publish = simulation.start
    for raw in Simulator(simulation).events():
        if raw["timestamp"] > simulation.start + args.seconds:
            break
        line = orjson.dumps(raw)
        event = decode_event(line, "bench")
        if not isinstance(event, Event) or home_partition(event.routing_key, args.partitions) != 0:
            continue
        minute = int((event.timestamp - simulation.start) // 60)
        read[minute] += len(line)
        pending.append(event)
        if event.timestamp >= next_publish:
            policy.mark(engine.process(pending, wall_clock=event.timestamp + 1))
            pending = []
            sent[minute] += published_bytes(engine, policy, args.partitions)
            next_publish = event.timestamp + PUBLISH_EVERY
    print(f"nominal {args.rate:,.0f} events/s, partition 0 of {args.partitions}, a publish every "
          f"{PUBLISH_EVERY} s of event time:")  # fmt: skip
    for minute in sorted(read):
        ratio = sent[minute] / read[minute]
        megabytes = f"input {read[minute] / 1e6:6.2f} MB, partials {sent[minute] / 1e6:6.2f} MB"
        print(f"  minute {minute}: {megabytes} ({ratio:.2f} x)")
    total_read, total_sent = sum(read.values()), sum(sent.values())
    print(f"input_bytes={total_read} partials_bytes={total_sent} ratio={total_sent / total_read:.2f}")


if __name__ == "__main__":
    main()
