"""Two ways to reach ClickHouse with one DDL and one row format.

- `clickhouse://user:password@host:9000/db` (or `clickhouses://` for TLS): a ClickHouse
  server through clickhouse-driver's native protocol, columnar inserts.
- `chdb:///path/to/dir`: the embedded ClickHouse engine (chDB), file-backed, in this process;
  columnar inserts through an Arrow table. A chDB directory is opened by one process at a time.

Rows reach a backend as tuples of plain Python values in its columns' order (times as epoch
seconds); each backend turns them into what its client wants.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from pipeline.settings import SettingError


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # ClickHouse type, exactly as in the DDL

    @property
    def is_time(self) -> bool:
        return "DateTime64" in self.type


@dataclass(slots=True)
class QueryResult:
    names: list[str]
    types: list[str]
    rows: list[list[Any]]


class StoreUnavailable(Exception):  # noqa: N818 - reads as a condition: "store unavailable"
    """The store cannot be reached right now (retry later), as opposed to a rejected row."""


class Backend(Protocol):
    url: str

    def execute(self, sql: str) -> None: ...
    def insert(self, table: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> None: ...
    def select(self, sql: str, readonly: bool = True) -> QueryResult: ...
    def close(self) -> None: ...


def chdb_dir(url: str) -> Path | None:
    """The absolute directory of a chdb:// URL (None for a server URL): the store's identity,
    whatever the spelling (relative, `..`, symlinks)."""
    parts = urlsplit(url)
    if parts.scheme != "chdb":
        return None
    path = (parts.netloc + parts.path) if parts.netloc else parts.path
    if not path:
        raise SettingError(f"store URL {url!r} needs a directory: chdb:///path/to/dir")
    return Path(path).resolve()


def open_backend(url: str) -> Backend:
    """A backend for a store URL; a malformed URL is a SettingError naming the expected forms."""
    parts = urlsplit(url)
    path = chdb_dir(url)
    if path is not None:
        return ChdbBackend(url, path)
    if parts.scheme in {"clickhouse", "clickhouses"}:
        if not parts.hostname:
            raise SettingError(f"store URL {redact(url)!r} needs a host: clickhouse://user:pass@host:9000/db")
        return DriverBackend(url)
    raise SettingError(
        f"store URL {redact(url)!r} must be chdb:///path, clickhouse://user:pass@host:9000/db or clickhouses://..."
    )


def columns_of(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows turned into columns (ClickHouse clients insert columns)."""
    return [list(values) for values in zip(*rows, strict=True)]


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


