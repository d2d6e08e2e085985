"""Helpers for engine tests: build events tersely and run them through the real engine."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.engine import Engine
from pipeline.events import Event, InvalidEvent, decode_event, validate_event
from pipeline.settings import EngineSettings

T0 = 1_772_442_000.0  # 2026-03-02T09:00:00Z, on a minute boundary


def event(
    event_id: str,
    kind: str,
    conversation: str,
    t: float,
    *,
    customer: str = "u1",
    channel: str = "chat",
    queue: str | None = "billing",
    **fields: Any,
) -> dict[str, Any]:
    """An event dict; `t` is seconds after T0."""
    body: dict[str, Any] = {
        "event_id": event_id,
        "type": kind,
        "conversation_id": conversation,
        "customer_id": customer,
        "channel": channel,
        "timestamp": T0 + t,
    }
    if queue is not None:
        body["queue"] = queue
    body.update(fields)
    return body


def customer_msg(event_id: str, conversation: str, t: float, **fields: Any) -> dict[str, Any]:
    return event(event_id, "message", conversation, t, direction="inbound", author="customer", **fields)


def agent_msg(event_id: str, conversation: str, t: float, agent: str = "a1", **fields: Any) -> dict[str, Any]:
    return event(
        event_id,
        "message",
        conversation,
        t,
        direction="outbound",
        author="agent",
        agent_id=agent,
        **fields,
    )


def bot_msg(event_id: str, conversation: str, t: float, **fields: Any) -> dict[str, Any]:
    return event(event_id, "message", conversation, t, direction="outbound", author="bot", **fields)


def decoded(events: Iterable[dict[str, Any]]) -> list[Event]:
    out = []
    for body in events:
        result = validate_event(body)
        assert isinstance(result, Event), result
        out.append(result)
    return out


class Run:
    """The outcome of feeding events to one engine and flushing it, as `ccpipe compute` would."""

    def __init__(self, events: Iterable[dict[str, Any]], settings: EngineSettings | None = None,
                 batch_size: int = 1000) -> None:  # fmt: skip
        self.engine = Engine(settings or EngineSettings())
        self.conversations: dict[str, dict[str, Any]] = {}
        self.windows: dict[tuple[float, str, str], dict[str, Any]] = {}
        self.agents: dict[tuple[float, str], dict[str, Any]] = {}  # final agent_window rows (§7.2)
        items = decoded(events)
        for start in range(0, len(items), batch_size):
            self._absorb(self.engine.process(items[start : start + batch_size]))
        self._absorb(self.engine.flush())

    def _absorb(self, batch: Any) -> None:
        for record in batch.conversations:
            self.conversations[record["conversation_id"]] = record
        for row in batch.windows:
            if row.final:
                self.windows[(row.window_start, row.channel, row.queue)] = row.fields
        for agent_row in batch.agent_windows:
            if agent_row.final:
                self.agents[(agent_row.window_start, agent_row.queue)] = agent_row.window.result()

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        return self.conversations[conversation_id]

    def window(self, minute: int, channel: str = "chat", queue: str = "billing") -> dict[str, Any]:
        """The final row of the window starting `minute` minutes after T0."""
        return self.windows[(T0 + 60 * minute, channel, queue)]

    def total(self, field: str) -> float:
        return sum(row[field] for row in self.windows.values())


def outputs(
    lines: list[str], batch_size: int, engine: Engine | None = None, flush: bool = True
) -> dict[str, Any]:
    """Everything an engine (a new one unless given) makes of raw event lines fed in batches, as
    JSON values: each invalid line's reason, every conversation record and every row
    (provisional and final), in order, and with `flush` the end of input's. Two engines agree
    on an input when these are equal."""
    engine = engine or Engine()
    out: dict[str, list[Any]] = {"invalid": [], "conversations": [], "windows": [], "agents": []}

    def absorb(batch: Any) -> None:
        out["conversations"].extend(batch.conversations)
        out["windows"].extend(row.as_dict() | {"final": row.final} for row in batch.windows)
        out["agents"].extend(row.as_dict() | {"final": row.final} for row in batch.agent_windows)

    items = [decode_event(line.encode()) for line in lines]
    out["invalid"] = [[item.reason, item.detail] for item in items if isinstance(item, InvalidEvent)]
    for start in range(0, len(items), batch_size):
        absorb(engine.process(items[start : start + batch_size]))
    if flush:
        absorb(engine.flush())
    return out


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie of ours counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def gone_within(pid: int, timeout: float) -> bool:
    """Whether `pid` stops running within `timeout` seconds (polled, not slept through)."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def outlived(script: str, how: signal.Signals, cwd: Path | None = None) -> int | None:
    """Run `script` (Python that starts a child process and prints its pid), end the script's
    process with `how`; the child's pid if it is still running 20 s later, else None."""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=cwd)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.send_signal(how)
        parent.wait(timeout=20)
        return None if gone_within(child, 20.0) else child
    finally:
        parent.kill()
        parent.wait()
