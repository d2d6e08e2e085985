"""Engine checkpoints on Kafka: each partition's engine state and the input offset it covers.

A checkpoint's image is a list of parts, each pickled and compressed on its own: the state
without its conversations, remembered ids and waiting sets (the base), then runs of about
`RUN_SIZE` of each time bucket's remembered ids (event ids, closed conversations: a bucket
only grows, and stops once event time has passed it), of each queue's waiting conversations
and of the conversations, in their order. A run ends after an item whose id hashes to a
multiple of that number, so runs are cut by content: a conversation that changes, arrives or
leaves changes its own run only. Parts are named by the digest of their pickle; a checkpoint
writes the parts the partition's previous checkpoint did not hold, and its manifest names
where every part lies, old ones included. So a state of 200 000 conversations that are
waiting, or resolved and kept for the FCR horizon, is not written again every 30 s: only the
base, the newest id buckets and the runs of the conversations that moved. Every
`FULL_EVERY_SECONDS` a partition's image is written whole, so a manifest never needs data
older than that.

Parts are cut into chunks on the data topic (`NAME.data`), followed by a small manifest on the
manifest topic (`NAME`) naming each part's chunk offsets and the last input offset the state
includes. Both topics have the input's partition count, and partition p's checkpoints live in
partition p, so recovery reads one manifest partition and the chunks it names. A crash in the
middle of a checkpoint leaves chunks with no manifest, which nothing reads: the previous
checkpoint stays valid.

The image is made by a forked copy of the worker (`Capture`), as Redis makes its snapshots:
the fork is the instant the state is taken (a copy-on-write view of memory, milliseconds
whatever the state's size), and pickling it, which takes about a second per 100 000
conversations, happens in that copy on the other core while the event loop goes on; the copy
compresses only the parts to be written.

The checkpoint topics are written only by ccpipe workers and must not be writable by anyone
else (their content is unpickled).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import hashlib
import itertools
import os
import pickle
import signal
import sys
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.engine import Engine

CHUNK_BYTES = 512 * 1024
RUN_SIZE = 2048  # conversations, waiting conversations or ids per part, on average
FULL_EVERY_SECONDS = 3600.0  # the data topic must keep its records longer than this
BASE = "ccpipe-checkpoint-parts-1"  # marks the base part (an image before parts is one pickle)

# (digest, compressed pickle), the pickle None when the partition's stored checkpoint has it.
Part = tuple[str, bytes | None]
T = TypeVar("T")


@dataclass(slots=True)
class Checkpoint:
    partition: int
    applied_offset: int
    parts: list[bytes]  # every part's compressed pickle, the base first


class CheckpointStore:
    """Writes and reads checkpoints through its own producer and (unassigned-group) consumer,
    and remembers where each partition's parts lie, to write only the new ones."""

    def __init__(
        self, topic: str, kafka_options: dict[str, object], clock: Callable[[], float] = time.time
    ) -> None:
        self.topic = topic
        self.data_topic = f"{topic}.data"
        self._options = kafka_options
        self._clock = clock
        self._producer: AIOKafkaProducer | None = None
        self._stored: dict[int, dict[str, list[int]]] = {}  # partition -> digest -> chunk offsets
        self._full_at: dict[int, float] = {}  # partition -> when its last whole image was written

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(**self._options, max_request_size=2 * CHUNK_BYTES, acks="all")
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def stored_parts(self, partition: int) -> frozenset[str]:
        """The digests the next checkpoint of `partition` need not write (none when a whole
        image is due)."""
        if self._clock() - self._full_at.get(partition, -float("inf")) >= FULL_EVERY_SECONDS:
            return frozenset()
        return frozenset(self._stored.get(partition, ()))

    async def save(self, partition: int, applied_offset: int, image: Sequence[Part]) -> int:
        """Write a checkpoint of an `image`; returns the bytes written."""
        assert self._producer is not None, "start() first"
        stored = self._stored.get(partition, {})
        written, parts = 0, []
        for digest, payload in image:
            if payload is None:
                parts.append([digest, stored[digest]])
                continue
            offsets = []
            for start in range(0, len(payload), CHUNK_BYTES):
                chunk = payload[start : start + CHUNK_BYTES]
                meta = await self._producer.send_and_wait(self.data_topic, chunk, partition=partition)
                offsets.append(meta.offset)
            parts.append([digest, offsets])
            written += len(payload)
        whole = all(payload is not None for _, payload in image)
        full_at = self._clock() if whole else self._full_at[partition]
        manifest = {"partition": partition, "applied_offset": applied_offset, "parts": parts,
                    "bytes_written": written, "full_at": full_at}  # fmt: skip
        await self._producer.send_and_wait(self.topic, orjson.dumps(manifest), partition=partition)
        self._remember(partition, manifest)
        return written

    def _remember(self, partition: int, manifest: dict[str, Any]) -> None:
        self._stored[partition] = {digest: offsets for digest, offsets in manifest.get("parts", ())}
        self._full_at[partition] = float(manifest.get("full_at", -float("inf")))

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
        # A manifest of a version before parts names one image's chunks.
        named = manifest["parts"] if "parts" in manifest else [["", manifest["chunks"]]]
        data = TopicPartition(self.data_topic, partition)
        consumer.assign([data])
        chunks: dict[int, bytes] = {}
        for first, last in _ranges(sorted({offset for _, offsets in named for offset in offsets})):
            # A checkpoint's new parts lie side by side: one seek for each such range.
            consumer.seek(data, first)
            while first not in chunks or last not in chunks:
                fetched = await consumer.getmany(data, timeout_ms=1000, max_records=last - first + 1)
                for record in fetched.get(data, []):
                    if first <= record.offset <= last:
                        chunks[record.offset] = record.value
        parts = [b"".join(chunks[offset] for offset in offsets) for _, offsets in named]
        self._remember(partition, manifest)
        return Checkpoint(partition, int(manifest["applied_offset"]), parts)


