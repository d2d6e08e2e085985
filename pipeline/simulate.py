"""Synthetic contact-center traffic: every channel, several queues, a daily shape.

Conversations start as a Poisson process whose rate follows a working day; each one plays
out a realistic script (bot auto-replies, agent replies after a channel-typical delay,
abandons, resolutions, reopens, surveys, repeat contacts on another channel) and its events
are emitted in event-time order, with optional arrival jitter and duplicates so that
consumers see what real producers send. `spike_channel` slows agent replies on one channel
(what the FRT alert must catch).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

from pipeline.calendars import ALWAYS_OPEN, Calendars

CHANNELS: dict[str, float] = {
    "phone": 0.3,
    "chat": 0.3,
    "email": 0.15,
    "sms": 0.1,
    "social": 0.08,
    "whatsapp": 0.07,
}
QUEUES: dict[str, float] = {"billing": 0.35, "tech": 0.35, "sales": 0.2, "default": 0.1}
# Median agent first-response delay per channel, seconds (log-normal around it, sigma 0.6,
# so p90 is about 2.2 times the median: within the default targets on a normal day).
MEDIAN_FRT: dict[str, float] = {
    "phone": 8.0,
    "chat": 25.0,
    "email": 1500.0,
    "sms": 120.0,
    "social": 600.0,
    "whatsapp": 90.0,
}
# Median handling time after the first reply until resolution, per channel (log-normal, sigma 0.5):
# a call is solved in minutes, an email thread takes the longest.
MEDIAN_HANDLING: dict[str, float] = {
    "phone": 240.0,
    "chat": 480.0,
    "email": 1800.0,
    "sms": 900.0,
    "social": 1200.0,
    "whatsapp": 600.0,
}
SHORT_ABANDON_SHARE = 0.3  # abandons that are callers hanging up within seconds
BOT_CHANNELS = frozenset({"chat", "sms", "social", "whatsapp"})
# Relative arrival rate by hour of day (UTC), a working-day shape.
DAY_SHAPE = (0.1, 0.08, 0.06, 0.06, 0.08, 0.15, 0.35, 0.65, 0.9, 1.0, 1.0, 0.95,
             0.85, 0.95, 1.0, 0.95, 0.85, 0.7, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15)  # fmt: skip

OPENERS = ("Hi,", "Hello,", "Hey,", "Good morning,", "", "Excuse me,")
ISSUES = (
    "my invoice {n} is wrong again",
    "I can't log in to my account {n}",
    "the app crashes when I pay",
    "I was charged twice this month, reference {n}",
    "how do I change my plan",
    "my order {n} has not arrived",
    "the internet keeps dropping",
    "I want to cancel my subscription",
    "can you update my address",
    "the refund never came",
)
MOODS = (
    "thanks!",
    "this is ridiculous and I am really angry.",
    "please help.",
    "I'm so frustrated, this is the third time.",
    "great service so far, love it",
    "not happy at all",
    "",
    "appreciate it :)",
    "terrible experience, worst support ever",
)
FOLLOW_UPS = (
    "ok, that worked, thank you so much!",
    "still broken. angry.",
    "fine.",
    "that's not what I asked",
    "perfect, you are the best",
    "I'll try that",
)
BOT_TEXT = "Thanks for reaching out! An agent will be with you shortly."
AGENT_TEXT = (
    "Let me check that for you.",
    "I've fixed it on our side.",
    "Could you confirm your account number?",
)


@dataclass(frozen=True, slots=True)
class SimulationSettings:
    seed: int = 7
    start: float = 1_772_409_600.0  # 2026-03-02T00:00:00Z
    conversations: int = 20_000  # a day's worth at the peak-shaped rate
    customers: int | None = None  # defaults to conversations / 3
    agents: int = 60
    abandon_rate: float = 0.08
    reopen_rate: float = 0.05
    repeat_rate: float = 0.12
    survey_rate: float = 0.3
    duplicate_rate: float = 0.0
    invalid_rate: float = 0.0  # share of extra, broken events (what real producers send too)
    jitter_seconds: float = 0.0  # arrival disorder, always within the allowed lateness
    spike_channel: str | None = None
    spike_factor: float = 8.0
    spike_start: float | None = None  # event time; default: the start
    spike_seconds: float = 900.0
    # Business hours per queue: agents reply only while their queue is open.
    calendars: Calendars = ALWAYS_OPEN


class Simulator:
    """Produces events in arrival order from a seeded script per conversation."""

    def __init__(self, settings: SimulationSettings) -> None:
        self.settings = settings
        self.random = random.Random(settings.seed)
        self.customers = settings.customers or max(1, settings.conversations // 3)
        self.mean_rate = settings.conversations / 86400.0 / (sum(DAY_SHAPE) / 24)
        self._pending: list[tuple[float, int, dict[str, Any]]] = []
        self._sequence = itertools.count()
        self._conversation_numbers = itertools.count()
        self._event_numbers = itertools.count()

    def events(self) -> Iterator[dict[str, Any]]:
        """An endless stream of events in arrival order (event time plus jitter)."""
        clock = self.settings.start
        while True:
            clock += self.random.expovariate(self._rate(clock))
            self._script(clock, self._pick(QUEUES), self._pick(CHANNELS), self._customer())
            while self._pending and self._pending[0][0] <= clock:
                _, _, event = heapq.heappop(self._pending)
                yield event
                if self.settings.duplicate_rate and self.random.random() < self.settings.duplicate_rate:
                    yield event
                if self.settings.invalid_rate and self.random.random() < self.settings.invalid_rate:
                    yield self._broken(event)

    def _broken(self, event: dict[str, Any]) -> dict[str, Any]:
        """A copy of an event with one of the mistakes producers make."""
        broken = dict(event, event_id=f"bad{next(self._event_numbers)}")
        mistake = self.random.randrange(4)
        if mistake == 0:
            broken["channel"] = broken["channel"].upper() + "!"
        elif mistake == 1:
            del broken["customer_id"]
        elif mistake == 2:
            broken["timestamp"] = "yesterday"
        else:
            broken["type"] = "callback_requested"
        return broken

    def _rate(self, t: float) -> float:
        hour = int((t % 86400) // 3600)
        return self.mean_rate * DAY_SHAPE[hour]

    def _pick(self, weights: dict[str, float]) -> str:
        return self.random.choices(list(weights), weights=list(weights.values()))[0]

    def _customer(self) -> str:
        return f"u{self.random.randrange(self.customers)}"

    def _emit(self, t: float, event: dict[str, Any]) -> None:
        event["event_id"] = f"ev{next(self._event_numbers)}"
        event["timestamp"] = round(t, 3)
        arrival = (
            t + self.random.uniform(0, self.settings.jitter_seconds) if self.settings.jitter_seconds else t
        )
        heapq.heappush(self._pending, (arrival, next(self._sequence), event))

    def _open_after(self, queue: str, t: float, seconds: float) -> float:
        """When `queue` has been open `seconds` since t (t + seconds if it never opens)."""
        try:
            return self.settings.calendars.after_open(queue, t, seconds)
        except ValueError:
            return t + seconds

    def _in_spike(self, channel: str, t: float) -> bool:
        s = self.settings
        if s.spike_channel != channel:
            return False
        begin = s.spike_start if s.spike_start is not None else s.start
        return begin <= t < begin + s.spike_seconds

    def _script(self, t0: float, queue: str, channel: str, customer: str) -> None:
        """Queue all events of one conversation (and maybe its repeat contact)."""
        rnd = self.random
        cid = f"c{next(self._conversation_numbers)}"
        base = {"conversation_id": cid, "customer_id": customer, "channel": channel, "queue": queue}

        def emit(t: float, kind: str, **fields: Any) -> None:
            self._emit(t, {"type": kind, **base, **fields})

        def customer_says(t: float, text: str) -> None:
            fields: dict[str, Any] = {"direction": "inbound", "author": "customer"}
            if rnd.random() < 0.15:
                fields["sentiment"] = round(rnd.uniform(-1, 1), 3)
            elif text:
                fields["text"] = text
            emit(t, "message", **fields)

        emit(t0, "conversation_started")
        t = t0 + rnd.uniform(0.5, 5)
        issue = rnd.choice(ISSUES).format(n=rnd.randrange(10_000, 100_000))  # real texts rarely repeat
        customer_says(t, " ".join(p for p in (rnd.choice(OPENERS), issue, rnd.choice(MOODS)) if p))
        if channel in BOT_CHANNELS:
            emit(
                t + rnd.uniform(0.5, 2),
                "message",
                direction="outbound",
                author="bot",
                text=BOT_TEXT,
            )
        frt = rnd.lognormvariate(math.log(MEDIAN_FRT[channel]), 0.6)
        if self._in_spike(channel, t0):
            frt *= self.settings.spike_factor
        if rnd.random() < self.settings.abandon_rate:
            short = rnd.random() < SHORT_ABANDON_SHARE
            emit(
                t0 + (rnd.uniform(0.5, 4.5) if short else frt * rnd.uniform(0.3, 0.9)),
                "conversation_abandoned",
            )
            return
        # The reply comes after `frt` seconds of the queue's open time (its calendar's hours).
        frt = self._open_after(queue, t0, frt) - t0
        agent = f"a{rnd.randrange(self.settings.agents)}"

        def agent_says(t: float) -> None:
            emit(
                t,
                "message",
                direction="outbound",
                author="agent",
                agent_id=agent,
                text=rnd.choice(AGENT_TEXT),
            )

        emit(t0 + frt * 0.8, "agent_assigned", agent_id=agent)
        t = t0 + frt
        for _ in range(rnd.randint(1, 3)):
            agent_says(t)
            t += rnd.uniform(5, 0.2 * MEDIAN_FRT[channel] + 20)
            customer_says(t, rnd.choice(FOLLOW_UPS))
            t += rnd.uniform(5, 0.2 * MEDIAN_FRT[channel] + 20)
        t += rnd.lognormvariate(math.log(MEDIAN_HANDLING[channel]), 0.5)
        emit(t, "conversation_resolved", agent_id=agent)
        if rnd.random() < self.settings.reopen_rate:
            t += rnd.uniform(60, 1800)
            emit(t, "conversation_reopened")
            customer_says(t + 1, rnd.choice(FOLLOW_UPS))
            t += rnd.uniform(30, 600)
            agent_says(t)
            t += rnd.uniform(10, 300)
            emit(t, "conversation_resolved", agent_id=agent)
        if rnd.random() < self.settings.survey_rate:
            answers = {"csat": rnd.choices(range(1, 6), weights=(1, 1, 2, 4, 5))[0]}
            if rnd.random() < 0.7:
                answers["nps"] = rnd.choices(range(11), weights=(1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5))[0]
            if rnd.random() < 0.5:
                answers["ces"] = rnd.randint(1, 7)
            emit(t + rnd.uniform(30, 600), "survey", **answers)
        if rnd.random() < self.settings.repeat_rate:
            later = t + rnd.uniform(300, 3 * 86400)
            self._script(later, queue, self._pick(CHANNELS), customer)


def write_events(settings: SimulationSettings, out: IO[bytes], limit: int) -> int:
    """Write `limit` simulated events as JSONL; returns how many were written."""
    written = 0
    for event in itertools.islice(Simulator(settings).events(), limit):
        out.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        written += 1
    return written
