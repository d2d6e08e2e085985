"""Turns what the runtime produces into store rows and hands them to the writer."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pipeline.engine import Batch
from pipeline.store.rows import conversation_row, dead_letter_row, interaction_row, window_row
from pipeline.store.writer import StoreWriter
from pipeline.stream.runtime import clipped

if TYPE_CHECKING:
    from pipeline.stream.runtime import StoredInput


class StoreSink:
    """Rows are built here, on the event loop, right after the batch that produced them: a
    provisional window's accumulators change with the next batch."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def persist(self, partition: int, version: int, batch: Batch, stored: StoredInput) -> None:
        add = self.writer.add
        add("interactions", [interaction_row(event, partition, offset) for event, offset in stored.events])
        add("conversations", [conversation_row(record, version) for record in batch.conversations])
        add("metrics_window_partials", [window_row(row, partition, version) for row in batch.windows])
        now = time.time()
        letters = [
            dead_letter_row(
                topic=m.topic, partition=m.partition, offset=m.offset, reason=bad.reason, detail=bad.detail,
                payload=clipped(m.value), received_at=now,
            )
            for m, bad in stored.refused
        ]  # fmt: skip
        add("dead_letters", letters)

    async def wait_for_room(self) -> None:
        await self.writer.wait_for_room()

    async def flush(self, timeout: float) -> bool:
        return await self.writer.flush(timeout)