def _ranges(offsets: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted offsets as (first, last) runs of consecutive ones."""
    for _, run in itertools.groupby(enumerate(offsets), key=lambda item: item[1] - item[0]):
        members = [offset for _, offset in run]
        yield members[0], members[-1]


def _engine_of(state: object) -> Engine | None:
    if isinstance(state, Engine):
        return state
    engine = getattr(state, "engine", None)
    return engine if isinstance(engine, Engine) else None


def _cut(name: str, size: int) -> bool:
    """Whether a run ends after the item named `name` (about one in `size` do, by content)."""
    return zlib.crc32(name.encode("utf-8", "surrogatepass")) % size == 0


def _runs(items: Iterable[T], name: Callable[[T], str], size: int) -> Iterator[list[T]]:
    """The items in runs cut by content (by each item's `name`), in their order."""
    run: list[T] = []
    for item in items:
        run.append(item)
        if _cut(name(item), size):
            yield run
            run = []
    if run:
        yield run


def _pickles(state: object, run_size: int) -> list[bytes]:
    """The state's parts, pickled: the base, then tagged runs of the remembered ids of each time
    bucket (event ids, then closed conversations), of each key's waiting conversations and of
    the conversations (see the module). Each run is cut by content, so what did not change
    pickles to the same bytes."""
    dump = pickle.dumps
    engine = _engine_of(state)
    if engine is None:
        return [dump(state, protocol=pickle.HIGHEST_PROTOCOL)]
    id_sets = (engine.event_ids, engine.closed)
    held_ids = [(ids._buckets, ids._bucket_of) for ids in id_sets]
    held_waiting = [
        (key, waiting, waiting._starts, waiting._heap) for key, waiting in engine.waiting_by_key.items()
    ]
    conversations, customers, changed = engine.conversations, engine.customers, engine._changed
    # Taken out of the base, and rebuilt from the parts at restore: the buckets' inverse, each
    # key's heap of waiting starts, the customers' lists (which hold the conversations themselves).
    engine.conversations, engine.customers, engine._changed = {}, {}, {}
    for ids in id_sets:
        ids._buckets, ids._bucket_of = {}, {}
    for waiting in engine.waiting_by_key.values():
        waiting._starts, waiting._heap = {}, []
    try:
        base = dump((BASE, state, list(changed)), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        engine.conversations, engine.customers, engine._changed = conversations, customers, changed
        for ids, (buckets, inverse) in zip(id_sets, held_ids, strict=True):
            ids._buckets, ids._bucket_of = buckets, inverse
        for _, waiting, starts, heap in held_waiting:
            waiting._starts, waiting._heap = starts, heap
    parts: list[tuple[Any, ...]] = []
    for which, (buckets, _) in enumerate(held_ids):
        for bucket, members in buckets.items():
            parts.extend(("ids", which, bucket, run) for run in _runs(members, str, run_size))
    for key, _, starts, _ in held_waiting:
        parts.extend(("waiting", key, run) for run in _runs(starts.items(), itemgetter(0), run_size))
    parts.extend(("conversations", run) for run in _runs(conversations.items(), itemgetter(0), run_size))
    return [base, *(dump(part, protocol=pickle.HIGHEST_PROTOCOL) for part in parts)]


def image(state: object, stored: Collection[str] = frozenset(), run_size: int = RUN_SIZE) -> list[Part]:
    """The state as a checkpoint holds it: its parts, each pickled and compressed, but for the
    ones in `stored` (the partition's checkpoint has them)."""
    parts: list[Part] = []
    for pickled in _pickles(state, run_size):
        digest = hashlib.blake2b(pickled, digest_size=16).hexdigest()
        parts.append((digest, None if digest in stored else zlib.compress(pickled, 1)))
    return parts


def unpack(parts: Sequence[bytes] | Sequence[Part]) -> object:
    """The state of an image's parts (compressed pickles, or (digest, pickle) with every pickle)."""
    payloads: list[bytes] = []
    for part in parts:
        payload = part if isinstance(part, bytes) else part[1]
        assert payload is not None, "an image with every part"
        payloads.append(payload)
    first = pickle.loads(zlib.decompress(payloads[0]))  # only ccpipe writes the checkpoint topics
    if not (isinstance(first, tuple) and first and first[0] == BASE):
        return first  # a whole state in one pickle (no engine, or a version before parts)
    _, state, changed = first
    engine = _engine_of(state)
    assert engine is not None
    id_sets, conversations = (engine.event_ids, engine.closed), engine.conversations
    for payload in payloads[1:]:
        part = pickle.loads(zlib.decompress(payload))
        if part[0] == "ids":
            _, which, bucket, members = part
            ids = id_sets[which]
            ids._buckets.setdefault(bucket, []).extend(members)
            for member in members:
                ids._bucket_of[member] = bucket
        elif part[0] == "waiting":
            engine.waiting_by_key[part[1]]._starts.update(part[2])
        else:
            conversations.update(part[1])
    for waiting in engine.waiting_by_key.values():  # a sorted list is a heap
        waiting._heap = sorted((start, conversation_id) for conversation_id, start in waiting._starts.items())
    customers = engine.customers
    for conversation in conversations.values():  # the order they were created in, as before
        customers.setdefault(conversation.customer_id, []).append(conversation)
    engine._changed = {conversation_id: conversations[conversation_id] for conversation_id in changed}
    return state


def restore(checkpoint: Checkpoint) -> object:
    return unpack(checkpoint.parts)


class Capture:
    """The image of a state as it is at construction, made by a forked copy of this process
    (without the parts in `stored`).

    Construct it between two batches, on the thread running the event loop; await `image()`
    (always: it also reaps the copy). Where there is no fork, the image is made at once."""

    def __init__(self, state: object, stored: Collection[str] = frozenset()) -> None:
        self._image: list[Part] | None = None
        self._pid = self._fd = -1
        if not hasattr(os, "fork"):
            self._image = image(state, stored)
            return
        read, write = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            _image_in_child(state, stored, write, parent)  # never returns
        os.close(write)
        self._pid, self._fd = pid, read

    async def image(self) -> list[Part]:
        if self._image is None:
            self._image = await asyncio.to_thread(self._collect)
        return self._image

    def _collect(self) -> list[Part]:
        with os.fdopen(self._fd, "rb") as pipe:
            written = pipe.read()
        _, status = os.waitpid(self._pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise RuntimeError(f"the process making the checkpoint image ended with {code}")
        parts: list[Part] = pickle.loads(written)
        return parts


def _image_in_child(state: object, stored: Collection[str], pipe: int, parent: int) -> None:
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
        view = memoryview(pickle.dumps(image(state, stored), protocol=pickle.HIGHEST_PROTOCOL))
        while view:
            view = view[os.write(pipe, view) :]
        code = 0
    finally:
        os._exit(code)


_PR_SET_PDEATHSIG = 1
