"""What a person meets around the pipeline, on real processes: `ccpipe run` stops everything it
started whatever signal ends it (SIGKILL included), busy ports are named or replaced, two runs
live side by side, `ccpipe sql` answers only from the store it names, and a worker always stops
within its bound, broker or no broker."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from streaming import WorkerProcess, fresh_topics, lines_of, settings_for, wait_until
from support import T0, agent_msg, alive, customer_msg

from pipeline.broker import EmbeddedBroker, start_broker
from pipeline.ports import LOOPBACK, free_port
from pipeline.processes import spawn, stop_process
from pipeline.produce import send_lines
from pipeline.stream.topics import ensure_topics

STOP_BOUND = 10.0  # the promise: nothing of a run alive 10 s after SIGTERM or SIGKILL


WALL_NUMBERS = ("frt_p90_seconds", "within_target_ratio", "service_level_ratio", "waiting", "oldest_waiting_seconds",
                "fcr_ratio", "sentiment_mean", "agents_staffed", "agents_required", "occupancy_ratio")  # fmt: skip


class Run:
    """`ccpipe run` as a person starts it, with its output in a file we can read while it runs."""

    def __init__(self, workdir: Path, *args: str, free_ports: bool = True) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.out = workdir / "run.out"
        env = dict(os.environ, CCPIPE_KAFKA_SESSION_TIMEOUT_SECONDS="6")
        self.process = spawn(
            [sys.executable, "-m", "pipeline.cli", "run", "--data-dir", str(workdir / "run"), "--rate", "30",
             "--backfill", "0", "--duration", "300", *(_free_ports() if free_ports else ()), *args], self.out, env,
        )  # fmt: skip

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.text()):
                return match
            assert self.process.poll() is None, f"ccpipe run exited early:\n{self.text()}"
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} in ccpipe run's output after {timeout:g} s:\n{self.text()}")

    def children(self) -> list[int]:
        """Every PID the banner names (broker, worker, simulator, wall)."""
        self.wait_for(r"Look at it:")
        return [int(pid) for pid in re.findall(r"pid (\d+)", self.text())]

    def metrics_url(self) -> str:
        return self.wait_for(r"metrics    (http://\S+)").group(1)

    def wall_url(self) -> str:
        return self.wait_for(r"wall display  (http://\S+)").group(1)

    def serving(self) -> None:
        """Until its worker has processed events (the status line shows them)."""
        self.wait_for(r"events processed: [1-9]", timeout=120)

    def stop(self) -> None:
        stop_process(self.process, timeout=20)


def _free_ports() -> list[str]:
    """Ports of the OS's choosing, so a test never depends on the defaults being free."""
    return [
        arg for flag in ("--metrics-port", "--query-port", "--wall-port") for arg in (flag, str(free_port()))
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL])
def test_run_leaves_nothing_behind_whatever_signal_ends_it(tmp_path: Path, signum: signal.Signals) -> None:
    run = Run(tmp_path)
    try:
        pids = run.children()
        assert len(pids) == 4, run.text()
        run.serving()
        os.kill(run.process.pid, signum)
        stopped_at = time.monotonic()
        deadline = stopped_at + STOP_BOUND
        while time.monotonic() < deadline and any(alive(pid) for pid in [*pids, run.process.pid]):
            time.sleep(0.1)
            run.process.poll()
        left = [pid for pid in pids if alive(pid)]
        assert not left, f"still alive {STOP_BOUND:g} s after {signum.name}: {left}\n{run.text()}"
        if signum != signal.SIGKILL:  # it says what it stopped, by PID
            stopped = run.wait_for(r"stopped: (.*)", timeout=1).group(1)
            assert all(f"pid {pid}" in stopped for pid in pids), stopped
    finally:
        run.stop()
        for pid in run.children():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def occupied(port: int) -> Iterator[None]:
    """Something else listening on `port` (if it is free; if not, it is busy anyway)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
        sock.listen()
    except OSError:
        pass
    try:
        yield
    finally:
        sock.close()


def test_two_runs_side_by_side_busy_ports_and_a_dying_child(tmp_path: Path) -> None:
    taken = free_port()
    with occupied(taken):
        # An explicitly asked port that is busy: one line naming it and its flag, nothing started.
        began = time.monotonic()
        refused = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "run", "--data-dir", str(tmp_path / "refused"),
             "--metrics-port", str(taken)], capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            f"ccpipe: port {taken} on 127.0.0.1 is in use: choose another with --metrics-port"
        ]
        assert time.monotonic() - began < 10 and not (tmp_path / "refused").exists()

    first = Run(tmp_path / "a", "--backfill", "900")  # as `make run`
    with occupied(9464), occupied(9465), occupied(9466):  # busy defaults are replaced, and said so
        second = Run(tmp_path / "b", free_ports=False)
        second.wait_for(r"port 9464 is busy; using \d+ \(--metrics-port picks another\)")
        second.wait_for(r"port 9466 is busy; using \d+ \(--wall-port picks another\)")
        second.children()
    try:
        first.serving()
        second.serving()
        for run in (first, second):
            with urllib.request.urlopen(run.metrics_url(), timeout=5) as response:
                assert b"ccpipe_events_total{" in response.read()

        # The backfilled quarter-hour of a day started mid-flow gives every tile of the wall a
        # number at once: no "-" waiting for a first resolution or a 15-minute row.
        def empty_tiles() -> list[str]:
            with urllib.request.urlopen(first.wall_url() + "wall.json", timeout=5) as response:
                model = json.load(response)
            empty = [f"{tile['channel']} {field}" for tile in model["channels"] for field in WALL_NUMBERS
                     if tile[field] is None]  # fmt: skip
            return empty + ([] if len(model["channels"]) == 6 and model["agents"] else ["channels or agents"])

        wait_until(empty_tiles, timeout=90, what="every wall tile with a number")

        # A child that dies is noticed at once, with the end of its log.
        simulator = int(first.wait_for(r"simulator  pid (\d+)").group(1))
        os.kill(simulator, signal.SIGKILL)
        first.process.wait(timeout=2 + STOP_BOUND)
        noticed = first.wait_for(r"simulator \(pid \d+\) exited with -9; last lines of \S+simulator.log", 1)
        assert noticed and first.process.returncode == 1
        assert second.process.poll() is None  # the other run goes on
    finally:
        first.stop()
        second.stop()


def _sql(store: str, query: str, query_port: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CCPIPE_QUERY_PORT=str(query_port))
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "sql", "--store", store, "--format", "csv", query],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _conversations(prefix: str, count: int) -> list[bytes]:
    now = time.time() - T0 - 60
    events = []
    for n in range(count):
        events += [customer_msg(f"{prefix}-{n}-q", f"{prefix}-{n}", now + n, customer=f"{prefix}{n}"),
                   agent_msg(f"{prefix}-{n}-a", f"{prefix}-{n}", now + n + 5, customer=f"{prefix}{n}")]  # fmt: skip
    return lines_of(events)


def test_sql_answers_only_from_the_store_it_names(broker: EmbeddedBroker, tmp_path: Path) -> None:
    workers = []
    try:
        for name, conversations in (("one", 5), ("two", 3)):
            topics = fresh_topics()
            ensure_topics(settings_for(broker, topics))
            send_lines(settings_for(broker, topics), _conversations(name, conversations))
            workdir = tmp_path / name
            workdir.mkdir()
            workers.append(WorkerProcess(broker.bootstrap, workdir, **topics).start())
        one, two = workers
        query = "SELECT count() FROM interactions"
        for worker, rows in ((one, 10), (two, 6)):
            wait_until(lambda w=worker, r=rows: [] if _sql(_store(w), query, w.query_port).stdout.split()[1:] == [str(r)]
                       else [_sql(_store(w), query, w.query_port).stdout], 60, "rows stored")  # fmt: skip

        # CCPIPE_QUERY_PORT names worker one, the store is worker two's: two's rows, found
        # through the endpoint file in its store, never one's.
        answer = _sql(_store(two), query, one.query_port)
        assert answer.returncode == 0 and answer.stdout.split() == ["count()", "6"], answer

        # A store nobody serves: opened directly (a fresh, empty store), not any worker's rows.
        empty = tmp_path / "empty"
        subprocess.run([sys.executable, "-m", "pipeline.cli", "migrate", "--store", f"chdb://{empty}"],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        answer = _sql(f"chdb://{empty}", query, one.query_port)
        assert answer.returncode == 0 and answer.stdout.split() == ["count()", "0"], answer

        # A directory that does not exist: a clear error and no rows; nothing is created.
        missing = tmp_path / "no" / "such" / "store"
        answer = _sql(f"chdb://{missing}", query, one.query_port)
        assert answer.returncode == 1 and answer.stdout == ""
        assert f"there is no chDB store at {missing} (the directory does not exist)" in answer.stderr
        assert not missing.exists()
    finally:
        for worker in workers:
            worker.stop()


def _store(worker: WorkerProcess) -> str:
    return f"chdb://{worker.env['CCPIPE_DATA_DIR']}/chdb"


def test_worker_with_a_busy_port_names_the_setting(tmp_path: Path) -> None:
    taken = free_port()
    with occupied(taken):
        env = dict(os.environ, CCPIPE_METRICS_PORT=str(taken), CCPIPE_DATA_DIR=str(tmp_path),
                   CCPIPE_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "pipeline.cli", "worker"], env=env,
                                capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ccpipe: port {taken} on 127.0.0.1 is in use: choose another with CCPIPE_METRICS_PORT"
    ]


@pytest.mark.parametrize("broker_state", ["running", "gone"])
def test_worker_stops_within_its_bound_on_sigterm(tmp_path: Path, broker_state: str) -> None:
    own = start_broker(log_path=tmp_path / "broker.log")
    topics = fresh_topics()
    bound = 4.0
    worker = WorkerProcess(own.bootstrap, tmp_path, CCPIPE_SHUTDOWN_TIMEOUT_SECONDS=f"{bound:g}", **topics)
    try:
        ensure_topics(settings_for(own, topics))
        send_lines(settings_for(own, topics), _conversations("s", 3))
        worker.start()
        wait_until(lambda: [] if worker.scrape().get(("ccpipe_assigned_partitions", ())) else ["none"],
                   60, "partitions assigned")  # fmt: skip
        if broker_state == "gone":
            own.process.kill()
            own.process.wait(5)
        assert worker.process is not None
        began = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        worker.process.wait(timeout=bound + 4)  # the bound, plus interpreter exit
        took = time.monotonic() - began
        log = worker.log.read_text(errors="replace")
        if broker_state == "running":
            assert worker.process.returncode == 0 and took < bound, (took, log[-2000:])
        else:
            assert took < bound + 3, took
    finally:
        worker.stop()
        own.stop()
