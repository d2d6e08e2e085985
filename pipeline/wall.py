"""`ccpipe wall`: a wall display for the first run and for shops without Grafana.

One self-contained page (pipeline/wall.html: no CDN, no web fonts, works offline) that asks
this server for `/wall.json` every few seconds. The server scrapes every worker's /metrics
(each (channel, queue) is exported by exactly one worker, so the union is complete) and folds
the gauges into a tile per channel exactly as the Grafana wall does: FRT p90 of the worst queue
against the channel target, first replies within target, service level, waiting now, the
longest wait, FCR and customer mood, the ratios weighted by their sample counts across queues.
"""

from __future__ import annotations

import asyncio
import html
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PAGE = Path(__file__).with_name("wall.html")
REFRESH_SECONDS = 3.0
LAG_WARNING_SECONDS = 120.0  # numbers this far behind real time get a banner
AMBER_FROM = 0.8  # FRT p90 at 80 % of the target turns amber, at the target red (as the Grafana wall)
DEFAULT_TARGET = 3600.0

Labels = dict[str, str]


Sample = tuple[str, Labels, float]


@dataclass
class Scrape:
    """One worker's /metrics samples (NaN left out), or why they could not be read."""

    url: str
    samples: list[Sample] | None
    error: str | None = None

    @classmethod
    def of(cls, url: str, text: str) -> Scrape:
        """The samples of a /metrics page, parsed once for everything the page shows."""
        samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not math.isnan(sample.value)
        ]
        return cls(url, samples)


@dataclass
class _Sums:
    """Sample-weighted mean: Σ value·weight / Σ weight."""

    weighted: float = 0.0
    weight: float = 0.0

    def add(self, value: float | None, weight: float | None) -> None:
        if value is not None and weight:
            self.weighted += value * weight
            self.weight += weight

    def mean(self) -> float | None:
        return self.weighted / self.weight if self.weight else None


@dataclass
class _Queue:
    p90: float | None = None
    waiting: float = 0.0
    oldest: float | None = None
    staffed: float | None = None
    required: float | None = None
    load: float | None = None

    @property
    def short(self) -> bool:
        return self.staffed is not None and self.required is not None and self.staffed < self.required


AGENT_STATES = ("available", "on_contact", "after_contact_work", "away")  # as ccpipe_agents labels them


@dataclass
class _Channel:
    target: float = DEFAULT_TARGET
    within: _Sums = field(default_factory=_Sums)
    service: _Sums = field(default_factory=_Sums)
    fcr: _Sums = field(default_factory=_Sums)
    mood: _Sums = field(default_factory=_Sums)
    queues: dict[str, _Queue] = field(default_factory=lambda: defaultdict(_Queue))


def status(p90: float | None, target: float) -> str:
    """`idle` (no first reply in 5 min), `good`, `warn` or `bad` against the channel target."""
    if p90 is None:
        return "idle"
    if p90 >= target:
        return "bad"
    return "warn" if p90 >= AMBER_FROM * target else "good"


