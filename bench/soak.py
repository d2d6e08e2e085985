"""Soak: one worker under steady simulated traffic for a bounded time, with many open
conversations, recording its memory and lag over time.

First `--open` conversations are started and left waiting (each held in the engine), then
simulated live traffic runs at `--rate` events/s for `--minutes`. Every `--every` seconds it
records the worker's RSS, the events sent but not yet processed, the worker's processing lag
and what its engines hold (conversations, event ids, windows); the samples go to a CSV file,
and the summary compares the first and the last third of the run.

Usage: python bench/soak.py [--minutes 10] [--rate 1000] [--open 200000] [--csv soak.csv]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from engine import memory_bytes
from stream import PROCESSED, Workers, scrape, total

from pipeline.broker import start_broker
from pipeline.produce import live_events, live_simulation, send_lines

STATE = ("conversations", "event_ids", "windows")


def waiting_conversations(count: int) -> list[bytes]:
    """`count` conversations started in the last minutes, none answered: all stay open."""
    began = time.time() - 300
    common = {"type": "conversation_started", "channel": "email", "queue": "backlog"}
    return [
        orjson.dumps(common | {"event_id": f"open-{i}", "conversation_id": f"open-{i}",
                               "customer_id": f"open-customer-{i}", "timestamp": began + 300 * i / count})
        for i in range(count)
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="simulated events per second")
    parser.add_argument("--open", type=int, default=200_000, help="conversations held open throughout")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--csv", type=Path, default=Path("soak.csv"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ccpipe-soak-"))
    broker = start_broker(log_path=workdir / "broker.log")
    sent = {"count": 0}
    try:
        workers = Workers(broker.bootstrap, 1, 6, workdir)
        with workers:
            workers.wait_for_assignment()
            url, pid = workers.urls[0], workers.processes[0].pid
            opened = waiting_conversations(args.open)
            send_lines(workers.settings, opened)
            sent["count"] = len(opened)
            while total(scrape(url, PROCESSED), PROCESSED) < len(opened):
                time.sleep(1)
            simulation = live_simulation(args.rate, seed=3, spike=None, spike_after=0.0, spike_seconds=0.0)

            def counted(lines):  # type: ignore[no-untyped-def]
                for line in lines:
                    sent["count"] += 1
                    yield line

            live = counted(live_events(simulation, args.minutes * 60, None))
            producer = threading.Thread(target=send_lines, args=(workers.settings, live), daemon=True)
            began = time.monotonic()
            producer.start()
            samples = []
            while producer.is_alive():
                values = scrape(url)
                behind = sent["count"] - total(values, PROCESSED)
                seconds, rss = round(time.monotonic() - began), memory_bytes("VmRSS", pid)
                lag = values.get("ccpipe_processing_lag_seconds", float("nan"))
                held = [values.get(f"ccpipe_state_{name}", 0) for name in STATE]
                samples.append((seconds, rss, behind, lag, *held))
                line = f"t={seconds:>4} s rss={rss / 2**20:7.1f} MiB behind={behind:>6.0f} lag={lag:6.1f} s"
                line += "".join(f" {name}={count:.0f}" for name, count in zip(STATE, held, strict=True))
                print(line, file=sys.stderr, flush=True)
                time.sleep(args.every)
            producer.join()
    finally:
        broker.stop()
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["seconds", "rss_bytes", "events_behind", "processing_lag_seconds",
                         "conversations", "event_ids", "windows"])  # fmt: skip
        writer.writerows(samples)
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    rss_first = statistics.mean(s[1] for s in first) / 2**20
    rss_last = statistics.mean(s[1] for s in last) / 2**20
    print(
        f"minutes={args.minutes} rate={args.rate:.0f} open={args.open} sent={sent['count']} "
        f"rss_first_third_mib={rss_first:.1f} rss_last_third_mib={rss_last:.1f} "
        f"max_events_behind={max(s[2] for s in samples):.0f} "
        f"max_lag_seconds={max(s[3] for s in samples):.1f} samples={len(samples)} csv={args.csv}"
    )


if __name__ == "__main__":
    main()
