"""Turns what the runtime produces into store rows and hands them to the writer."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.deadletter import DeadLetter
from pipeline.engine import Batch
from pipeline.events import Event
from pipeline.store.rows import (
    agent_window_row,
    conversation_row,
    dead_letter_row,
    interaction_source,
    window_row,
)
from pipeline.store.writer import StoreWriter


class StoreSink:
    """Rows are built here, on the event loop, right after the batch that produced them: a
    provisional window's accumulators change with the next batch."""

    def __init__(self, writer: StoreWriter, fcr_horizon: float) -> None:
        self.writer = writer
        self.fcr_horizon = fcr_horizon  # a conversation row says when it becomes final

    def persist(
        self, partition: int, version: int, batch: Batch, events: Sequence[tuple[Event, int]],
        letters: Sequence[DeadLetter],
    ) -> None:  # fmt: skip
        """Rows of one input partition's batch: its valid events (with their offsets), what the
        engine changed (at `version`, the partition's applied offset) and its dead letters."""
        add = self.writer.add
        add("interactions", [interaction_source(event, partition, offset) for event, offset in events])
        horizon = self.fcr_horizon
        add("conversations", [conversation_row(record, version, horizon) for record in batch.conversations])
        add("metrics_window_partials", [window_row(row, partition, version) for row in batch.windows])
        add(
            "agent_window_partials",
            [agent_window_row(row, partition, version) for row in batch.agent_windows],
        )
        add("dead_letters", [dead_letter_row(letter) for letter in letters])

    async def wait_for_room(self) -> None:
        await self.writer.wait_for_room()

    async def flush(self, timeout: float) -> bool:
        return await self.writer.flush(timeout)
