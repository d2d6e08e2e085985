"""A store backend in a process of its own, so that a worker's event loop keeps its interpreter.

Turning rows into a client's columns (Arrow arrays for chDB) takes the GIL again and again. On
a thread of a worker whose event loop is busy, that thread waited for the GIL at every turn: a
conversion of 20 ms took seconds, rows were stored late, and the writer's bound paused
consumption. A worker's writer hands its calls to `ProcessBackend` instead: each call (the
`Backend` protocol's, and the writer's `write`) goes as one pickle through a socket to
`python -m pipeline.store.process`, which opens the real backend and does the work with an
interpreter and a core of its own; the writer's thread only waits on the socket, without the
GIL. `write` takes rows as the writer buffered them: interactions as their sources (raw JSON,
partition, offset, score), a quarter of the pickle, decoded again into rows in the child.

The store's errors come back as they were raised there: `StoreUnavailable` stays
`StoreUnavailable` (the writer retries), anything else is `StoreRefused` with the store's message
(the writer isolates the rows). A store process that dies is `StoreUnavailable` to the call in
flight and is started again by the next. It stops with the worker: at the end of its socket (the
worker exited, however it ended) and by its parent-death signal.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pipeline.processes import spawn, stop_process
from pipeline.store.backends import Backend, Column, QueryResult, StoreUnavailable, open_backend, redact
from pipeline.store.rows import Row
from pipeline.store.rowstore import RowStore, row_store

START_TIMEOUT = 120.0  # opening a chDB directory replays its parts: seconds for a large store


class StoreRefused(Exception):  # noqa: N818 - reads as a condition, like StoreUnavailable
    """The store refused a call for what it holds (ClickHouse's message, from the store process)."""


class ProcessBackend:
    """The `Backend` of `url`, run by a child process; one call at a time."""

    def __init__(self, url: str, log: Path | None = None) -> None:
        self.url = url
        self._log = log
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._process: Any = None
        with self._lock:
            self._start()

    def execute(self, sql: str) -> None:
        self._call("execute", sql)

    def insert(self, table: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> None:
        self._call("insert", table, columns, rows)

    def write(self, table: str, rows: Sequence[Row]) -> None:
        """The writer's rows as it buffered them (`RowStore`): the child builds them."""
        self._call("write", table, rows)

    def select(self, sql: str, readonly: bool = True) -> QueryResult:
        result: QueryResult = self._call("select", sql, readonly)
        return result

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                try:
                    self._connection.send(("close",))
                    self._connection.poll(30.0)
                except OSError:
                    pass
                self._connection.close()
                self._connection = None
            if self._process is not None:
                stop_process(self._process, timeout=30.0)
                self._process = None

    # --- the child ---------------------------------------------------------------------------

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "pipeline.store.process", str(theirs.fileno())]
        self._process = spawn(command, self._log, env=os.environ, pass_fds=(theirs.fileno(),))
        theirs.close()
        self._connection = Connection(ours.detach())
        # The URL goes through the socket, not the command line, which anyone may read.
        self._exchange(("open", self.url), START_TIMEOUT)

    def _call(self, *request: Any) -> Any:
        with self._lock:
            if self._connection is None:
                self._start()
            return self._exchange(request, None)

    def _exchange(self, request: tuple[Any, ...], timeout: float | None) -> Any:
        assert self._connection is not None
        try:
            self._connection.send(request)
            if timeout is not None and not self._connection.poll(timeout):
                raise TimeoutError(f"no answer in {timeout:.0f} s")
            outcome, value = self._connection.recv()
        except (OSError, EOFError, TimeoutError) as exc:
            self._lost()
            raise StoreUnavailable(f"the store process for {redact(self.url)} stopped: {exc!r}") from exc
        if outcome == "ok":
            return value
        if outcome == "unavailable":
            raise StoreUnavailable(value)
        raise StoreRefused(value)

    def _lost(self) -> None:
        """The child is gone or stuck: let the next call start another."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._process is not None:
            stop_process(self._process, timeout=5.0)
            self._process = None


def serve(connection: Connection) -> None:
    """Answer calls until the worker closes the store or goes away."""
    backend: Backend | None = None
    store: RowStore | None = None
    try:
        while True:
            try:
                request = connection.recv()
            except (EOFError, OSError):
                return  # the worker is gone
            if request[0] == "close":
                if backend is not None:
                    backend.close()
                    backend = None
                connection.send(("ok", None))
                return
            try:
                if request[0] == "open":
                    backend = open_backend(request[1])
                    store = row_store(backend)
                    reply: tuple[str, Any] = ("ok", None)
                else:
                    assert backend is not None and store is not None, "open first"
                    target = store if request[0] == "write" else backend
                    reply = ("ok", getattr(target, request[0])(*request[1:]))
            except StoreUnavailable as exc:
                reply = ("unavailable", str(exc))
            except Exception as exc:  # refused for what the call holds: the writer isolates it
                reply = ("refused", f"{type(exc).__name__}: {exc}")
            connection.send(reply)
    finally:
        if backend is not None:
            backend.close()
        connection.close()


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
