"""ClickHouse storage on the real ClickHouse engine (chDB), in this process and in a store
process of its own as a worker runs it, and against a ClickHouse server when
CCPIPE_TEST_CLICKHOUSE_URL is set (clickhouse://user:pass@host:9000/db)."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from storage import assert_views_equal_compute, close, epoch, select, views
from streaming import scenario
from support import T0, Run

from pipeline.engine import Engine
from pipeline.events import Event, decode_event
from pipeline.settings import EngineSettings, WorkerSettings
from pipeline.store.backends import Backend, DriverBackend, StoreUnavailable, open_backend
from pipeline.store.migrations import migrate
from pipeline.store.process import ProcessBackend
from pipeline.store.rows import TABLES, interaction_row, interaction_source
from pipeline.store.rowstore import row_store
from pipeline.store.sink import StoreSink
from pipeline.store.writer import StoreWriter
from pipeline.stream.routing import home_partition
from pipeline.stream.runtime import StoredInput

SERVER_URL = os.environ.get("CCPIPE_TEST_CLICKHOUSE_URL")
BACKENDS = ["chdb", "chdb-process"] + (["server"] if SERVER_URL else [])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "chdb":
        store = open_backend(f"chdb://{tmp_path}/chdb")
    elif request.param == "chdb-process":
        store = ProcessBackend(f"chdb://{tmp_path}/chdb", log=tmp_path / "store.log")
    else:  # a fresh database on the server, dropped afterwards
        assert SERVER_URL is not None
        admin = open_backend(SERVER_URL)
        database = f"ccpipe_test_{uuid.uuid4().hex[:8]}"
        admin.execute(f"CREATE DATABASE {database}")
        store = open_backend(SERVER_URL.rsplit("/", 1)[0] + f"/{database}")
    migrate(store, ttl_days=400)
    yield store
    if request.param == "server":
        admin.execute(f"DROP DATABASE {database}")
        admin.close()
    store.close()


def run_partitioned(
    lines: list[bytes], partitions: int = 3, batch: int = 200, settings: EngineSettings | None = None
) -> Iterator[tuple[int, int, Any, Any]]:
    """Feed events to one engine per partition (by customer), as the workers do; yields
    (partition, version, batch result, stored input) per batch, then the flush."""
    engines = [Engine(settings) for _ in range(partitions)]
    per_partition: list[list[tuple[Event, int]]] = [[] for _ in range(partitions)]
    for line in lines:
        event = decode_event(line)
        if isinstance(event, Event):
            p = home_partition(event.routing_key, partitions)
            per_partition[p].append((event, len(per_partition[p])))
    for p, items in enumerate(per_partition):
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            result = engines[p].process([event for event, _ in chunk])
            yield p, chunk[-1][1], result, StoredInput(events=chunk)


async def write_all(
    store: Backend, batches: list[tuple[int, int, Any, Any]], **writer_options: Any
) -> StoreWriter:
    options = {"batch_rows": 500, "flush_seconds": 0.05, "max_buffer_rows": 100_000} | writer_options
    writer = StoreWriter(row_store(store), **options)
    writer.start()
    sink = StoreSink(writer, EngineSettings().fcr_horizon_seconds)
    for partition, version, result, stored in batches:
        await sink.wait_for_room()
        sink.persist(partition, version, result, stored.events, stored.refused)
    assert await writer.flush(timeout=60)
    await writer.stop()
    return writer


def test_migrations_apply_twice_without_change(backend: Backend) -> None:
    ddl = (
        "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase() ORDER BY name"
    )
    before = backend.select(ddl).rows
    assert migrate(backend, ttl_days=400) == []
    assert backend.select(ddl).rows == before
    names = {row[0] for row in before}
    assert {"interactions", "conversations", "metrics_window_partials", "dead_letters", "conversations_latest",
            "metrics_window", "frt_hourly", "fcr_daily", "sentiment_daily", "agent_daily"} <= names  # fmt: skip


def test_row_columns_match_the_ddl(backend: Backend) -> None:
    for table, columns in TABLES.items():
        described = {row[0]: row[1] for row in backend.select(f"DESCRIBE TABLE {table}").rows}
        assert {c.name: c.type for c in columns} == {n: described[n] for n in (c.name for c in columns)}
        assert set(described) - {c.name for c in columns} <= {"ingested_at", "updated_at"}  # DEFAULT now64(3)


def test_driver_path_encodes_every_column_with_the_ddl_types(backend: Backend) -> None:
    """The clickhouse-driver backend's statement and values, encoded by clickhouse-driver's own
    native-protocol column writers against the types the DDL declares."""
    from clickhouse_driver import bufferedwriter
    from clickhouse_driver.client import Client
    from clickhouse_driver.columns.service import write_column

    class Socket:  # collects what would go on the wire
        def __init__(self) -> None:
            self.sent = bytearray()

        def sendall(self, data: bytes) -> None:
            self.sent += data

    context = Client("localhost").connection.context
    context.settings = {}
    rows = dict(table_rows(scenario(600)))
    driver = DriverBackend("clickhouse://user:secret@localhost:9000/db")
    statements: list[Any] = []
    driver._call = lambda *args, **kwargs: statements.append((args, kwargs))  # type: ignore[method-assign]
    for table, columns in TABLES.items():
        described = {row[0]: row[1] for row in backend.select(f"DESCRIBE TABLE {table}").rows}
        driver.insert(table, columns, rows[table])
        (sql, converted), options = statements.pop()
        assert sql == f"INSERT INTO {table} ({', '.join(c.name for c in columns)}) VALUES"
        assert options == {"columnar": True, "types_check": True}
        for column, values in zip(columns, converted, strict=True):
            socket = Socket()
            buffer = bufferedwriter.BufferedSocketWriter(socket, 1 << 16)
            write_column(context, column.name, described[column.name], values, buffer, types_check=True)
            buffer.flush()
            assert socket.sent, column.name


def table_rows(lines: list[bytes]) -> Iterator[tuple[str, list[Any]]]:
    """Rows of every table from a real engine run (with one refused message)."""
    from pipeline.deadletter import DeadLetter
    from pipeline.events import InvalidEvent
    from pipeline.store.rows import agent_window_row, conversation_row, dead_letter_row, window_row

    batches = list(run_partitioned(lines))
    sources = [interaction_source(e, p, o) for p, _, _, s in batches for e, o in s.events]
    yield "interactions", [interaction_row(source) for source in sources]
    horizon = EngineSettings().fcr_horizon_seconds
    yield (
        "conversations",
        [conversation_row(r, v, horizon) for _, v, b, _ in batches for r in b.conversations],
    )
    yield "metrics_window_partials", [window_row(w, p, v) for p, v, b, _ in batches for w in b.windows]
    agents = Path(__file__).parent / "data" / "example" / "agents" / "events.jsonl"
    engine = Engine()
    ran = [engine.process(map(decode_event, agents.read_bytes().splitlines())), engine.flush()]
    yield (
        "agent_window_partials",
        [agent_window_row(row, 0, 1) for batch in ran for row in batch.agent_windows],
    )
    bad = InvalidEvent("not_json", "not JSON", b"{x")
    letter = DeadLetter.of(topic="t", partition=1, offset=2, reason=bad.reason, detail=bad.detail, value=bad.raw,
                           received_at=time.time())  # fmt: skip
    yield "dead_letters", [dead_letter_row(letter)]


def test_views_equal_compute_and_a_replayed_batch_changes_nothing(backend: Backend) -> None:
    lines = scenario(900)
    batches = list(run_partitioned(lines))
    asyncio.run(write_all(backend, batches))
    assert_views_equal_compute(backend, lines)
    before = views(backend)
    asyncio.run(write_all(backend, batches[len(batches) // 3 :]))  # a retried tail, written again
    after = views(backend)
    for old, new in zip(before, after, strict=True):  # sums may add up in another order
        assert old.keys() == new.keys()
        assert all(close(old[k][f], new[k][f]) for k in old for f in old[k]), "a view changed"
    unique = {orjson.loads(line)["event_id"] for line in lines}
    assert select(backend, "SELECT count() AS n FROM interactions_dedup")[0]["n"] in (
        len(unique),
        str(len(unique)),
    )


SECTION_6 = WorkerSettings.from_env({
    "CCPIPE_SHORT_ABANDON_SECONDS": "5",
    "CCPIPE_CALENDARS_FILE": str(Path(__file__).parents[1] / "deploy" / "calendars.example.yaml"),
}).engine()  # fmt: skip


def test_section_6_columns_equal_compute_and_the_readme_queries_run(backend: Backend) -> None:
    lines = scenario(900, seed=3)
    asyncio.run(write_all(backend, list(run_partitioned(lines, settings=SECTION_6))))
    assert_views_equal_compute(backend, lines, SECTION_6)
    levels = select(
        backend, "SELECT sum(abandoned_short) AS short, sum(answered) AS answered FROM service_level_hourly"
    )
    assert int(levels[0]["short"]) > 0 and int(levels[0]["answered"]) > 0
    words = select(
        backend,
        "SELECT word, sum(mentions) AS n FROM negative_words_daily GROUP BY word ORDER BY n DESC LIMIT 5",
    )
    assert words and all(len(row["word"]) >= 3 for row in words)
    # Every query of the README's analyst section runs on these views.
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", readme, flags=re.DOTALL)
    statements = [s for block in blocks for s in block.split(";") if s.strip().replace("\n", "").strip("- ")]
    assert len(statements) >= 8
    for statement in statements:
        backend.select(statement)


class Outage:
    """The real backend behind a switch: while down, every call is refused like a dead server."""

    def __init__(self, store: Backend) -> None:
        self.store = store
        self.url = store.url
        self.down_until = 0.0
        self.refused = 0

    def _check(self) -> None:
        if time.monotonic() < self.down_until:
            self.refused += 1
            raise StoreUnavailable("connection refused (outage)")

    def execute(self, sql: str) -> None:
        self._check()
        self.store.execute(sql)

    def insert(self, table: str, columns: Any, rows: Any) -> None:
        self._check()
        self.store.insert(table, columns, rows)

    def select(self, sql: str, readonly: bool = True) -> Any:
        self._check()
        return self.store.select(sql, readonly)

    def close(self) -> None:
        self.store.close()


def test_an_outage_loses_nothing_and_pauses_consumption(backend: Backend) -> None:
    lines = scenario(600)
    batches = list(run_partitioned(lines))
    flaky = Outage(backend)
    errors: list[int] = []

    async def scenario_with_outage() -> tuple[float, int]:
        writer = StoreWriter(row_store(flaky), batch_rows=200, flush_seconds=0.05, max_buffer_rows=1000,
                             on_error=lambda: errors.append(1))  # fmt: skip
        writer.start()
        sink = StoreSink(writer, EngineSettings().fcr_horizon_seconds)
        flaky.down_until = time.monotonic() + 3.0
        blocked = 0.0
        peak = 0
        for partition, version, result, stored in batches:
            began = time.monotonic()
            await sink.wait_for_room()
            blocked = max(blocked, time.monotonic() - began)
            sink.persist(partition, version, result, stored.events, stored.refused)
            peak = max(peak, writer.pending_rows)
        assert await writer.flush(timeout=60)
        await writer.stop()
        return blocked, peak

    blocked, peak = asyncio.run(scenario_with_outage())
    assert flaky.refused > 0 and errors
    assert blocked > 1.0  # consumption waited for the store to come back
    assert peak < 1000 + 3 * 1000  # bounded: the buffer bound plus one batch's rows at most
    assert_views_equal_compute(backend, lines)


def test_a_row_clickhouse_refuses_goes_to_dead_letters_and_the_rest_is_written(backend: Backend) -> None:
    lines = scenario(300)
    batches = list(run_partitioned(lines))
    sources = [interaction_source(e, p, o) for p, _, _, s in batches for e, o in s.events][:50]
    rows = [interaction_row(source) for source in sources]
    poisoned = list(sources[7])
    poisoned[2] = "not-an-offset"  # source_offset is UInt64

    async def write() -> StoreWriter:
        writer = StoreWriter(row_store(backend), batch_rows=1000, flush_seconds=0.05, max_buffer_rows=10_000)
        writer.start()
        writer.add("interactions", [*sources[:7], tuple(poisoned), *sources[8:]])
        assert await writer.flush(timeout=60)
        await writer.stop()
        return writer

    writer = asyncio.run(write())
    assert writer.stats.rows_rejected == 1
    stored = {r["event_id"] for r in select(backend, "SELECT event_id FROM interactions_dedup")}
    assert stored == {row[0] for row in rows} - {rows[7][0]}
    (letter,) = select(backend, "SELECT * FROM dead_letters")
    assert letter["reason"] == "store_rejected" and letter["topic"] == "interactions"
    assert rows[7][0] in letter["payload"]


def test_window_partials_of_partitions_merge_exactly(backend: Backend) -> None:
    """The metrics_window view merges per-partition accumulators: FRT quantiles come from the
    union of the partitions' samples, not an average of their quantiles."""
    from support import agent_msg, event

    bodies = []
    for i in range(9):
        bodies += [event(f"s{i}", "conversation_started", f"c{i}", i, customer=f"u{i}"),
                   agent_msg(f"r{i}", f"c{i}", i + 5 * (i + 1), customer=f"u{i}")]  # fmt: skip
    import orjson

    lines = [orjson.dumps(b) for b in bodies]
    asyncio.run(write_all(backend, list(run_partitioned(lines, partitions=3, batch=1))))
    (row,) = select(backend, "SELECT * FROM metrics_window")
    assert epoch(row["window_start"]) == T0
    assert row["first_responses"] == 9
    assert row["frt_p50_seconds"] == 25 and row["frt_p90_seconds"] == 40 and row["frt_max_seconds"] == 45


