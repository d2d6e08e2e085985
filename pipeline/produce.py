"""Send events into Kafka with kafka-python: `ccpipe replay FILE` and `ccpipe simulate`.

Both key each event by its `customer_id` (an `agent_state` event by its `agent_id`), so a
customer's or an agent's events stay in order on one partition, and keep at most one request in
flight per connection, so retries never reorder.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import orjson
from kafka import KafkaProducer
from tqdm import tqdm

from pipeline.calendars import ALWAYS_OPEN, Calendars
from pipeline.settings import WorkerSettings
from pipeline.simulate import DAY_SHAPE, SimulationSettings, Simulator
from pipeline.stream.kafka import aiokafka_options

# Average events per simulated conversation, to turn an event rate into a conversation rate.
EVENTS_PER_CONVERSATION = 10.0  # agent states included


@dataclass(slots=True)
class SendSummary:
    sent: int
    unkeyed: int
    seconds: float

    def __str__(self) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        return (
            f"sent {self.sent} events ({self.unkeyed} without a customer_id key) "
            f"in {self.seconds:.1f} s ({rate:,.0f}/s)"
        )


def producer(settings: WorkerSettings) -> KafkaProducer:
    return KafkaProducer(
        **aiokafka_options(settings),
        acks="all",
        linger_ms=5,
        compression_type=settings.kafka_compression,
        max_in_flight_requests_per_connection=1,
        client_id="ccpipe-producer",
    )


def customer_key(line: bytes) -> bytes | None:
    """The line's customer_id (an agent event's agent_id) as a key, or None when it has none
    (it is sent as is)."""
    try:
        event = orjson.loads(line)
        key = event.get("customer_id") or event.get("agent_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return key.encode() if isinstance(key, str) else None


def send_lines(settings: WorkerSettings, lines: Iterable[bytes], progress: tqdm | None = None) -> SendSummary:
    began = time.monotonic()
    sent = unkeyed = 0
    client = producer(settings)
    try:
        for raw in lines:
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            key = customer_key(line)
            unkeyed += key is None
            client.send(settings.input_topic, key=key, value=line)
            sent += 1
            if progress is not None:
                progress.update(1)
        client.flush()
    finally:
        client.close()
    return SendSummary(sent, unkeyed, time.monotonic() - began)


def replay(settings: WorkerSettings, source: IO[bytes], show_progress: bool) -> SendSummary:
    """Send a JSONL file, line by line, in file order."""
    progress = tqdm(unit="ev", desc="replay", file=sys.stderr) if show_progress else None
    try:
        return send_lines(settings, source, progress)
    finally:
        if progress is not None:
            progress.close()


def live_events(simulation: SimulationSettings, duration: float | None, limit: int | None) -> Iterator[bytes]:
    """Simulated events paced to the wall clock (event time = now), bounded by time and count."""
    deadline = time.monotonic() + duration if duration else None
    events = Simulator(simulation).events()
    for event in itertools.islice(events, limit):
        due = event["timestamp"]
        wait = due - time.time() if isinstance(due, float | int) else 0.0  # a broken event is sent at once
        if deadline is not None and time.monotonic() + max(wait, 0) > deadline:
            return
        if wait > 0:
            time.sleep(wait)
        yield orjson.dumps(event)


def live_simulation(
    rate: float,
    *,
    seed: int,
    spike: str | None,
    spike_after: float,
    spike_seconds: float,
    backfill: float = 0.0,
    warm_up: float = 0.0,
    calendars: Calendars = ALWAYS_OPEN,
) -> SimulationSettings:
    """Settings whose rate is about `rate` events/s at this hour of the day (the daily shape
    moves it later). With `backfill`, the simulation starts that many seconds ago, and the
    past is sent at once; `warm_up` seconds before that are simulated and not sent (the day
    starts mid-flow); the spike starts `spike_after` seconds after the simulation start."""
    start = time.time() - backfill
    hour = int((time.time() % 86400) // 3600)
    conversations_per_day = rate / EVENTS_PER_CONVERSATION * 86400 * (sum(DAY_SHAPE) / 24) / DAY_SHAPE[hour]
    return SimulationSettings(
        seed=seed,
        start=start,
        conversations=max(1, int(conversations_per_day)),
        jitter_seconds=2.0,
        duplicate_rate=0.002,
        invalid_rate=0.001,
        spike_channel=spike,
        spike_start=start + spike_after,
        spike_seconds=spike_seconds,
        calendars=calendars,
        warm_up=warm_up,
    )
