"""`ccpipe worker` processes on a real (embedded) broker: throughput and latency.

Throughput: the events are pre-loaded into a fresh topic, then N workers start in one consumer
group and read it, like the baselines do. The rate runs from the first processed event to the
moment every event is accounted for in the workers' counters and every valid event's row is
written to ClickHouse (chDB); a rebalance during the run voids it.

Latency: one worker under simulated live traffic at a nominal rate, generated before the clock
starts and handed to a librdkafka producer at each event's due time (a simulator and a Python
producer on the same two cores would take CPU from the worker they measure, and fall behind).
The simulation starts with a burst (every agent's state at once) and its rate then ramps up as
conversations accumulate: no probe is sent until the worker has caught up (within half a second
of traffic, three looks in a row). Then a probe conversation is started every 100 ms in queue
`latency-probe`, and the rate reported is the one measured while they ran. Measured: the time
from handing a probe to the producer until the worker's /metrics shows it
(`ccpipe_conversations_waiting`) and until a query on ClickHouse finds its row. Probes are
counted, not told apart: the n-th one seen is matched to the n-th one sent, which is exact
while they become visible in order and close otherwise.

Usage: python bench/stream.py [--events 100000] [--partitions 6] [--workers 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import confluent_kafka
import orjson

from pipeline.broker import start_broker
from pipeline.ports import LOOPBACK, free_port, wait_for_port
from pipeline.processes import spawn_cli
from pipeline.produce import customer_key, live_simulation, send_lines
from pipeline.settings import WorkerSettings
from pipeline.simulate import SimulationSettings, Simulator
from pipeline.store.query import run_query
from pipeline.stream.topics import ensure_topics

POLL = 0.05
TIMEOUT = 600.0
PROBE_QUEUE = "latency-probe"
PROBE_EVERY = 0.1
INTERACTION_ROWS = 'ccpipe_store_rows_written_total{table="interactions"}'
PROCESSED = ("ccpipe_events_total", "ccpipe_events_invalid_total", "ccpipe_events_duplicate_total")
COUNTERS = (*PROCESSED, "ccpipe_store_rows_written_total")


def simulated_lines(count: int) -> list[bytes]:
    """`count` simulated events: all types, about 30% customer messages with text, about a
    quarter agent states (the simulator's agents handle its conversations)."""
    events = Simulator(SimulationSettings(conversations=count // 8)).events()
    return [orjson.dumps(e) for e in itertools.islice(events, count)]


def scrape(url: str, names: tuple[str, ...] = (), timeout: float = 10) -> dict[str, float]:
    """A worker's /metrics (only the `names` series, if given) as {series: value}, the series
    written as in the exposition."""
    if names:
        url += "?" + urllib.parse.urlencode([("name[]", name) for name in names])
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def total(values: dict[str, float], prefixes: tuple[str, ...]) -> float:
    return sum(value for series, value in values.items() if series.startswith(prefixes))


class Workers:
    """`count` ccpipe workers in one consumer group, on topics of their own."""

    def __init__(self, bootstrap: str, count: int, partitions: int, workdir: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.env = dict(os.environ) | {
            "CCPIPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CCPIPE_PARTITIONS": str(partitions),
            "CCPIPE_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
            "CCPIPE_INPUT_TOPIC": f"bench-{tag}",
            "CCPIPE_DLQ_TOPIC": f"bench-{tag}.dlq",
            "CCPIPE_CHECKPOINT_TOPIC": f"bench-{tag}.checkpoints",
            "CCPIPE_PARTIALS_TOPIC": f"bench-{tag}.partials",
            "CCPIPE_GROUP_ID": f"bench-{tag}",
            "CCPIPE_LOG_LEVEL": "WARNING",
        }
        self.settings = WorkerSettings.from_env(self.env)
        self.count, self.partitions, self.workdir, self.tag = count, partitions, workdir, tag
        self.ports: list[int] = []
        self.query_ports: list[int] = []
        self.stores: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        ensure_topics(self.settings)

    @property
    def urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{port}/metrics" for port in self.ports]

    def __enter__(self) -> Workers:
        try:
            for n in range(self.count):
                port, query_port = free_port(), free_port()
                data_dir = self.workdir / f"{self.tag}-w{n}"
                env = self.env | {"CCPIPE_METRICS_PORT": str(port), "CCPIPE_QUERY_PORT": str(query_port),
                                  "CCPIPE_DATA_DIR": str(data_dir)}  # fmt: skip
                self.stores.append(WorkerSettings.from_env(env).store())
                log = self.workdir / f"{self.tag}-worker{n}.log"
                self.processes.append(spawn_cli(["worker"], env, log))
                self.ports.append(port)
                self.query_ports.append(query_port)
            for port in self.ports:
                wait_for_port(LOOPBACK, port, timeout=60)
            for url in self.urls:  # the port is bound before the worker serves it
                scrape(url, ("ccpipe_assigned_partitions",), timeout=60)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        for process in self.processes:  # killed: the figures are taken, a clean stop only costs time
            if process.poll() is None:
                process.kill()
            process.wait(30)

    def wait_for_assignment(self, timeout: float = 120.0) -> None:
        """Until every worker holds input partitions and all of them are held."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = [scrape(url).get("ccpipe_assigned_partitions", 0) for url in self.urls]
            if all(held) and sum(held) == self.partitions:
                return
            time.sleep(0.2)
        raise TimeoutError(f"the group of {self.count} workers did not settle in {timeout:.0f} s")

    def totals(self) -> tuple[float, float, float]:
        """(events accounted for, valid events, interaction rows written), over all workers."""
        scrapes = [scrape(url, COUNTERS) for url in self.urls]
        processed = sum(total(values, PROCESSED) for values in scrapes)
        valid = sum(total(values, ("ccpipe_events_total{",)) for values in scrapes)
        rows = sum(values.get(INTERACTION_ROWS, 0) for values in scrapes)
        return processed, valid, rows

    def recoveries(self) -> float:
        return sum(scrape(url).get("ccpipe_partition_recoveries_total", 0) for url in self.urls)


def throughput(workers: Workers, lines: list[bytes], on_start: Callable[[], None] = lambda: None) -> float:
    """Events/s of the `workers` (not started yet) on `lines` pre-loaded into their topic, from
    the first processed event until all are processed and their rows written. `on_start` runs
    once the first events are processed (to attach a profiler, say)."""
    send_lines(workers.settings, lines)
    with workers:
        deadline = time.monotonic() + TIMEOUT
        first_at = None
        first_count = processed = valid = rows = 0.0
        while time.monotonic() < deadline:
            processed, valid, rows = workers.totals()
            if processed and first_at is None:
                first_at, first_count = time.monotonic(), processed
                on_start()
            if processed >= len(lines) and rows >= valid:
                break
            time.sleep(POLL)
        else:
            raise TimeoutError(f"processed {processed} of {len(lines)} events, wrote {rows} of {valid} rows")
        seconds = time.monotonic() - first_at
        time.sleep(0.5)
        processed, _, _ = workers.totals()
        assert processed == len(lines), f"workers counted {processed} events, {len(lines)} were sent"
        moved = workers.recoveries() - workers.partitions
        assert moved == 0, f"{moved:.0f} partitions moved between workers during the run: run it again"
    return (processed - first_count) / seconds


@dataclass
class Latency:
    asked: float  # the simulation's nominal rate
    rate: float  # events/s handed to the producer while the probes ran
    catch_up: float  # seconds of live traffic before the probes, until the worker kept up
    probes: int
    gauge_p50: float
    gauge_p99: float
    row_p50: float
    row_p99: float


def _probe(k: int) -> bytes:
    ids = {"conversation_id": f"probe-{k}", "customer_id": f"probe-{k}", "event_id": f"probe-{k}"}
    return orjson.dumps({**ids, "type": "conversation_started", "channel": "chat", "queue": PROBE_QUEUE,
                         "timestamp": time.time()})  # fmt: skip


@dataclass
class Schedule:
    """Simulated live traffic made before the clock starts (on two cores a live simulator
    would take CPU from the worker it measures): each event's time from the start, its key and
    its JSON without the timestamp, which is set to its due time when it is sent."""

    offsets: list[float]
    keys: list[bytes | None]
    bodies: list[bytes]


def clean_live_simulation(rate: float) -> SimulationSettings:
    """A live simulation at nominal `rate` with no broken or duplicate events (probes are
    counted: every event must be accounted for once)."""
    simulation = live_simulation(rate, seed=11, spike=None, spike_after=0.0, spike_seconds=0.0)
    return dataclasses.replace(simulation, invalid_rate=0.0, duplicate_rate=0.0)


def simulated_schedule(rate: float, seconds: float) -> Schedule:
    """The first `seconds` of `clean_live_simulation(rate)`."""
    simulation = clean_live_simulation(rate)
    schedule = Schedule([], [], [])
    for event in Simulator(simulation).events():
        offset = event.pop("timestamp") - simulation.start
        if offset > seconds:
            return schedule
        body = orjson.dumps(event)
        schedule.offsets.append(offset)
        schedule.keys.append(customer_key(body))
        schedule.bodies.append(body)
    raise AssertionError("the simulation is endless")


@dataclass
class _Run:
    """What the sending thread and the watchers share: what was handed to the producer, and
    when the probes started (once the worker keeps up) and were sent."""

    handed: int = 0
    began: float = 0.0  # when the sending began (monotonic)
    due: float = 0.0  # the latest due time handed (events come in arrival order: some are late)
    keeps_up: bool = False  # set by the watcher
    probing_from: float | None = None
    handed_before: int = 0  # events handed when the probes started
    sent_at: list[float] = dataclasses.field(default_factory=list)


def _send_paced(bootstrap: str, topic: str, schedule: Schedule, run: _Run, seconds: float) -> None:
    """Hand each event to a librdkafka producer at its due time (a producer that keeps up with
    any rate here, partitioning keys like the Java client and kafka-python); once the run says
    the worker keeps up, a probe every PROBE_EVERY for `seconds`."""
    failed: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failed.append(str(error))

    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5,
        "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000,
    })  # fmt: skip
    began, run.began, next_probe = time.time(), time.monotonic(), 0.0
    for offset, key, body in zip(schedule.offsets, schedule.keys, schedule.bodies, strict=True):
        due = began + offset
        wait = due - time.time()
        if wait > 0.001:
            time.sleep(wait)
        now = time.monotonic()
        if run.keeps_up and run.probing_from is None:
            run.probing_from, run.handed_before = now, run.handed
        if run.probing_from is not None:
            if now >= run.probing_from + seconds:
                break
            if now >= next_probe:
                run.sent_at.append(now)
                producer.produce(topic, _probe(len(run.sent_at) - 1), on_delivery=delivered)
                next_probe = now + PROBE_EVERY
        producer.produce(topic, body[:-1] + b',"timestamp":%.3f}' % due, key=key, on_delivery=delivered)
        producer.poll(0)
        run.handed += 1
        run.due = max(run.due, due)
    unsent = producer.flush(30)
    assert not unsent and not failed, f"{unsent} events not delivered, {len(failed)} failed: {failed[:3]}"


def _keeps_up(run: _Run, processed: Callable[[], float], rate: float, stop: threading.Event) -> None:
    """Start the probes once the sender is on schedule and the worker is within half a second
    of traffic of what was handed to the producer, three looks in a row (the simulation starts
    with a burst: every agent's state at once)."""
    looks = 0
    while not stop.is_set() and not run.keeps_up:
        on_time = run.handed and time.time() - run.due <= 0.5
        looks = looks + 1 if on_time and run.handed - processed() <= rate / 2 else 0
        run.keeps_up = looks == 3
        time.sleep(0.25)


def _watch(seen_at: list[float], count: Callable[[], int], stop: threading.Event, every: float) -> None:
    """Append the time each new probe became visible (`count()` is how many are)."""
    while not stop.is_set():
        visible = count()
        now = time.monotonic()
        seen_at.extend([now] * max(0, visible - len(seen_at)))
        time.sleep(every)


def latency(workers: Workers, rate: float, seconds: float, catch_up: float = 120.0) -> Latency:
    """Produce→gauge and produce→row latency of probes under live traffic at nominal `rate`
    events/s, measured for `seconds` once the worker has caught up with the simulation's start
    (in at most `catch_up` seconds); the rate reported is the one handed while the probes ran."""
    url, query_port, store = workers.urls[0], workers.query_ports[0], workers.stores[0]
    series = f'ccpipe_conversations_waiting{{channel="chat",queue="{PROBE_QUEUE}"}}'
    sql = f"SELECT count() FROM interactions WHERE queue = '{PROBE_QUEUE}'"

    def in_gauge() -> int:
        return int(scrape(url, ("ccpipe_conversations_waiting",)).get(series, 0))

    def in_rows() -> int:
        return int(run_query(store, sql, query_port).rows[0][0])

    def processed() -> float:
        return total(scrape(url, PROCESSED), PROCESSED)

    schedule = simulated_schedule(rate, catch_up + seconds)
    run = _Run()
    gauge_at: list[float] = []
    row_at: list[float] = []
    stop = threading.Event()
    watchers = [
        threading.Thread(target=target, args=args, daemon=True)
        for target, args in (
            (_keeps_up, (run, processed, rate, stop)),
            (_watch, (gauge_at, in_gauge, stop, POLL)),
            (_watch, (row_at, in_rows, stop, 2 * POLL)),
        )
    ]
    for watcher in watchers:
        watcher.start()
    try:
        settings = workers.settings
        _send_paced(settings.kafka_bootstrap_servers, settings.input_topic, schedule, run, seconds)
        if run.probing_from is None:
            raise TimeoutError(f"the worker did not keep up with {rate:,.0f} events/s in {catch_up:.0f} s")
        measured = (run.handed - run.handed_before) / (time.monotonic() - run.probing_from)
        caught_up = run.probing_from - run.began
        deadline = time.monotonic() + 30
        probes = len(run.sent_at)
        while min(len(gauge_at), len(row_at)) < probes and time.monotonic() < deadline:
            time.sleep(POLL)
    finally:
        stop.set()
        for watcher in watchers:
            watcher.join()
    assert len(gauge_at) >= len(run.sent_at) and len(row_at) >= len(run.sent_at), "probes went missing"
    to_gauge = [seen - sent for sent, seen in zip(run.sent_at, gauge_at, strict=False)]
    to_row = [seen - sent for sent, seen in zip(run.sent_at, row_at, strict=False)]
    return Latency(rate, measured, caught_up, len(run.sent_at), *_p50_p99(to_gauge), *_p50_p99(to_row))


def _p50_p99(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1, help="worker processes in one consumer group")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ccpipe-bench-"))
    lines = simulated_lines(args.events)
    broker = start_broker(log_path=workdir / "broker.log")
    try:
        rate = throughput(Workers(broker.bootstrap, args.workers, args.partitions, workdir), lines)
    finally:
        broker.stop()
    setup = f"{args.workers} worker(s), {args.partitions} partitions"
    print(f"{setup}: {args.events} events, {rate:,.0f} events/s end to end")
    print(f"events={args.events} partitions={args.partitions} workers={args.workers} eps={rate:.0f}")


if __name__ == "__main__":
    main()
