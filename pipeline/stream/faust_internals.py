"""Every private Faust/mode hook ccpipe relies on, in one place, checked at start.

Two extensions live here:

- `bounded_worker`: a Faust worker that always stops within its bound, and that, when
  processing cannot go on (a service crashed, a record batch cannot be decoded), says why in
  one line, stops within the same bound and exits non-zero, so a supervisor restarts it;
- `bulk_app`: a Faust app whose consumer hands each fetched partition's records to a handler
  in one call (no per-message Event, queue put or stream step), while Faust keeps doing group
  membership, assignment, rebalance callbacks, offset commits and the lifecycle. The handler
  acknowledges offset ranges into Faust's own ack bookkeeping when their effects are durable,
  so Faust's commit timer and shutdown commit work unchanged.

faust-streaming and mode-streaming are pinned in pyproject.toml; `check_hooks()` runs when a
worker starts and in the test suite, so an upgrade that renames a hook fails loudly instead of
silently changing how a worker stops or stalling its fetcher.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

log = logging.getLogger("ccpipe.worker")

# (class, attribute) pairs overridden or called below; each names the upstream code it extends.
HOOKS = (
    ("mode.worker.Worker", "_schedule_shutdown"),  # every stop signal ends up here
    ("mode.worker.Worker", "_install_signal_handlers_unix"),  # SIGINT/SIGTERM → _schedule_shutdown
    ("mode.worker.Worker", "on_worker_shutdown"),  # called once the worker leaves its main loop
    ("mode.services.Service", "_crash"),  # a crashed service marks every node up to the worker so
    ("mode.worker.Worker", "execute_from_commandline"),  # runs the worker until it stops
    ("faust.app.base.App", "_new_transport"),  # where the app builds its consumer's transport
    ("faust.transport.consumer.Consumer", "_drain_messages"),  # the fetcher's loop, replaced
    ("faust.transport.consumer.Consumer", "_wait_next_records"),  # one fetch, honouring flow
    ("faust.transport.consumer.Consumer", "_get_active_partitions"),  # assigned minus paused
    ("faust.transport.consumer.Consumer", "perform_seek"),  # back to committed after a rebalance
    ("faust.transport.consumer.Consumer", "on_partitions_revoked"),  # drops pending acks
    ("faust.transport.drivers.aiokafka.Consumer", "_new_consumer_thread"),  # builds the thread below
    ("faust.transport.drivers.aiokafka.AIOKafkaConsumerThread", "_create_worker_consumer"),
)
# Faust asks the broker to hold an empty fetch for 1.5 s. Kafka answers early when data arrives;
# a broker that does not (Tansu) would then add up to 1.5 s per hop, and the gauge path has two
# (input, partials). A short hold costs an idle worker a few fetches a second.
FETCH_MAX_WAIT_MS = 100
# Per-instance state of faust.transport.consumer.Consumer that `BulkConsumer.ack` writes, the
# way `Consumer.ack` does for one message.
ACK_STATE = ("_acked", "_acked_index", "_committed_offset", "_n_acked", "_stopped", "flow_active")
# aiokafka.AIOKafkaConsumer's copy of its fetch_max_wait_ms argument, read when it starts.
FETCH_WAIT_STATE = "_fetch_max_wait_ms"
# faust.sensors.monitor.Monitor's last-processed time per partition (monotonic), which Faust's
# consumer thread checks (`verify_event_path`): fetched but not processed for
# `stream_processing_timeout` is logged as a stalled stream, every few seconds, at ERROR. A
# batch handed to a bulk handler is processed: the fetch loop sets it, as Faust's streams do.
MONITOR_INBOUND_STATE = "stream_inbound_time"
# Where an unreadable batch is found after a failed fetch, to name it: Faust's consumer thread
# holds the aiokafka consumer, whose fetcher keeps a fetched-but-not-returned result per
# partition (aiokafka.consumer.fetcher.FetchResult and PartitionRecords).
FETCHED_STATE = ("_consumer", "_fetcher", "_records", "_topic_partition", "_partition_records",
                 "next_fetch_offset")  # fmt: skip
# Exit codes (sysexits.h): input that cannot be read, and processing that failed.
EXIT_UNREADABLE = 65
EXIT_CRASHED = 70

# A handler gets a topic partition and its fetched records (aiokafka ConsumerRecords, in order).
BulkHandler = Callable[[Any, Sequence[Any]], Awaitable[None]]


def check_hooks() -> None:
    """Fail at start, naming the hook, if the installed Faust/mode lacks one we extend."""
    import importlib  # noqa: PLC0415

    for dotted, attribute in HOOKS:
        module, _, name = dotted.rpartition(".")
        owner = getattr(importlib.import_module(module), name)
        if not callable(getattr(owner, attribute, None)):
            raise RuntimeError(
                f"{dotted}.{attribute} is gone: this faust-streaming/mode-streaming version is not "
                "the one ccpipe is pinned to (pyproject.toml)"
            )


def bounded_worker(
    app: Any, shutdown_timeout: float, on_failure: Callable[[str], None] = lambda line: None, **options: Any
) -> Any:
    """A `faust.Worker` that stops on SIGTERM, SIGINT and SIGHUP alike and always exits within
    `shutdown_timeout` seconds of the first of them (or of leaving its loop for any reason):
    graceful when the broker and the store let it, by `os._exit` when they do not.

    `worker.fail(line, code)` — called when a service crashes, and by the bulk consumer when a
    batch cannot be decoded — logs `line`, tells `on_failure` (the health endpoint), stops the
    same way and exits with `code`."""
    import faust  # noqa: PLC0415 - slow import, only for workers

    check_hooks()

    class BoundedWorker(faust.Worker):
        _deadline: threading.Timer | None = None
        failed: int | None = None  # the exit code once processing failed

        def _install_signal_handlers_unix(self) -> None:  # mode.worker.Worker
            super()._install_signal_handlers_unix()
            self.loop.add_signal_handler(signal.SIGHUP, self._schedule_shutdown, signal.SIGHUP)

        def _schedule_shutdown(self, signum: signal.Signals) -> None:  # mode.worker.Worker
            self._arm(128 + int(signum))
            super()._schedule_shutdown(signum)

        def on_worker_shutdown(self) -> None:  # mode.worker.Worker
            self._arm(128 + int(signal.SIGTERM))
            super().on_worker_shutdown()

        def _crash(self, reason: BaseException) -> None:  # mode.services.Service
            if isinstance(reason, asyncio.CancelledError) and self.should_stop:
                return  # a stop cancelling a service mid-restart (a rebalance) is no crash
            super()._crash(reason)
            self.fail(f"ccpipe worker: a service crashed ({reason!r}); exiting", EXIT_CRASHED)

        def fail(self, line: str, code: int) -> None:
            """Processing cannot go on: say why once, stop within the bound, exit with `code`."""
            if self.failed is not None:
                return
            self.failed = code
            log.critical("%s", line)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
            on_failure(line)
            self._arm(code)
            self.loop.call_soon_threadsafe(self._schedule_shutdown, signal.SIGTERM)

        def _arm(self, code: int) -> None:
            if self._deadline is None:
                self._deadline = threading.Timer(shutdown_timeout, _give_up, args=(shutdown_timeout, code))
                self._deadline.daemon = True
                self._deadline.start()

        def execute_from_commandline(self) -> NoReturn:  # mode.worker.Worker
            try:
                super().execute_from_commandline()
            finally:
                if self.failed is not None:  # stopped in time: leave with the failure's code
                    os._exit(self.failed)

    worker = BoundedWorker(app, **options)
    app.fail = worker.fail
    return worker


def _give_up(timeout: float, code: int) -> None:
    """The graceful stop took too long (broker or store gone): leave now; the next owner of
    these partitions catches up from the last checkpoint, so nothing is lost."""
    sys.stderr.write(
        f"ccpipe worker: graceful stop did not finish within {timeout:g} s "
        "(CCPIPE_SHUTDOWN_TIMEOUT_SECONDS); exiting now\n"
    )
    sys.stderr.flush()
    os._exit(code)


def bulk_app(group_id: str, **options: Any) -> Any:
    """A `faust.App` whose topics registered with `app.bulk(topic, handler)` are consumed by
    partition batches; the handler calls `app.consumer.ack(tp, first, last)` once the batch's
    effects are durable (Faust commits only what is acknowledged)."""
    import faust  # noqa: PLC0415 - slow import, only for workers
    from aiokafka.errors import KafkaError  # noqa: PLC0415
    from faust.transport.drivers import aiokafka as driver  # noqa: PLC0415

    check_hooks()

    class ShortFetchThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:  # faust AIOKafkaConsumerThread
            consumer = super()._create_worker_consumer(transport)
            if not hasattr(consumer, FETCH_WAIT_STATE):
                raise RuntimeError(f"aiokafka consumer lacks {FETCH_WAIT_STATE}: not the pinned version")
            setattr(consumer, FETCH_WAIT_STATE, FETCH_MAX_WAIT_MS)
            return consumer

    class BulkConsumer(driver.Consumer):
        """Faust's aiokafka consumer with a fetch loop that hands over record lists."""

        def _new_consumer_thread(self) -> Any:  # faust aiokafka Consumer._new_consumer_thread
            return ShortFetchThread(self, loop=self.loop, beacon=self.beacon)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            missing = [name for name in ACK_STATE if not hasattr(self, name)]
            if missing:
                raise RuntimeError(f"faust Consumer lacks {missing}: not the version ccpipe is pinned to")
            self._acked_to: dict[Any, int] = {}  # tp -> highest offset acknowledged in bulk
            self._batch: asyncio.Task[None] | None = None  # the handler call in progress

        async def _drain_messages(self, fetcher: Any) -> None:  # faust Consumer._drain_messages
            """Fetch, then hand each partition's records to its topic's handler, one call per
            partition. A batch fetched while the flow is stopped (a rebalance under way) or in
            an earlier generation is dropped and the consumer seeks back to the committed
            offsets, as Faust's own `getmany` does: no batch is applied after a revocation."""
            handlers: dict[str, BulkHandler] = app.bulk_handlers
            inbound: dict[Any, float] = getattr(app.monitor, MONITOR_INBOUND_STATE)
            try:
                while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                    try:
                        records, active = await self._wait_next_records(1.0)
                    except self.consumer_stopped_errors:
                        raise
                    except KafkaError as exc:  # a batch that cannot be decoded: never retried
                        where = self._unreadable()
                        app.fail(f"ccpipe worker: cannot read {where}: {exc!r}; stopping (see "
                                 "docs/runbooks.md, 'cannot read')", EXIT_UNREADABLE)  # fmt: skip
                        return
                    if not records or self.should_stop:
                        continue
                    if not self.flow_active:
                        await self.perform_seek()
                        continue
                    generation = app.consumer_generation_id
                    for tp, batch in records.items():
                        if not self.flow_active or app.consumer_generation_id != generation:
                            break
                        if active is not None and tp not in self._get_active_partitions():
                            continue
                        # Waited for, not awaited: stopping the fetcher cancels this loop, never a
                        # batch half done; a batch that fails ends the worker (`_crash`).
                        self._batch = asyncio.ensure_future(handlers[tp.topic](tp, batch))
                        self._batch.add_done_callback(_crash_if_failed)
                        await asyncio.wait([self._batch])
                        inbound[tp] = time.monotonic()
            except self.consumer_stopped_errors:
                if not app.should_stop:
                    raise

        def _unreadable(self) -> str:
            """Name the batch a fetch failed on: the partition (and offset) whose fetched result
            aiokafka still holds (it is dropped once returned), else every assigned partition."""
            try:
                consumer: Any = self._thread._consumer  # aiokafka's, once started
                fetched = consumer._fetcher._records
                for result in list(fetched.values()):
                    records = getattr(result, "_partition_records", None)
                    if records is not None:
                        tp, offset = result._topic_partition, records.next_fetch_offset
                        return f"topic {tp.topic} partition {tp.partition} at offset {offset}"
            except AttributeError:
                pass
            assigned = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(self.assignment()))
            return f"a record batch of one of {assigned}"

        async def idle(self) -> None:
            """Return once no handler call is in progress (shutdown and revocation wait here)."""
            if self._batch is not None:
                await asyncio.gather(self._batch, return_exceptions=True)

        def ack(self, tp: Any, first: int, last: int) -> None:  # type: ignore[override]
            """Acknowledge offsets `first..last` of `tp` (as Faust's `ack` does one message)."""
            first = max(first, self._acked_to.get(tp, -1) + 1, self._committed_offset[tp] or 0)
            if last < first:
                return
            offsets = range(first, last + 1)
            self._acked[tp].extend(offsets)
            self._acked_index[tp].update(offsets)
            self._n_acked += len(offsets)
            self._acked_to[tp] = last

        async def on_partitions_revoked(self, revoked: set[Any]) -> None:  # faust Consumer
            """Stop fetching, finish the batch in progress, let the app make its effects
            durable and acknowledge them, and commit: Faust's own revocation drops the pending
            acknowledgements of revoked partitions."""
            self.stop_flow()
            await self.idle()
            await app.before_revoke(revoked)
            await self.commit()
            for tp in revoked:
                self._acked_to.pop(tp, None)
            await super().on_partitions_revoked(revoked)

    class BulkTransport(driver.Transport):
        Consumer = BulkConsumer

    class BulkApp(faust.App):
        bulk_handlers: dict[str, BulkHandler]

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.bulk_handlers = {}
            self.before_revoke: Callable[[set[Any]], Awaitable[None]] = _nothing
            self.fail: Callable[[str, int], None] = _exit_now  # the worker's, once it runs the app

        def _new_transport(self) -> Any:  # faust App._new_transport
            return BulkTransport(self.conf.broker_consumer, self)

        def bulk(self, topic: Any, handler: BulkHandler) -> None:
            """Subscribe to `topic` and hand its records to `handler` by partition batch."""
            self.bulk_handlers[topic.get_topic_name()] = handler
            self.topics.add(topic)

    app = BulkApp(group_id, **options)
    return app


async def _nothing(revoked: set[Any]) -> None:
    return None


def _exit_now(line: str, code: int) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    os._exit(code)


def _crash_if_failed(batch: asyncio.Future[None]) -> None:
    if not batch.cancelled() and batch.exception() is not None:
        _crash(batch.exception())


def _crash(error: BaseException | None) -> None:
    """A batch failed half way: its partition's state cannot be trusted, so neither saved.
    Leave at once; the next start recovers every partition from its last checkpoint (which
    covers only durable effects) and reads the rest again."""
    log.critical("processing a batch failed; exiting so that state is recovered from checkpoints",
                 exc_info=error)  # fmt: skip
    sys.stderr.write(f"ccpipe worker: processing a batch failed ({error!r}); exiting\n")
    sys.stderr.flush()
    os._exit(EXIT_CRASHED)
