"""Per-partition partials of each (channel, queue), merged by the worker that owns the key.

An input partition's engine holds only its own customers, so a (channel, queue)'s windows
are spread over every input partition, and so over every worker. Each worker publishes, for
each of its partitions and each key, that key's windows (counters and exact FRT samples) and
waiting state to the partials topic, keyed by the (channel, queue). The worker that owns the
key's partials partition keeps the newest state per source partition and exports the key's
gauges: the exact merge of all of them. So every series has one exporter, and the numbers are
the same whichever worker holds which input partition.

A message is either complete (every window of the key the partition holds) or an update of
the windows that changed since the key's last message (at most every PUBLISH_EVERY, 0.25 s).
An update sends a window whole only when the key's chain does not hold it yet; otherwise only
what changed: the numbers that moved and the samples added or removed (resending an open
window whole four times a second made the partials 2.6 times the input's bytes), and which
windows the engine no longer holds (emptied, then sealed). Updates form
a chain per key and input partition: each names its publisher's epoch (one per recovery of the
partition) and the sequence number of the key's message before it, and the owner applies an
update only onto exactly that message. Anything else (an owner that started reading in the
middle, a lost or repeated message) is a gap: counted, logged, and the key waits for its next
complete message from that partition. Complete messages go out when a partition is first
published and after every rebalance (a partials partition may have a new owner, which has only
what it reads from then on), and otherwise every REPUBLISH_EVERY, at a phase of its own per
partition; the owner drops windows older than any rolling view by itself.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.engine import Batch, Engine
from pipeline.engine.agents import AgentSummary, AgentWindow, agent_rolling
from pipeline.engine.windows import Key, WindowAggregate, detached, rolling_views, state_changes
from pipeline.settings import ROLLING_SPANS, EngineSettings

SEPARATOR = "\x1f"
# The agents of a partition (contract §7) are one partial, not per (channel, queue): every owner
# needs the staffed counts of its queues. It travels under this key, which no (channel, queue) has
# (a channel is never empty), to every partials partition.
AGENTS: Key = ("", "")
log = logging.getLogger(__name__)

PUBLISH_EVERY = 0.25  # changed windows reach their owner at most this often (seconds)
REPUBLISH_EVERY = 600.0  # and every key's every window this often (and after each rebalance)


@dataclass(slots=True)
class Chain:
    """What the owner of a key holds from this partition, as far as the publisher knows: the
    sequence number of the key's last message and the open windows it described."""

    sequence: int
    windows: dict[float, dict[str, Any]]  # by start: the window's state as sent (detached)


@dataclass(slots=True)
class PublishState:
    """One input partition's publish policy: the keys whose partial changed since it last
    published (with the starts of their changed windows), when it published, and each key's
    chain of updates."""

    dirty: dict[Key, set[float]] = field(default_factory=dict)
    published: float = -math.inf
    published_all: float = -math.inf
    # Where in REPUBLISH_EVERY this partition's complete snapshots fall, so a worker's partitions
    # do not all send theirs at once (seconds, in [0, REPUBLISH_EVERY)).
    phase: float = 0.0
    # A new epoch for every recovery of the partition (its state may be older than what the
    # owner holds); sequence numbers every publish of it.
    epoch: str = field(default_factory=lambda: secrets.token_hex(8))
    sequence: int = 0
    chains: dict[Key, Chain] = field(default_factory=dict)

    def republish(self) -> None:
        """Send every window of every key at the next publish (a rebalance happened)."""
        self.published_all = -math.inf

    def mark(self, batch: Batch) -> None:
        """Note what a batch changed: its windows (with rows or held back), and the keys of
        changed conversations (their waiting state may have changed)."""
        for row in batch.windows:
            self.dirty.setdefault((row.channel, row.queue), set()).add(row.window_start)
        for start, key in batch.held:
            self.dirty.setdefault(key, set()).add(start)
        for record in batch.conversations:
            self.dirty.setdefault((record["channel"], record["queue"]), set())
        agent_starts = {row.window_start for row in batch.agent_windows} | set(batch.agents_held)
        if agent_starts or any(kind == "agent_state" for kind, _ in batch.valid):
            self.dirty.setdefault(AGENTS, set()).update(agent_starts)

    def due(self, engine: Engine, now: float) -> dict[Key, set[float] | None]:
        """What to publish now — changed windows at most once per PUBLISH_EVERY, every window of
        every key (None) at the first publish, after `republish` and once per REPUBLISH_EVERY
        — and mark it published. Empty when nothing is due."""
        if now - self.published < PUBLISH_EVERY:
            return {}
        changed: dict[Key, set[float] | None] = dict(self.dirty)
        self.dirty = {}
        self.published = now
        if now - self.published_all >= REPUBLISH_EVERY:
            first = self.published_all == -math.inf
            self.published_all = now - self.phase if first else now
            changed = dict.fromkeys(keys_of(engine))
        return changed


