"""The private Faust/mode hooks ccpipe extends exist in the installed versions: an upgrade that
renames one fails here, loudly, instead of silently changing how a worker stops."""

from __future__ import annotations

import asyncio

from pipeline.stream.faust_internals import (
    ACK_STATE,
    FETCH_MAX_WAIT_MS,
    FETCH_WAIT_STATE,
    FETCHED_STATE,
    HOOKS,
    MONITOR_INBOUND_STATE,
    bounded_worker,
    bulk_app,
    check_hooks,
)


def test_every_hook_exists() -> None:
    check_hooks()
    assert len(HOOKS) == 13


def test_an_unreadable_batch_can_still_be_named() -> None:
    """Where `BulkConsumer._unreadable` looks: Faust's consumer thread's aiokafka consumer, its
    fetcher's held results, and each result's partition and next offset."""
    import inspect

    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.consumer.fetcher import Fetcher, FetchResult, PartitionRecords
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    consumer, fetcher, records, tp, held, offset = FETCHED_STATE
    assert hasattr(AIOKafkaConsumerThread, consumer)
    assert f"self.{fetcher} = " in inspect.getsource(AIOKafkaConsumer.start)
    assert f"self.{records} = " in inspect.getsource(Fetcher.__init__)
    result = FetchResult(TopicPartition("t", 0), assignment=None, partition_records=None, backoff=0)
    assert hasattr(result, tp) and hasattr(result, held)
    assert f"self.{offset} = " in inspect.getsource(PartitionRecords.__init__)


def test_the_bulk_app_replaces_the_fetch_loop_and_finds_the_ack_state() -> None:
    app = bulk_app("hooks-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    consumer = app.consumer  # built through the app's transport: fails if the ack state moved
    for name in ACK_STATE:
        assert hasattr(consumer, name), name
    overridden = type(consumer).__dict__
    assert "_drain_messages" in overridden and "on_partitions_revoked" in overridden
    assert "_new_transport" in type(app).__dict__


def test_the_bulk_consumer_asks_for_short_fetch_waits() -> None:
    async def build() -> object:
        app = bulk_app("hooks-test", broker="kafka://127.0.0.1:1", web_enabled=False)
        return app.consumer._thread._create_worker_consumer(app.transport)

    assert getattr(asyncio.run(build()), FETCH_WAIT_STATE) == FETCH_MAX_WAIT_MS


def test_the_bounded_worker_extends_them() -> None:
    import faust

    app = faust.App("hooks-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    worker = bounded_worker(app, 1.0, quiet=True, redirect_stdouts=False, loglevel="WARNING")
    for owner, name in HOOKS:
        if owner.startswith("mode."):
            assert name in type(worker).__dict__, name  # overridden, not inherited unchanged
    assert isinstance(worker, faust.Worker)


def test_faust_checks_the_monitor_time_the_bulk_fetch_loop_sets() -> None:
    """Faust's consumer thread reads the monitor's last-processed time per partition to log a
    stalled stream; the bulk fetch loop sets it after each batch."""
    import inspect

    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    app = bulk_app("hooks-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    assert isinstance(getattr(app.monitor, MONITOR_INBOUND_STATE), dict)
    assert f"monitor.{MONITOR_INBOUND_STATE}.get(tp)" in inspect.getsource(
        AIOKafkaConsumerThread.verify_event_path
    )
    assert "inbound[tp] = time.monotonic()" in inspect.getsource(type(app.consumer)._drain_messages)
