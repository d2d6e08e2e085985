"""The worker runtime's recovery rules, with in-memory checkpoints and input (the real-process
tests in test_streaming.py cover the same paths against a broker)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from support import T0, agent_msg, event

from pipeline.deadletter import DeadLetter
from pipeline.engine import Batch
from pipeline.settings import EngineSettings
from pipeline.stream.checkpoints import unpack
from pipeline.stream.partials import MergedViews
from pipeline.stream.routing import REROUTED_HEADER, home_partition
from pipeline.stream.runtime import Message, PartitionEngine, Record, Runtime, StoredInput


async def handle(runtime: Runtime, messages: Iterable[Record]) -> None:
    """Messages of any partitions, fed partition by partition as the worker's consumer does."""
    by_partition: dict[int, list[Record]] = {}
    for message in messages:
        by_partition.setdefault(message.partition, []).append(message)
    for partition, batch in by_partition.items():
        await runtime.handle_partition(partition, batch)


class Log:
    """An input partition log, a checkpoint store and the outputs, all in memory."""

    def __init__(self, bodies: list[dict[str, Any]]) -> None:
        self.messages = [
            Message("in", 0, offset, body["customer_id"].encode(), orjson.dumps(body))
            for offset, body in enumerate(bodies)
        ]
        self.saved: PartitionEngine | None = None
        self.dead: list[str] = []
        self.rekeyed: list[str] = []
        self.rerouted_to: list[int] = []
        self.live_valid = 0
        self.persisted = 0
        self.partials: list[tuple[bytes, bytes]] = []

    async def load(self, partition: int) -> PartitionEngine | None:
        return copy.deepcopy(self.saved)

    async def save(self, partition: int, applied_offset: int, image: bytes) -> int:
        self.saved = unpack(image)
        assert self.saved is not None and self.saved.applied_offset == applied_offset
        return 1

    async def read(self, partition: int, start: int, end: int) -> AsyncIterator[list[Message]]:
        for page in range(start, end, 3):  # small pages, like real fetches
            yield self.messages[page : min(page + 3, end)]

    async def dead_letter(self, letter: DeadLetter, key: bytes | None) -> None:
        self.dead.append(letter.reason)

    async def reroute(self, message: Record, partition: int, key: str) -> None:
        self.rekeyed.append(key)
        self.rerouted_to.append(partition)

    def observe(self, batch: Batch, live: bool) -> None:
        self.live_valid += sum(batch.valid.values()) if live else 0

    def persist(self, partition: int, version: int, batch: Batch, stored: StoredInput) -> None:
        self.persisted += len(stored.events)

    async def wait_for_room(self) -> None:
        return None

    async def flush(self, timeout: float) -> bool:
        return True

    async def publish_partials(self, partials: list[tuple[bytes, bytes]]) -> None:
        self.partials.extend(partials)

    async def broadcast_partial(self, key: bytes, value: bytes) -> None:
        self.partials.append((key, value))

    def merged(self) -> MergedViews:
        """What the owner of every key sees, from the partials published so far."""
        views = MergedViews(EngineSettings(), source="interactions")
        for _, value in self.partials:
            views.absorb(0, value)
        return views

    def runtime_with_all(self) -> Runtime:
        reference = self.runtime()
        asyncio.run(handle(reference, self.messages))
        return reference

    def runtime(self, interval: float = 1e9, input_partitions: int = 1) -> Runtime:
        return Runtime(
            EngineSettings(), outputs=self, load_checkpoint=self.load, save_checkpoint=self.save,
            read_range=self.read, checkpoint_interval=interval, input_partitions=input_partitions,
        )  # fmt: skip


BODIES = [
    event(f"s{i}", "conversation_started", f"c{i}", 10 * i, customer=f"u{i % 3}") for i in range(12)
] + [agent_msg(f"r{i}", f"c{i}", 10 * i + 5 + i, customer=f"u{i % 3}") for i in range(12)]


def final_view(runtime: Runtime) -> Any:
    (state,) = runtime.partitions.values()
    return state.engine.rolling(T0 + 200), state.applied_offset