def test_agent_windows_and_handle_time_in_the_views_equal_compute(backend: Backend) -> None:
    """Contract §7.5: the `agent_window` view and `handle_seconds` of `metrics_window`, merged
    over the partitions the agents' events were spread on, equal the partitions' engines (an
    agent's last state runs to its own partition's newest event, §7.2)."""
    from streaming import partitioned_runs

    from pipeline.engine.agents import AgentWindow

    example = Path(__file__).parent / "data" / "example" / "agents" / "events.jsonl"
    lines = example.read_bytes().splitlines() + scenario(300)
    asyncio.run(write_all(backend, list(run_partitioned(lines))))
    agents: dict[tuple[float, str], AgentWindow] = {}
    handle: dict[tuple[float, str, str], float] = {}
    for batch in partitioned_runs(lines, 3):
        for row in batch.agent_windows:
            agents.setdefault((row.window_start, row.queue), AgentWindow()).merge(row.window)
        for window in batch.windows:
            key = (window.window_start, window.channel, window.queue)
            handle[key] = handle.get(key, 0.0) + window.fields["handle_seconds"]
    stored = {
        (epoch(r["window_start"]), r["queue"]): r for r in select(backend, "SELECT * FROM agent_window")
    }
    assert stored.keys() == agents.keys()
    for key, window in agents.items():
        for field, value in window.result().items():
            assert close(stored[key][field], value), (key, field, stored[key][field], value)
    handled = {(epoch(r["window_start"]), r["channel"], r["queue"]): r["handle_seconds"]
               for r in select(backend, "SELECT * FROM metrics_window WHERE handle_seconds > 0")}  # fmt: skip
    assert handled == pytest.approx({k: v for k, v in handle.items() if v})
    assert len(handled) == 8


