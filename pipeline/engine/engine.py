"""The metric engine: a pure function of (state, batch of events) → facts and window rows.

No I/O here. `ccpipe compute` and the streaming agents both feed batches to `Engine.process`
and move what it returns (changed conversation records, window rows, invalid events) to
their outputs. Results do not depend on how the input is cut into batches.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.engine.agents import AgentRow, Agents, AgentSummary, AgentWindow, agent_rolling
from pipeline.engine.conversations import Conversation, covers
from pipeline.engine.dedup import EventIdSet
from pipeline.engine.pickling import by_attributes, by_fields
from pipeline.engine.sentiment import message_score
from pipeline.engine.waiting import WaitingSet
from pipeline.engine.windows import FRT, SENTIMENT, SURVEY, Key, WindowRow, WindowStore, rolling_views
from pipeline.events import FUTURE_TIMESTAMP, Event, InvalidEvent
from pipeline.settings import ROLLING_SPANS, EngineSettings

# The shape of an engine's state; a checkpoint of another shape is not restored (bump it when
# the engine's, a conversation's or a window's attributes change).
STATE_FORMAT = 8

# Deadlines kept in the timer heap.
_FCR_FINAL, _EVICT = 0, 1
# Idle conversations are looked for this many times per idle timeout.
_SWEEPS_PER_IDLE_TIMEOUT = 16


@dataclass(slots=True)
class Batch:
    """What one call to `Engine.process` changed."""

    conversations: list[dict[str, Any]] = field(default_factory=list)
    windows: list[WindowRow] = field(default_factory=list)
    invalid: list[InvalidEvent] = field(default_factory=list)
    evicted: int = 0
    valid: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, channel)
    duplicates: int = 0
    late: int = 0
    # Each conversation's first FRT sample, once: what a histogram of FRT observes.
    first_responses: list[tuple[Key, float]] = field(default_factory=list)
    # Open windows changed but whose provisional rows were held back (see `process`).
    held: list[tuple[float, Key]] = field(default_factory=list)
    # Contract §7.2: agent window rows (final ones, and provisional ones like `windows`), and
    # the starts of open agent windows changed but held back.
    agent_windows: list[AgentRow] = field(default_factory=list)
    agents_held: list[float] = field(default_factory=list)

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)


@dataclass(slots=True)
class EngineStats:
    """Running totals, for counters and the end-of-run summary."""

    valid: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, channel)
    invalid: Counter[str] = field(default_factory=Counter)  # reason
    duplicates: int = 0
    late: int = 0
    late_samples: int = 0  # window samples refused because their window was already final

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)


class Engine:
    """Conversation state, windows, de-duplication and the event-time watermark."""

    __slots__ = ("_batch", "_changed", "_next_sweep", "_not_after", "_sequence", "_timers", "agents",
                 "closed", "conversations", "customers", "event_ids", "newest", "settings", "state_format",
                 "stats", "waiting_by_key", "windows")  # fmt: skip

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        s = self.settings
        self.windows = WindowStore(s.window_seconds, s.sla_target, max(ROLLING_SPANS.values()))
        self.agents = Agents(s.window_seconds, s.agent_stale_seconds, max(ROLLING_SPANS.values()))
        self.conversations: dict[str, Conversation] = {}
        self.customers: dict[str, list[Conversation]] = {}
        self.waiting_by_key: dict[Key, WaitingSet] = {}
        self.event_ids = EventIdSet(s.dedup_horizon_seconds)
        # Conversations that left memory (final, or idle): a later event of one must not start a
        # new conversation of the same id whose record would replace the real one. Remembered
        # for the de-duplication horizon, like event ids.
        self.closed = EventIdSet(s.dedup_horizon_seconds)
        self.stats = EngineStats()
        self.newest: float | None = None
        self._timers: list[tuple[float, int, int, str]] = []
        self._sequence = itertools.count()
        self._next_sweep = -math.inf
        self._changed: dict[str, Conversation] = {}
        self._batch = Batch()
        self._not_after = math.inf
        self.state_format = STATE_FORMAT

    def __reduce__(self) -> tuple[Any, ...]:
        return by_attributes(self, (self.settings,))

    def resumes(self, settings: EngineSettings) -> bool:
        """True when this (restored) state was made by this engine version with `settings`:
        otherwise its windows and facts would follow other rules, and it must be rebuilt."""
        try:
            return getattr(self, "state_format", None) == STATE_FORMAT and self.settings == settings
        except AttributeError:  # settings pickled by an older version lack today's fields
            return False

    # --- input -----------------------------------------------------------------------------

    def process(
        self, items: Iterable[Event | InvalidEvent], wall_clock: float | None = None, window_rows: bool = True
    ) -> Batch:
        """Apply a batch of decoded events in order; return what changed. Streaming passes
        the `wall_clock`: an event more than the future tolerance ahead of it is refused even
        when nothing was seen before it (offline there is no such bound: the first event of
        a partition sets the reference), so one far-future event cannot poison a partition.
        With `window_rows` false, provisional rows of open windows are held back (their
        windows listed in `held`) until a later batch or `window_rows()` asks for them; final
        rows always come with the batch that sealed their window."""
        self._not_after = wall_clock + self.settings.future_tolerance_seconds if wall_clock else math.inf
        for item in items:
            if isinstance(item, Event):
                self._event(item)
            else:
                self._reject(item)
        return self._drain(window_rows)

    def window_rows(self) -> tuple[list[WindowRow], list[AgentRow]]:
        """Provisional rows of the open windows (and agent windows) changed since rows were last taken."""
        self.settle()
        return self.windows.changed_rows(), self.agents.changed_rows()

    def flush(self) -> Batch:
        """End of input: seal every window and report every conversation still in memory."""
        self._refresh_agents(settle=True)
        self._batch.windows.extend(self.windows.advance(math.inf))
        self._batch.agent_windows.extend(self.agents.seal(math.inf))
        self._changed.update(self.conversations)
        return self._drain()

    def _reject(self, invalid: InvalidEvent) -> None:
        self.stats.invalid[invalid.reason] += 1
        self._batch.invalid.append(invalid)

    def _event(self, event: Event) -> None:
        s = self.settings
        t = event.timestamp
        newest = self.newest
        after_newest = newest + s.future_tolerance_seconds if newest is not None else math.inf
        if t > after_newest or t > self._not_after:
            limit = s.future_tolerance_seconds
            if t > after_newest:
                ahead = f"{t - after_newest + limit:.0f} s ahead of the newest event"
            else:
                ahead = f"{t - self._not_after + limit:.0f} s ahead of the wall clock"
            detail = f"timestamp is {ahead} (limit {limit:.0f} s)"
            self._reject(InvalidEvent(FUTURE_TIMESTAMP, detail, event.raw, event.origin))
            return
        if not self.event_ids.add(event.event_id, t):
            self.stats.duplicates += 1
            self._batch.duplicates += 1
            return
        agent = event.type == "agent_state"  # no event of a conversation (§7.1)
        closed = not agent and event.conversation_id in self.closed
        if closed or (newest is not None and t < newest - s.allowed_lateness_seconds):
            self.stats.late += 1
            self._batch.late += 1
        self.stats.valid[(event.type, event.channel)] += 1
        self._batch.valid[(event.type, event.channel)] += 1
        if agent:
            self.agents.observe(event)
        elif not closed:  # a closed conversation's facts are final (its event is still stored raw)
            self._apply(event)
        if newest is None or t > newest:
            self.newest = t
            self._advance(t)

    def _apply(self, event: Event) -> None:
        conv = self.conversations.get(event.conversation_id)
        if conv is None:
            conv = self.conversations[event.conversation_id] = Conversation(
                event.conversation_id, event.customer_id, (event.channel, event.queue), event.timestamp
            )
            self.customers.setdefault(conv.customer_id, []).append(conv)
        old_key = conv.key
        if conv.observe(event):
            self._move(conv, old_key)
        old_start = conv.start
        t = event.timestamp
        kind = event.type
        if kind == "message":
            if event.direction == "inbound":
                conv.messages_inbound += 1
                if event.author == "customer":
                    conv.add_start_candidate(t)
                    score = message_score(event.sentiment, event.text)
                    if score is not None:
                        conv.add_sentiment(t, event.event_id, score)
                        self._place_message_sample(conv, t, SENTIMENT, score)
            else:
                conv.messages_outbound += 1
                if event.author == "agent":
                    conv.add_agent_reply(t, event.agent_id or "")
        elif kind == "conversation_started":
            conv.add_start_candidate(t)
        elif kind == "conversation_resolved":
            conv.add_resolution(t)
            self._resolution_added(conv)
        elif kind == "conversation_reopened":
            conv.add_reopen(t)
        elif kind == "conversation_abandoned":
            conv.add_abandon(t)
        elif kind == "survey":
            conv.add_survey(event)
            self._place_message_sample(conv, t, SURVEY, (event.csat, event.nps, event.ces))
        if conv.start != old_start:
            self._start_moved(conv, old_start)
        self._refresh_samples(conv)
        self._refresh_waiting(conv, old_key)
        self._changed[conv.conversation_id] = conv

    # --- repeat contacts (across a customer's conversations, any channel) ------------------

    def _start_moved(self, conv: Conversation, old_start: float | None) -> None:
        horizon = self.settings.fcr_horizon_seconds
        start = conv.start
        assert start is not None
        others = [c for c in self.customers[conv.customer_id] if c is not conv]
        repeat = any(covers(c.resolutions, start, horizon) for c in others)
        self._set_repeat(conv, repeat)
        for earlier in others:
            if covers(earlier.resolutions, start, horizon) or (
                old_start is not None and covers(earlier.resolutions, old_start, horizon)
            ):
                self._refresh_fcr_blocked(earlier)

    def _resolution_added(self, conv: Conversation) -> None:
        horizon = self.settings.fcr_horizon_seconds
        for later in self.customers[conv.customer_id]:
            if (
                later is not conv
                and later.start is not None
                and covers(conv.resolutions, later.start, horizon)
            ):
                self._set_repeat(later, True)
        self._refresh_fcr_blocked(conv)
        resolved_at = conv.resolutions[-1]
        deadline = resolved_at + horizon
        self._push_timer(deadline, _FCR_FINAL, conv.conversation_id)
        self._push_timer(deadline + self.settings.allowed_lateness_seconds, _EVICT, conv.conversation_id)

    def _refresh_fcr_blocked(self, conv: Conversation) -> None:
        horizon = self.settings.fcr_horizon_seconds
        blocked = any(
            c is not conv and c.start is not None and covers(conv.resolutions, c.start, horizon)
            for c in self.customers[conv.customer_id]
        )
        if blocked != conv.fcr_blocked:
            conv.fcr_blocked = blocked
            self._changed[conv.conversation_id] = conv

    def _set_repeat(self, conv: Conversation, repeat: bool) -> None:
        if conv.repeat_contact != repeat:
            conv.repeat_contact = repeat
            self._refresh_samples(conv)
            self._changed[conv.conversation_id] = conv

    # --- window samples --------------------------------------------------------------------

    def _place_message_sample(self, conv: Conversation, t: float, kind: int, value: Any) -> None:
        if self.windows.apply(conv.key, t, kind, value, +1):
            conv.recent.append((kind, t, value))
        else:
            self.stats.late_samples += 1

    def _refresh_samples(self, conv: Conversation) -> None:
        """Bring the conversation's derived samples in the windows up to date with its facts."""
        windows = self.windows
        placed = conv.placed
        wanted = conv.desired_samples(self.settings)
        for name in placed.keys() | wanted.keys():
            old = placed.get(name)
            new = wanted.get(name)
            if old == new:
                continue
            if old is not None:
                if windows.is_final(old[1]):
                    # A final window keeps what it has. Only a resolution time moves forward
                    # in time (a later resolution after a reopen): it still goes to its window.
                    if new is None or windows.is_final(new[1]):
                        continue
                else:
                    windows.apply(conv.key, old[1], old[0], old[2], -1)
                del placed[name]
            if new is not None:
                if windows.apply(conv.key, new[1], new[0], new[2], +1):
                    if name == FRT and old is None and not conv.frt_observed:
                        conv.frt_observed = True
                        self._batch.first_responses.append((conv.key, new[2][0]))
                    placed[name] = new
                else:
                    self.stats.late_samples += 1

    def _move(self, conv: Conversation, old_key: Key) -> None:
        """The conversation's first event changed its (channel, queue): move open samples."""
        windows = self.windows
        kept = []
        for kind, t, value in conv.recent:
            if not windows.is_final(t):
                windows.apply(old_key, t, kind, value, -1)
                windows.apply(conv.key, t, kind, value, +1)
                kept.append((kind, t, value))
        conv.recent = kept
        # Derived samples leave the old key; `_refresh_samples` places them anew under the new
        # one (a business-hours FRT depends on the queue's calendar).
        for name, (kind, t, value) in list(conv.placed.items()):
            if not windows.is_final(t):
                windows.apply(old_key, t, kind, value, -1)
                del conv.placed[name]

    # --- live queue state ------------------------------------------------------------------

    def _refresh_waiting(self, conv: Conversation, old_key: Key) -> None:
        waiting = self.waiting_by_key
        if old_key != conv.key or not conv.waiting:
            previous = waiting.get(old_key)
            if previous is not None:
                previous.discard(conv.conversation_id)
        if conv.waiting:
            assert conv.start is not None
            waiting.setdefault(conv.key, WaitingSet()).add(conv.conversation_id, conv.start)

    def waiting(self, now: float) -> dict[Key, tuple[int, float | None]]:
        """Per key: conversations waiting for a first response, and how long the oldest waits."""
        ages = {}
        for key, starts in self.waiting_by_key.items():
            oldest = starts.oldest()
            ages[key] = (len(starts), max(0.0, now - oldest) if oldest is not None else None)
        return ages

    def rolling(self, now: float) -> dict[str, dict[Key, dict[str, Any]]]:
        """The 5m/15m/1h rolling views at `now`, each an exact merge of tumbling windows."""
        self.settle()
        return rolling_views(self.windows.all_windows(), now, self.settings.window_seconds)

    def agent_rolling(self, now: float) -> dict[str, dict[str, AgentWindow]]:
        """The rolling views of the agent windows per queue (contract §7.2)."""
        self.settle()
        return agent_rolling(self.agents.all_windows(), now, self.settings.window_seconds, ROLLING_SPANS)

    def agent_summary(self) -> AgentSummary:
        """Agents now by queue and state, and staffed by channel (contract §7.3)."""
        return AgentSummary.of(self.agents.current())

    # --- time ------------------------------------------------------------------------------

    def _refresh_agents(self, settle: bool, before: float = math.inf) -> None:
        """Agent time in the open windows up to the newest event time, what runs owe the
        windows starting before `before` paid in when `settle` (before windows are read or
        sealed; pipeline/engine/agents.py)."""
        if self.newest is not None:
            open_from = self.windows.final_before
            if self.agents.agents:
                self.agents.refresh(open_from, self.newest, self.windows.add_handle)
            if settle:
                self.agents.settle(open_from, self.windows.add_handle, before)

    def settle(self) -> None:
        """Bring every window up to the newest event: call before reading `windows` or `agents`
        directly (the engine's own outputs do)."""
        self._refresh_agents(settle=True)

    def _advance(self, newest: float) -> None:
        s = self.settings
        watermark = newest - s.allowed_lateness_seconds
        boundary = self.windows.boundary(watermark)
        if boundary is not None:  # windows are sealed: agent time up to now goes in first
            self._refresh_agents(settle=True, before=boundary)
            self._batch.windows.extend(self.windows.advance(watermark))
            self._batch.agent_windows.extend(self.agents.seal(boundary))
            self.agents.forget_stale(newest, boundary)
        self.event_ids.expire(newest)
        self.closed.expire(newest)
        timers = self._timers
        while timers and timers[0][0] <= newest:
            _, _, what, conversation_id = heapq.heappop(timers)
            conv = self.conversations.get(conversation_id)
            if conv is None or not conv.resolutions:
                continue
            deadline = conv.resolutions[-1] + s.fcr_horizon_seconds
            if what == _FCR_FINAL and deadline <= newest:
                self._changed[conversation_id] = conv
            elif what == _EVICT and deadline + s.allowed_lateness_seconds <= newest:
                self._evict(conv)
        if newest >= self._next_sweep:
            step = s.idle_timeout_seconds / _SWEEPS_PER_IDLE_TIMEOUT
            self._next_sweep = newest + step
            idle_before = newest - s.idle_timeout_seconds
            for conv in [
                c for c in self.conversations.values() if not c.resolutions and c.last_seen < idle_before
            ]:
                self._evict(conv)

    def _push_timer(self, deadline: float, what: int, conversation_id: str) -> None:
        heapq.heappush(self._timers, (deadline, next(self._sequence), what, conversation_id))

    def _evict(self, conv: Conversation) -> None:
        """Report the conversation's last record and forget it."""
        self._changed.pop(conv.conversation_id, None)
        self._batch.conversations.append(conv.record(self.newest or 0.0, self.settings))
        del self.conversations[conv.conversation_id]
        self.closed.add(conv.conversation_id, self.newest or 0.0)
        siblings = self.customers.get(conv.customer_id, [])
        if conv in siblings:
            siblings.remove(conv)
            if not siblings:
                del self.customers[conv.customer_id]
        waiting = self.waiting_by_key.get(conv.key)
        if waiting is not None:
            waiting.discard(conv.conversation_id)
        self._batch.evicted += 1

    # --- output ----------------------------------------------------------------------------

    def _drain(self, window_rows: bool = True) -> Batch:
        self._refresh_agents(settle=window_rows)
        batch = self._batch
        newest = self.newest if self.newest is not None else 0.0
        batch.conversations.extend(conv.record(newest, self.settings) for conv in self._changed.values())
        if window_rows:
            batch.windows.extend(self.windows.changed_rows())
            batch.agent_windows.extend(self.agents.changed_rows())
        else:
            starts, contacts = self.agents.owing(self.windows.final_before)
            batch.held = self.windows.pending()
            batch.held.extend((start, key) for key in contacts for start in starts)
            batch.agents_held = [start for start, _ in self.agents.pending()] + starts
        self._changed = {}
        self._batch = Batch()
        return batch
