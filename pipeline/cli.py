"""`ccpipe` command line: thin shells around the engine and the pipeline parts."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from pipeline.settings import (
    ENGINE_SETTINGS,
    RUN_STORE,
    STAFFING_SETTINGS,
    EngineSettings,
    Setting,
    SettingError,
    WorkerSettings,
    env_or_file,
    parse_port,
    parse_seconds,
    parse_seconds_or_zero,
)

_ENGINE = {declared.field: declared for declared in ENGINE_SETTINGS}


def _argument(parse: Callable[[str, str], Any], name: str) -> Callable[[str], Any]:
    """A settings parser as an argparse type: its error shown by argparse next to the flag."""

    def convert(text: str) -> Any:
        try:
            return parse(name, text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _flag_parser(declared: Setting) -> Callable[[str], Any]:
    """The setting's own parser for its flag."""
    return _argument(declared.parse, declared.flag)


_seconds = _argument(parse_seconds, "the value")
_non_negative_seconds = _argument(parse_seconds_or_zero, "the value")
_port = _argument(parse_port, "the port")


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[tuple[IO[bytes], int | None]]:
    if path == "-":
        yield sys.stdin.buffer, None
        return
    with open(path, "rb") as handle:
        yield handle, os.fstat(handle.fileno()).st_size


def _compute(args: argparse.Namespace) -> int:
    from pipeline import gcpolicy  # noqa: PLC0415 - keep `ccpipe --help` fast
    from pipeline.compute import run_compute  # noqa: PLC0415

    gcpolicy.for_long_lived_state()  # the workers' policy: the same engine, the same state
    given = {s.field: getattr(args, s.field) for s in ENGINE_SETTINGS if getattr(args, s.field) is not None}
    settings = EngineSettings(**given)
    with (
        _open_input(args.input) as (source, size),
        open(args.windows_out, "wb") as windows_out,
        open(args.conversations_out, "wb") as conversations_out,
        open(args.agent_windows_out or os.devnull, "wb") as agent_windows_out,
    ):
        agents = agent_windows_out if args.agent_windows_out else None
        summary = run_compute(source, windows_out, conversations_out, settings, total_bytes=size,
                              agent_windows_out=agents)  # fmt: skip
    print(summary, file=sys.stderr)
    return 0


def _simulate_file(args: argparse.Namespace) -> int:
    from pipeline.simulate import SimulationSettings, write_events  # noqa: PLC0415

    settings = SimulationSettings(seed=args.seed, conversations=args.conversations)
    with open(args.output, "wb") as out:
        count = write_events(settings, out, limit=args.events)
    print(f"ccpipe generate: wrote {count} events to {args.output}", file=sys.stderr)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from pipeline.stream.worker import main as worker_main  # noqa: PLC0415

    worker_main()
    return 0


def _env_settings() -> WorkerSettings:
    return WorkerSettings.from_env(os.environ)


def _run(args: argparse.Namespace) -> int:
    from pipeline.launcher import RunOptions, run  # noqa: PLC0415

    options = RunOptions(
        metrics_port=args.metrics_port,
        duration=args.duration,
        rate=args.rate,
        bootstrap=args.bootstrap,
        data_dir=Path(args.data_dir),
        spike=args.spike,
        partitions=args.partitions,
        store=args.store or f"chdb://{args.data_dir}/chdb",
        with_prometheus=args.with_prometheus,
        backfill=args.backfill,
        query_port=args.query_port,
        wall_port=args.wall_port,
        calendars=args.calendars,
        short_abandon_seconds=args.short_abandon_seconds,
    )
    return run(options)


