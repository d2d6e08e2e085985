"""What a worker does with a batch of Kafka messages, independent of Faust's plumbing.

One `Engine` per input partition, so a partition's state moves with it on a rebalance. Each
partition engine remembers the last input offset it applied; a message at or below it is
already in the state and is skipped. That, with checkpoints that pair the state with that
offset, makes recovery exact: on the first message of a newly assigned partition, the
newest checkpoint is loaded and the messages between it and the message in hand are read
again ("catch-up") before going on, so no event is lost and none is counted twice.

Every record is an event or a dead letter (pipeline/deadletter.py): a tombstone, a value that
is not a valid event, a key no customer or agent can have. An event found outside its home
partition (pipeline/stream/routing.py: keyless, keyed by something else, placed by another
partitioner) is sent there once and skipped here, so every event of a customer meets the same
engine state.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.deadletter import DeadLetter
from pipeline.engine import Batch, Engine
from pipeline.events import KEY_TOO_LARGE, MAX_KEY_BYTES, Event, InvalidEvent, decode_event
from pipeline.settings import EngineSettings
from pipeline.stream.checkpoints import Capture, Part
from pipeline.stream.partials import (
    AGENTS,
    REPUBLISH_EVERY,
    PublishState,
    partial_key,
    publication,
)
from pipeline.stream.routing import REROUTED_HEADER, home_partition

log = logging.getLogger("ccpipe.worker")

STORE_TIMEOUT = 5.0  # how long a checkpoint waits for the store before it is postponed


class CatchUpError(RuntimeError):
    """The messages between a checkpoint and the consumer's position could not be read."""


class Record(Protocol):
    """The parts of a Kafka record the runtime reads (an aiokafka ConsumerRecord has them)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


@dataclass(slots=True)
class Message:
    """A record built by hand (tests, tools): the same parts as a ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()


@dataclass
class PartitionEngine:
    """One input partition's engine and the last input offset its state includes."""

    partition: int
    engine: Engine
    applied_offset: int = -1


@dataclass(eq=False)
class Assigned:
    """Everything this worker keeps for one assigned input partition, in one place: assigning
    creates it, revoking drops it (one `del`), and work that finishes after an `await` updates
    only the object it started with, so a partition that left is never brought back."""

    state: PartitionEngine  # the engine and the last offset it applied: what a checkpoint holds
    last_checkpoint: float = 0.0  # monotonic time the last checkpoint was started
    checkpointed: int = -1  # input offset of the last checkpoint saved
    saving: asyncio.Task[bool] | None = None  # the checkpoint under way
    publish: PublishState = field(default_factory=PublishState)
    window_rows_at: float = 0.0  # monotonic time provisional window rows were last taken

    @property
    def partition(self) -> int:
        return self.state.partition

    def window_rows_due(self, now: float, every: float) -> bool:
        """True (and noted as taken now) when provisional window rows are due for the store."""
        due = now - self.window_rows_at >= every
        if due:
            self.window_rows_at = now
        return due

    @property
    def engine(self) -> Engine:
        return self.state.engine

    @property
    def applied_offset(self) -> int:
        return self.state.applied_offset


class Outputs(Protocol):
    """Where a worker's results go: Kafka topics, the store and metrics."""

    async def dead_letter(self, letter: DeadLetter, key: bytes | None) -> None:
        """Publish to the dead-letter topic (live messages only: catch-up ones were published)."""

    async def reroute(self, message: Record, partition: int, key: str) -> None:
        """Send the record to its home input partition, keyed by `key` (marked as rerouted)."""

    def observe(self, batch: Batch, live: bool) -> None:
        """Counters and histograms (live messages only)."""

    def persist(self, partition: int, version: int, batch: Batch, stored: StoredInput) -> None:
        """Rows for the store, for live and caught-up messages alike (writes are idempotent)."""

    async def wait_for_room(self) -> None:
        """Block while the store's buffer is full (pauses consumption during an outage)."""

    async def flush(self, timeout: float) -> bool:
        """True once every row given so far is durably stored."""

    async def publish_partials(self, partials: list[tuple[bytes, bytes]]) -> None:
        """Send (key, snapshot) pairs to the partials topic (see pipeline/stream/partials.py)."""

    async def broadcast_partial(self, key: bytes, value: bytes) -> None:
        """Send one snapshot to every partition of the partials topic (the agents partial)."""


