"""The batching, retrying, bounded ClickHouse writer.

Rows are buffered per table and written as one columnar insert per table when the buffer
holds `batch_rows` rows or `flush_seconds` have passed, or when told to (`write_now`: the worker
does when it has drained a backlog). In tables where a newer row replaces an older one of the
same key (conversations, window partials), the buffer keeps only the newest row per key: a
conversation updated by ten batches within a second is written once.
Every store call runs on one dedicated thread, so the event loop keeps going while ClickHouse works.
Interactions are buffered as their sources (`rows.interaction_source`), which the store makes into
rows: in the worker's store process, off the worker's interpreter.

When the store is unreachable, writes are retried with exponential backoff and jitter,
`ccpipe_store_write_errors_total` counts the attempts, and the buffer keeps growing up to
`max_buffer_rows`; past that, `wait_for_room()` blocks the caller, which pauses consumption.
When a batch is refused for what it contains, it is split in halves until the refused rows
are alone; those go to `dead_letters` with ClickHouse's reason, the rest is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.deadletter import DeadLetter
from pipeline.store.backends import QueryResult, StoreUnavailable
from pipeline.store.rows import REPLACING_KEYS, TABLES, Row, built, dead_letter_row
from pipeline.store.rowstore import RowStore

log = logging.getLogger("ccpipe.store")

BACKOFF_START = 0.2
BACKOFF_CAP = 10.0
REJECTED = "store_rejected"


@dataclass
class WriterStats:
    rows_written: dict[str, int] = field(default_factory=dict)
    write_errors: int = 0
    rows_rejected: int = 0


class StoreWriter:
    """Buffers rows and writes them; `flush()` tells when everything given so far is stored."""

    def __init__(
        self,
        store: RowStore,
        *,
        batch_rows: int,
        flush_seconds: float,
        max_buffer_rows: int,
        on_written: Callable[[str, int], None] = lambda table, rows: None,
        on_error: Callable[[], None] = lambda: None,
        on_durable: Callable[[int], None] = lambda cycles_done: None,
    ) -> None:
        self.store = store
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_buffer_rows = max_buffer_rows
        self._on_written = on_written
        self._on_error = on_error
        self._on_durable = on_durable
        self._appended: dict[str, list[Row]] = {}
        self._newest: dict[str, dict[Any, Row]] = {}  # tables of REPLACING_KEYS
        self._buffered = 0
        self._in_flight = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccpipe-store")
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        # A write cycle takes everything buffered at its start; flush() waits for a cycle
        # that started after it was called.
        self._cycles_started = 0
        self._cycles_done = 0
        self._cycle_end = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.stats = WriterStats()

    # --- producer side -----------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        """Rows not yet stored: buffered plus being written."""
        return self._buffered + self._in_flight

    def add(self, table: str, rows: Sequence[Row]) -> None:
        if not rows:
            return
        key = REPLACING_KEYS.get(table)
        if key is None:
            self._appended.setdefault(table, []).extend(rows)
            self._buffered += len(rows)
        else:
            newest = self._newest.setdefault(table, {})
            before = len(newest)
            newest.update((key(row), row) for row in rows)
            self._buffered += len(newest) - before
        if self._buffered >= self.max_buffer_rows:
            self._room.clear()
        if self._buffered >= self.batch_rows:
            self._wake.set()

    def write_now(self) -> None:
        """Start a write cycle without waiting for the timer (once the one under way ends)."""
        self._wake.set()

    def mark(self) -> int:
        """The write cycle that stores every row given so far: once `on_durable` reports this
        many cycles done, they are stored."""
        return self._cycles_started + 1

    async def wait_for_room(self) -> None:
        """Return once the buffer is below its bound (immediately, unless the store is down)."""
        await self._room.wait()

    async def flush(self, timeout: float | None = None) -> bool:
        """Write what is buffered now; True once everything given before the call is stored."""
        target = self.mark()
        self._wake.set()

        async def written() -> None:
            async with self._cycle_end:
                await self._cycle_end.wait_for(lambda: self._cycles_done >= target)

        try:
            await asyncio.wait_for(written(), timeout)
        except TimeoutError:
            return False
        return True

    async def query(self, sql: str) -> QueryResult:
        """A read-only query on the writer's thread (so it never races an insert)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.store.select, sql, True)

    # --- the writing loop --------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ccpipe-store-writer")

    async def stop(self, timeout: float = 30.0) -> None:
        """Write what is left (waiting at most `timeout`), then stop."""
        await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            await self._write_all()

    async def _write_all(self) -> None:
        batches = self._appended | {table: list(rows.values()) for table, rows in self._newest.items()}
        self._appended, self._newest = {}, {}
        taken = sum(len(rows) for rows in batches.values())
        self._buffered -= taken
        self._in_flight += taken
        self._cycles_started += 1
        try:
            for table, rows in batches.items():
                await self._write_until_stored(table, rows)
        finally:
            self._in_flight -= taken
        if self._buffered < self.max_buffer_rows:
            self._room.set()
        async with self._cycle_end:
            self._cycles_done = self._cycles_started
            self._cycle_end.notify_all()
        self._on_durable(self._cycles_done)

    async def _write_until_stored(self, table: str, rows: list[Row]) -> None:
        """Retry while the store is unreachable; isolate rows it refuses."""
        attempt = 0
        while True:
            try:
                await self._insert(table, rows)
                return
            except StoreUnavailable as exc:
                self._count_error()
                delay = min(BACKOFF_CAP, BACKOFF_START * 2**attempt) * random.uniform(0.5, 1.5)
                attempt += 1
                log.warning(
                    "store unavailable (%s); %d %s rows wait, retry in %.1fs", exc, len(rows), table, delay
                )
                # While we wait, rows keep arriving: let the bound apply to them too.
                if self._buffered + self._in_flight >= self.max_buffer_rows:
                    self._room.clear()
                await asyncio.sleep(delay)
            except Exception as exc:  # refused for what the rows contain
                self._count_error()
                await self._isolate(table, rows, exc)
                return

    async def _isolate(self, table: str, rows: list[Row], error: Exception) -> None:
        if len(rows) == 1:
            self.stats.rows_rejected += 1
            (row,) = built(table, rows)
            named = dict(zip((c.name for c in TABLES[table]), row, strict=True))
            payload = orjson.dumps(named, default=str)
            log.error("ClickHouse refused a %s row, kept in dead_letters: %s", table, str(error)[:300])
            # Told apart by content: a negative offset from the payload's checksum.
            letter = DeadLetter.of(
                topic=table, partition=0, offset=-1 - zlib.crc32(payload), reason=REJECTED,
                detail=f"{table}: {str(error)[:1000]}", value=payload, received_at=time.time(),
            )  # fmt: skip
            if table != "dead_letters":
                await self._write_until_stored("dead_letters", [dead_letter_row(letter)])
            return
        middle = len(rows) // 2
        for half in (rows[:middle], rows[middle:]):
            try:
                await self._insert(table, half)
            except StoreUnavailable:
                await self._write_until_stored(table, half)
            except Exception as exc:  # this half holds a refused row
                await self._isolate(table, half, exc)

    async def _insert(self, table: str, rows: list[Row]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self.store.write, table, rows)
        self.stats.rows_written[table] = self.stats.rows_written.get(table, 0) + len(rows)
        self._on_written(table, len(rows))

    def _count_error(self) -> None:
        self.stats.write_errors += 1
        self._on_error()
