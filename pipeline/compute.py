"""`ccpipe compute`: the engine over a JSONL file, without Kafka (contract §4).

Lines are fed in file order, in batches, to the same `Engine` the streaming agents run, so a
backfill gives the numbers the live pipeline gave. Final window rows are written as the
watermark seals them (they come out ordered by window_start, channel, queue); conversation
records are written at the end, ordered by start.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson
from tqdm import tqdm

from pipeline.engine import Batch, Engine, WindowRow
from pipeline.engine.agents import AgentRow
from pipeline.events import Event, InvalidEvent, decode_event
from pipeline.settings import EngineSettings
from pipeline.timefmt import format_rfc3339

BATCH_SIZE = 1000
CONVERSATION_TIME_FIELDS = ("started_at", "first_response_at", "resolved_at")


@dataclass(slots=True)
class ComputeSummary:
    lines: int
    valid: int
    invalid: int
    duplicates: int
    late: int
    conversations: int
    windows: int
    seconds: float

    def __str__(self) -> str:
        rate = self.lines / self.seconds if self.seconds > 0 else 0.0
        return (
            f"ccpipe compute: {self.lines} lines, {self.valid} valid events, {self.invalid} invalid, "
            f"{self.duplicates} duplicates, {self.late} late; wrote {self.conversations} conversations "
            f"and {self.windows} window rows in {self.seconds:.2f} s ({rate:,.0f} lines/s)"
        )


def conversation_json(record: dict[str, Any]) -> dict[str, Any]:
    """A conversation record with RFC 3339 UTC times, as `ccpipe compute` writes it."""
    out = dict(record)
    for name in CONVERSATION_TIME_FIELDS:
        out[name] = format_rfc3339(out[name])
    return out


def window_json(row: WindowRow) -> dict[str, Any]:
    """A window row with an RFC 3339 `window_start`, as `ccpipe compute` writes it."""
    out = row.as_dict()
    out["window_start"] = format_rfc3339(row.window_start)
    out["window_seconds"] = float(row.window_seconds)
    return out


def agent_window_json(row: AgentRow) -> dict[str, Any]:
    """An `agent_window` row (contract §7.2) with an RFC 3339 `window_start`."""
    out = row.as_dict()
    out["window_start"] = format_rfc3339(row.window_start)
    out["window_seconds"] = float(row.window_seconds)
    return out


def _batches(lines: IO[bytes], progress: tqdm | None) -> Iterator[list[Event | InvalidEvent]]:
    batch: list[Event | InvalidEvent] = []
    for number, line in enumerate(lines, start=1):
        if progress is not None:
            progress.update(len(line))
        batch.append(decode_event(line.rstrip(b"\r\n"), f"line {number}"))
        if len(batch) >= BATCH_SIZE:
            yield batch
            batch = []
    if batch:
        yield batch


def run_compute(
    source: IO[bytes],
    windows_out: IO[bytes],
    conversations_out: IO[bytes],
    settings: EngineSettings,
    *,
    errors: IO[str] = sys.stderr,
    total_bytes: int | None = None,
    agent_windows_out: IO[bytes] | None = None,
) -> ComputeSummary:
    """Run the engine over `source` and write the outputs (agent windows too when asked);
    invalid lines go to `errors`."""
    began = time.monotonic()
    engine = Engine(settings)
    records: dict[str, dict[str, Any]] = {}
    windows_written = 0
    show_progress = total_bytes is not None and errors.isatty()
    progress = (
        tqdm(total=total_bytes, unit="B", unit_scale=True, desc="compute", file=errors)
        if show_progress
        else None
    )
    lines = 0

    def absorb(result: Batch) -> None:
        nonlocal windows_written
        for bad in result.invalid:
            errors.write(f"{bad.origin}: {bad.reason}: {bad.detail}\n")
        for row in result.windows:
            if row.final:
                windows_out.write(orjson.dumps(window_json(row), option=orjson.OPT_APPEND_NEWLINE))
                windows_written += 1
        if agent_windows_out is not None:
            for agent_row in result.agent_windows:
                if agent_row.final:
                    agent_windows_out.write(orjson.dumps(agent_window_json(agent_row),
                                                         option=orjson.OPT_APPEND_NEWLINE))  # fmt: skip
        for record in result.conversations:
            records[record["conversation_id"]] = record

    for batch in _batches(source, progress):
        lines += len(batch)
        absorb(engine.process(batch))
    absorb(engine.flush())
    if progress is not None:
        progress.close()

    ordered = sorted(
        records.values(),
        key=lambda r: (r["started_at"] is None, r["started_at"] or 0.0, r["conversation_id"]),
    )
    for record in ordered:
        conversations_out.write(orjson.dumps(conversation_json(record), option=orjson.OPT_APPEND_NEWLINE))
    stats = engine.stats
    return ComputeSummary(
        lines=lines,
        valid=sum(stats.valid.values()),
        invalid=sum(stats.invalid.values()),
        duplicates=stats.duplicates,
        late=stats.late,
        conversations=len(ordered),
        windows=windows_written,
        seconds=time.monotonic() - began,
    )
