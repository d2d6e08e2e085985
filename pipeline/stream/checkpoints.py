"""Engine checkpoints on Kafka: each partition's engine state and the input offset it covers.

A checkpoint is a pickled, compressed `PartitionEngine`, cut into chunks on the data topic
(`NAME.data`), followed by a small manifest on the manifest topic (`NAME`) naming the chunks'
offsets and the last input offset the state includes. Both topics have the input's partition
count, and partition p's checkpoints live in partition p, so recovery reads one manifest
partition and a handful of chunks. A crash in the middle of a checkpoint leaves chunks with no
manifest, which nothing reads: the previous checkpoint stays valid.

The checkpoint topics are written only by ccpipe workers and must not be writable by anyone
else (their content is unpickled).
"""

from __future__ import annotations

import asyncio
import pickle
import zlib
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

CHUNK_BYTES = 512 * 1024


@dataclass(slots=True)
class Checkpoint:
    partition: int
    applied_offset: int
    payload: bytes


class CheckpointStore:
    """Writes and reads checkpoints through its own producer and (unassigned-group) consumer."""

    def __init__(self, topic: str, kafka_options: dict[str, object]) -> None:
        self.topic = topic
        self.data_topic = f"{topic}.data"
        self._options = kafka_options
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(**self._options, max_request_size=2 * CHUNK_BYTES, acks="all")
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def save(self, partition: int, applied_offset: int, image: bytes) -> int:
        """Write a checkpoint of a pickled state; returns its compressed size in bytes."""
        assert self._producer is not None, "start() first"
        payload = await asyncio.to_thread(zlib.compress, image, 1)  # off the event loop
        offsets = []
        for start in range(0, len(payload), CHUNK_BYTES):
            chunk = payload[start : start + CHUNK_BYTES]
            meta = await self._producer.send_and_wait(self.data_topic, chunk, partition=partition)
            offsets.append(meta.offset)
        manifest = {
            "partition": partition,
            "applied_offset": applied_offset,
            "chunks": offsets,
            "bytes": len(payload),
        }
        await self._producer.send_and_wait(self.topic, orjson.dumps(manifest), partition=partition)
        return len(payload)

    async def load(self, partition: int, timeout: float = 30.0) -> Checkpoint | None:
        """The newest complete checkpoint of a partition, or None when it has none."""
        consumer = AIOKafkaConsumer(**self._options, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            return await asyncio.wait_for(self._load(consumer, partition), timeout)
        finally:
            await consumer.stop()

    async def _load(self, consumer: AIOKafkaConsumer, partition: int) -> Checkpoint | None:
        manifests = TopicPartition(self.topic, partition)
        consumer.assign([manifests])
        end = (await consumer.end_offsets([manifests]))[manifests]
        if end == 0:
            return None
        # Manifests are small: read the last few and keep the newest. (The caller's timeout
        # bounds these loops; an empty fetch only means the data has not arrived yet.)
        consumer.seek(manifests, max(0, end - 16))
        newest = None
        while newest is None or newest[0] < end - 1:
            records = (await consumer.getmany(manifests, timeout_ms=1000)).get(manifests, [])
            if records:
                newest = (records[-1].offset, orjson.loads(records[-1].value))
        manifest = newest[1]
        data = TopicPartition(self.data_topic, partition)
        consumer.assign([data])
        chunks = []
        for offset in manifest["chunks"]:
            consumer.seek(data, offset)
            chunk: list[ConsumerRecord] = []
            while not chunk:
                chunk = (await consumer.getmany(data, timeout_ms=1000, max_records=1)).get(data, [])
            chunks.append(chunk[0].value)
        return Checkpoint(partition, int(manifest["applied_offset"]), b"".join(chunks))


def image(state: object) -> bytes:
    """The state as a checkpoint holds it (before compression): taken between two batches."""
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def restore(checkpoint: Checkpoint) -> object:
    return pickle.loads(zlib.decompress(checkpoint.payload))  # only ccpipe writes this topic