class ChdbBackend:
    """The embedded engine; one lock serializes the writer's inserts and analysts' queries."""

    def __init__(self, url: str, path: Path) -> None:
        # pyarrow imports pandas on its first conversion (about a second): here, not mid-stream.
        import pandas  # noqa: F401, PLC0415
        from chdb import session  # noqa: PLC0415 - chDB is large; load it only when used

        self.url = url
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._session = session.Session(str(path))
        except Exception as exc:
            raise StoreUnavailable(f"cannot open chDB directory {path}: {exc}") from exc

    def execute(self, sql: str) -> None:
        with self._lock:
            self._session.query(sql)

    def insert(self, table: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> None:
        import pyarrow as pa  # noqa: PLC0415 - comes with chDB
        import pyarrow.compute as pc  # noqa: PLC0415

        arrays = {}
        for column, values in zip(columns, columns_of(rows), strict=True):
            # Typed like the column, so a value that does not fit fails here instead of
            # being converted silently by INSERT ... SELECT.
            if column.is_time:  # epoch seconds to milliseconds, rounded half to even as round() does
                millis = pc.round(pc.multiply(pa.array(values, type=pa.float64()), 1000.0))
                arrays[column.name] = millis.cast(pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
            else:
                arrays[column.name] = pa.array(values, type=_arrow_type(column.type))
        batch = pa.table(arrays)  # noqa: F841 - read by name by chDB's Python() table function
        names = ", ".join(c.name for c in columns)
        with self._lock:
            self._session.query(f"INSERT INTO {table} ({names}) SELECT {names} FROM Python(batch)")

    def select(self, sql: str, readonly: bool = True) -> QueryResult:
        statement = single_statement(sql)
        if readonly:
            statement += "\nSETTINGS readonly = 1"
        with self._lock:
            raw = self._session.query(statement, "JSONCompact").bytes()
        if not raw.strip():
            return QueryResult([], [], [])
        body = orjson.loads(raw)
        meta = body["meta"]
        return QueryResult([m["name"] for m in meta], [m["type"] for m in meta], body["data"])

    def close(self) -> None:
        with self._lock:
            self._session.close()


class DriverBackend:
    """A ClickHouse server through clickhouse-driver (native protocol, TLS for clickhouses://)."""

    def __init__(self, url: str) -> None:
        from clickhouse_driver import Client  # noqa: PLC0415

        self.url = url
        self._client = Client.from_url(
            url.replace("clickhouses://", "clickhouse://", 1) + _secure_suffix(url)
        )

    def execute(self, sql: str) -> None:
        self._call(sql)

    def insert(self, table: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> None:
        converted = [
            _driver_column(column, values) for column, values in zip(columns, columns_of(rows), strict=True)
        ]
        names = ", ".join(c.name for c in columns)
        self._call(f"INSERT INTO {table} ({names}) VALUES", converted, columnar=True, types_check=True)

    def select(self, sql: str, readonly: bool = True) -> QueryResult:
        settings = {"readonly": 1} if readonly else {}
        rows, types = self._call(single_statement(sql), with_column_types=True, settings=settings)
        return QueryResult([n for n, _ in types], [t for _, t in types], [list(r) for r in rows])

    def close(self) -> None:
        self._client.disconnect()

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        from clickhouse_driver import errors  # noqa: PLC0415

        try:
            return self._client.execute(*args, **kwargs)
        except (errors.NetworkError, errors.SocketTimeoutError, OSError, EOFError) as exc:
            raise StoreUnavailable(f"ClickHouse at {redact(self.url)} is unreachable: {exc}") from exc


_ARROW_SCALARS = {
    "String": "string", "Bool": "bool_", "Float32": "float32", "Float64": "float64",
    "UInt8": "uint8", "UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64",
    "Int8": "int8", "Int16": "int16", "Int32": "int32", "Int64": "int64",
}  # fmt: skip


def _arrow_type(clickhouse_type: str) -> Any:
    """The Arrow type of a (non-time) ClickHouse column type used by ccpipe's tables."""
    import pyarrow as pa  # noqa: PLC0415

    inner = clickhouse_type
    for wrapper in ("LowCardinality(", "Nullable("):
        if inner.startswith(wrapper):
            inner = inner[len(wrapper) : -1]
    if inner.startswith("Array("):
        return pa.list_(_arrow_type(inner[len("Array(") : -1]))
    return getattr(pa, _ARROW_SCALARS[inner])()


def _secure_suffix(url: str) -> str:
    if not url.startswith("clickhouses://"):
        return ""
    return ("&" if "?" in url else "?") + "secure=True"


def _driver_column(column: Column, values: Sequence[Any]) -> list[Any]:
    if column.is_time:
        return [None if v is None else datetime.fromtimestamp(v, UTC) for v in values]
    return list(values)


def single_statement(sql: str) -> str:
    """The SQL without a trailing semicolon; refuses several statements (a read-only query
    must be exactly one statement, or what follows the first would not be read-only)."""
    statement = sql.strip().rstrip(";").strip()
    quote = None
    escaped = False
    for char in statement:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quote:
            if char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
        elif char == ";":
            raise ValueError("one SQL statement at a time, please (found ';' between statements)")
    if not statement:
        raise ValueError("no SQL statement given")
    return statement