@functools.cache
def _dst_day() -> tuple[list[Any], Run]:
    """Half an hour of simulated traffic with agents moved to 2026-03-08 04:00 UTC, the night New
    York springs forward, as one partition's batches (agent time of the windows still open at the
    end runs to that partition's newest event, as in the reference; the merge over partitions is
    the views' own, tested above) and the reference run."""
    shift = 1772953200.0 - 1772442000.0  # 09:00 UTC of the scenario to 2026-03-08 07:00 UTC
    lines = [orjson.dumps(e | {"timestamp": e["timestamp"] - 3 * 3600 + shift})
             for e in map(orjson.loads, scenario(1800, agents=True))]  # fmt: skip
    return list(run_partitioned(lines, partitions=1)), Run([orjson.loads(line) for line in lines])


@pytest.mark.parametrize(("minutes", "tz"), [(15, "UTC"), (30, "America/New_York"), (60, "Asia/Kolkata")])
def test_the_interval_report_sums_the_windows_of_each_local_interval(
    backend: Backend, minutes: int, tz: str
) -> None:
    """interval_report(minutes, tz) (contract §7.5) holds, per local interval, channel and queue,
    the exact sums of the windows starting in it, on a day with a DST change (US spring forward)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    batches, run = _dst_day()
    asyncio.run(write_all(backend, batches))
    zone = ZoneInfo(tz)

    def local_start(t: float) -> str:
        local = datetime.fromtimestamp(t, zone)
        return local.replace(minute=local.minute // minutes * minutes, second=0, microsecond=0).strftime(
            "%Y-%m-%d %H:%M:%S"
        )

    want: dict[tuple[str, str, str], dict[str, float]] = {}
    for (start, channel, queue), row in run.windows.items():
        sums = want.setdefault((local_start(start), channel, queue), {"offered": 0, "answered": 0, "handle": 0.0,
                                                                       "frt": 0.0, "abandoned": 0})  # fmt: skip
        sums["offered"] += row["conversations_started"]
        sums["answered"] += row["first_responses"]
        sums["abandoned"] += row["abandoned"]
        sums["handle"] += row["handle_seconds"]
        sums["frt"] += (row["frt_mean_seconds"] or 0) * row["first_responses"]
    busy: dict[tuple[str, str], list[float]] = {}
    for (start, queue), row in run.agents.items():
        parts = busy.setdefault((local_start(start), queue), [0.0, 0.0])
        parts[0] += row["on_contact_seconds"] + row["after_contact_work_seconds"]
        parts[1] += row["staffed_seconds"]
    got = select(backend, f"SELECT * FROM interval_report(minutes = {minutes}, tz = '{tz}')")
    assert len(got) == len(want) and len({r["interval_start"][11:16] for r in got}) > 1
    for row in got:
        sums = want[(row["interval_start"][:19], row["channel"], row["queue"])]
        assert (row["offered"], row["answered"], row["abandoned"]) == (sums["offered"], sums["answered"],
                                                                       sums["abandoned"])  # fmt: skip
        assert close(row["asa_seconds"], sums["frt"] / sums["answered"] if sums["answered"] else None)
        aht = sums["handle"] / sums["answered"] if sums["answered"] and sums["handle"] else None
        assert aht is None or abs(row["aht_seconds"] - aht) <= 1e-6, (
            row,
            aht,
        )  # handle seconds are kept to the µs
        occupied, staffed = busy.get((row["interval_start"][:19], row["queue"]), [0.0, 0.0])
        assert close(row["occupancy_ratio"], occupied / staffed if staffed else None), (
            row,
            occupied,
            staffed,
        )
