"""`ccpipe run`: the whole pipeline on embedded defaults, for a person at a terminal.

Starts the embedded broker (unless told to use another), creates the topics, starts one
worker process and the traffic simulator, prints what runs where and how to look, shows a
status line every few seconds, and stops everything it started, by PID, on Ctrl-C or after
`--duration`.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipeline.broker import EmbeddedBroker, start_broker, wait_for_port
from pipeline.monitoring import LocalPrometheus, start_prometheus
from pipeline.processes import spawn_cli, stop_process
from pipeline.settings import WorkerSettings
from pipeline.store.backends import redact
from pipeline.stream.topics import ensure_topics

STATUS_EVERY = 5.0


@dataclass
class RunOptions:
    metrics_port: int
    duration: float | None
    rate: float
    bootstrap: str | None
    data_dir: Path
    spike: str | None
    partitions: int
    store: str
    with_prometheus: bool = False
    backfill: float = 0.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def _spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Child:
    log = log_dir / f"{name}.log"
    return Child(name, spawn_cli(args, env, log), log)


def scrape_totals(url: str) -> tuple[float, float | None]:
    """(events processed, processing lag) from a worker's /metrics, for the status line."""
    with urllib.request.urlopen(url, timeout=2) as response:  # our own loopback endpoint
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
    options.data_dir.mkdir(parents=True, exist_ok=True)
    broker: EmbeddedBroker | None = None
    prometheus: LocalPrometheus | None = None
    children: list[Child] = []
    try:
        if options.bootstrap is None:
            broker = start_broker(log_path=options.data_dir / "broker.log")
        bootstrap = options.bootstrap or broker.bootstrap  # type: ignore[union-attr]
        env = dict(os.environ)
        env.update({
            "CCPIPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CCPIPE_METRICS_PORT": str(options.metrics_port),
            "CCPIPE_DATA_DIR": str(options.data_dir),
            "CCPIPE_PARTITIONS": str(options.partitions),
            "CCPIPE_STORE_URL": options.store,
            "CCPIPE_KAFKA_SESSION_TIMEOUT_SECONDS": env.get("CCPIPE_KAFKA_SESSION_TIMEOUT_SECONDS", "10"),
        })  # fmt: skip
        settings = WorkerSettings.from_env(env)
        ensure_topics(settings)
        children.append(_spawn("worker", ["worker"], env, options.data_dir))
        simulate = ["simulate", "--rate", f"{options.rate:g}", "--backfill", f"{options.backfill:g}"]
        if options.spike:  # a minute from now, after any backfilled past
            simulate += ["--spike", options.spike, "--spike-after", f"{options.backfill + 60:g}"]
        children.append(_spawn("simulator", simulate, env, options.data_dir))
        metrics = f"http://{settings.metrics_bind}:{options.metrics_port}/metrics"
        if options.with_prometheus:
            prometheus = start_prometheus([f"{settings.metrics_bind}:{options.metrics_port}"],
                                          options.data_dir / "prometheus")  # fmt: skip
        _banner(broker, bootstrap, children, metrics, options, prometheus=prometheus)
        wait_for_port(settings.metrics_bind, options.metrics_port, timeout=60)
        return _watch(children, metrics, options.duration)
    except KeyboardInterrupt:
        return 0
    finally:
        print("\nstopping ...", file=sys.stderr)
        if prometheus is not None:
            prometheus.stop()
        for child in reversed(children):
            stop_process(child.process)
        if broker is not None:
            broker.stop()
        stopped = [f"{c.name} (pid {c.process.pid})" for c in children]
        stopped += [f"broker (pid {broker.pid})"] if broker else []
        stopped += [f"prometheus (pid {prometheus.process.pid})"] if prometheus else []
        print("stopped: " + ", ".join(stopped), file=sys.stderr)


def _banner(
    broker: EmbeddedBroker | None,
    bootstrap: str,
    children: list[Child],
    metrics: str,
    options: RunOptions,
    *,
    prometheus: LocalPrometheus | None,
) -> None:
    lines = ["ccpipe run: the pipeline is starting", ""]
    if broker is not None:
        lines.append(f"  broker     Tansu (Kafka API) on {bootstrap}, pid {broker.pid}, memory storage")
    else:
        lines.append(f"  broker     {bootstrap}")
    for child in children:
        lines.append(f"  {child.name:<10} pid {child.process.pid}, log {child.log}")
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
        f"  curl -s {metrics} | grep -E '^ccpipe_(frt_seconds|conversations_waiting)'",
        f'  {_ccpipe()} sql "SELECT channel, count(), avg(frt_seconds) FROM conversations_latest '
        'GROUP BY channel"',
        f"  gauges appear within about 30 s; traffic about {options.rate:g} events/s"
        + (f"; agent replies on '{options.spike}' slow down after a minute" if options.spike else ""),
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


def _watch(children: list[Child], metrics: str, duration: float | None) -> int:
    began = time.monotonic()
    while duration is None or time.monotonic() - began < duration:
        for child in children:
            if child.process.poll() is not None:
                print(
                    f"{child.name} exited with {child.process.returncode}; see {child.log}", file=sys.stderr
                )
                return 1
        time.sleep(min(STATUS_EVERY, max(0.1, (duration or STATUS_EVERY) - (time.monotonic() - began))))
        with contextlib.suppress(OSError, ValueError):
            events, lag = scrape_totals(metrics)
            lag_text = f"{lag:.1f} s" if lag is not None else "-"
            print(
                f"[{time.monotonic() - began:5.0f} s] events processed: {events:,.0f}   lag: {lag_text}",
                flush=True,
            )
    return 0