def test_restart_from_an_old_checkpoint_catches_up_without_double_counting() -> None:
    log = Log(BODIES)
    reference = log.runtime()
    asyncio.run(handle(reference, log.messages))
    first = log.runtime()
    asyncio.run(handle(first, log.messages[:8]))
    asyncio.run(first.checkpoint_all())  # checkpoint at offset 7
    asyncio.run(handle(first, log.messages[8:15]))  # processed, then the worker dies
    # The consumer resumes at offset 15 (its last commit): offsets 8..14 come from catch-up.
    second = log.runtime()
    asyncio.run(handle(second, log.messages[15:]))
    assert final_view(second) == final_view(reference)
    assert second.stats.caught_up == 7
    # Rows are re-created for the caught-up messages too (the store absorbs the repeats).
    assert log.persisted == 24 + 15 + 7 + 9
    # Counted live: the reference's 24, the first worker's 15 and the second's 9; never the 7 caught up.
    assert log.live_valid == 24 + 15 + 9


def test_a_checkpoint_made_with_other_settings_is_rebuilt_from_the_topic() -> None:
    log = Log(BODIES)
    first = log.runtime()
    asyncio.run(handle(first, log.messages[:20]))
    asyncio.run(first.checkpoint_all())
    # Restarted with short abandons counted: the old state would follow the old rules.
    second = Runtime(
        EngineSettings(short_abandon_seconds=5), outputs=log, load_checkpoint=log.load, save_checkpoint=log.save,
        read_range=log.read, checkpoint_interval=1e9,
    )  # fmt: skip
    asyncio.run(handle(second, log.messages[20:]))
    assert second.stats.caught_up == 20  # everything before the commit, re-read
    (state,) = second.partitions.values()
    assert state.engine.settings.short_abandon_seconds == 5
    assert final_view(second) == final_view(log.runtime_with_all())


def test_checkpoint_newer_than_the_commit_skips_what_it_already_holds() -> None:
    log = Log(BODIES)
    reference = log.runtime()
    asyncio.run(handle(reference, log.messages))
    first = log.runtime()
    asyncio.run(handle(first, log.messages[:20]))
    asyncio.run(first.checkpoint_all())  # holds 0..19, but the commit was at 12
    second = log.runtime()
    asyncio.run(handle(second, log.messages[12:]))
    assert final_view(second) == final_view(reference)
    assert second.stats.caught_up == 0
    (state,) = second.partitions.values()
    assert state.engine.stats.duplicates == 0


def test_rebalance_keeps_partitions_that_stay_and_drops_those_that_leave() -> None:
    runtime = Log(BODIES).runtime()
    runtime.partitions = {0: object(), 1: object()}  # type: ignore[dict-item]
    runtime.revoke([0, 1])
    runtime.assign([1, 2])
    assert set(runtime.partitions) == {1}


def test_invalid_events_are_dead_lettered_and_misplaced_ones_rerouted() -> None:
    """Records of every odd kind are dead letters with their own reason; an event outside its
    customer's home partition (keyless, keyed by something else, placed by another partitioner)
    goes there, keyed by its customer, whatever key it came with."""
    partitions = 4
    home = {f"u{i}": home_partition(f"u{i}", partitions) for i in range(3)}
    log = Log(BODIES[:2])
    log.messages = [
        Message("in", home["u0"], 0, None, log.messages[0].value),  # keyless, at home: processed
        Message("in", home["u0"], 1, b"u0" * 600, log.messages[0].value),  # a key no customer has
        Message("in", home["u0"], 2, b"x", b"{broken"),
        Message("in", home["u0"], 3, None, None),  # a tombstone
        Message("in", home["u0"], 4, b"u0", b""),
        Message("in", home["u0"], 5, b"u0", b'{"a": NaN}'),
        Message("in", home["u0"], 6, b"u0", b"\xff\xfe"),
        Message("in", home["u0"], 7, b"u0", b"[" * 2000),
        Message("in", home["u0"], 8, b"u2", orjson.dumps(BODIES[2] | {"timestamp": T0 + 10 * 86400})),
    ]
    elsewhere = next(p for p in range(partitions) if p != home["u1"])
    strays = [Message("in", elsewhere, 0, None, orjson.dumps(BODIES[1])),
              Message("in", elsewhere, 1, b"u1", orjson.dumps(BODIES[1] | {"event_id": "other"}))]  # fmt: skip
    runtime = log.runtime(input_partitions=partitions)
    asyncio.run(handle(runtime, log.messages + strays))
    assert log.dead == ["key_too_large", "not_json", "tombstone", "empty", "not_finite", "not_utf8", "too_deep",
                        "future_timestamp"]  # fmt: skip
    assert log.rekeyed == ["u1", "u1"] and log.rerouted_to == [home["u1"]] * 2
    assert log.live_valid == 1


