"""Engine checkpoints on Kafka: each partition's engine state and the input offset it covers.

A checkpoint is a pickled, compressed `PartitionEngine`, cut into chunks on the data topic
(`NAME.data`), followed by a small manifest on the manifest topic (`NAME`) naming the chunks'
offsets and the last input offset the state includes. Both topics have the input's partition
count, and partition p's checkpoints live in partition p, so recovery reads one manifest
partition and a handful of chunks. A crash in the middle of a checkpoint leaves chunks with no
manifest, which nothing reads: the previous checkpoint stays valid.

The image is made by a forked copy of the worker (`Capture`), as Redis makes its snapshots:
the fork is the instant the state is taken (a copy-on-write view of memory, milliseconds
whatever the state's size), and pickling and compressing it, which take about a second per
100 000 conversations, happen in that copy on the other core while the event loop goes on.

The checkpoint topics are written only by ccpipe workers and must not be writable by anyone
else (their content is unpickled).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import pickle
import signal
import sys
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

    async def save(self, partition: int, applied_offset: int, payload: bytes) -> int:
        """Write a checkpoint of an `image`; returns its size in bytes."""
        assert self._producer is not None, "start() first"
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
    """The state as a checkpoint holds it: pickled and compressed."""
    return zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 1)


def unpack(payload: bytes) -> object:
    return pickle.loads(zlib.decompress(payload))  # only ccpipe writes the checkpoint topics


def restore(checkpoint: Checkpoint) -> object:
    return unpack(checkpoint.payload)


class Capture:
    """The image of a state as it is at construction, made by a forked copy of this process.

    Construct it between two batches, on the thread running the event loop; await `image()`
    (always: it also reaps the copy). Where there is no fork, the image is made at once."""

    def __init__(self, state: object) -> None:
        self._payload: bytes | None = None
        self._pid = self._fd = -1
        if not hasattr(os, "fork"):
            self._payload = image(state)
            return
        read, write = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            _image_in_child(state, write, parent)  # never returns
        os.close(write)
        self._pid, self._fd = pid, read

    async def image(self) -> bytes:
        if self._payload is None:
            self._payload = await asyncio.to_thread(self._collect)
        return self._payload

    def _collect(self) -> bytes:
        with os.fdopen(self._fd, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(self._pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise RuntimeError(f"the process making the checkpoint image ended with {code}")
        return payload


def _image_in_child(state: object, pipe: int, parent: int) -> None:
    """In the forked copy: write the image to the pipe and exit, touching nothing else (no
    event loop, no sockets, no atexit handlers), and dying with the worker."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)  # a signal here must not reach the worker's event loop
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_DFL)
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the worker died before the line above
            os._exit(1)
        gc.disable()  # collecting would only copy more of the worker's pages
        view = memoryview(image(state))
        while view:
            view = view[os.write(pipe, view) :]
        code = 0
    finally:
        os._exit(code)


_PR_SET_PDEATHSIG = 1
