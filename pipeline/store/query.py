"""`ccpipe sql` and `ccpipe migrate`: analysts' and operators' access to the store.

A chDB directory can be opened by one process only. When a worker holds it, `ccpipe sql`
sends the query to that worker's loopback endpoint (`/sql`), where it runs read-only between
two writes; otherwise it opens the directory itself, read-only too. The worker is found through
the endpoint file it keeps in the store directory (or CCPIPE_QUERY_PORT), and every request
names the store it means: a worker serving another store refuses it, so an answer always comes
from the store that was asked for.
"""

from __future__ import annotations

import contextlib
import csv
import io
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from pipeline.ports import LOOPBACK
from pipeline.store.backends import QueryResult, StoreUnavailable, chdb_dir, open_backend

FORMATS = ("table", "csv", "json")
STORE_HEADER = "X-Ccpipe-Store"  # the chDB directory a /sql request means
ENDPOINT_FILE = "ccpipe-query.json"  # in a chDB directory held by a worker: {"port": .., "pid": ..}


class QueryError(Exception):
    """The query could not run; the message says why and what to do."""


def run_query(store_url: str, sql: str, query_port: int) -> QueryResult:
    path = chdb_dir(store_url)
    if path is None:  # a ClickHouse server: ask it directly
        try:
            return _select(store_url, sql)
        except StoreUnavailable as exc:
            raise QueryError(str(exc)) from exc
    if not (path / "metadata").is_dir():
        what = "the directory does not exist" if not path.exists() else "it holds no chDB store"
        raise QueryError(f"there is no chDB store at {path} ({what}): check --store or CCPIPE_STORE_URL")
    refusals = []
    for port in dict.fromkeys((*_advertised_port(path), query_port)):
        endpoint = f"http://{LOOPBACK}:{port}/sql"
        try:
            return _ask_worker(endpoint, sql, path)
        except urllib.error.URLError as unreachable:
            refusals.append(f"nothing answers at {endpoint} ({unreachable.reason})")
        except WrongStore as other:
            refusals.append(f"the worker at {endpoint} serves {other}")
    try:
        return _select(store_url, sql)
    except StoreUnavailable:
        raise QueryError(
            f"the chDB store at {path} is in use by another process and no ccpipe worker serving it "
            f"answers ({'; '.join(refusals)}): query it through the worker that holds it "
            "(CCPIPE_QUERY_PORT), or stop that process"
        ) from None


def _select(store_url: str, sql: str) -> QueryResult:
    """Open the store, run the read-only query, close it (StoreUnavailable when it cannot)."""
    backend = open_backend(store_url)
    try:
        return backend.select(sql, readonly=True)
    finally:
        backend.close()


def _advertised_port(path: Path) -> tuple[int, ...]:
    """The query port a worker holding this store wrote into it, if any."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return (int(orjson.loads((path / ENDPOINT_FILE).read_bytes())["port"]),)
    return ()


class WrongStore(Exception):  # noqa: N818 - reads as the condition it is
    """A worker answered, but for another store (its directory is the message)."""


def _ask_worker(endpoint: str, sql: str, store: Path) -> QueryResult:
    request = urllib.request.Request(
        endpoint, data=sql.encode(), method="POST", headers={STORE_HEADER: str(store)}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # loopback only
            body = orjson.loads(response.read())
    except urllib.error.HTTPError as refused:
        try:
            answer = orjson.loads(refused.read())
        except orjson.JSONDecodeError:
            raise WrongStore(f"no store: it is not a ccpipe worker (HTTP {refused.code})") from None
        if refused.code == 409:
            raise WrongStore(answer.get("store", "another store")) from None
        raise QueryError(answer.get("error", str(refused))) from None
    if body.get("store") != str(store):  # a worker that does not say which store it serves
        raise WrongStore(body.get("store", "an unnamed store"))
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