def test_a_rerouted_record_is_processed_where_it_arrives() -> None:
    """The header ccpipe sets when rerouting keeps a record from travelling twice."""
    log = Log(BODIES[:1])
    stray = next(p for p in range(4) if p != home_partition("u0", 4))
    log.messages = [Message("in", stray, 0, b"u0", log.messages[0].value, [(REROUTED_HEADER, b"1")])]
    runtime = log.runtime(input_partitions=4)
    asyncio.run(handle(runtime, log.messages))
    assert log.rekeyed == [] and log.live_valid == 1


def _exposition(log: Log, runtime: Runtime) -> dict[Any, float]:
    from prometheus_client import generate_latest
    from streaming import parse

    from pipeline.exporter import Exporter

    exporter = Exporter(log.merged(), newest_processed=lambda: runtime.newest_event_time)
    return parse(generate_latest(exporter.registry).decode())


def test_series_of_keys_owned_elsewhere_disappear() -> None:
    """A worker exports the keys of the partials partitions it owns, and no others."""
    from prometheus_client import generate_latest
    from streaming import parse

    from pipeline.exporter import Exporter

    log = Log(BODIES)
    phone = [event(f"p{i}", "conversation_started", f"p{i}", 5 * i, channel="phone") for i in range(3)]
    runtime = log.runtime()
    asyncio.run(handle(runtime, log.messages + [
        Message("in", 1, offset, b"u1", orjson.dumps(body)) for offset, body in enumerate(phone)
    ]))  # fmt: skip
    views = MergedViews(EngineSettings(), source="interactions")
    for key, value in log.partials:  # the phone key on partials partition 1, the rest on 0
        views.absorb(1 if key.startswith(b"phone") else 0, value)
    exporter = Exporter(views, newest_processed=lambda: runtime.newest_event_time)

    def channels() -> set[str]:
        samples = parse(generate_latest(exporter.registry).decode())
        return {
            dict(labels).get("channel", "") for name, labels in samples if name != "ccpipe_frt_target_seconds"
        }

    assert {"phone", "chat"} <= channels()
    views.keep_only({0})  # partials partition 1 now belongs to another worker
    assert "phone" not in channels() and "chat" in channels()


def test_oldest_waiting_grows_between_scrapes_without_events() -> None:
    import time

    now = time.time()
    body = event("s1", "conversation_started", "c1", 0) | {"timestamp": now - 10}
    log = Log([body])
    runtime = log.runtime()
    asyncio.run(handle(runtime, log.messages))
    key = ("ccpipe_oldest_waiting_seconds", (("channel", "chat"), ("queue", "billing")))
    first = _exposition(log, runtime)[key]
    time.sleep(1.1)
    second = _exposition(log, runtime)[key]
    assert 10 <= first < second and second - first >= 1.0


def test_partial_updates_of_changed_windows_merge_to_the_engine_state(monkeypatch: Any) -> None:
    """Between complete snapshots, only changed windows travel; the owner's merge stays exact."""
    from pipeline.stream import partials as partials_module

    monkeypatch.setattr(partials_module, "PUBLISH_EVERY", 0.0)
    monkeypatch.setattr(partials_module, "REPUBLISH_EVERY", 1e9)
    log = Log(BODIES)
    runtime = log.runtime()
    for message in log.messages:  # one batch per message: one update per batch
        asyncio.run(handle(runtime, [message]))
    bodies = [orjson.loads(value) for _, value in log.partials]
    assert bodies[0]["complete"] and not any(body["complete"] for body in bodies[1:])
    assert max(len(body["windows"]) for body in bodies[1:]) <= 2  # the windows a message touched
    views = log.merged()
    (state,) = runtime.partitions.values()
    now = views.clock()
    assert now is not None
    assert views.rolling() == state.engine.rolling(now)
    assert views.rolling()["5m"]  # not trivially empty


