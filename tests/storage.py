"""Helpers for store tests: read the views back and compare them with `ccpipe compute`."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson
from support import Run

from pipeline.engine.windows import ROW_FIELDS
from pipeline.settings import EngineSettings
from pipeline.store.backends import Backend

WINDOW_FIELDS = ROW_FIELDS  # every field of the contract's window rows, sections 3 and 6


def select(store: Backend, sql: str) -> list[dict[str, Any]]:
    result = store.select(sql)
    return [dict(zip(result.names, row, strict=True)) for row in result.rows]


def epoch(value: Any) -> float | None:
    """A DateTime64 as chDB's JSON (a string) or the driver (a datetime) gives it."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
    return value.timestamp()


def close(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def views(store: Backend) -> tuple[dict[str, dict[str, Any]], dict[tuple[Any, ...], dict[str, Any]]]:
    conversations = {r["conversation_id"]: r for r in select(store, "SELECT * FROM conversations_latest")}
    windows = {
        (epoch(r["window_start"]), r["channel"], r["queue"]): r
        for r in select(store, "SELECT * FROM metrics_window")
    }
    return conversations, windows


def assert_views_equal_compute(
    store: Backend,
    lines: list[bytes],
    settings: EngineSettings | None = None,
    *,
    except_fields: tuple[str, ...] = (),
) -> None:
    """conversations_latest and metrics_window hold what `ccpipe compute` gives (every window
    field but `except_fields`, which the caller checks its own way)."""
    reference = Run([orjson.loads(line) for line in lines], settings)
    conversations, windows = views(store)
    assert conversations.keys() == reference.conversations.keys()
    for cid, want in reference.conversations.items():
        got = conversations[cid]
        for field, value in want.items():
            seen = (
                epoch(got[field])
                if field in ("started_at", "first_response_at", "resolved_at")
                else got[field]
            )
            assert close(seen, value), (cid, field, seen, value)
    assert windows.keys() == reference.windows.keys()
    for key, want in reference.windows.items():
        for field in (f for f in WINDOW_FIELDS if f not in except_fields):
            assert close(windows[key][field], want[field]), (key, field, windows[key][field], want[field])
