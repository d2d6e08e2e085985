"""The wall display in a real headless Chromium (Debian's chromium + chromium-driver, Selenium):
the numbers on the page equal the worker's scraped gauges folded per channel (agents staffed
and needed, their load) and per queue (agents by state, occupancy), a spike turns its channel's
tile red, agents leaving turn its staffing red, a missing worker shows a banner, and a
screenshot stays in var/ to look at."""

from __future__ import annotations

import ctypes
import shutil
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streaming import Sample, WorkerProcess, lines_of, settings_for, wait_until
from support import T0, agent_msg, customer_msg, event

from pipeline.broker import EmbeddedBroker
from pipeline.ports import LOOPBACK, free_port, wait_for_port
from pipeline.processes import spawn_cli, stop_process
from pipeline.produce import send_lines
from pipeline.stream.topics import ensure_topics

SCREENSHOT = Path(__file__).resolve().parents[1] / "var" / "wall.png"
FIELDS = ("frt_p90_seconds", "within_target_ratio", "service_level_ratio", "waiting", "oldest_waiting_seconds",
          "fcr_ratio", "sentiment_mean", "agents_staffed", "agents_required", "occupancy_ratio")  # fmt: skip
STRIP = ("available", "on_contact", "after_contact_work", "away", "occupancy_ratio")


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: chromedriver dies with us


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     "--window-size=1920,1080"):  # fmt: skip
        options.add_argument(argument)
    service = Service(shutil.which("chromedriver"), popen_kw={"preexec_fn": _die_with_parent})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _traffic(
    ago: float, channel: str, queue: str, frts: list[float], tag: str, **extra: Any
) -> list[dict[str, Any]]:
    """Conversations started `ago` seconds before now, answered after each of `frts` seconds."""
    t = time.time() - T0 - ago
    events = []
    for n, frt in enumerate(frts):
        cid, who = f"{tag}-{n}", f"{tag}-u{n}"
        common = {"channel": channel, "queue": queue, "customer": who}
        events += [customer_msg(f"{cid}-q", cid, t + n, sentiment=extra.get("mood", 0.0), **common),
                   agent_msg(f"{cid}-a", cid, t + n + frt, **common),
                   event(f"{cid}-r", "conversation_resolved", cid, t + n + frt + 1, **common)]  # fmt: skip
    return events


def _agent(ago: float, agent: str, serves: str, on: str, state: str, **contact: Any) -> dict[str, Any]:
    """An agent_state event `ago` seconds before now (contract §7.1): the agent serves queue
    `serves` on channel `on`."""
    t = time.time() - ago
    return {"event_id": f"{agent}-{state}-{ago:g}", "type": "agent_state", "timestamp": t, "agent_id": agent,
            "state": state, "queues": [serves], "channels": [on], **contact}  # fmt: skip


def _handled(ago: float, agent: str, queue: str, channel: str, conversation: str) -> list[dict[str, Any]]:
    """Available, then ten seconds on contact and ten of wrap-up, then available again."""
    contact = {"conversation_id": conversation, "channel": channel, "queue": queue}
    return [_agent(ago + 60, agent, queue, channel, "available"),
            _agent(ago, agent, queue, channel, "on_contact", **contact),
            _agent(ago - 10, agent, queue, channel, "after_contact_work", **contact),
            _agent(ago - 20, agent, queue, channel, "available")]  # fmt: skip


def expected_strips(samples: dict[Sample, float]) -> dict[str, dict[str, float | None]]:
    """Per queue: its agents by state and its 15-minute occupancy, as scraped."""
    strips: dict[str, dict[str, float | None]] = defaultdict(
        lambda: dict.fromkeys(STRIP, 0.0) | {"occupancy_ratio": None}
    )
    for (name, labels), value in samples.items():
        tags = dict(labels)
        if name == "ccpipe_agents":
            strips[tags["queue"]][tags["state"]] = value
        elif name == "ccpipe_agent_occupancy_ratio" and tags["window"] == "15m":
            strips[tags["queue"]]["occupancy_ratio"] = value
    return dict(strips)


