"""Helpers for tests on real processes: a worker subprocess, scraping, expected gauges."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from pipeline.broker import EmbeddedBroker
from pipeline.engine import Batch, Engine
from pipeline.events import Event, decode_event
from pipeline.exporter import QUANTILE_GAUGES, ROLLING_GAUGES
from pipeline.ports import LOOPBACK, free_port, wait_for_port
from pipeline.processes import spawn_cli, stop_process
from pipeline.settings import EngineSettings, StaffingSettings, WorkerSettings
from pipeline.simulate import SimulationSettings, Simulator

Sample = tuple[str, tuple[tuple[str, str], ...]]


_HANDED_OUT: set[int] = set()


def unique_port() -> int:
    """A free port not handed out before in this test session (the OS may offer one twice)."""
    while (port := free_port()) in _HANDED_OUT:
        pass
    _HANDED_OUT.add(port)
    return port


class WorkerProcess:
    """`ccpipe worker` in its own process, configured only through the environment."""

    def __init__(self, bootstrap: str, workdir: Path, **env: str) -> None:
        self.port = unique_port()
        self.query_port = unique_port()
        self.log = workdir / f"worker-{self.port}.log"
        self.env = dict(os.environ)
        self.env.update({
            "CCPIPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CCPIPE_METRICS_PORT": str(self.port),
            "CCPIPE_QUERY_PORT": str(self.query_port),
            "CCPIPE_STORE_FLUSH_SECONDS": "0.2",
            "CCPIPE_DATA_DIR": str(workdir),
            "CCPIPE_PARTITIONS": "4",
            "CCPIPE_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
            "CCPIPE_CHECKPOINT_INTERVAL_SECONDS": "1",
            "CCPIPE_LOG_LEVEL": "INFO",
        })  # fmt: skip
        self.env.update(env)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/metrics"

    def start(self) -> WorkerProcess:
        """Start it and wait until it serves /metrics; a worker that exits instead fails here, with
        its log, rather than as a check that times out."""
        self.process = spawn_cli(["worker"], self.env, self.log)
        wait_for_port(LOOPBACK, self.port, timeout=60)
        deadline = time.monotonic() + 60
        while self.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.scrape()
                return self
            time.sleep(0.2)
        raise AssertionError(
            f"the worker did not serve /metrics: {self.log.read_text(errors='replace')[-2000:]}"
        )

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)

    def scrape(self) -> dict[Sample, float]:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            return parse(response.read().decode())


def parse(text: str) -> dict[Sample, float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def expected_rolling(
    lines: Iterable[bytes], settings: EngineSettings | None = None
) -> tuple[dict[Sample, float], Engine]:
    """The rolling gauges `ccpipe compute`'s engine gives at its newest event time."""
    engine = Engine(settings)
    engine.process([decode_event(line) for line in lines])
    assert engine.newest is not None
    return _gauges_of(engine.rolling(engine.newest)), engine


def _gauges_of(rolling: dict[str, dict[tuple[str, str], dict[str, Any]]]) -> dict[Sample, float]:
    """The rolling gauges of rolling views, as the exporter names them."""
    expected: dict[Sample, float] = {}
    for window, by_key in rolling.items():
        for (channel, queue), fields in by_key.items():
            labels = {"channel": channel, "queue": queue, "window": window}
            for name, _, pairs in QUANTILE_GAUGES:
                for quantile, field in pairs:
                    if fields[field] is not None:
                        key = tuple(sorted((labels | {"quantile": quantile}).items()))
                        expected[(name, key)] = fields[field]
            for name, _, field in ROLLING_GAUGES:
                if fields[field] is not None:
                    expected[(name, tuple(sorted(labels.items())))] = fields[field]
    return expected


def rolling_part(samples: dict[Sample, float]) -> dict[Sample, float]:
    names = {name for name, _, _ in QUANTILE_GAUGES} | {name for name, _, _ in ROLLING_GAUGES}
    return {key: value for key, value in samples.items() if key[0] in names}


