"""`ccpipe run`: the whole pipeline on embedded defaults, for a person at a terminal.

Checks every port it needs, starts the embedded broker (unless told to use another), creates
the topics, starts one worker, the traffic simulator and the wall display, prints what runs
where and how to look, shows a status line every few seconds, and stops everything it started,
by PID, in order and within STOP_BOUND seconds, on SIGINT (Ctrl-C), SIGTERM or SIGHUP or after
`--duration`. Should `ccpipe run` itself be killed, its children stop by themselves (a
parent-death signal, pipeline/processes.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from pipeline.broker import EmbeddedBroker, start_broker
from pipeline.monitoring import LocalPrometheus, start_prometheus
from pipeline.ports import LOOPBACK, PortInUseError, free_port, is_free, wait_for_port
from pipeline.processes import log_tail, spawn_cli, stop_process
from pipeline.settings import RUN_STORE, WorkerSettings
from pipeline.store.backends import redact
from pipeline.stream.topics import ensure_topics

STATUS_EVERY = 5.0
WATCH_EVERY = 0.25  # how often children are checked: one that exits is noticed at once
STOP_BOUND = 10.0  # everything `ccpipe run` started is gone this long after it is told to stop
WORKER_SHUTDOWN = 5.0  # the worker's own graceful-stop bound inside STOP_BOUND
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class PortChoice:
    """A port `ccpipe run` needs: asked for with `flag`, or the default."""

    flag: str
    default: int
    asked: int | None


@dataclass
class RunOptions:
    metrics_port: int | None
    duration: float | None
    rate: float
    bootstrap: str | None
    data_dir: Path
    spike: str | None
    partitions: int
    store: str
    with_prometheus: bool = False
    backfill: float = 0.0
    query_port: int | None = None
    wall_port: int | None = None
    calendars: str | None = None
    short_abandon_seconds: float | None = None


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Children:
    """What `ccpipe run` started, stopped in reverse order of starting."""

    running: list[Child] = field(default_factory=list)
    broker: EmbeddedBroker | None = None
    prometheus: LocalPrometheus | None = None

    def spawn(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Child:
        log = log_dir / f"{name}.log"
        child = Child(name, spawn_cli(args, env, log), log)
        self.running.append(child)
        return child

    def all(self) -> Iterator[Child]:
        if self.broker is not None:
            yield Child("broker", self.broker.process, self.broker.log_path or Path(os.devnull))
        yield from self.running
        if self.prometheus is not None:
            yield Child("prometheus", self.prometheus.process, Path(os.devnull))

    def exited(self) -> Child | None:
        return next((child for child in self.all() if child.process.poll() is not None), None)

    def stop(self) -> list[str]:
        """Simulator, wall and Prometheus first (together), then the worker, then the broker."""
        stopped = []
        order = list(reversed(list(self.all())))
        worker = [c for c in order if c.name == "worker"]
        broker = [c for c in order if c.name == "broker"]
        first = [c for c in order if c not in worker + broker]
        for group, bound in ((first, 2.0), (worker, WORKER_SHUTDOWN + 1.5), (broker, 1.0)):
            for child in group:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + bound  # for the group together: they stop side by side
            for child in group:
                stop_process(child.process, timeout=max(0.01, deadline - time.monotonic()))
                stopped.append(f"{child.name} (pid {child.process.pid})")
        return stopped


class Stop(Exception):  # noqa: N818 - a request, not an error
    """A stop signal arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _on_signal(signum: int, _: FrameType | None) -> None:
    raise Stop(signum)


def choose_ports(choices: list[PortChoice], host: str = LOOPBACK) -> tuple[list[int], list[str]]:
    """A free port for each choice: the asked one (busy: PortInUseError naming its flag), else
    the default, else one the OS picks (with a line saying so)."""
    ports: list[int] = []
    notes = []
    for choice in choices:
        if choice.asked is not None:
            if not is_free(host, choice.asked) or choice.asked in ports:
                raise PortInUseError(host, choice.asked, choice.flag)
            ports.append(choice.asked)
        elif is_free(host, choice.default) and choice.default not in ports:
            ports.append(choice.default)
        else:
            port = free_port(host)
            notes.append(f"port {choice.default} is busy; using {port} ({choice.flag} picks another)")
            ports.append(port)
    return ports, notes


