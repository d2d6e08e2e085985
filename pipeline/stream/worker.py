"""`ccpipe worker`: the Faust app that feeds each fetched partition's records to the runtime.

Faust does what it is good at (consumer group membership, partition assignment, rebalance
callbacks, committing acknowledged offsets, the lifecycle); its consumer hands each partition's
fetched records over in one call (`faust_internals.bulk_app`), so nothing costs per message but
ccpipe's own work. An input batch is acknowledged to Faust (and so committed) once the store
holds its rows; its effect on state is covered by checkpoints plus the topic itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline import gcpolicy
from pipeline.deadletter import DeadLetter
from pipeline.engine import Batch
from pipeline.exporter import Exporter
from pipeline.ports import LOOPBACK, listen
from pipeline.settings import WorkerSettings
from pipeline.store.backends import chdb_dir, redact
from pipeline.store.migrations import migrate
from pipeline.store.process import ProcessBackend
from pipeline.store.query import ENDPOINT_FILE, STORE_HEADER
from pipeline.store.sink import StoreSink
from pipeline.store.writer import StoreWriter
from pipeline.stream.checkpoints import CheckpointStore, Part, restore
from pipeline.stream.faust_internals import bounded_worker, bulk_app
from pipeline.stream.kafka import aiokafka_options, faust_credentials
from pipeline.stream.partials import PUBLISH_EVERY, MergedViews
from pipeline.stream.routing import REROUTED_HEADER
from pipeline.stream.runtime import PartitionEngine, Record, Runtime, StoredInput
from pipeline.stream.stalls import StallWatch
from pipeline.stream.topics import ensure_topics

log = logging.getLogger("ccpipe.worker")
# Bytes one partition's producer batch may hold. Faust's default (16 KiB) holds two partials:
# aiokafka makes each further send wait for the broker's answer to the batch before, which held
# a publish of a few dozen partials for tenths of a second (a second at 8,000 events/s on the
# embedded broker). Well under Apache Kafka's default message.max.bytes (1,048,588).
PRODUCER_BATCH_BYTES = 512 * 1024
STALL_CHECK_EVERY = 5.0  # seconds between looks at each partition's progress (pipeline/stream/stalls.py)
# Records behind a partition's end that make a backlog: more than one fetch of live traffic
# leaves (that is 50 000 events/s per partition at the 100 ms fetch wait).
BACKLOG_RECORDS = 5000


class Worker:
    """One worker process: the Faust app, the runtime, checkpoints and the /metrics endpoint."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        # Bound first: a busy port stops the worker at once, with the setting to change.
        self._sockets = (
            listen(settings.metrics_bind, settings.metrics_port, "CCPIPE_METRICS_PORT"),
            listen(LOOPBACK, settings.query_port, "CCPIPE_QUERY_PORT"),
        )
        self.kafka = aiokafka_options(settings)
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        session = settings.kafka_session_timeout_seconds
        self.app = bulk_app(
            settings.group_id,
            broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(settings),
            store="memory://",
            datadir=str(data_dir / "faust"),
            web_enabled=False,
            topic_partitions=settings.partitions,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=session,
            broker_heartbeat_interval=max(0.5, session / 10),
            broker_rebalance_timeout=session,
            broker_commit_interval=1.0,
            broker_max_poll_records=settings.batch_size,
            consumer_max_fetch_size=settings.kafka_max_fetch_bytes,
            producer_compression_type=settings.kafka_compression,
            producer_max_batch_size=PRODUCER_BATCH_BYTES,
            stream_wait_empty=False,
            value_serializer="raw",
            key_serializer="raw",
        )
        self.input = self.app.topic(settings.input_topic, value_serializer="raw", key_serializer="raw")
        self.dlq = self.app.topic(settings.dlq_topic, value_serializer="raw", key_serializer="raw")
        self.partials = self.app.topic(settings.partials_topic, value_serializer="raw", key_serializer="raw")
        self.views = MergedViews(settings.engine(), source=settings.input_topic)
        self.checkpoints = CheckpointStore(settings.checkpoint_topic, self.kafka)
        self.runtime = Runtime(
            settings.engine(),
            outputs=self,
            load_checkpoint=self._load_checkpoint,
            save_checkpoint=self._save_checkpoint,
            read_range=self._read_range,
            checkpoint_interval=settings.checkpoint_interval_seconds,
            source=settings.input_topic,
            window_rows_every=settings.store_flush_seconds,
            stored_parts=self.checkpoints.stored_parts,
        )
        # The store runs in a child process (pipeline/store/process.py): the writer's work does
        # not compete with the event loop for this interpreter.
        self.backend = ProcessBackend(settings.store(), log=Path(settings.data_dir) / "store.log")
        self.store_dir = chdb_dir(settings.store())
        self.stalls = StallWatch(settings.partition_stall_seconds)
        self.exporter = Exporter(
            self.views,
            newest_processed=lambda: self.runtime.newest_event_time,
            store_pending_rows=lambda: self.writer.pending_rows,
            runtime_stats=self.runtime.current_stats,
            stalled=self.stalls.stalled,
            staffing=settings.staffing,
        )
        self.writer = StoreWriter(
            self.backend,
            batch_rows=settings.store_batch_rows,
            flush_seconds=settings.store_flush_seconds,
            max_buffer_rows=settings.store_max_buffer_rows,
            on_written=self.exporter.store_written,
            on_error=self.exporter.store_error,
            on_durable=self._release,
        )
        self.sink = StoreSink(self.writer, settings.engine().fcr_horizon_seconds)
        # Input batches waiting for their rows to be stored: (tp, first, last offset, write cycle).
        self._unacked: deque[tuple[Any, int, int, int]] = deque()
        self._seen: set[Any] = set()  # input partitions with a batch since they were assigned
        self._backlog: set[Any] = set()  # those catching up on a backlog
        self.app.bulk(self.input, self._process)
        self.app.bulk(self.partials, self._merge)
        self.app.before_revoke = self._before_revoke
        self.app.timer(PUBLISH_EVERY / 2)(self.runtime.publish_due)
        self.app.timer(settings.store_flush_seconds / 2)(self.runtime.window_rows_due)
        self.app.timer(settings.checkpoint_interval_seconds)(self.runtime.checkpoint_due)
        self.app.timer(STALL_CHECK_EVERY)(self._watch_stalls)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.task(self._serve_http)
        self._checkpoints_started = False
        self._http: list[web.AppRunner] = []
        self._failure: str | None = None  # why processing stopped, once it has (/healthz says it)

    # --- the consumer's handlers ----------------------------------------------------------

    async def _process(self, tp: Any, records: Sequence[Record]) -> None:
        await self.runtime.handle_partition(tp.partition, records)
        self._unacked.append((tp, records[0].offset, records[-1].offset, self.writer.mark()))
        self._note_backlog(tp, records[-1].offset)

    def _note_backlog(self, tp: Any, last: int) -> None:
        """A partition's first batch, or one that leaves it more than BACKLOG_RECORDS behind the
        end the broker reported, means a backlog (a restart, a replay, an outage). When the last
        partition in one reaches the end, its last rows are written at once instead of at the
        writer's next timer. Live traffic, never that far behind, keeps the writer's pace."""
        try:
            end = self.app.consumer.highwater(tp)
        except AssertionError:  # aiokafka asserts the partition is still assigned: a rebalance took it
            return
        remaining = 0 if end is None else end - last - 1
        if tp not in self._seen or remaining > BACKLOG_RECORDS:
            self._seen.add(tp)
            self._backlog.add(tp)
        if remaining <= 0 and tp in self._backlog:
            self._backlog.discard(tp)
            if not self._backlog:
                self.writer.write_now()

    def _release(self, cycles_done: int) -> None:
        """Acknowledge the input batches whose rows are now stored (Faust commits them)."""
        unacked = self._unacked
        while unacked and unacked[0][3] <= cycles_done:
            tp, first, last, _ = unacked.popleft()
            self.app.consumer.ack(tp, first, last)

    async def _before_revoke(self, revoked: set[Any]) -> None:
        """Make what was processed durable before Faust commits and lets the partitions go
        (bounded: a store that is down costs the next owner a longer catch-up, nothing more)."""
        await self.writer.flush(timeout=self.settings.kafka_session_timeout_seconds / 3)
        self._unacked = deque(entry for entry in self._unacked if entry[0] not in revoked)

    async def _merge(self, tp: Any, records: Sequence[Record]) -> None:
        """Owner side: absorb the partials of the (channel, queue) keys this worker owns."""
        for record in records:
            if record.value is not None:  # partials always have one; a stray tombstone is no partial
                self.views.absorb(tp.partition, record.value)
        self.app.consumer.ack(tp, records[0].offset, records[-1].offset)

    async def _on_assigned(self, sender: Any, assigned: set[Any], **_: Any) -> None:
        self.runtime.assign(tp.partition for tp in assigned if tp.topic == self.settings.input_topic)
        self.views.keep_only({tp.partition for tp in assigned if tp.topic == self.settings.partials_topic})
        self.runtime.republish()

    async def _on_revoked(self, sender: Any, revoked: set[Any], **_: Any) -> None:
        self._seen -= revoked
        self._backlog -= revoked
        self.runtime.revoke(tp.partition for tp in revoked if tp.topic == self.settings.input_topic)

    async def _watch_stalls(self) -> None:
        """Tell the stall watch where each assigned input partition is and where the broker ends."""
        consumer = self.app.consumer
        assigned = [tp for tp in consumer.assignment() if tp.topic == self.settings.input_topic]
        ends = await consumer.highwaters(*assigned) if assigned else {}
        positions = {}
        for tp in assigned:
            held = self.runtime.partitions.get(tp.partition)
            # Not processed here yet: where the group's committed offset says it resumes.
            positions[tp] = (
                held.applied_offset + 1 if held is not None else consumer._committed_offset[tp] or 0
            )
        self.stalls.observe({(tp.topic, tp.partition): at for tp, at in positions.items()},
                            {(tp.topic, tp.partition): end for tp, end in ends.items()})  # fmt: skip

    def _on_failure(self, line: str) -> None:
        self._failure = line

    # --- outputs ---------------------------------------------------------------------------

    async def dead_letter(self, letter: DeadLetter, key: bytes | None) -> None:
        await self.dlq.send(key=key, value=letter.kafka_value())

    async def reroute(self, message: Record, partition: int, key: str) -> None:
        await self.input.send(key=key.encode(), value=message.value, partition=partition,
                              headers=[(REROUTED_HEADER, b"1")])  # fmt: skip

    async def publish_partials(self, partials: list[tuple[bytes, bytes]]) -> None:
        for key, value in partials:
            await self.partials.send(key=key, value=value)

    async def broadcast_partial(self, key: bytes, value: bytes) -> None:
        # The partials topic has the input's partition count (pipeline/stream/topics.py).
        for partition in range(self.runtime.input_partitions):
            await self.partials.send(key=key, value=value, partition=partition)

    def observe(self, batch: Batch, live: bool) -> None:
        if live:
            self.exporter.observe(batch)

    def persist(self, partition: int, version: int, batch: Batch, stored: StoredInput) -> None:
        self.sink.persist(partition, version, batch, stored.events, stored.refused)

    async def wait_for_room(self) -> None:
        await self.sink.wait_for_room()

    async def flush(self, timeout: float) -> bool:
        return await self.sink.flush(timeout)

    # --- recovery --------------------------------------------------------------------------

    async def _ensure_checkpoints(self) -> None:
        if not self._checkpoints_started:
            await self.checkpoints.start()
            self._checkpoints_started = True

    async def _load_checkpoint(self, partition: int) -> PartitionEngine | None:
        await self._ensure_checkpoints()
        checkpoint = await self.checkpoints.load(partition)
        if checkpoint is None:
            return None
        try:
            state = restore(checkpoint)
        except Exception as error:  # whatever fails, the state is not this version's
            log.warning(
                "partition %d: its checkpoint does not load (%r), made by another ccpipe version; "
                "rebuilding the partition's state from the topic", partition, error,
            )  # fmt: skip
            return None
        assert isinstance(state, PartitionEngine)
        return state

    async def _save_checkpoint(self, partition: int, applied_offset: int, image: list[Part]) -> int:
        await self._ensure_checkpoints()
        return await self.checkpoints.save(partition, applied_offset, image)

    async def _read_range(self, partition: int, start: int, end: int) -> AsyncIterator[list[Record]]:
        """Pages of input messages with offsets in [start, end) of one partition (for catch-up),
        through one consumer; stops early when a fetch stays empty for 5 s."""
        tp = TopicPartition(self.settings.input_topic, partition)
        consumer = AIOKafkaConsumer(**self.kafka, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            while True:
                records = (await consumer.getmany(tp, timeout_ms=5000, max_records=10_000)).get(tp, [])
                page = [r for r in records if r.offset < end]
                if not page:
                    return
                yield page
                if page[-1].offset >= end - 1:
                    return
        finally:
            await consumer.stop()

    # --- /metrics ---------------------------------------------------------------------------

    async def _serve_http(self) -> None:
        """Start the store writer, then serve /metrics and /healthz on CCPIPE_METRICS_BIND and
        the read-only /sql endpoint on loopback only. Both run on the worker's event loop: a
        scrape runs between two batches, so it always sees a consistent engine state."""
        self.writer.start()

        async def metrics(request: web.Request) -> web.Response:
            # `?name[]=…` limits the page to those series, as Prometheus clients' own servers do
            # (a cheap poll of a few counters skips computing the rolling views).
            names = request.query.getall("name[]", [])
            registry = self.exporter.registry
            body = generate_latest(registry.restricted_registry(names) if names else registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            if self._failure is not None:
                return web.Response(text=self._failure + "\n", status=503)
            return web.Response(text="ok\n")

        async def sql(request: web.Request) -> web.Response:
            asked = request.headers.get(STORE_HEADER)
            if asked is not None and asked != str(self.store_dir):
                return web.json_response(
                    {
                        "error": f"this worker serves {self.store_dir}, not {asked}",
                        "store": str(self.store_dir),
                    },
                    status=409,
                )
            try:
                result = await self.writer.query(await request.text())
            except Exception as exc:  # the analyst's error, returned to the analyst
                return web.json_response({"error": str(exc)}, status=400)
            body = {"names": result.names, "types": result.types, "rows": result.rows,
                    "store": str(self.store_dir)}  # fmt: skip
            return web.json_response(body, dumps=lambda v: orjson.dumps(v, default=str).decode())

        public = web.Application()
        public.router.add_get("/metrics", metrics)
        public.router.add_get("/healthz", healthz)
        private = web.Application(client_max_size=1024 * 1024)
        private.router.add_post("/sql", sql)
        for app, sock in zip((public, private), self._sockets, strict=True):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            self._http.append(runner)
        if self.store_dir is not None:  # how `ccpipe sql --store` finds the worker holding it
            self._endpoint().write_bytes(orjson.dumps({"port": self.settings.query_port, "pid": os.getpid()}))

    def _endpoint(self) -> Path:
        assert self.store_dir is not None
        return self.store_dir / ENDPOINT_FILE

    # --- running ---------------------------------------------------------------------------

    def run(self) -> None:
        """Create topics, run (and serve /metrics) until SIGTERM/SIGINT; checkpoint on the way out."""
        self.runtime.input_partitions = ensure_topics(self.settings)
        applied = migrate(self.backend, self.settings.store_ttl_days)
        if applied:
            log.info("store %s: applied migrations %s", redact(self.backend.url), ", ".join(applied))
        self.app.on_before_shutdown.connect(self._on_shutdown)
        gcpolicy.for_long_lived_state()
        worker = bounded_worker(
            self.app, self.settings.shutdown_timeout_seconds, on_failure=self._on_failure,
            loglevel=self.settings.log_level, quiet=True, redirect_stdouts=False,
        )  # fmt: skip
        worker.execute_from_commandline()

    async def _on_shutdown(self, sender: Any, **_: Any) -> None:
        """Flush, checkpoint and let go, each within a share of the shutdown bound (the hard
        bound itself is in faust_internals.bounded_worker)."""
        share = self.settings.shutdown_timeout_seconds / 3
        if self.store_dir is not None:
            self._endpoint().unlink(missing_ok=True)
        try:
            await asyncio.wait_for(self.app.consumer.idle(), timeout=share)  # the batch in progress
            await asyncio.wait_for(self.runtime.checkpoint_all(), timeout=share)
        except Exception as exc:  # a failed goodbye checkpoint only costs a longer catch-up
            log.warning("final checkpoint failed: %r", exc)
        finally:
            await self.writer.stop(timeout=share)
            await self.app.consumer.commit()  # what the store now holds
            await self.checkpoints.stop()
            for runner in self._http:
                await runner.cleanup()
            self.backend.close()


def main(environ: Mapping[str, str] | None = None) -> None:
    settings = WorkerSettings.from_env(os.environ if environ is None else environ)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    Worker(settings).run()