@dataclass(slots=True)
class StoredInput:
    """The input side of a batch, for the store: valid events and refused messages."""

    events: list[tuple[Event, int]] = field(default_factory=list)  # (event, offset)
    refused: list[DeadLetter] = field(default_factory=list)


@dataclass
class RuntimeStats:
    rekeyed: int = 0
    caught_up: int = 0
    checkpoints: int = 0
    checkpoint_bytes: int = 0
    recoveries: Counter[int] = field(default_factory=Counter)
    assigned: int = 0  # input partitions assigned to this worker now
    # What the engines hold now (refreshed by Runtime.current_stats), for capacity planning.
    conversations: int = 0
    event_ids: int = 0
    windows: int = 0


class Runtime:
    """Per-partition engines, recovery, re-keying and dead letters for one worker."""

    def __init__(
        self,
        settings: EngineSettings,
        *,
        outputs: Outputs,
        load_checkpoint: Callable[[int], Awaitable[PartitionEngine | None]],
        save_checkpoint: Callable[[int, int, list[Part]], Awaitable[int]],
        read_range: Callable[[int, int, int], AsyncIterator[Sequence[Record]]],
        checkpoint_interval: float,
        source: str = "interactions",
        window_rows_every: float = 0.0,
        input_partitions: int = 1,
        stored_parts: Callable[[int], frozenset[str]] = lambda partition: frozenset(),
    ) -> None:
        self.settings = settings
        self.source = source  # the input topic, named in the partials it publishes
        self.input_partitions = input_partitions  # where each event's home partition is computed
        self.outputs = outputs
        self._load_checkpoint = load_checkpoint
        self._save_checkpoint = save_checkpoint
        self._read_range = read_range
        self._stored_parts = stored_parts  # a partition's checkpoint parts that need no writing
        self.checkpoint_interval = checkpoint_interval
        # Provisional window rows go to the store at most this often per partition (the store
        # writes them that often anyway, keeping only each window's newest row).
        self.window_rows_every = window_rows_every
        self.partitions: dict[int, Assigned] = {}
        # Partitions revoked in a rebalance still under way: kept in case they come back.
        self._suspended: set[int] = set()
        self.stats = RuntimeStats()
        # The newest event time this worker processed (for the processing lag).
        self.newest_event_time: float | None = None

    def current_stats(self) -> RuntimeStats:
        """The stats, with the sizes of the engines' state as they are now."""
        engines = [state.engine for state in self.partitions.values()]
        self.stats.conversations = sum(len(engine.conversations) for engine in engines)
        self.stats.event_ids = sum(len(engine.event_ids) for engine in engines)
        self.stats.windows = sum(1 for engine in engines for _ in engine.windows.all_windows())
        return self.stats

    # --- batches ---------------------------------------------------------------------------

    async def handle_partition(self, partition: int, messages: Sequence[Record]) -> None:
        """Process one partition's messages, in offset order."""
        await self.outputs.wait_for_room()
        assigned = self.partitions.get(partition)
        if assigned is None:
            assigned = await self._recover(partition, messages[0].offset)
        window_rows = assigned.window_rows_due(time.monotonic(), self.window_rows_every)
        await self._apply(assigned.state, messages, live=True, publish=assigned.publish,
                          window_rows=window_rows)  # fmt: skip
        self._maybe_checkpoint(assigned)
        await self._maybe_publish(assigned)

    async def _apply(
        self,
        state: PartitionEngine,
        messages: Sequence[Record],
        live: bool,
        publish: PublishState,
        window_rows: bool = True,
    ) -> None:
        """Apply the messages to the state in one step (nothing awaited until the state and the
        offset it includes agree), then send what the batch owes to Kafka."""
        items: list[Event | InvalidEvent] = []
        stored = StoredInput()
        misrouted: list[tuple[Record, int, str]] = []
        partitions = self.input_partitions
        for message in messages:
            if message.offset <= state.applied_offset:
                continue
            state.applied_offset = message.offset
            origin = f"{message.topic}[{message.partition}]@{message.offset}"
            item = _decode(message, origin)
            if isinstance(item, Event):
                key = item.routing_key
                home = home_partition(key, partitions) if partitions > 1 else message.partition
                if home != message.partition and not _rerouted(message):
                    misrouted.append((message, home, key))
                    continue
                stored.events.append((item, message.offset))
            items.append(item)
        batch = state.engine.process(items, wall_clock=time.time(), window_rows=window_rows)
        keys: list[bytes | None] = []  # each dead letter's key in the dead-letter topic
        if batch.invalid:
            by_offset = {message.offset: message for message in messages}
            now = time.time()
            for bad in batch.invalid:
                message = by_offset[int(bad.origin.rpartition("@")[2])]
                stored.refused.append(DeadLetter.of(
                    topic=message.topic, partition=message.partition, offset=message.offset,
                    reason=bad.reason, detail=bad.detail, value=message.value, received_at=now,
                ))  # fmt: skip
                keys.append(message.key if _short_key(message) else None)
        self.outputs.persist(state.partition, state.applied_offset, batch, stored)
        self.outputs.observe(batch, live)
        publish.mark(batch)
        newest = state.engine.newest
        if newest is not None and (self.newest_event_time is None or newest > self.newest_event_time):
            self.newest_event_time = newest
        if live:  # catch-up messages were sent on by whoever processed them live
            self.stats.rekeyed += len(misrouted)
            for message, home, key in misrouted:
                await self.outputs.reroute(message, home, key)
            for letter, letter_key in zip(stored.refused, keys, strict=True):
                await self.outputs.dead_letter(letter, letter_key)

    # --- partials for the owners of each (channel, queue) ----------------------------------

    async def _maybe_publish(self, assigned: Assigned) -> None:
        """Publish what the partition's publish policy says is due (pipeline/stream/partials.py)."""
        changed = assigned.publish.due(assigned.engine, time.monotonic())
        if changed:
            state = assigned.state
            due = publication(self.source, state.partition, state.applied_offset, state.engine,
                              publish=assigned.publish, changed=changed)  # fmt: skip
            if due.agents is not None:
                await self.outputs.broadcast_partial(partial_key(AGENTS), due.agents)
            await self.outputs.publish_partials(due.keyed)

    async def publish_due(self) -> None:
        """Publish what changed in partitions that got no batch since (on a timer, so a key of
        a quiet partition reaches its owner within about PUBLISH_EVERY too)."""
        for assigned in list(self.partitions.values()):
            await self._maybe_publish(assigned)

    async def window_rows_due(self) -> None:
        """Store the held-back window rows of partitions that got no batch since (on a timer)."""
        now = time.monotonic()
        for assigned in list(self.partitions.values()):
            if assigned.window_rows_due(now, self.window_rows_every):
                rows, agent_rows = assigned.engine.window_rows()
                if rows or agent_rows:
                    held = Batch(windows=rows, agent_windows=agent_rows)
                    self.outputs.persist(assigned.partition, assigned.applied_offset, held, StoredInput())

    def republish(self) -> None:
        """A rebalance ended: every partition's every key goes out at its next publish (within
        PUBLISH_EVERY, by the timer), as a partials partition's new owner has nothing before."""
        for assigned in self.partitions.values():
            assigned.publish.republish()

    # --- recovery --------------------------------------------------------------------------

    async def _recover(self, partition: int, first_offset: int) -> Assigned:
        """State for a newly assigned partition: newest checkpoint, then catch up to `first_offset`."""
        began = time.monotonic()
        state = await self._load_checkpoint(partition)
        if state is not None and not state.engine.resumes(self.settings):
            log.warning(
                "partition %d: its checkpoint was made by another ccpipe version or with other engine "
                "settings; rebuilding the partition's state from the topic", partition,
            )  # fmt: skip
            state = None
        if state is None:
            state = PartitionEngine(partition, Engine(self.settings))
        checkpoint_offset = state.applied_offset
        missing = first_offset - checkpoint_offset - 1
        offset = state.applied_offset + 1
        publish = PublishState(phase=random.uniform(0.0, REPUBLISH_EVERY))
        if offset < first_offset:
            async for records in self._read_range(partition, offset, first_offset):
                await self._apply(state, records, live=False, publish=publish)
                self.stats.caught_up += len(records)
                offset = records[-1].offset + 1
        if offset < first_offset:
            # Refuse to go on with a gap: the worker restarts and tries again.
            raise CatchUpError(
                f"catch-up of partition {partition} read nothing at offset {offset}, "
                f"needs everything up to {first_offset}"
            )
        # Partitions recovered together would checkpoint together, and each checkpoint pickles
        # its state on the event loop: spread them over the interval.
        spread = random.uniform(0.0, self.checkpoint_interval)
        assigned = self.partitions[partition] = Assigned(
            state, last_checkpoint=time.monotonic() - spread, checkpointed=checkpoint_offset, publish=publish
        )
        self.stats.recoveries[partition] += 1
        log.info(
            "partition %d recovered: checkpoint at offset %d, caught up %d messages to offset %d in %.2f s",
            partition, checkpoint_offset, max(0, missing), first_offset, time.monotonic() - began,
        )  # fmt: skip
        return assigned

    def revoke(self, partitions: Iterable[int]) -> None:
        """A rebalance started: these partitions may move (Kafka revokes all of them first)."""
        self._suspended.update(partitions)

    def assign(self, partitions: Iterable[int]) -> None:
        """A rebalance ended: drop the state of partitions that went to another worker, so
        their series vanish here and, should they come back later, they are recovered anew."""
        assigned = set(partitions)
        self.stats.assigned = len(assigned)
        for partition in self._suspended - assigned:
            self.partitions.pop(partition, None)
        self._suspended.clear()

    def _maybe_checkpoint(self, assigned: Assigned) -> None:
        """Start a checkpoint in the background when the interval has passed: the batches go
        on while it waits for the store and writes to Kafka."""
        due = time.monotonic() - assigned.last_checkpoint >= self.checkpoint_interval
        if due and assigned.saving is None:
            assigned.last_checkpoint = time.monotonic()
            task = asyncio.create_task(self._checkpoint(assigned, STORE_TIMEOUT),
                                       name=f"checkpoint-{assigned.partition}")  # fmt: skip
            assigned.saving = task
            task.add_done_callback(lambda done: self._checkpoint_done(assigned, done))

    @staticmethod
    def _checkpoint_done(assigned: Assigned, task: asyncio.Task[bool]) -> None:
        assigned.saving = None
        if not task.cancelled() and task.exception() is not None:
            # The previous checkpoint stays valid: recovery only catches up further.
            log.warning("checkpoint of partition %d failed: %r", assigned.partition, task.exception())

    def _checkpoint(self, assigned: Assigned, store_timeout: float) -> Coroutine[None, None, bool]:
        """Capture the state as it is now, and return the coroutine that saves that image once
        the store holds every row it produced: recovery re-creates the rows of what follows a
        checkpoint, never of what precedes it. A partition revoked meanwhile is saved all the
        same (its image is valid), but only its own object records it."""
        partition, offset = assigned.partition, assigned.applied_offset
        # The instant; the image is made in a forked copy, without the parts already stored.
        taken = Capture(assigned.state, self._stored_parts(partition))
        stored = asyncio.ensure_future(self.outputs.flush(store_timeout))  # covers the rows given so far

        async def save() -> bool:
            payload = await taken.image()
            if not await stored:
                log.info("checkpoint of partition %d postponed: the store is behind", partition)
                return False
            size = await self._save_checkpoint(partition, offset, payload)
            assigned.checkpointed = max(offset, assigned.checkpointed)
            self.stats.checkpoints += 1
            self.stats.checkpoint_bytes += size
            return True

        return save()

    async def checkpoint_due(self) -> None:
        """Checkpoint partitions with unsaved progress whose interval has passed (on a timer,
        so a partition that went quiet is saved too)."""
        for assigned in list(self.partitions.values()):
            if assigned.applied_offset > assigned.checkpointed:
                self._maybe_checkpoint(assigned)

    async def checkpoint_all(self) -> None:
        """Checkpoint every partition now (at shutdown), after the ones under way."""
        under_way = [a.saving for a in self.partitions.values() if a.saving is not None]
        await asyncio.gather(*under_way, return_exceptions=True)
        for assigned in list(self.partitions.values()):
            await self._checkpoint(assigned, STORE_TIMEOUT)


def _decode(message: Record, origin: str) -> Event | InvalidEvent:
    """The record's event, or why it is none (its value, or a key no customer or agent has)."""
    if not _short_key(message):
        assert message.key is not None
        detail = f"record key is {len(message.key)} bytes, over {MAX_KEY_BYTES}: no customer_id or agent_id"
        return InvalidEvent(KEY_TOO_LARGE, detail, message.value or b"", origin)
    return decode_event(message.value, origin)


def _short_key(message: Record) -> bool:
    return message.key is None or len(message.key) <= MAX_KEY_BYTES


def _rerouted(message: Record) -> bool:
    return any(name == REROUTED_HEADER for name, _ in message.headers)
