"""`ccpipe` command line: thin shells around the engine and the pipeline parts."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO

from pipeline.settings import EngineSettings, SettingError


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds greater than 0, got {text!r}")
    return value


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {text!r}")
    return value


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[tuple[IO[bytes], int | None]]:
    if path == "-":
        yield sys.stdin.buffer, None
        return
    with open(path, "rb") as handle:
        yield handle, os.fstat(handle.fileno()).st_size


def _compute(args: argparse.Namespace) -> int:
    from pipeline.compute import run_compute  # noqa: PLC0415 - keep `ccpipe --help` fast

    settings = EngineSettings(
        window_seconds=args.window_seconds,
        fcr_horizon_seconds=args.fcr_horizon_seconds,
        allowed_lateness_seconds=args.allowed_lateness_seconds,
    )
    with (
        _open_input(args.input) as (source, size),
        open(args.windows_out, "wb") as windows_out,
        open(args.conversations_out, "wb") as conversations_out,
    ):
        summary = run_compute(source, windows_out, conversations_out, settings, total_bytes=size)
    print(summary, file=sys.stderr)
    return 0


def _simulate_file(args: argparse.Namespace) -> int:
    from pipeline.simulate import SimulationSettings, write_events  # noqa: PLC0415

    settings = SimulationSettings(seed=args.seed, conversations=args.conversations)
    with open(args.output, "wb") as out:
        count = write_events(settings, out, limit=args.events)
    print(f"ccpipe generate: wrote {count} events to {args.output}", file=sys.stderr)
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
        "--window-seconds", type=_seconds, default=60.0, help="tumbling window size (default 60)"
    )
    compute.add_argument(
        "--fcr-horizon-seconds",
        type=_seconds,
        default=604800.0,
        help="FCR horizon H (default 604800 = 7 days)",
    )
    compute.add_argument(
        "--allowed-lateness-seconds",
        type=_non_negative_seconds,
        default=300.0,
        help="allowed lateness (default 300)",
    )
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except SettingError as exc:
        parser.exit(2, f"ccpipe: bad setting: {exc}\n")
    except FileNotFoundError as exc:
        parser.exit(2, f"ccpipe: {exc.strerror}: {exc.filename}\n")
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
