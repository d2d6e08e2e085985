"""Synthetic contact-center traffic: every channel, several queues, a daily shape.

Conversations start as a Poisson process whose rate follows a working day; each one plays
out a realistic script (bot auto-replies, agent replies after a channel-typical delay,
abandons, resolutions, reopens, surveys, repeat contacts on another channel) and its events
are emitted in event-time order, with optional arrival jitter and duplicates so that
consumers see what real producers send. Agents (pipeline/workforce.py) are rostered per
(channel, queue) and handle one contact at a time: a customer waits for a free agent of the
queue, and callers and chatters hang up when the wait outlasts their patience.
`spike_channel` pulls most of one channel's agents into a meeting (what the FRT and staffing
alerts must catch).
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
from pipeline.settings import DEFAULT_SLA_TARGET, DEFAULT_SLA_TARGETS
from pipeline.workforce import HOUR, Agent, Spike, Workforce

CHANNELS: dict[str, float] = {
    "phone": 0.3,
    "chat": 0.3,
    "email": 0.15,
    "sms": 0.1,
    "social": 0.08,
    "whatsapp": 0.07,
}
QUEUES: dict[str, float] = {"billing": 0.35, "tech": 0.35, "sales": 0.2, "default": 0.1}
# Median agent first-response delay per channel when an agent is free, seconds (log-normal around
# it, sigma 0.6, so p90 is about 2.2 times the median: two thirds of the default targets, which
# leaves room for the waits of a normal day).
MEDIAN_FRT: dict[str, float] = {
    "phone": 6.0,
    "chat": 18.0,
    "email": 600.0,
    "sms": 120.0,
    "social": 600.0,
    "whatsapp": 90.0,
}
# Median handling time after the first reply until resolution, per channel (log-normal, sigma 0.5):
# a call is solved in minutes, email, SMS and social threads take the longest.
MEDIAN_HANDLING: dict[str, float] = {
    "phone": 240.0,
    "chat": 480.0,
    "email": 900.0,
    "sms": 900.0,
    "social": 900.0,
    "whatsapp": 600.0,
}
# A share of the message channels' questions is solved by the first answer, closed soon after.
ONE_TOUCH_SHARE = 0.3
ONE_TOUCH_HANDLING = 120.0
# Median patience of callers and chatters waiting for an agent (log-normal, sigma 0.7); messages
# on the other channels wait (at most MAX_WAIT).
PATIENCE: dict[str, float] = {"phone": 90.0, "chat": 240.0}
MAX_WAIT = 2 * 86400.0
SYNCHRONOUS = frozenset(PATIENCE)  # the agent stays on contact until the conversation is resolved
WRAP_UP: dict[str, tuple[float, float]] = {"phone": (20.0, 90.0), "chat": (10.0, 60.0)}
WRAP_UP_OTHER = (10.0, 40.0)
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
    abandon_rate: float = 0.08
    reopen_rate: float = 0.05
    repeat_rate: float = 0.12
    survey_rate: float = 0.3
    duplicate_rate: float = 0.0
    invalid_rate: float = 0.0  # share of extra, broken events (what real producers send too)
    jitter_seconds: float = 0.0  # arrival disorder, always within the allowed lateness
    spike_channel: str | None = None
    spike_factor: float = 8.0  # the channel keeps 1 / factor of its agents during the spike
    spike_start: float | None = None  # event time; default: the start
    spike_seconds: float = 900.0
    # Business hours per queue: agents reply only while their queue is open.
    calendars: Calendars = ALWAYS_OPEN
    # Seconds simulated before `start` and not sent: the day starts mid-flow, with agents busy
    # with conversations of the warm-up (whose events are never sent) and customers waiting for
    # them. Each agent's state at `start` is sent at `start`.
    warm_up: float = 0.0


def mean_handle(channel: str) -> float:
    """The forecast handle time (on contact and wrap-up) of a contact on `channel`, from the script
    below: the agent's first reply (a fifth of the reply delay), about two rounds of replies,
    then the rest of the call or chat (synchronous channels) or a last note, and the wrap-up."""
    reply = MEDIAN_FRT[channel]
    rounds = 2.0 if channel in SYNCHRONOUS else ONE_TOUCH_SHARE + 2 * (1 - ONE_TOUCH_SHARE)
    exchange = 0.2 * reply * math.exp(0.6**2 / 2) + rounds * (25 + 0.2 * reply)
    rest = MEDIAN_HANDLING[channel] * math.exp(0.5**2 / 2) if channel in SYNCHRONOUS else 75.0
    return exchange + rest + sum(WRAP_UP.get(channel, WRAP_UP_OTHER)) / 2


class Simulator:
    """Produces events in arrival order from a seeded script per conversation."""

    def __init__(self, settings: SimulationSettings) -> None:
        self.settings = settings
        self.random = random.Random(settings.seed)
        self.customers = settings.customers or max(1, settings.conversations // 3)
        self.mean_rate = settings.conversations / 86400.0 / (sum(DAY_SHAPE) / 24)
        self._pending: list[tuple[float, int, dict[str, Any]]] = []
        self._cancelled: set[int] = set()
        self._repeats: list[tuple[float, int, str, str, str]] = []  # (start, order, queue, channel, customer)
        self._before_start: set[str] = set()  # conversations of the warm-up, never sent
        self._sequence = itertools.count()
        self._conversation_numbers = itertools.count()
        self._event_numbers = itertools.count()
        begin = settings.spike_start if settings.spike_start is not None else settings.start
        self.workforce = Workforce(
            tuple(QUEUES),
            arrivals=self._offered_rate,
            handle={channel: mean_handle(channel) for channel in CHANNELS},
            targets=lambda channel: DEFAULT_SLA_TARGETS.get(channel, DEFAULT_SLA_TARGET),
            spike=Spike(
                settings.spike_channel, begin, begin + settings.spike_seconds, keep=1 / settings.spike_factor
            ),
            emit=self._emit,
            cancel=self._cancelled.add,
        )

    def events(self) -> Iterator[dict[str, Any]]:
        """An endless stream of events in arrival order (event time plus jitter), from `start`:
        the events of conversations that started before it are not sent, and each agent's
        state at `start` is sent at `start` (a warm-up leaves agents busy with them)."""
        visible = self.settings.start
        held: dict[str, dict[str, Any]] = {}  # each agent's latest state before `start`
        for arrival, event in self._arrivals():
            agent = event["type"] == "agent_state"
            if event["timestamp"] < visible:
                if agent:
                    held[event["agent_id"]] = event
                continue
            if not agent and event["conversation_id"] in self._before_start:
                continue
            if held and arrival >= visible + self.settings.jitter_seconds:  # nothing older can come
                for state in held.values():
                    if state["state"] != "offline":
                        yield state | {"event_id": f"ev{next(self._event_numbers)}", "timestamp": visible}
                held.clear()
            yield event
            if self.settings.duplicate_rate and self.random.random() < self.settings.duplicate_rate:
                yield event
            if (
                self.settings.invalid_rate
                and "customer_id" in event
                and self.random.random() < self.settings.invalid_rate
            ):
                yield self._broken(event)

    def _arrivals(self) -> Iterator[tuple[float, dict[str, Any]]]:
        """Every event with its arrival time, in arrival order, from `start - warm_up`."""
        clock = self.settings.start - self.settings.warm_up
        while True:
            clock += self.random.expovariate(self._rate(clock))
            while self._repeats and self._repeats[0][0] <= clock:
                start, _, queue, channel, customer = heapq.heappop(self._repeats)
                self.workforce.plan_until(start)
                self._script(start, queue, channel, customer)
            self.workforce.plan_until(clock)
            self._script(clock, self._pick(QUEUES), self._pick(CHANNELS), self._customer())
            while self._pending and self._pending[0][0] <= clock:
                arrival, sequence, event = heapq.heappop(self._pending)
                if sequence in self._cancelled:
                    self._cancelled.discard(sequence)
                    continue
                yield arrival, event

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

    def _offered_rate(self, channel: str, queue: str, hour: int) -> float:
        """Forecast contacts per second offered to (channel, queue) in `hour`, repeat contacts
        included, while the queue is open (a planner forecasts offered contacts, abandons too)."""
        s = self.settings
        h0 = hour * HOUR
        open_share = s.calendars.business_seconds(queue, h0, h0 + HOUR) / HOUR
        share = CHANNELS[channel] * QUEUES[queue] / (1 - s.repeat_rate)
        return self._rate(h0) * share * open_share

    def _pick(self, weights: dict[str, float]) -> str:
        return self.random.choices(list(weights), weights=list(weights.values()))[0]

    def _customer(self) -> str:
        return f"u{self.random.randrange(self.customers)}"

    def _emit(self, t: float, event: dict[str, Any]) -> int:
        """Queue an event for its arrival; returns its sequence number (to cancel it)."""
        event["event_id"] = f"ev{next(self._event_numbers)}"
        event["timestamp"] = round(t, 3)
        arrival = (
            t + self.random.uniform(0, self.settings.jitter_seconds) if self.settings.jitter_seconds else t
        )
        sequence = next(self._sequence)
        heapq.heappush(self._pending, (arrival, sequence, event))
        return sequence

    def _open_after(self, queue: str, t: float, seconds: float) -> float:
        """When `queue` has been open `seconds` since t (t + seconds if it never opens)."""
        try:
            return self.settings.calendars.after_open(queue, t, seconds)
        except ValueError:
            return t + seconds

    def _script(self, t0: float, queue: str, channel: str, customer: str) -> None:
        """Queue all events of one conversation (and maybe its repeat contact)."""
        rnd = self.random
        cid = f"c{next(self._conversation_numbers)}"
        if t0 < self.settings.start:
            self._before_start.add(cid)
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
        if rnd.random() < self.settings.abandon_rate:
            short = rnd.random() < SHORT_ABANDON_SHARE
            emit(
                t0 + (rnd.uniform(0.5, 4.5) if short else frt * rnd.uniform(0.3, 0.9)),
                "conversation_abandoned",
            )
            return
        # An agent of the queue takes it after 4/5 of `frt` of the queue's open time (its
        # calendar's hours), or later when every agent is busy; a caller may hang up first.
        patience = (
            rnd.lognormvariate(math.log(PATIENCE[channel]), 0.7) if channel in SYNCHRONOUS else MAX_WAIT
        )
        claim = self.workforce.claim(channel, queue, self._open_after(queue, t0, frt * 0.8), t0 + patience)
        if claim is None:
            emit(t0 + patience, "conversation_abandoned")
            return
        agent, start = claim
        aid = agent.agent_id

        def agent_says(t: float) -> None:
            emit(
                t,
                "message",
                direction="outbound",
                author="agent",
                agent_id=aid,
                text=rnd.choice(AGENT_TEXT),
            )

        emit(start, "agent_assigned", agent_id=aid)
        t = start + frt * 0.2
        one_touch = channel not in SYNCHRONOUS and rnd.random() < ONE_TOUCH_SHARE
        for _ in range(1 if one_touch else rnd.randint(1, 3)):
            agent_says(t)
            t += rnd.uniform(5, 0.2 * MEDIAN_FRT[channel] + 20)
            customer_says(t, rnd.choice(FOLLOW_UPS))
            t += rnd.uniform(5, 0.2 * MEDIAN_FRT[channel] + 20)
        handled = t + rnd.uniform(30, 120)  # a last note on a message channel, then it waits for the customer
        t += rnd.lognormvariate(math.log(ONE_TOUCH_HANDLING if one_touch else MEDIAN_HANDLING[channel]), 0.5)
        if channel in SYNCHRONOUS:
            handled = t
        self._handle(agent, start, handled, {"conversation_id": cid, "channel": channel, "queue": queue})
        emit(t, "conversation_resolved", agent_id=aid)
        if rnd.random() < self.settings.reopen_rate:
            t += rnd.uniform(60, 1800)
            emit(t, "conversation_reopened")
            customer_says(t + 1, rnd.choice(FOLLOW_UPS))
            t += rnd.uniform(30, 600)
            agent_says(t)
            t += rnd.uniform(10, 300)
            emit(t, "conversation_resolved", agent_id=aid)
        if rnd.random() < self.settings.survey_rate:
            answers = {"csat": rnd.choices(range(1, 6), weights=(1, 1, 2, 4, 5))[0]}
            if rnd.random() < 0.7:
                answers["nps"] = rnd.choices(range(11), weights=(1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5))[0]
            if rnd.random() < 0.5:
                answers["ces"] = rnd.randint(1, 7)
            emit(t + rnd.uniform(30, 600), "survey", **answers)
        if rnd.random() < self.settings.repeat_rate:
            # Scripted when its time comes, so agents are claimed in the order contacts arrive.
            later = t + rnd.uniform(300, 3 * 86400)
            repeat = (later, next(self._sequence), queue, self._pick(CHANNELS), customer)
            heapq.heappush(self._repeats, repeat)

    def _handle(self, agent: Agent, start: float, handled: float, contact: dict[str, str]) -> None:
        low, high = WRAP_UP.get(contact["channel"], WRAP_UP_OTHER)
        self.workforce.handle_contact(agent, start, handled, self.random.uniform(low, high), contact)


def write_events(settings: SimulationSettings, out: IO[bytes], limit: int) -> int:
    """Write `limit` simulated events as JSONL; returns how many were written."""
    written = 0
    for event in itertools.islice(Simulator(settings).events(), limit):
        out.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        written += 1
    return written