def expected_tiles(samples: dict[Sample, float]) -> dict[str, dict[str, float | None]]:
    """What the Grafana wall's queries give per channel: worst-queue p90 and sums, sample-weighted
    means (the test's own fold of the scraped gauges)."""
    by: dict[str, dict[tuple[str, str], dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for (name, labels), value in samples.items():
        tags = dict(labels)
        if "channel" in tags and "queue" in tags:
            key = (
                name
                + ("@" + tags["window"] if "window" in tags else "")
                + ("#" + tags["quantile"] if "quantile" in tags else "")
            )
            by[tags["channel"]][(tags["channel"], tags["queue"])][key] = value

    def weighted(queues: Any, ratio: str, weight: str) -> float | None:
        pairs = [(q[ratio], q[weight]) for q in queues if ratio in q and q.get(weight)]
        total = sum(w for _, w in pairs)
        return sum(r * w for r, w in pairs) / total if total else None

    tiles = {}
    for channel, per_queue in by.items():
        queues = list(per_queue.values())
        p90s = [q["ccpipe_frt_seconds@5m#0.9"] for q in queues if "ccpipe_frt_seconds@5m#0.9" in q]
        olds = [q["ccpipe_oldest_waiting_seconds"] for q in queues if q.get("ccpipe_conversations_waiting")]
        tiles[channel] = {
            "frt_p90_seconds": max(p90s) if p90s else None,
            "within_target_ratio": weighted(queues, "ccpipe_frt_sla_ratio@5m", "ccpipe_first_responses@5m"),
            "service_level_ratio": weighted(
                queues, "ccpipe_service_level_ratio@15m", "ccpipe_service_level_contacts@15m"
            ),
            "waiting": sum(q.get("ccpipe_conversations_waiting", 0) for q in queues),
            "oldest_waiting_seconds": max(olds) if olds else None,
            "fcr_ratio": weighted(queues, "ccpipe_fcr_ratio@1h", "ccpipe_resolutions@1h"),
            "sentiment_mean": weighted(queues, "ccpipe_sentiment_mean@15m", "ccpipe_sentiment_samples@15m"),
            "agents_staffed": total(queues, "ccpipe_agents_staffed"),
            "agents_required": total(queues, "ccpipe_agents_required"),
            "occupancy_ratio": load_per_agent(queues),
        }
    return tiles


def total(queues: list[dict[str, float]], name: str) -> float | None:
    values = [q[name] for q in queues if name in q]
    return sum(values) if values else None


def load_per_agent(queues: list[dict[str, float]]) -> float | None:
    """Offered Erlangs over agents staffed, over the queues that have both."""
    both = [q for q in queues if "ccpipe_offered_load_erlangs" in q and "ccpipe_agents_staffed" in q]
    staffed = sum(q["ccpipe_agents_staffed"] for q in both)
    return sum(q["ccpipe_offered_load_erlangs"] for q in both) / staffed if staffed else None


READ_TILES = """
const read = node => Array.from(node.querySelectorAll("[data-metric]"))
  .map(v => [v.dataset.metric, v.dataset.value, v.textContent]);
return [Array.from(document.querySelectorAll("section.tile")).map(tile => ({
  channel: tile.dataset.channel, status: tile.dataset.status, values: read(tile),
  staffing: tile.querySelector(".cell.staffing").dataset.status,
  chips: Array.from(tile.querySelectorAll(".chip")).map(chip => chip.textContent),
})), Array.from(document.querySelectorAll("#agents .strip")).map(strip => ({
  queue: strip.dataset.queue, values: read(strip),
}))];
"""


def _numbers(values: list[list[str]], fields: tuple[str, ...]) -> dict[str, Any]:
    found = {metric: (raw, text) for metric, raw, text in values}
    return {
        "text": {field: found[field][1] for field in fields},
        **{field: float(found[field][0]) if found[field][0] else None for field in fields},
    }


def page_tiles(driver: Any) -> dict[str, dict[str, Any]]:
    """Each tile's status and its numbers (data-value) and their text as the page shows them, and
    each queue's agent strip under "queue:NAME", read in one script call (the page redraws every
    second)."""
    tiles, strips = driver.execute_script(READ_TILES)
    shown = {
        tile["channel"]: {"status": tile["status"], "staffing": tile["staffing"], "chips": tile["chips"],
                          **_numbers(tile["values"], FIELDS)}
        for tile in tiles
    }  # fmt: skip
    return shown | {f"queue:{strip['queue']}": _numbers(strip["values"], STRIP) for strip in strips}


def page_equals_gauges(driver: Any, worker: WorkerProcess) -> list[str]:
    shown = page_tiles(driver)
    samples = worker.scrape()
    want = {**expected_tiles(samples), **{f"queue:{q}": v for q, v in expected_strips(samples).items()}}
    problems = [f"tiles {sorted(shown)} != {sorted(want)}"] if shown.keys() != want.keys() else []
    for key in shown.keys() & want.keys():
        for field in want[key]:
            got, expected = shown[key][field], want[key][field]
            tolerance = 5.0 if field == "oldest_waiting_seconds" else 1e-9  # it grows between the two reads
            if (got is None) != (expected is None) or (
                got is not None and abs(got - expected) > tolerance * max(1.0, abs(expected))  # type: ignore[operator]
            ):
                problems.append(f"{key} {field}: page {got}, gauges {expected}")
    return problems


def test_wall_page_shows_the_gauges_and_turns_red_on_a_spike(
    broker: EmbeddedBroker, topics: dict[str, str], tmp_path: Path, browser: Any
) -> None:
    settings = settings_for(broker, topics)
    ensure_topics(settings)
    calm = (
        _traffic(150, "phone", "billing", [4, 5, 6, 7], "p", mood=0.6)
        + _traffic(140, "chat", "billing", [20, 30], "cb", mood=-0.4)
        + _traffic(130, "chat", "tech", [50, 55], "ct", mood=0.1)
        # Agents: two on phone billing (one handled p-0), one on chat billing, one on a break in tech.
        + _handled(140, "pa1", "billing", "phone", "p-0")
        + [_agent(200, "pa2", "billing", "phone", "available"), _agent(200, "ct1", "tech", "chat", "away")]
        + _handled(100, "ca1", "billing", "chat", "cb-0")
        + [
            customer_msg(
                "w1", "wait-1", time.time() - T0 - 40, channel="email", queue="support", customer="w"
            ),
            # A chat customer who gave up: a miss for the service level, not for "within target".
            customer_msg("g1", "gone", time.time() - T0 - 100, channel="chat", queue="tech", customer="g"),
            event(
                "g2",
                "conversation_abandoned",
                "gone",
                time.time() - T0 - 60,
                channel="chat",
                queue="tech",
                customer="g",
            ),
        ]
    )
    send_lines(settings, lines_of(calm))
    worker = WorkerProcess(broker.bootstrap, tmp_path, **topics).start()
    wall_port = free_port()
    wall = spawn_cli(
        ["wall", "--port", str(wall_port), "--metrics", worker.url], worker.env, tmp_path / "wall.log"
    )
    try:
        wait_until(lambda: [] if expected_tiles(worker.scrape()).get("phone", {}).get("frt_p90_seconds")
                   else ["no phone p90 yet"], 90, "gauges")  # fmt: skip
        wait_for_port(LOOPBACK, wall_port, timeout=30)
        browser.get(f"http://{LOOPBACK}:{wall_port}/")
        wait_until(lambda: page_equals_gauges(browser, worker), 30, "page equal to the gauges")
        tiles = page_tiles(browser)
        phone = tiles["phone"]
        assert (
            phone["status"] == "good"
            and phone["text"]["frt_p90_seconds"] == f"{phone['frt_p90_seconds']:.0f} s"
        )
        assert tiles["chat"]["status"] == "warn"  # p90 50 s: over 80 % of the 60 s target
        assert tiles["chat"]["text"]["within_target_ratio"] == "100%"
        assert tiles["chat"]["text"]["service_level_ratio"] == "80%"  # 4 answered in time of 4 + 1 abandon
        assert tiles["email"]["waiting"] == 1 and tiles["email"]["text"]["waiting"] == "1"
        assert tiles["phone"]["text"]["sentiment_mean"] == "+0.60"
        assert tiles["phone"]["staffing"] == "good" and tiles["phone"]["agents_staffed"] == 2
        assert (
            tiles["phone"]["text"]["agents_staffed"] == "2"
            and tiles["phone"]["text"]["agents_required"] == "1"
        )
        assert tiles["queue:billing"]["available"] == 3 and tiles["queue:tech"]["away"] == 1

        # A spike: both phone agents leave for a meeting, replies now take two minutes; the phone
        # tile and its staffing turn red, chat stays amber.
        meeting = [_agent(5, agent, "billing", "phone", "away", reason="meeting") for agent in ("pa1", "pa2")]
        send_lines(
            settings,
            lines_of(_traffic(125, "phone", "billing", [118, 119, 120], "spike", mood=-0.7) + meeting),
        )
        wait_until(lambda: [] if page_tiles(browser)["phone"]["status"] == "bad" else ["phone not red"],
                   30, "phone tile red")  # fmt: skip
        wait_until(
            lambda: page_equals_gauges(browser, worker), 30, "page equal to the gauges after the spike"
        )
        tiles = page_tiles(browser)
        assert tiles["phone"]["text"]["frt_p90_seconds"] in {"1m 59s", "2m 00s"}  # 119 or 120 s: both exact
        assert tiles["chat"]["status"] == "warn"
        assert tiles["phone"]["staffing"] == "bad" and tiles["phone"]["agents_staffed"] == 0
        assert tiles["queue:billing"]["away"] == 2
        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))

        # The worker goes away: the page says so instead of showing old numbers as if current.
        worker.stop()
        from selenium.webdriver.common.by import By

        wait_until(lambda: [] if "not answering" in browser.find_element(By.ID, "banner").text
                   else ["no banner"], 30, "banner")  # fmt: skip
    finally:
        stop_process(wall)
        worker.stop()