def oldest_viewed(newest: float | None, width: float) -> float:
    """Windows starting at or before this are in no rolling view once a source's events
    reached `newest` (the owner's clock is never behind any source's newest)."""
    if newest is None:
        return -math.inf
    return math.floor(newest / width) * width - max(ROLLING_SPANS.values())


def partial_key(key: Key) -> bytes:
    return f"{key[0]}{SEPARATOR}{key[1]}".encode()


def snapshot(
    source: str,
    partition: int,
    offset: int,
    engine: Engine,
    key: Key,
    *,
    publish: PublishState,
    changed: set[float] | None = None,
) -> bytes:
    """One key's waiting state and windows in one partition of the `source` topic: all of its
    windows, or an update of those starting at `changed` onto the key's last message."""
    waiting = engine.waiting_by_key.get(key)
    body: dict[str, Any] = {
        "source": source,
        "partition": partition,
        "offset": offset,
        "key": list(key),
        "newest": engine.newest,
        "epoch": publish.epoch,
        "sequence": publish.sequence,
        "waiting": [len(waiting), waiting.oldest()] if waiting else [0, None],
    }
    whole: list[list[Any]] = []
    changes: list[list[Any]] = []
    dropped: list[float] = []
    # The chain keeps the open windows (only they change; a final one that still does goes out
    # whole) that a rolling view reaches (the owner lets go of the others).
    still_open, oldest = engine.windows.open, oldest_viewed(engine.newest, engine.settings.window_seconds)

    def kept(start: float) -> bool:
        return start in still_open and start > oldest

    chain = publish.chains.get(key)
    if changed is None or chain is None:
        # Complete, or the key's first message since this epoch began: it starts the chain.
        body["complete"] = True
        chain = publish.chains[key] = Chain(publish.sequence, {})
        for start, aggregate in engine.windows.windows_of(key):
            state = aggregate.state()
            whole.append([start, state])
            if kept(start):
                chain.windows[start] = detached(state)
    else:
        body["complete"] = False
        body["since"] = chain.sequence
        chain.sequence = publish.sequence
        for start in sorted(changed):
            window = engine.windows.window(key, start)
            if window is None:  # emptied and sealed in one go: the owner lets go of it too
                chain.windows.pop(start, None)
                dropped.append(start)
                continue
            state = window.state()
            before = chain.windows.get(start)
            if before is None:
                whole.append([start, state])
            else:
                difference = state_changes(before, state)
                if difference:
                    changes.append([start, difference])
            chain.windows[start] = detached(state)
        body["changes"] = changes
        body["dropped"] = dropped
        for start in [start for start in chain.windows if not kept(start)]:
            del chain.windows[start]
    body["windows"] = whole
    return orjson.dumps(body)


def keys_of(engine: Engine) -> set[Key]:
    keys = engine.windows.keys() | set(engine.waiting_by_key)
    return keys | {AGENTS} if engine.agents.agents or engine.agents.final else keys


def agent_snapshot(source: str, partition: int, offset: int, engine: Engine, *,
                   changed: set[float] | None = None) -> bytes:  # fmt: skip
    """A partition's agents: its agent windows (all, or those starting at `changed`) and who is
    in which state now (contract §7)."""
    windows = [(queue, start, window) for queue, start, window in engine.agents.all_windows()
               if changed is None or start in changed]  # fmt: skip
    return orjson.dumps(
        {
            "source": source,
            "partition": partition,
            "offset": offset,
            "kind": "agents",
            "newest": engine.newest,
            "complete": changed is None,
            "agent_windows": [[start, queue, window.state()] for queue, start, window in sorted(windows)],
            "agents": engine.agent_summary().state(),
        }
    )


@dataclass(slots=True)
class Publication:
    """One publish of an input partition: its agents partial (for every partials partition),
    if due, and the (key, snapshot) pairs of the (channel, queue)s."""

    agents: bytes | None
    keyed: list[tuple[bytes, bytes]]