def _wall(args: argparse.Namespace) -> int:
    from pipeline.wall import serve  # noqa: PLC0415

    serve(args.metrics, args.bind, args.port, title=args.title)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from pipeline.produce import live_events, live_simulation, send_lines  # noqa: PLC0415

    settings = _env_settings()
    simulation = live_simulation(
        args.rate,
        seed=args.seed,
        spike=args.spike,
        spike_after=args.spike_after,
        spike_seconds=args.spike_seconds,
        backfill=args.backfill,
        warm_up=args.warm_up,
        calendars=settings.engine().calendars,
    )
    print(
        f"ccpipe simulate: up to {args.rate:g} events/s "
        f"into {settings.input_topic} on {settings.kafka_bootstrap_servers}"
        + (f", spike on {args.spike} after {args.spike_after:g} s" if args.spike else ""),
        file=sys.stderr,
        flush=True,
    )
    summary = send_lines(settings, live_events(simulation, args.duration, args.events))
    print(f"ccpipe simulate: {summary}", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from pipeline.produce import replay  # noqa: PLC0415

    settings = _env_settings()
    with _open_input(args.file) as (source, _):
        summary = replay(settings, source, show_progress=sys.stderr.isatty())
    print(f"ccpipe replay: {summary} into {settings.input_topic}", file=sys.stderr)
    return 0


def _staffing(args: argparse.Namespace) -> int:
    from pipeline.staffing import offered_load, required_agents, table  # noqa: PLC0415

    level, cap, shrinkage = (getattr(args, s.field) for s in STAFFING_SETTINGS)
    load = offered_load(args.contacts, args.interval_seconds, args.aht)
    required, figures = required_agents(load, args.aht, args.answer_within, service_level=level,
                                        max_occupancy=cap, shrinkage=shrinkage)  # fmt: skip
    rows = table(load, args.aht, args.answer_within, figures.agents) if figures else []
    if args.format == "json":
        rendered = [row.as_dict() for row in rows]
        print(json.dumps({"offered_load_erlangs": load, "required_agents": required, "rows": rendered}))
        return 0
    on_duty = figures.agents if figures else 0
    capped = f", occupancy at most {cap:.0%}" if cap < 1 else ""
    print(f"{args.contacts:g} contacts in {args.interval_seconds:g} s, AHT {args.aht:g} s: "
          f"offered load {load:.2f} Erlangs")  # fmt: skip
    print(f"{level:.0%} answered within {args.answer_within:g} s{capped}: {on_duty} agents on contact duty")
    if shrinkage:
        print(f"with {shrinkage:.0%} shrinkage: schedule {required} agents")
    print(f"\n{'agents':>6}  {'service level':>13}  {'ASA':>8}  {'occupancy':>9}  {'P(wait)':>7}")
    for row in rows:
        mark = "  <- required" if row.agents == on_duty else ""
        figures_text = f"{row.service_level:>13.4f}  {row.asa_seconds:>7.2f}s  {row.occupancy:>9.3f}"
        print(f"{row.agents:>6}  {figures_text}  {row.p_wait:>7.4f}{mark}")
    print(f"\nrequired agents: {required}")
    return 0


def _default_store() -> str:
    return env_or_file(os.environ, "CCPIPE_STORE_URL") or RUN_STORE


def _sql(args: argparse.Namespace) -> int:
    from pipeline.store.query import render, run_query  # noqa: PLC0415

    port = int(os.environ.get("CCPIPE_QUERY_PORT", "9465"))
    try:
        result = run_query(args.store or _default_store(), args.query, port)
    except Exception as exc:  # QueryError, a malformed statement, or ClickHouse's own error
        print(f"ccpipe sql: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render(result, args.format))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from pipeline.store.backends import open_backend, redact  # noqa: PLC0415
    from pipeline.store.migrations import migrate  # noqa: PLC0415

    url = args.store or _default_store()
    backend = open_backend(url)
    try:
        applied = migrate(backend, args.ttl_days)
    finally:
        backend.close()
    print(f"ccpipe migrate: {redact(url)}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccpipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compute = commands.add_parser(
        "compute",
        help="compute conversation facts and window metrics from a JSONL file of events",
        description="Run the metric engine over EVENTS.jsonl in file order (no Kafka).",
    )
    compute.add_argument("--input", required=True, help="events, one JSON object a line ('-' for stdin)")
    compute.add_argument("--windows-out", required=True, help="where to write window rows (JSONL)")
    compute.add_argument(
        "--conversations-out", required=True, help="where to write conversation records (JSONL)"
    )
    compute.add_argument(
        "--agent-windows-out", help="where to write agent_window rows (JSONL, contract §7.2)"
    )
    for declared in ENGINE_SETTINGS:  # every engine setting, as the workers' environment has it
        shown = declared.shown_default or "none"
        compute.add_argument(
            declared.flag, dest=declared.field, default=None, type=_flag_parser(declared),
            help=f"{declared.help} (default {shown}; a worker's {declared.env})",
        )  # fmt: skip
    compute.set_defaults(handler=_compute)

    generate = commands.add_parser(
        "generate",
        help="write simulated interaction events to a JSONL file (for compute, replay, benchmarks)",
    )
    generate.add_argument("--output", required=True, help="JSONL file to write")
    generate.add_argument("--events", type=int, default=100_000, help="how many events (default 100000)")
    generate.add_argument(
        "--conversations", type=int, default=20_000, help="conversations a simulated day holds"
    )
    generate.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    generate.set_defaults(handler=_simulate_file)

    run = commands.add_parser(
        "run",
        help="run the whole pipeline on embedded defaults (broker, worker, simulator, /metrics)",
        description="Start the embedded broker, a worker and the traffic simulator; stop them on Ctrl-C.",
    )
    for flag, default, what in (
        ("--metrics-port", 9464, "the worker's /metrics"),
        ("--query-port", 9465, "the worker's loopback SQL endpoint (ccpipe sql)"),
        ("--wall-port", 9466, "the wall display page"),
    ):
        run.add_argument(
            flag, type=_port, default=None,
            help=f"port of {what} (default {default}, or a free one when {default} is busy)",
        )  # fmt: skip
    run.add_argument("--duration", type=_seconds, default=None, help="stop after this many seconds")
    run.add_argument(
        "--rate",
        type=_seconds,
        default=50.0,
        help="simulated events/s at this hour of the day (default 50)",
    )
    run.add_argument(
        "--bootstrap", default=None, help="use this Kafka (host:port) instead of the embedded broker"
    )
    run.add_argument(
        "--spike",
        default=None,
        metavar="CHANNEL",
        help="most of CHANNEL's agents leave for a 15-minute meeting a minute in",
    )
    run.add_argument(
        "--partitions", type=int, default=6, help="partitions of the topics it creates (default 6)"
    )
    run.add_argument("--data-dir", default="var/run", help="logs and working files (default var/run)")
    run.add_argument(
        "--store", default=None, help=f"store URL (default chdb://DATA_DIR/chdb, i.e. {RUN_STORE})"
    )
    run.add_argument(
        "--with-prometheus",
        action="store_true",
        help="also start a local Prometheus with ccpipe's alert rules (Debian package 'prometheus')",
    )
    run.add_argument(
        "--calendars", default=None, metavar="FILE",
        help="business hours per queue, YAML (e.g. deploy/calendars.example.yaml): the worker measures "
        "business-hours FRT and the simulator's agents reply only while their queue is open",
    )  # fmt: skip
    run.add_argument(
        "--short-abandon-seconds", type=_flag_parser(_ENGINE["short_abandon_seconds"]), default=None,
        metavar="S",
        help="abandons within S seconds of the start are short: not counted against service level",
    )  # fmt: skip
    run.add_argument(
        "--backfill",
        type=_non_negative_seconds,
        default=900.0,
        help="let the simulator send this many seconds of past traffic first, so every rolling "
        "window is full at once (default 900)",
    )
    run.set_defaults(handler=_run)

    wall = commands.add_parser(
        "wall",
        help="serve the wall display page: live numbers per channel from one or several workers",
        description="A self-contained page for a wall screen, fed by the workers' /metrics.",
    )
    wall.add_argument(
        "--metrics", action="append", required=True, metavar="URL",
        help="a worker's /metrics URL; repeat it for every worker (each key comes from one worker)",
    )  # fmt: skip
    wall.add_argument("--port", type=_port, default=9466, help="port of the page (default 9466)")
    wall.add_argument(
        "--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for a screen)"
    )
    wall.add_argument("--title", default="Contact center", help="heading of the page")
    wall.set_defaults(handler=_wall)

    worker = commands.add_parser(
        "worker",
        help="run one production worker, configured by CCPIPE_* environment variables (see README)",
        description="One worker of the consumer group; every setting comes from the environment.",
    )
    worker.set_defaults(handler=_worker)

    simulate = commands.add_parser(
        "simulate",
        help="send realistic live traffic into Kafka (CCPIPE_KAFKA_BOOTSTRAP_SERVERS, CCPIPE_INPUT_TOPIC)",
    )
    simulate.add_argument(
        "--rate", type=_seconds, default=200.0, help="events/s at this hour of the day (default 200)"
    )
    simulate.add_argument("--duration", type=_seconds, default=None, help="stop after this many seconds")
    simulate.add_argument("--events", type=int, default=None, help="stop after this many events")
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument(
        "--backfill",
        type=_non_negative_seconds,
        default=0.0,
        help="start the simulation this many seconds ago and send that past at once (default 0)",
    )
    simulate.add_argument(
        "--warm-up",
        type=_non_negative_seconds,
        default=600.0,
        help="simulate this long before the start without sending it, so the day starts mid-flow "
        "with agents busy (default 600 s)",
    )
    simulate.add_argument(
        "--spike", default=None, metavar="CHANNEL", help="most of CHANNEL's agents leave for a meeting"
    )
    simulate.add_argument(
        "--spike-after",
        type=_non_negative_seconds,
        default=60.0,
        help="spike starts this long after the simulation start (default 60 s)",
    )
    simulate.add_argument("--spike-seconds", type=_seconds, default=900.0, help="spike lasts (default 900 s)")
    simulate.set_defaults(handler=_simulate)

    sql = commands.add_parser(
        "sql",
        help="run a read-only SQL query on the store (through a running worker when it holds the chDB files)",
    )
    sql.add_argument(
        "query", help='e.g. "SELECT channel, avg(frt_seconds) FROM conversations_latest GROUP BY channel"'
    )
    sql.add_argument("--store", default=None, help=f"store URL (default: $CCPIPE_STORE_URL or {RUN_STORE})")
    sql.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output (json: one object a line)"
    )
    sql.set_defaults(handler=_sql)

    migrate = commands.add_parser("migrate", help="create or update the ClickHouse tables and views")
    migrate.add_argument(
        "--store", default=None, help=f"store URL (default: $CCPIPE_STORE_URL or {RUN_STORE})"
    )
    migrate.add_argument(
        "--ttl-days", type=int, default=400, help="days rows are kept, for tables created now"
    )
    migrate.set_defaults(handler=_migrate)

    staffing = commands.add_parser(
        "staffing",
        help="Erlang C: agents required to answer a share of contacts within a time (as the live gauges)",
        description="The staffing calculation of the live gauges (contract section 7.3) for given traffic.",
    )
    staffing.add_argument("--contacts", type=_seconds, required=True, help="contacts offered in the interval")
    staffing.add_argument("--interval-seconds", type=_seconds, required=True, help="the interval, seconds")
    staffing.add_argument("--aht", type=_seconds, required=True, help="average handle time, seconds")
    staffing.add_argument(
        "--answer-within", type=_non_negative_seconds, required=True, help="service-level time T, seconds"
    )
    for declared in STAFFING_SETTINGS:
        staffing.add_argument(
            declared.flag, dest=declared.field, default=declared.default, type=_flag_parser(declared),
            help=f"{declared.help} (default {declared.shown_default}; a worker's {declared.env})",
        )  # fmt: skip
    staffing.add_argument(
        "--format", choices=("table", "json"), default="table", help="output (default table)"
    )
    staffing.set_defaults(handler=_staffing)

    replay = commands.add_parser(
        "replay", help="send a JSONL file of events into Kafka, keyed by customer_id"
    )
    replay.add_argument("file", help="events, one JSON object a line ('-' for stdin)")
    replay.set_defaults(handler=_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except SettingError as exc:
        parser.exit(2, f"ccpipe: bad setting: {exc}\n")
    except OSError as exc:
        parser.exit(2, f"ccpipe: {exc}\n")
    except FileNotFoundError as exc:
        parser.exit(2, f"ccpipe: {exc.strerror}: {exc.filename}\n")
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
