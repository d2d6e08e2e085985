"""One conversation's facts (contract §2), kept so that arrival order never matters.

Every fact is a function of the set of events seen, not of their order: start is a minimum,
the first response the earliest agent reply at or after start, resolutions and reopens are
sorted lists. `desired_samples()` states what the conversation should contribute to windows
right now; the engine diffs that against what it already placed (`placed`), which is how a
late customer message that moves the start also moves the FRT sample.
"""

from __future__ import annotations

import bisect
from typing import Any

from pipeline.engine.pickling import by_attributes
from pipeline.engine.windows import ABANDON, FRT, RESOLUTION, RESOLUTION_TIME, START, Key
from pipeline.events import Event
from pipeline.settings import EngineSettings

# A derived sample: its time and value, by a key naming which one it is.
Sample = tuple[int, float, Any]  # (kind, time, value)


class Conversation:
    """Mutable state of one conversation; small, because an open one lives in memory."""

    __slots__ = (
        "abandon_at",
        "agent_replies",
        "ces",
        "conversation_id",
        "csat",
        "customer_id",
        "fcr_blocked",
        "first_agent_id",
        "first_response",
        "frt_observed",
        "key",
        "key_time",
        "last_seen",
        "messages_inbound",
        "messages_outbound",
        "nps",
        "placed",
        "recent",
        "reopens",
        "repeat_contact",
        "resolutions",
        "sentiment_first",
        "sentiment_last",
        "sentiment_n",
        "sentiment_sum",
        "start",
    )

    def __init__(self, conversation_id: str, customer_id: str, key: Key, t: float) -> None:
        # The customer is fixed by the first event to arrive; the key by the earliest in time.
        self.conversation_id = conversation_id
        self.customer_id = customer_id
        self.key = key
        self.key_time = t
        self.last_seen = t
        self.start: float | None = None
        # (time, agent_id) of the earliest agent reply at or after start.
        self.first_response: tuple[float, str] | None = None
        self.first_agent_id: str | None = None
        self.frt_observed = False  # its FRT has been reported once, for the histogram
        # Agent replies before the current start (all of them while start is unknown): one of
        # them becomes the first response if a late customer message moves the start earlier.
        self.agent_replies: list[tuple[float, str]] | None = None
        self.messages_inbound = 0
        self.messages_outbound = 0
        self.abandon_at: float | None = None
        self.resolutions: list[float] = []
        self.reopens: list[float] = []
        self.repeat_contact = False
        # True when a later conversation of the same customer started within H of a resolution.
        self.fcr_blocked = False
        self.sentiment_n = 0
        self.sentiment_sum = 0.0
        self.sentiment_first: tuple[float, str, float] | None = None
        self.sentiment_last: tuple[float, str, float] | None = None
        # Latest survey answer per question: (time, event_id, value).
        self.csat: tuple[float, str, int] | None = None
        self.nps: tuple[float, str, int] | None = None
        self.ces: tuple[float, str, int] | None = None
        # Derived samples as placed in windows, and per-message samples still in open windows.
        self.placed: dict[Any, Sample] = {}
        self.recent: list[tuple[int, float, Any]] = []

    def __reduce__(self) -> tuple[Any, ...]:
        return by_attributes(self, (self.conversation_id, self.customer_id, self.key, self.key_time))

    # --- facts -----------------------------------------------------------------------------

    def observe(self, event: Event) -> bool:
        """Note an event's time; True when it is now the earliest and so names the key."""
        t = event.timestamp
        self.last_seen = max(self.last_seen, t)
        if t < self.key_time:
            self.key_time = t
            new_key = (event.channel, event.queue)
            if new_key != self.key:
                self.key = new_key
                return True
        return False

    def add_start_candidate(self, t: float) -> bool:
        """A `conversation_started` or inbound customer message; True when start moved."""
        if self.start is not None and t >= self.start:
            return False
        self.start = t
        replies = self.agent_replies
        if replies:
            # Replies at or after the new start are eligible now; the earliest is a candidate.
            cut = bisect.bisect_left(replies, (t, ""))
            if cut < len(replies):
                self._offer_first_response(replies[cut])
                del replies[cut:]
        return True

    def add_agent_reply(self, t: float, agent_id: str) -> None:
        reply = (t, agent_id)
        if self.start is not None and t >= self.start:
            self._offer_first_response(reply)
        else:
            if self.agent_replies is None:
                self.agent_replies = []
            bisect.insort(self.agent_replies, reply)

    def _offer_first_response(self, reply: tuple[float, str]) -> None:
        if self.first_response is None or reply < self.first_response:
            self.first_response = reply
            self.first_agent_id = reply[1] or None

    def add_abandon(self, t: float) -> None:
        if self.abandon_at is None or t < self.abandon_at:
            self.abandon_at = t

    def add_resolution(self, t: float) -> None:
        bisect.insort(self.resolutions, t)

    def add_reopen(self, t: float) -> None:
        bisect.insort(self.reopens, t)

    def add_sentiment(self, t: float, event_id: str, score: float) -> None:
        self.sentiment_n += 1
        self.sentiment_sum += score
        sample = (t, event_id, score)
        if self.sentiment_first is None or sample < self.sentiment_first:
            self.sentiment_first = sample
        if self.sentiment_last is None or sample > self.sentiment_last:
            self.sentiment_last = sample

    def add_survey(self, event: Event) -> None:
        t, event_id = event.timestamp, event.event_id
        if event.csat is not None and (self.csat is None or (t, event_id) > self.csat[:2]):
            self.csat = (t, event_id, event.csat)
        if event.nps is not None and (self.nps is None or (t, event_id) > self.nps[:2]):
            self.nps = (t, event_id, event.nps)
        if event.ces is not None and (self.ces is None or (t, event_id) > self.ces[:2]):
            self.ces = (t, event_id, event.ces)

    @property
    def abandoned(self) -> bool:
        """Abandoned before any first response (a response at the same instant wins)."""
        if self.abandon_at is None:
            return False
        return self.first_response is None or self.abandon_at < self.first_response[0]

    @property
    def resolved_at(self) -> float | None:
        return self.resolutions[-1] if self.resolutions else None

    @property
    def reopened(self) -> bool:
        """A reopen after the first resolution."""
        return bool(self.resolutions) and bool(self.reopens) and self.reopens[-1] > self.resolutions[0]

    def reopened_before(self, t: float) -> bool:
        """Reopened (after a resolution) strictly before `t`: the real-time FCR view at `t`."""
        if not self.resolutions:
            return False
        first = self.resolutions[0]
        return any(first < x < t for x in self.reopens)

    @property
    def waiting(self) -> bool:
        """Started, no first response yet, not abandoned and not resolved."""
        return (
            self.start is not None
            and self.first_response is None
            and self.abandon_at is None
            and not self.resolutions
        )

    def fcr(self) -> bool:
        return bool(self.resolutions) and not self.reopened and not self.fcr_blocked

    # --- window samples --------------------------------------------------------------------

    def desired_samples(self, settings: EngineSettings) -> dict[Any, tuple[int, float, Any]]:
        """What this conversation should contribute to windows: key → (kind, time, value)."""
        wanted: dict[Any, tuple[int, float, Any]] = {}
        start = self.start
        if start is not None:
            wanted[START] = (START, start, None)
            if self.first_response is not None:
                at = self.first_response[0]
                wanted[FRT] = (FRT, at, (at - start, self.business_seconds(settings, at)))
            resolution = self.resolution_seconds()
            if resolution is not None:
                wanted[RESOLUTION_TIME] = (RESOLUTION_TIME, self.resolutions[-1], resolution)
        if self.abandoned and self.abandon_at is not None:
            wanted[ABANDON] = (ABANDON, self.abandon_at, self.short_abandon(settings))
        previous = None
        repeat = self.repeat_contact
        for index, r in enumerate(self.resolutions):
            # Equal resolution times are told apart by their rank among equals.
            rank = index - bisect.bisect_left(self.resolutions, r) if r == previous else 0
            wanted[(RESOLUTION, r, rank)] = (
                RESOLUTION,
                r,
                not repeat and not self.reopened_before(r),
            )
            previous = r
        return wanted

    # --- output ----------------------------------------------------------------------------

    def business_seconds(self, settings: EngineSettings, until: float) -> float:
        """Open time of this conversation's queue calendar from its start to `until` (§6.3)."""
        assert self.start is not None
        return settings.calendars.business_seconds(self.key[1], self.start, until)

    def short_abandon(self, settings: EngineSettings) -> bool:
        """Abandoned less than S seconds after its start (§6.2; S = 0: never)."""
        threshold = settings.short_abandon_seconds
        return (
            threshold > 0
            and self.abandon_at is not None
            and self.start is not None
            and self.abandon_at - self.start < threshold
        )

    def resolution_seconds(self) -> float | None:
        """Latest resolution minus start (§6.1); None without either, or when resolved before start."""
        if self.start is None or not self.resolutions or self.resolutions[-1] < self.start:
            return None
        return self.resolutions[-1] - self.start

    def record(self, newest: float, settings: EngineSettings) -> dict[str, Any]:
        """The contract's conversation record; times are epoch seconds (the shells format them)."""
        fcr_horizon = settings.fcr_horizon_seconds
        resolved_at = self.resolved_at
        first_response_at = self.first_response[0] if self.first_response else None
        return {
            "conversation_id": self.conversation_id,
            "customer_id": self.customer_id,
            "channel": self.key[0],
            "queue": self.key[1],
            "started_at": self.start,
            "first_response_at": first_response_at,
            "frt_seconds": (
                first_response_at - self.start
                if first_response_at is not None and self.start is not None
                else None
            ),
            "first_agent_id": self.first_agent_id,
            "messages_inbound": self.messages_inbound,
            "messages_outbound": self.messages_outbound,
            "abandoned": self.abandoned,
            "resolved_at": resolved_at,
            "reopened": self.reopened,
            "repeat_contact": self.repeat_contact,
            "fcr": self.fcr(),
            "fcr_final": resolved_at is not None and newest >= resolved_at + fcr_horizon,
            "sentiment_mean": self.sentiment_sum / self.sentiment_n if self.sentiment_n else None,
            "sentiment_first": self.sentiment_first[2] if self.sentiment_first else None,
            "sentiment_last": self.sentiment_last[2] if self.sentiment_last else None,
            "csat": self.csat[2] if self.csat else None,
            "nps": self.nps[2] if self.nps else None,
            "ces": self.ces[2] if self.ces else None,
            "resolution_seconds": self.resolution_seconds(),
            "frt_business_seconds": (
                self.business_seconds(settings, first_response_at)
                if first_response_at is not None and self.start is not None
                else None
            ),
        }


def covers(resolutions: list[float], start: float, horizon: float) -> bool:
    """True when `start` lies within `horizon` after one of the resolutions."""
    index = bisect.bisect_right(resolutions, start)
    return index > 0 and start - resolutions[index - 1] <= horizon