def differences(got: dict[Sample, float], want: dict[Sample, float]) -> list[str]:
    """What differs, with quantiles allowed the contract's 1% (sketch vs exact)."""
    problems = [f"missing {key}" for key in want.keys() - got.keys()]
    problems += [f"unexpected {key}" for key in got.keys() - want.keys()]
    for key in want.keys() & got.keys():
        quantile = dict(key[1]).get("quantile") is not None
        tolerance = 0.0101 if quantile else 1e-9
        if abs(got[key] - want[key]) > tolerance * max(1.0, abs(want[key])):
            problems.append(f"{key}: got {got[key]}, want {want[key]}")
    return problems


def wait_until(check: Callable[[], list[str]], timeout: float, what: str) -> None:
    """Poll `check` (a list of problems) until it is empty; fail with the last problems."""
    deadline = time.monotonic() + timeout
    problems = ["not checked yet"]
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            problems = check()
            if not problems:
                return
        time.sleep(0.5)
    raise AssertionError(f"{what} after {timeout:.0f} s: {problems[:10]} ({len(problems)} problems)")


def lines_of(events: Iterable[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(event) for event in events]


def valid_events(lines: Iterable[bytes]) -> list[Event]:
    return [e for e in map(decode_event, lines) if isinstance(e, Event)]


T0 = 1_772_442_000.0  # 09:00 UTC, a busy hour of the simulated day


def scenario(
    seconds: float, spike: str | None = None, seed: int = 11, *, agents: bool = False
) -> list[bytes]:
    """Simulated events over `seconds` of event time, cut so the newest lies early in a minute;
    the agents' events only with `agents` (in a worker, an agent's open windows run to its own
    partition's newest event, contract §7.2: tests of agents compare with partitioned engines)."""
    settings = SimulationSettings(
        seed=seed, start=T0, conversations=60_000, jitter_seconds=2.0, duplicate_rate=0.01,
        spike_channel=spike, spike_start=T0 + seconds / 3, spike_seconds=seconds,
    )  # fmt: skip
    cut = T0 + seconds - seconds % 60 + 5
    events = itertools.takewhile(lambda e: e["timestamp"] < cut + 10, Simulator(settings).events())
    return [
        orjson.dumps(e) for e in events if e["timestamp"] < cut and (agents or e["type"] != "agent_state")
    ]


def committed(settings: WorkerSettings) -> int:
    """Input records the worker group has committed (sum of committed offsets over partitions)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        asked = [TopicPartition(settings.input_topic, p) for p in range(settings.partitions)]
        offsets = admin.list_group_offsets({settings.group_id: asked})[settings.group_id]
    finally:
        admin.close()
    return sum(max(0, meta.offset) for meta in offsets.values())


def settings_for(broker: EmbeddedBroker, topics: dict[str, str]) -> WorkerSettings:
    env = {"CCPIPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "CCPIPE_PARTITIONS": "4", **topics}
    return WorkerSettings.from_env(env)


def gauges_match(worker: WorkerProcess, lines: list[bytes], settings: EngineSettings | None = None) -> Any:
    want, engine = expected_rolling(lines, settings)
    waiting = {key: count for key, (count, _) in engine.waiting(time.time()).items()}

    def check() -> list[str]:
        got = worker.scrape()
        problems = differences(rolling_part(got), want)
        for (channel, queue), count in waiting.items():
            labels = (("channel", channel), ("queue", queue))
            seen = got.get(("ccpipe_conversations_waiting", labels))
            if seen != count:
                problems.append(f"waiting {channel}/{queue}: {seen} != {count}")
        return problems

    return check


def sql_problems(worker: WorkerProcess, query: str, expected: str) -> list[str]:
    """Run `ccpipe sql` as an analyst would, against this worker's store."""
    env = {**worker.env}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "sql", "--store", f"chdb://{worker.env['CCPIPE_DATA_DIR']}/chdb",
         "--format", "csv", query], env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return [result.stderr.decode()]
    lines = result.stdout.decode().splitlines()
    return [] if lines[1:] == [expected] else [f"got {lines}, want {expected}"]


