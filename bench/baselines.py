"""Baseline consumers for bench/run.py, each run as its own process on a pre-loaded topic.

- `ceiling`: a bare aiokafka `getmany` loop + orjson + a dict count (a Python consumer's ceiling);
- `floor`: a Faust app with `stream.take(2000)`, raw values, orjson, dict counts, no tables
  (what Faust itself costs);
- `naive`: the textbook Faust app: per-event `group_by(channel)` and a windowed table;
- `quix`: the Quix Streams peer: `group_by` (channel, queue), then a tumbling 60 s window of
  event time (2 days of grace: events of different partitions interleave after the re-keying)
  with a count and a mean (of the customer sentiment, 0 when absent) per key.

Each prints `events=N seconds=S` (first to last event) and exits once it has seen N events.
Usage: python bench/baselines.py KIND --bootstrap HOST:PORT --topic T --events N
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections import Counter

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition


def report(count: int, began: float | None) -> None:
    seconds = time.monotonic() - (began or time.monotonic())
    print(f"events={count} seconds={seconds:.3f}", flush=True)


async def ceiling(bootstrap: str, topic: str, events: int) -> None:
    # All partitions assigned directly: no group to join, so only the reading is timed.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    await consumer.topics()  # fetches the cluster's metadata
    partitions = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, partition) for partition in sorted(partitions)])
    counts: Counter[tuple[str, str]] = Counter()
    seen, began = 0, None
    try:
        while seen < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                if began is None:
                    began = time.monotonic()
                for record in records:
                    event = orjson.loads(record.value)
                    counts[(event.get("type"), event.get("channel"))] += 1
                seen += len(records)
    finally:
        await consumer.stop()
    report(seen, began)


def faust_app(kind: str, bootstrap: str, topic: str, events: int) -> None:
    app = faust.App(f"{kind}-{uuid.uuid4().hex[:6]}", broker=f"kafka://{bootstrap}", store="memory://",
                    web_enabled=False, consumer_auto_offset_reset="earliest", broker_session_timeout=6,
                    broker_heartbeat_interval=0.6, broker_rebalance_timeout=6, topic_partitions=6,
                    datadir=f"/tmp/faust-{kind}-{os.getpid()}")  # fmt: skip
    state = {"seen": 0, "began": None}

    def done(count: int) -> None:
        state["seen"] += count
        if state["began"] is None:
            state["began"] = time.monotonic()
        if state["seen"] >= events:
            report(state["seen"], state["began"])
            sys.stdout.flush()
            os._exit(0)

    if kind == "floor":
        source = app.topic(topic, value_serializer="raw", key_serializer="raw")
        counts: Counter[tuple[str, str]] = Counter()

        @app.agent(source)
        async def floor(stream):  # type: ignore[no-untyped-def]
            async for values in stream.take(2000, within=0.5):
                for value in values:
                    event = orjson.loads(value)
                    counts[(event.get("type"), event.get("channel"))] += 1
                done(len(values))

    else:

        class Interaction(faust.Record, serializer="json"):
            event_id: str
            type: str
            channel: str = ""  # agent states have none

        source = app.topic(topic, value_type=Interaction, key_serializer="raw")
        by_channel = app.topic(
            f"{topic}-by-channel-{uuid.uuid4().hex[:6]}", value_type=Interaction, partitions=6
        )
        table = app.Table("per_channel", default=int, partitions=6).tumbling(60, expires=3600)

        @app.agent(source)
        async def naive(stream):  # type: ignore[no-untyped-def]
            async for event in stream.group_by(Interaction.channel, topic=by_channel):
                table[event.channel] += 1
                done(1)

    level = os.environ.get("BENCH_LOG_LEVEL", "ERROR")
    faust.Worker(app, loglevel=level, quiet=True, redirect_stdouts=False).execute_from_commandline()


KAFKA_DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)


def quix(bootstrap: str, topic: str, events: int) -> None:
    from datetime import timedelta  # noqa: PLC0415

    from quixstreams import Application  # noqa: PLC0415 - only this baseline needs it
    from quixstreams.dataframe.windows import Count, Mean  # noqa: PLC0415
    from quixstreams.models.topics.manager import TopicManager  # noqa: PLC0415

    # Quix derives its internal topics' retention from the source topic's config; Tansu's
    # DescribeConfigs answers with an empty set, so fill in Kafka's own default.
    derive = TopicManager.derive_topic_config.__func__  # type: ignore[attr-defined]

    def with_retention(cls: type, topics: list) -> object:  # type: ignore[type-arg]
        for source in topics:
            source.broker_config.extra_config.setdefault("retention.ms", KAFKA_DEFAULT_RETENTION_MS)
        return derive(cls, topics)

    TopicManager.derive_topic_config = classmethod(with_retention)  # type: ignore[method-assign,assignment]
    app = Application(broker_address=bootstrap, consumer_group=f"quix-{uuid.uuid4().hex[:6]}",
                      auto_offset_reset="earliest", state_dir=f"/tmp/quix-{os.getpid()}",
                      loglevel=os.environ.get("BENCH_LOG_LEVEL", "ERROR"))  # fmt: skip
    source = app.topic(topic, value_deserializer="json",
                       timestamp_extractor=lambda value, *_: int(value["timestamp"] * 1000))  # fmt: skip
    state = {"seen": 0, "began": None}

    def counted(_: object) -> None:
        state["seen"] += 1
        if state["began"] is None:
            state["began"] = time.monotonic()
        if state["seen"] >= events:
            report(state["seen"], state["began"])
            os._exit(0)

    frame = app.dataframe(source)
    frame = frame.group_by(  # agent states have no channel or queue: one group of their own
        lambda value: f"{value.get('channel', '')}|{value.get('queue', '')}", name="channel_queue"
    )
    frame = frame.apply(lambda value: {"score": value.get("sentiment") or 0.0})
    window = frame.tumbling_window(
        timedelta(seconds=60), grace_ms=timedelta(days=2), on_late=lambda *_: False
    )
    window.agg(events=Count(), mean_score=Mean("score")).current().update(counted)  # one update per event
    app.run()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=("ceiling", "floor", "naive", "quix"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args()
    if args.kind == "ceiling":
        asyncio.run(ceiling(args.bootstrap, args.topic, args.events))
    elif args.kind == "quix":
        quix(args.bootstrap, args.topic, args.events)
    else:
        faust_app(args.kind, args.bootstrap, args.topic, args.events)


if __name__ == "__main__":
    main()
