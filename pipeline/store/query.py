"""`ccpipe sql` and `ccpipe migrate`: analysts' and operators' access to the store.

A chDB directory can be opened by one process only. When a worker holds it, `ccpipe sql`
sends the query to that worker's loopback endpoint (`/sql` on CCPIPE_QUERY_PORT), where it
runs read-only between two writes; otherwise it opens the directory itself, read-only too.
"""

from __future__ import annotations

import csv
import io
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from pipeline.broker import LOOPBACK
from pipeline.store.backends import QueryResult, StoreUnavailable, open_backend

FORMATS = ("table", "csv", "json")


class QueryError(Exception):
    """The query could not run; the message says why and what to do."""


def run_query(store_url: str, sql: str, query_port: int) -> QueryResult:
    parts = urlsplit(store_url)
    if parts.scheme != "chdb":
        backend = open_backend(store_url)
        try:
            return backend.select(sql, readonly=True)
        except StoreUnavailable as exc:
            raise QueryError(str(exc)) from exc
        finally:
            backend.close()
    endpoint = f"http://{LOOPBACK}:{query_port}/sql"
    try:
        return _ask_worker(endpoint, sql)
    except urllib.error.URLError as unreachable:
        path = Path(parts.netloc + parts.path)
        if not path.exists():
            raise QueryError(
                f"no running ccpipe worker answers at {endpoint} ({unreachable.reason}) "
                f"and there is no chDB store at {path}: start `ccpipe run`, or pass --store"
            ) from None
        try:
            backend = open_backend(store_url)
        except StoreUnavailable as exc:
            raise QueryError(
                f"the chDB store at {path} is in use by another process, and no ccpipe worker answers at "
                f"{endpoint}: is CCPIPE_QUERY_PORT the worker's? ({exc})"
            ) from None
        try:
            return backend.select(sql, readonly=True)
        finally:
            backend.close()


def _ask_worker(endpoint: str, sql: str) -> QueryResult:
    request = urllib.request.Request(endpoint, data=sql.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # loopback only
            body = orjson.loads(response.read())
    except urllib.error.HTTPError as refused:
        raise QueryError(orjson.loads(refused.read()).get("error", str(refused))) from None
    return QueryResult(body["names"], body["types"], body["rows"])


def render(result: QueryResult, fmt: str) -> str:
    if fmt == "json":
        return "".join(
            orjson.dumps(dict(zip(result.names, row, strict=True)), default=str).decode() + "\n"
            for row in result.rows
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.names)
        writer.writerows(result.rows)
        return out.getvalue()
    cells = [[_cell(value) for value in row] for row in result.rows]
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(result.names)]
    lines = ["  ".join(name.ljust(w) for name, w in zip(result.names, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