def fresh_topics() -> dict[str, str]:
    """Topic and group names of their own, for a test sharing the broker with others."""
    tag = uuid.uuid4().hex[:8]
    return {
        "CCPIPE_INPUT_TOPIC": f"interactions-{tag}",
        "CCPIPE_DLQ_TOPIC": f"interactions-{tag}.dlq",
        "CCPIPE_CHECKPOINT_TOPIC": f"checkpoints-{tag}",
        "CCPIPE_PARTIALS_TOPIC": f"partials-{tag}",
        "CCPIPE_GROUP_ID": f"ccpipe-{tag}",
    }


def _routed(lines: list[bytes], partitions: int) -> list[list[Event]]:
    """Each valid event at its home partition, as the workers place them."""
    from pipeline.stream.routing import home_partition

    per: list[list[Event]] = [[] for _ in range(partitions)]
    for event in valid_events(lines):
        per[home_partition(event.routing_key, partitions)].append(event)
    return per


def partitioned(lines: list[bytes], partitions: int) -> list[Engine]:
    """One engine per input partition, as the workers run them (an agent's latest state runs to
    its own partition's newest event time, contract §7.2)."""
    engines = []
    for events in _routed(lines, partitions):
        engine = Engine()
        engine.process(events)
        engines.append(engine)
    return engines


def partitioned_runs(lines: list[bytes], partitions: int) -> list[Batch]:
    """One engine per input partition, flushed at the end: every final row of each."""
    runs = []
    for events in _routed(lines, partitions):
        engine, batch = Engine(), Batch()
        for part in (engine.process(events), engine.flush()):
            batch.windows += [row for row in part.windows if row.final]
            batch.agent_windows += [row for row in part.agent_windows if row.final]
        runs.append(batch)
    return runs


def expected_merged(engines: list[Engine], staffing: StaffingSettings | None = None) -> dict[Sample, float]:
    """The rolling and §7.4 gauges of partition engines merged at their newest event time."""
    from pipeline.engine.agents import AgentSummary, agent_rolling
    from pipeline.engine.windows import rolling_views
    from pipeline.settings import ROLLING_SPANS
    from pipeline.staffing import offered_load, required_agents

    targets = staffing or StaffingSettings()
    now = max(engine.newest for engine in engines if engine.newest is not None)
    width = engines[0].settings.window_seconds
    rolling = rolling_views((w for e in engines for w in e.windows.all_windows()), now, width)
    want = _gauges_of(rolling)
    summary = AgentSummary()
    for engine in engines:
        summary.add(engine.agent_summary())
    for queue, by_state in summary.states.items():
        for state in ("available", "on_contact", "after_contact_work", "away"):
            want[("ccpipe_agents", (("queue", queue), ("state", state)))] = by_state.get(state, 0)
    agents = agent_rolling((w for e in engines for w in e.agents.all_windows()), now, width, ROLLING_SPANS)
    for window, by_queue in agents.items():
        for queue, merged in by_queue.items():
            ratio = merged.result()["occupancy_ratio"]
            if ratio is not None:
                want[("ccpipe_agent_occupancy_ratio", (("queue", queue), ("window", window)))] = ratio
    for (channel, queue), fields in rolling["15m"].items():
        labels = (("channel", channel), ("queue", queue))
        want[("ccpipe_agents_staffed", labels)] = summary.staffed_for(channel, queue)
        aht = fields["handle_time_mean_seconds"]
        if aht is not None:
            load = offered_load(fields["conversations_started"], ROLLING_SPANS["15m"], aht)
            want[("ccpipe_offered_load_erlangs", labels)] = load
            want[("ccpipe_agents_required", labels)] = required_agents(
                load, aht, engines[0].settings.sla_target(channel), service_level=targets.staffing_service_level,
                max_occupancy=targets.staffing_max_occupancy, shrinkage=targets.staffing_shrinkage,
            )[0]  # fmt: skip
    return want


AGENT_GAUGES = ("ccpipe_agents", "ccpipe_agent_occupancy_ratio", "ccpipe_agents_staffed",
                "ccpipe_offered_load_erlangs", "ccpipe_agents_required")  # fmt: skip