def scrape_totals(url: str) -> tuple[float, float | None]:
    """(events processed, processing lag) from a worker's /metrics, for the status line."""
    only = "?name[]=ccpipe_events_total&name[]=ccpipe_processing_lag_seconds"  # skips the rolling views
    with urllib.request.urlopen(url + only, timeout=2) as response:  # our own loopback endpoint
        text = response.read().decode()
    events, lag = 0.0, None
    for line in text.splitlines():
        if line.startswith("ccpipe_events_total{"):
            events += float(line.rsplit(" ", 1)[1])
        elif line.startswith("ccpipe_processing_lag_seconds "):
            value = float(line.rsplit(" ", 1)[1])
            lag = None if math.isnan(value) else value
    return events, lag


def run(options: RunOptions) -> int:
    bind = WorkerSettings.from_env(os.environ).metrics_bind  # where the worker will listen
    ports, notes = choose_ports([
        PortChoice("--metrics-port", 9464, options.metrics_port),
        PortChoice("--query-port", 9465, options.query_port),
        PortChoice("--wall-port", 9466, options.wall_port),
    ], bind)  # fmt: skip
    for note in notes:
        print(f"ccpipe run: {note}", file=sys.stderr)
    previous = {signum: signal.signal(signum, _on_signal) for signum in STOP_SIGNALS}
    children = Children()
    try:
        return _run(options, children, *ports)
    except Stop as stop:
        print(f"\n{stop} received", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for signum in STOP_SIGNALS:  # the clean-up below is bounded; let nothing cut it short
            signal.signal(signum, signal.SIG_IGN)
        print(f"stopping (at most {STOP_BOUND:g} s) ...", file=sys.stderr, flush=True)
        stopped = children.stop()
        print("stopped: " + (", ".join(stopped) or "nothing was running"), file=sys.stderr, flush=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(options: RunOptions, children: Children, metrics_port: int, query_port: int, wall_port: int) -> int:
    began = time.monotonic()
    options.data_dir.mkdir(parents=True, exist_ok=True)
    if options.bootstrap is None:
        children.broker = start_broker(log_path=options.data_dir / "broker.log")
    bootstrap = options.bootstrap or children.broker.bootstrap  # type: ignore[union-attr]
    env = dict(os.environ)
    env.update({
        "CCPIPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CCPIPE_METRICS_PORT": str(metrics_port),
        "CCPIPE_QUERY_PORT": str(query_port),
        "CCPIPE_DATA_DIR": str(options.data_dir),
        "CCPIPE_PARTITIONS": str(options.partitions),
        "CCPIPE_STORE_URL": options.store,
        "CCPIPE_SHUTDOWN_TIMEOUT_SECONDS": f"{WORKER_SHUTDOWN:g}",
        "CCPIPE_KAFKA_SESSION_TIMEOUT_SECONDS": env.get("CCPIPE_KAFKA_SESSION_TIMEOUT_SECONDS", "10"),
    })  # fmt: skip
    if options.calendars is not None:  # the worker and the simulator follow the same hours
        env["CCPIPE_CALENDARS_FILE"] = str(Path(options.calendars).resolve())
    if options.short_abandon_seconds is not None:
        env["CCPIPE_SHORT_ABANDON_SECONDS"] = f"{options.short_abandon_seconds:g}"
    settings = WorkerSettings.from_env(env)  # a bad calendars file stops the run here, before any child
    ensure_topics(settings)
    children.spawn("worker", ["worker"], env, options.data_dir)
    simulate = ["simulate", "--rate", f"{options.rate:g}", "--backfill", f"{options.backfill:g}"]
    if options.spike:  # a minute from now, after any backfilled past
        simulate += ["--spike", options.spike, "--spike-after", f"{options.backfill + 60:g}"]
    children.spawn("simulator", simulate, env, options.data_dir)
    metrics = f"http://{settings.metrics_bind}:{metrics_port}/metrics"
    wall = f"http://{LOOPBACK}:{wall_port}/"
    children.spawn("wall", ["wall", "--port", str(wall_port), "--metrics", metrics], env, options.data_dir)
    if options.with_prometheus:
        children.prometheus = start_prometheus(
            [f"{settings.metrics_bind}:{metrics_port}"], options.data_dir / "prometheus"
        )
    _banner(children, bootstrap, metrics, wall, options)
    _wait_until_listening(children, settings.metrics_bind, metrics_port, timeout=90)
    return _watch(children, metrics, options.duration, began)


def _fail(child: Child) -> int:
    tail = log_tail(child.log)
    print(
        f"ccpipe run: {child.name} (pid {child.process.pid}) exited with {child.process.returncode}; "
        f"last lines of {child.log}:\n{tail}",
        file=sys.stderr,
    )
    return 1


def _wait_until_listening(children: Children, host: str, port: int, timeout: float) -> None:
    """Until the worker listens for /metrics; a child that exits meanwhile ends the run at once."""

    def children_alive() -> None:
        if (child := children.exited()) is not None:
            raise SystemExit(_fail(child))

    try:
        wait_for_port(host, port, timeout, check=children_alive, every=WATCH_EVERY)
    except TimeoutError as late:
        raise SystemExit(f"ccpipe run: the worker did not start: {late}") from None


def _banner(children: Children, bootstrap: str, metrics: str, wall: str, options: RunOptions) -> None:
    lines = ["ccpipe run: the pipeline is starting", ""]
    broker, prometheus = children.broker, children.prometheus
    if broker is not None:
        lines.append(f"  broker     Tansu (Kafka API) on {bootstrap}, pid {broker.pid}, memory storage")
    else:
        lines.append(f"  broker     {bootstrap}")
    for child in children.running:
        lines.append(f"  {child.name:<10} pid {child.process.pid}, log {child.log}")
    store = "" if options.store == RUN_STORE else f"--store {options.store} "
    lines += [
        f"  metrics    {metrics}",
        f"  store      {redact(options.store)} (ClickHouse tables and views)",
        *(
            [f"  prometheus {prometheus.url} (pid {prometheus.process.pid}); alerts: {prometheus.url}/alerts"]
            if prometheus
            else []
        ),
        "",
        "Look at it:",
        f"  wall display  {wall}  (open it in a browser; F11 for full screen)",
        f"  curl -s {metrics} | grep -E '^ccpipe_(frt_seconds|conversations_waiting)'",
        f'  {_ccpipe()} sql {store}"SELECT channel, count(), avg(frt_seconds) FROM conversations_latest '
        'GROUP BY channel"',
        f"  numbers appear within about 30 s; traffic about {options.rate:g} events/s"
        + (f"; most '{options.spike}' agents leave for a meeting after a minute" if options.spike else ""),
        "Stop it with Ctrl-C"
        + (f" (or it stops by itself after {options.duration:g} s)" if options.duration else "")
        + ".",
        "",
    ]
    print("\n".join(lines), flush=True)


def _ccpipe() -> str:
    """How to call ccpipe from this directory (the venv's script when it is under it)."""
    script = Path(sys.executable).parent / "ccpipe"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _watch(children: Children, metrics: str, duration: float | None, began: float) -> int:
    next_status = began + STATUS_EVERY
    while duration is None or time.monotonic() - began < duration:
        if (child := children.exited()) is not None:
            return _fail(child)
        time.sleep(WATCH_EVERY)
        if time.monotonic() >= next_status:
            with contextlib.suppress(OSError, ValueError):
                events, lag = scrape_totals(metrics)
                lag_text = f"{lag:.1f} s" if lag is not None else "-"
                print(
                    f"[{time.monotonic() - began:5.0f} s] events processed: {events:,.0f}   lag: {lag_text}",
                    flush=True,
                )
            next_status = time.monotonic() + STATUS_EVERY
    return 0