def publication(
    source: str,
    partition: int,
    offset: int,
    engine: Engine,
    *,
    publish: PublishState,
    changed: dict[Key, set[float] | None],
) -> Publication:
    """The partials of what `publish.due` returned, all taken at `offset` (nothing is awaited
    in between, so the state and the offset agree)."""
    engine.settle()  # what agents owe the windows goes in before they are read
    publish.sequence += 1
    agents = None
    if AGENTS in changed:
        agents = agent_snapshot(source, partition, offset, engine, changed=changed[AGENTS])
    keyed = [
        (partial_key(key), snapshot(source, partition, offset, engine, key, publish=publish, changed=starts))
        for key, starts in sorted(changed.items())
        if key != AGENTS
    ]
    return Publication(agents, keyed)


@dataclass(slots=True)
class AgentPartial:
    offset: int
    windows: dict[tuple[float, str], AgentWindow]  # by (start, queue)
    summary: AgentSummary


@dataclass(slots=True)
class Partial:
    source: int
    offset: int
    newest: float | None
    windows: dict[float, WindowAggregate]  # by start
    waiting: tuple[int, float | None]
    epoch: str | None = None  # None: from a worker before chained updates (a rolling upgrade)
    sequence: int = 0


class MergedViews:
    """The owner side: newest partial per (key, source partition), merged on demand."""

    def __init__(self, settings: EngineSettings, source: str) -> None:
        self.settings = settings
        self.source = source  # partials of another input topic (a shared partials topic) are not ours
        # partials partition -> key -> source partition -> newest partial
        self._owned: dict[int, dict[Key, dict[int, Partial]]] = {}
        # partials partition -> source partition -> newest agents partial (every partials
        # partition gets a copy of each: any one owned serves)
        self._agents: dict[int, dict[int, AgentPartial]] = {}
        self.newest_event_time: float | None = None
        self._newest_seen_at = 0.0
        # Updates that did not follow the message their key's owner holds from that partition
        # (ccpipe_partials_gaps): the key waits for its next complete message from there.
        self.gaps = 0
        self._broken: set[tuple[Key, int]] = set()  # (key, source) whose gap was logged

    def absorb(self, partials_partition: int, value: bytes) -> None:
        body: dict[str, Any] = orjson.loads(value)
        if body.get("source") != self.source:
            return
        if body.get("kind") == "agents":
            self._absorb_agents(partials_partition, body)
            return
        key: Key = (body["key"][0], body["key"][1])
        sources = self._owned.setdefault(partials_partition, {}).setdefault(key, {})
        source = body["partition"]
        known = sources.get(source)
        epoch = body.get("epoch")
        complete = body.get("complete", True)
        if epoch is not None and not complete:
            if known is None or known.epoch != epoch or known.sequence != body["since"]:
                self._gap(key, source, known, body)
                return
            if not self._chain(key, known, body):
                return
        else:
            partial = Partial(
                source=source,
                offset=body["offset"],
                newest=body["newest"],
                windows={start: WindowAggregate.from_state(state) for start, state in body["windows"]},
                waiting=(body["waiting"][0], body["waiting"][1]),
                epoch=epoch,
                sequence=body.get("sequence", 0),
            )
            if epoch is None:  # a worker before chained updates: its updates hold whole windows
                oldest = self._oldest_viewed(partial.newest)
                _keep_newest(sources, source, partial, complete, lambda start: start > oldest)
            elif known is None or known.epoch != epoch or partial.sequence > known.sequence:
                sources[source] = partial  # a complete message starts the chain (a repeat is older)
                self._broken.discard((key, source))
        self._note_newest(body["newest"])

    def _chain(self, key: Key, known: Partial, body: dict[str, Any]) -> bool:
        """Lay an update onto the partial it follows; False (a gap) when a changed window is one
        the owner does not hold."""
        windows = known.windows
        if any(start not in windows for start, _ in body["changes"]):
            self._gap(key, known.source, known, body)
            return False
        for start, state in body["windows"]:
            windows[start] = WindowAggregate.from_state(state)
        for start, changes in body["changes"]:
            windows[start].change(changes)
        for start in body["dropped"]:
            windows.pop(start, None)
        oldest = self._oldest_viewed(body["newest"])
        for start in [start for start in windows if start <= oldest]:
            del windows[start]
        known.offset, known.newest, known.sequence = body["offset"], body["newest"], body["sequence"]
        known.waiting = (body["waiting"][0], body["waiting"][1])
        return True

    def _gap(self, key: Key, source: int, known: Partial | None, body: dict[str, Any]) -> None:
        """An update that does not follow what this owner holds. An owner that holds nothing
        of the key from that partition yet (it has just been assigned the partials partition)
        expects this until the complete message that a rebalance brings: not counted."""
        if known is None:
            return
        self.gaps += 1
        if (key, source) in self._broken:
            return  # logged once per broken chain; the counter has every gap
        self._broken.add((key, source))
        log.warning(
            "partials of %s/%s from input partition %d: an update of epoch %s after message %s, "
            "but this owner holds message %d of epoch %s; the key's numbers from that partition "
            "wait for its next complete message",
            key[0], key[1], source, body.get("epoch"), body.get("since"), known.sequence, known.epoch,
        )  # fmt: skip

    def _absorb_agents(self, partials_partition: int, body: dict[str, Any]) -> None:
        windows = {
            (start, queue): AgentWindow(list(seconds)) for start, queue, seconds in body["agent_windows"]
        }
        partial = AgentPartial(body["offset"], windows, AgentSummary.from_state(body["agents"]))
        sources = self._agents.setdefault(partials_partition, {})
        oldest = self._oldest_viewed(body.get("newest"))
        _keep_newest(sources, body["partition"], partial, body.get("complete", True),
                     lambda start_queue: start_queue[0] > oldest)  # fmt: skip
        self._note_newest(body.get("newest"))

    def _oldest_viewed(self, newest: float | None) -> float:
        return oldest_viewed(newest, self.settings.window_seconds)

    def _note_newest(self, newest: float | None) -> None:
        if newest is not None and (self.newest_event_time is None or newest > self.newest_event_time):
            self.newest_event_time = newest
            self._newest_seen_at = time.time()

    def keep_only(self, partials_partitions: set[int]) -> None:
        """After a rebalance: the keys of partitions now owned elsewhere leave this worker."""
        for owned in (self._owned, self._agents):
            for partition in list(owned):
                if partition not in partials_partitions:
                    del owned[partition]

    @property
    def exports_agents(self) -> bool:
        """The series per queue of agents (contract §7.4) come from the owner of partials partition 0."""
        return 0 in self._agents

    def _agent_partials(self) -> list[AgentPartial]:
        """One agents partial per source partition: the newest among the copies this worker holds."""
        newest: dict[int, AgentPartial] = {}
        for sources in self._agents.values():
            for source, partial in sources.items():
                if source not in newest or partial.offset > newest[source].offset:
                    newest[source] = partial
        return list(newest.values())

    def agent_summary(self) -> AgentSummary:
        total = AgentSummary()
        for partial in self._agent_partials():
            total.add(partial.summary)
        return total

    def agent_rolling(self) -> dict[str, dict[str, AgentWindow]]:
        now = self.clock()
        if now is None:
            return {}
        windows = ((queue, start, window) for partial in self._agent_partials()
                   for (start, queue), window in partial.windows.items())  # fmt: skip
        return agent_rolling(windows, now, self.settings.window_seconds, ROLLING_SPANS)

    def _partials(self) -> list[tuple[Key, Partial]]:
        return [(key, partial) for keys in self._owned.values() for key, sources in keys.items()
                for partial in sources.values()]  # fmt: skip

    def clock(self) -> float | None:
        """Event-time now: the newest event time, advancing with the wall clock while idle."""
        if self.newest_event_time is None:
            return None
        return self.newest_event_time + max(0.0, time.time() - self._newest_seen_at)

    def rolling(self) -> dict[str, dict[Key, dict[str, Any]]]:
        now = self.clock()
        if now is None:
            return {}
        windows = (
            (key, start, aggregate)
            for key, partial in self._partials()
            for start, aggregate in partial.windows.items()
        )
        return rolling_views(windows, now, self.settings.window_seconds)

    def waiting(self, now: float) -> dict[Key, tuple[int, float | None]]:
        merged: dict[Key, tuple[int, float | None]] = {}
        for key, partial in self._partials():
            count, earliest = merged.get(key, (0, None))
            part_count, part_earliest = partial.waiting
            if part_earliest is not None and (earliest is None or part_earliest < earliest):
                earliest = part_earliest
            merged[key] = (count + part_count, earliest)
        return {key: (count, max(0.0, now - earliest) if earliest is not None else None)
                for key, (count, earliest) in merged.items()}  # fmt: skip


def _keep_newest(
    sources: dict[int, Any], source: int, partial: Any, complete: bool, viewed: Callable[[Any], bool]
) -> None:
    """Keep a source partition's newest partial (by offset); an update of some windows is laid
    over the windows already known, less those no rolling view reaches any more."""
    known = sources.get(source)
    if known is None or partial.offset >= known.offset:
        if known is not None and not complete:
            merged = known.windows | partial.windows
            partial.windows = {window: value for window, value in merged.items() if viewed(window)}
        sources[source] = partial
