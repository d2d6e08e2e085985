"""The embedded broker's cost as it fills: one record's produce → consume round trip at the end
of a partition, measured at each fill level, with the records stored in batches of `--batch`.

A paced producer (live traffic at a few hundred events/s per partition) sends batches of one
or a few records, so a soak leaves the broker holding about as many batches as records; a
bulk load leaves few large batches. Running both shows which one the broker's cost follows.

Usage: python bench/broker.py [--records 800000] [--batch 4] [--probes 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from engine import memory_bytes

from pipeline.broker import start_broker

PARTITIONS = 6
VALUE = b"x" * 300  # about one simulated event


def round_trips(producer: Producer, consumer: Consumer, probes: int) -> list[float]:
    """Seconds from producing one record to partition 0 to consuming it there."""
    seconds = []
    for _ in range(probes):
        end = consumer.get_watermark_offsets(TopicPartition("fill", 0), timeout=10)[1]
        consumer.assign([TopicPartition("fill", 0, end)])
        began = time.perf_counter()
        producer.produce("fill", value=b"probe", partition=0)
        producer.flush(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None and message.value() == b"probe":
                break
        seconds.append(time.perf_counter() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=800_000, help="records stored at the last level")
    parser.add_argument("--batch", type=int, default=4, help="records per produced batch")
    parser.add_argument("--probes", type=int, default=20, help="round trips per level")
    args = parser.parse_args()
    broker = start_broker(log_path=Path(tempfile.mkdtemp(prefix="ccpipe-broker-bench-")) / "broker.log")
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("fill", PARTITIONS, 1)])["fill"].result()
        producer = Producer({
            "bootstrap.servers": broker.bootstrap, "linger.ms": 0, "batch.num.messages": args.batch,
            "queue.buffering.max.messages": 100_000,
        })  # fmt: skip
        consumer = Consumer({
            "bootstrap.servers": broker.bootstrap, "group.id": "broker-bench", "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        })  # fmt: skip
        stored = 0
        levels = [0] + [args.records * share // 8 for share in (1, 2, 4, 8)]
        print(f"batches of {args.batch} records of {len(VALUE)} B over {PARTITIONS} partitions")
        for level in levels:
            began = time.perf_counter()
            while stored < level:
                for _ in range(min(10_000, level - stored)):
                    producer.produce("fill", value=VALUE, partition=stored % PARTITIONS)
                    producer.poll(0)
                    stored += 1
                producer.flush(60)
            filled = time.perf_counter() - began
            rate = (level - (levels[levels.index(level) - 1] if level else 0)) / filled if filled else 0.0
            seconds = round_trips(producer, consumer, args.probes)
            print(
                f"records={stored} round_trip_median_ms={statistics.median(seconds) * 1000:.1f} "
                f"round_trip_max_ms={max(seconds) * 1000:.1f} fill_records_per_s={rate:.0f} "
                f"broker_rss_mib={memory_bytes('VmRSS', broker.pid) / 2**20:.0f}",
                flush=True,
            )
        consumer.close()
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