def test_complete_snapshots_go_out_first_after_each_rebalance_and_otherwise_at_a_phase(
    monkeypatch: Any,
) -> None:
    """A partition's first publish is complete, later ones are updates until a rebalance asks
    for everything again; the periodic complete one falls at the partition's own phase."""
    from pipeline.stream import partials as partials_module

    monkeypatch.setattr(partials_module, "PUBLISH_EVERY", 0.0)
    log = Log(BODIES)
    runtime = log.runtime()

    def completes(messages: list[Message]) -> list[bool]:
        sent = len(log.partials)
        for message in messages:
            asyncio.run(handle(runtime, [message]))
        return [orjson.loads(value)["complete"] for _, value in log.partials[sent:]]

    assert completes(log.messages[:1]) == [True]
    assert not any(completes(log.messages[1:10]))
    runtime.republish()  # a rebalance ended
    after = completes(log.messages[10:11])
    assert after and all(after)
    assert len(after) == len({key for key, _ in log.partials})  # every key, not only the changed one
    assert not any(completes(log.messages[11:]))
    (assigned,) = runtime.partitions.values()
    publish = assigned.publish
    assert 0.0 <= publish.phase < partials_module.REPUBLISH_EVERY
    next_complete = publish.published_all + partials_module.REPUBLISH_EVERY
    assert publish.due(assigned.engine, next_complete - 0.001) == {}  # dirty nothing: an empty update
    assert set(publish.due(assigned.engine, next_complete).values()) == {None}
    views = log.merged()
    assert views.rolling() == assigned.engine.rolling(views.clock())


def test_an_owner_drops_the_windows_no_rolling_view_reaches(monkeypatch: Any) -> None:
    """Updates carry only changed windows, so the owner itself lets go of those older than the
    longest rolling view (a complete snapshot may be ten minutes away); the views stay exact."""
    from pipeline.stream import partials as partials_module

    monkeypatch.setattr(partials_module, "PUBLISH_EVERY", 0.0)
    bodies = [event(f"s{i}", "conversation_started", f"c{i}", 600 * i, customer=f"u{i}") for i in range(14)]
    log = Log(bodies)  # 2 h 10 min of windows, one update each
    runtime = log.runtime()
    for message in log.messages:
        asyncio.run(handle(runtime, [message]))
    views = log.merged()
    (sources,) = views._owned[0].values()
    held = sorted(sources[0].windows)
    now = views.clock()
    assert now is not None
    width = EngineSettings().window_seconds
    assert held[0] > (now // width) * width - 3600 >= T0  # the first hour's windows are gone
    assert len(held) == 6  # the six starts of the last hour
    (state,) = runtime.partitions.values()
    assert views.rolling() == state.engine.rolling(now)
    assert views.rolling()["1h"]


def test_a_gap_the_catch_up_cannot_read_stops_the_partition_instead_of_skipping_it() -> None:
    """Input deleted by retention between the checkpoint and the consumer's position: refuse."""
    import pytest

    from pipeline.stream.runtime import CatchUpError

    log = Log(BODIES)
    first = log.runtime()
    asyncio.run(handle(first, log.messages[:5]))
    asyncio.run(first.checkpoint_all())  # holds offsets 0..4

    async def nothing(partition: int, start: int, end: int) -> AsyncIterator[list[Message]]:
        return
        yield  # an async generator that reads nothing

    second = log.runtime()
    second._read_range = nothing
    with pytest.raises(CatchUpError, match="needs everything up to 20"):
        asyncio.run(handle(second, log.messages[20:]))
    assert second.partitions == {}


def test_a_checkpoint_finishing_after_its_partition_left_leaves_nothing_behind() -> None:
    """A save that completes after a rebalance took the partition away must not bring any of
    its bookkeeping back (there is one object per partition, and it is gone)."""
    log = Log(BODIES)

    async def scenario() -> Runtime:
        release = asyncio.Event()
        saved = log.save

        async def slow_save(partition: int, applied_offset: int, image: bytes) -> int:
            await release.wait()
            return await saved(partition, applied_offset, image)

        runtime = Runtime(
            EngineSettings(), outputs=log, load_checkpoint=log.load, save_checkpoint=slow_save,
            read_range=log.read, checkpoint_interval=0.0,
        )  # fmt: skip
        await handle(runtime, log.messages[:10])  # starts a checkpoint in the background
        (assigned,) = runtime.partitions.values()
        assert assigned.saving is not None
        runtime.revoke([0])
        runtime.assign([])  # the partition went to another worker
        release.set()
        await assigned.saving
        await runtime.checkpoint_due()
        return runtime

    runtime = asyncio.run(scenario())
    assert runtime.partitions == {}
    assert log.saved is not None and log.saved.applied_offset == 9  # the image itself was valid
