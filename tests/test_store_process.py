"""The store process a worker writes through (pipeline/store/process.py): the store's answers
and errors as the store gave them, a store process that dies replaced at the next call, and
none outliving the process that started it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support import alive, gone_within, outlived

from pipeline.store.backends import Column, StoreUnavailable
from pipeline.store.process import ProcessBackend, StoreRefused

NUMBER = [Column("n", "Int64")]


def test_calls_answer_as_the_store_does_and_a_dead_store_process_is_replaced(tmp_path: Path) -> None:
    store = ProcessBackend(f"chdb://{tmp_path}/chdb", log=tmp_path / "store.log")
    try:
        store.execute("CREATE TABLE t (n Int64) ENGINE = MergeTree ORDER BY n")
        store.insert("t", NUMBER, [(1,), (2,), (3,)])
        assert store.select("SELECT sum(n) AS s FROM t").rows == [[6]]
        with pytest.raises(StoreRefused, match="convert"):
            store.insert("t", NUMBER, [("three",)])  # refused for what it holds: the writer isolates it
        with pytest.raises(StoreRefused, match="Syntax error"):
            store.select("SELEC 1")

        first = store._process.pid
        os.kill(first, signal.SIGKILL)
        gone_within(first, 20.0)
        with pytest.raises(StoreUnavailable, match="stopped"):
            store.insert("t", NUMBER, [(4,)])  # the writer retries this one
        store.insert("t", NUMBER, [(4,)])
        assert store._process.pid != first
        assert store.select("SELECT sum(n) AS s FROM t").rows == [[10]]  # the directory, reopened
    finally:
        store.close()
    assert not alive(first)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_store_process_stops_with_the_process_that_started_it(
    tmp_path: Path, how: signal.Signals
) -> None:
    script = (
        "import sys, time\n"
        "from pipeline.store.process import ProcessBackend\n"
        f"store = ProcessBackend('chdb://{tmp_path}/chdb')\n"
        "print(store._process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    survivor = outlived(script, how)
    assert survivor is None, f"store process {survivor} outlived its parent ({how.name})"