def wall_model(scrapes: list[Scrape], now: float, events_still_since: float | None = None) -> dict[str, Any]:
    """The page's data: one tile per channel (with its queues when there are several) and a
    banner when a worker is missing or the numbers lag real time. Pure: scrapes in, dict out."""
    channels: dict[str, _Channel] = defaultdict(_Channel)
    by_key: dict[tuple[str, str, str, str], float] = {}  # (name, channel, queue, window) -> value
    lags: list[float] = []
    targets: dict[str, float] = {}
    agents: dict[str, dict[str, float]] = defaultdict(dict)  # queue -> state (and occupancy) -> value
    for scrape in scrapes:
        for name, labels, value in scrape.samples or ():
            if name == "ccpipe_processing_lag_seconds":
                lags.append(value)
            elif name == "ccpipe_frt_target_seconds":
                targets[labels["channel"]] = value
            elif name == "ccpipe_agents":
                agents[labels["queue"]][labels["state"]] = value
            elif name == "ccpipe_agent_occupancy_ratio" and labels.get("window") == "15m":
                agents[labels["queue"]]["occupancy_ratio"] = value
            elif "channel" in labels and "queue" in labels:
                if name == "ccpipe_frt_seconds" and labels.get("quantile") != "0.9":
                    continue
                by_key[(name, labels["channel"], labels["queue"], labels.get("window", ""))] = value
    for (name, channel, queue, window), value in by_key.items():
        tile, line = channels[channel], channels[channel].queues[queue]
        if name == "ccpipe_frt_seconds" and window == "5m":
            line.p90 = value
        elif name == "ccpipe_conversations_waiting":
            line.waiting = value
        elif name == "ccpipe_agents_staffed":
            line.staffed = value
        elif name == "ccpipe_agents_required":
            line.required = value
        elif name == "ccpipe_offered_load_erlangs":
            line.load = value
        elif name == "ccpipe_oldest_waiting_seconds" and by_key.get(
            ("ccpipe_conversations_waiting", channel, queue, "")
        ):
            line.oldest = value
        elif name == "ccpipe_frt_sla_ratio" and window == "5m":
            tile.within.add(value, by_key.get(("ccpipe_first_responses", channel, queue, window)))
        elif name == "ccpipe_service_level_ratio" and window == "15m":
            tile.service.add(value, by_key.get(("ccpipe_service_level_contacts", channel, queue, window)))
        elif name == "ccpipe_fcr_ratio" and window == "1h":
            tile.fcr.add(value, by_key.get(("ccpipe_resolutions", channel, queue, window)))
        elif name == "ccpipe_sentiment_mean" and window == "15m":
            tile.mood.add(value, by_key.get(("ccpipe_sentiment_samples", channel, queue, window)))
    tiles = []
    for channel, tile in sorted(channels.items()):
        target = targets.get(channel, DEFAULT_TARGET)
        queues = sorted(tile.queues.items())
        p90s = [q.p90 for _, q in queues if q.p90 is not None]
        olds = [q.oldest for _, q in queues if q.oldest is not None]
        p90 = max(p90s) if p90s else None
        staffed = [q.staffed for _, q in queues if q.staffed is not None]
        required = [q.required for _, q in queues if q.required is not None]
        loaded = [(q.load, q.staffed) for _, q in queues if q.load is not None and q.staffed is not None]
        on_duty = sum(n for _, n in loaded)
        short = any(q.short for _, q in queues)
        tiles.append({
            "channel": channel,
            "target_seconds": target,
            "status": status(p90, target),
            "frt_p90_seconds": p90,
            "within_target_ratio": tile.within.mean(),
            "service_level_ratio": tile.service.mean(),
            "waiting": sum(q.waiting for _, q in queues),
            "oldest_waiting_seconds": max(olds) if olds else None,
            "fcr_ratio": tile.fcr.mean(),
            "sentiment_mean": tile.mood.mean(),
            "agents_staffed": sum(staffed) if staffed else None,
            "agents_required": sum(required) if required else None,
            "staffing_status": "idle" if not required else "bad" if short else "good",
            "occupancy_ratio": sum(load for load, _ in loaded) / on_duty if on_duty else None,
            "queues": [
                {"queue": name, "status": status(q.p90, target), "frt_p90_seconds": q.p90,
                 "waiting": q.waiting, "oldest_waiting_seconds": q.oldest,
                 "agents_short": q.required - q.staffed if q.short else 0}  # type: ignore[operator]
                for name, q in queues
            ] if len(queues) > 1 else [],
        })  # fmt: skip
    return {
        "generated_at": now,
        "refresh_seconds": REFRESH_SECONDS,
        "channels": tiles,
        "agents": [
            {
                "queue": queue,
                **{state: by_state.get(state, 0.0) for state in AGENT_STATES},
                "occupancy_ratio": by_state.get("occupancy_ratio"),
            }
            for queue, by_state in sorted(agents.items())
        ],
        "banner": _banner(scrapes, lags, now, events_still_since),
        "workers": [{"url": s.url, "up": s.samples is not None, "error": s.error} for s in scrapes],
    }


def _banner(
    scrapes: list[Scrape], lags: list[float], now: float, events_still_since: float | None
) -> dict[str, str] | None:
    down = [s for s in scrapes if s.samples is None]
    if down:
        return {
            "level": "bad",
            "text": f"{len(down)} of {len(scrapes)} workers not answering ({down[0].url}: {down[0].error}) "
            "— numbers are incomplete",
        }
    if not lags:
        return {"level": "warn", "text": "No events processed yet: waiting for traffic"}
    lag = max(lags)
    if lag > LAG_WARNING_SECONDS:
        quiet = (
            f"; no new events for {_duration(now - events_still_since)}"
            if events_still_since is not None
            else ""
        )
        return {"level": "warn", "text": f"Numbers are {_duration(lag)} behind real time{quiet}"}
    return None


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class WallFeed:
    """Scrapes the workers for each page refresh and remembers when the event count last moved."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self._events: float | None = None
        self._events_changed_at = time.time()

    async def model(self) -> dict[str, Any]:
        import aiohttp  # noqa: PLC0415 - comes with Faust; only the server needs it

        timeout = aiohttp.ClientTimeout(total=2.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            scrapes = await asyncio.gather(*(self._scrape(session, url) for url in self.urls))
        now = time.time()
        events = sum(
            value
            for scrape in scrapes
            for name, _, value in scrape.samples or ()
            if name == "ccpipe_events_total"
        )
        if events != self._events:
            self._events, self._events_changed_at = events, now
        still = self._events_changed_at if now - self._events_changed_at > 60 else None
        return wall_model(list(scrapes), now, still)

    @staticmethod
    async def _scrape(session: Any, url: str) -> Scrape:
        try:
            async with session.get(url) as response:
                response.raise_for_status()
                return Scrape.of(url, await response.text())
        except Exception as exc:  # an unreachable worker is shown on the page, not raised
            return Scrape(url, None, str(exc) or type(exc).__name__)


def serve(urls: list[str], bind: str, port: int, title: str) -> None:
    """Serve the page and its feed until SIGINT/SIGTERM; a busy port names --port."""
    from aiohttp import web  # noqa: PLC0415

    from pipeline.ports import listen  # noqa: PLC0415

    sock = listen(bind, port, "--port")
    feed = WallFeed(urls)
    page = PAGE.read_text().replace("{{TITLE}}", html.escape(title))

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def data(_: web.Request) -> web.Response:
        return web.json_response(await feed.model(), headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/wall.json", data)
    print(f"ccpipe wall: http://{bind}:{port}/ (from {', '.join(urls)})", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)
