"""Prometheus exposition (contract §5): counters fed per batch, gauges computed at scrape time.

Rolling gauges and the live queue state are not `set()` on every event: a collector asks the
runtime for the current merged views when Prometheus scrapes, so values are never stale, the
oldest-waiting age grows between events, and series of partitions this worker lost vanish
with them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.engine import Batch
from pipeline.engine.agents import STATES, AgentSummary, AgentWindow
from pipeline.engine.windows import FIELDS, Key
from pipeline.settings import ROLLING_SPANS, EngineSettings, StaffingSettings
from pipeline.staffing import offered_load, required_agents

disable_created_metrics()  # `*_created` series only add noise to every counter

FRT_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600, 1800, 3600, 7200, 14400, 86400)

# (metric, help, field of a rolling view), and (metric, help, ((quantile, field), ...)): from the
# window fields' declarations (pipeline/engine/windows.py), each gauge named once there.
ROLLING_GAUGES = tuple((f.gauge, f.help, f.name) for f in FIELDS if f.gauge and f.quantile is None)
QUANTILE_GAUGES = tuple(
    (gauge, next(f.help for f in FIELDS if f.gauge == gauge),
     tuple((f.quantile, f.name) for f in FIELDS if f.gauge == gauge and f.quantile is not None))
    for gauge in dict.fromkeys(f.gauge for f in FIELDS if f.gauge is not None and f.quantile is not None)
)  # fmt: skip


class Views(Protocol):
    """The merged views of the keys this worker owns (pipeline/stream/partials.py)."""

    settings: EngineSettings
    gaps: int  # partial updates that did not follow what this owner held

    def rolling(self) -> dict[str, dict[Key, dict[str, Any]]]: ...
    def waiting(self, now: float) -> dict[Key, tuple[int, float | None]]: ...
    def agent_rolling(self) -> dict[str, dict[str, AgentWindow]]: ...
    def agent_summary(self) -> AgentSummary: ...
    @property
    def exports_agents(self) -> bool: ...


class RollingCollector(Collector):
    """Rolling gauges and FRT targets, computed at scrape time (the costly part of a scrape)."""

    def __init__(self, views: Views) -> None:
        self.views = views

    def describe(self) -> Iterator[Metric]:
        """The names only, so `/metrics?name[]=…` of other series skips computing these."""
        for name, _, _ in QUANTILE_GAUGES:
            yield GaugeMetricFamily(name, "", labels=["channel", "queue", "window", "quantile"])
        for name, _, _ in ROLLING_GAUGES:
            yield GaugeMetricFamily(name, "", labels=["channel", "queue", "window"])
        yield GaugeMetricFamily("ccpipe_frt_target_seconds", "", labels=["channel"])

    def collect(self) -> Iterator[Metric]:
        rolling = self.views.rolling()
        quantiles = {
            name: GaugeMetricFamily(name, text, labels=["channel", "queue", "window", "quantile"])
            for name, text, _ in QUANTILE_GAUGES
        }
        families = {
            name: GaugeMetricFamily(name, text, labels=["channel", "queue", "window"])
            for name, text, _ in ROLLING_GAUGES
        }
        for window, by_key in rolling.items():
            for (channel, queue), fields in sorted(by_key.items()):
                for name, _, pairs in QUANTILE_GAUGES:
                    for quantile, field in pairs:
                        if fields[field] is not None:
                            quantiles[name].add_metric([channel, queue, window, quantile], fields[field])
                for name, _, field in ROLLING_GAUGES:
                    value = fields[field]
                    if value is not None:
                        families[name].add_metric([channel, queue, window], value)
        yield from quantiles.values()
        yield from families.values()

        # Each channel's FRT target, so alert rules compare against it without a copy of it.
        targets = GaugeMetricFamily(
            "ccpipe_frt_target_seconds", "First response time target (SLA)", labels=["channel"]
        )
        settings = self.views.settings
        channels = set(settings.sla_targets) | {
            channel for by_key in rolling.values() for channel, _ in by_key
        }
        channels |= {channel for channel, _ in self.views.waiting(time.time())}
        for channel in sorted(channels):
            targets.add_metric([channel], settings.sla_target(channel))
        yield targets


class QueueCollector(Collector):
    """The live queue state and the processing lag, from the wall clock at scrape time."""

    def __init__(self, views: Views, newest_processed: Callable[[], float | None]) -> None:
        self.views = views
        self.newest_processed = newest_processed

    def describe(self) -> Iterator[Metric]:
        for name in ("ccpipe_conversations_waiting", "ccpipe_oldest_waiting_seconds"):
            yield GaugeMetricFamily(name, "", labels=["channel", "queue"])
        yield GaugeMetricFamily("ccpipe_processing_lag_seconds", "")

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        waiting = GaugeMetricFamily(
            "ccpipe_conversations_waiting",
            "Conversations started and waiting for a first response",
            labels=["channel", "queue"],
        )
        oldest = GaugeMetricFamily(
            "ccpipe_oldest_waiting_seconds",
            "Age of the oldest conversation waiting for a first response",
            labels=["channel", "queue"],
        )
        for (channel, queue), (count, age) in sorted(self.views.waiting(now).items()):
            waiting.add_metric([channel, queue], count)
            oldest.add_metric([channel, queue], age if age is not None else 0.0)
        yield waiting
        yield oldest

        lag = GaugeMetricFamily(
            "ccpipe_processing_lag_seconds", "Wall clock minus the event time of the newest processed event"
        )
        newest = self.newest_processed()
        lag.add_metric([], max(0.0, now - newest) if newest is not None else math.nan)
        yield lag


class RecoveryCollector(Collector):
    """What the worker did to stay exact: recoveries, catch-up, checkpoints, re-keying."""

    def __init__(self, stats: Callable[[], Any]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        for name, text, value in (
            ("ccpipe_partition_recoveries", "Input partitions recovered (checkpoint + catch-up)",
             sum(stats.recoveries.values())),
            ("ccpipe_caught_up_messages", "Messages re-read from Kafka during recoveries", stats.caught_up),
            ("ccpipe_checkpoints", "Engine checkpoints written", stats.checkpoints),
            ("ccpipe_checkpoint_bytes", "Compressed bytes of checkpoints written", stats.checkpoint_bytes),
            ("ccpipe_events_rekeyed", "Events sent back to the input topic keyed by customer", stats.rekeyed),
        ):  # fmt: skip
            yield CounterMetricFamily(name, text, value=value)
        for name, text, value in (
            ("ccpipe_assigned_partitions", "Input partitions assigned to this worker", stats.assigned),
            ("ccpipe_state_conversations", "Conversations held in the engines' memory", stats.conversations),
            ("ccpipe_state_event_ids", "Event ids remembered for de-duplication", stats.event_ids),
            ("ccpipe_state_windows", "Tumbling windows held (open and recently final)", stats.windows),
        ):
            yield GaugeMetricFamily(name, text, value=value)


class PartialsCollector(Collector):
    """How the owner's merge of the partials stays exact: updates it could not apply."""

    def __init__(self, views: Views) -> None:
        self.views = views

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "ccpipe_partials_gaps",
            "Partial updates that did not follow the message this owner held for their key and "
            "input partition; the key waits for that partition's next complete message",
            value=self.views.gaps,
        )


class AgentCollector(Collector):
    """Agents and live staffing (contract §7.4), from the merged views at scrape time: agents by
    state and occupancy per queue (by the owner of partials partition 0), and per (channel,
    queue) this worker owns with a 15-minute row, the offered load, the agents Erlang C requires
    (pipeline/staffing.py) and the agents staffed now."""

    def __init__(self, views: Views, staffing: StaffingSettings) -> None:
        self.views = views
        self.staffing = staffing

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("ccpipe_agents", "", labels=["queue", "state"])
        yield GaugeMetricFamily("ccpipe_agent_occupancy_ratio", "", labels=["queue", "window"])
        for name in ("ccpipe_offered_load_erlangs", "ccpipe_agents_required", "ccpipe_agents_staffed"):
            yield GaugeMetricFamily(name, "", labels=["channel", "queue"])

    def collect(self) -> Iterator[Metric]:
        summary = self.views.agent_summary()
        agents = GaugeMetricFamily("ccpipe_agents", "Agents in each state now, per queue they serve",
                                   labels=["queue", "state"])  # fmt: skip
        occupancy = GaugeMetricFamily(
            "ccpipe_agent_occupancy_ratio", "Rolling occupancy: (on contact + after-contact work) / staffed",
            labels=["queue", "window"],
        )  # fmt: skip
        if self.views.exports_agents:
            for queue, by_state in sorted(summary.states.items()):
                for state in STATES:
                    agents.add_metric([queue, state], by_state.get(state, 0))
            for window, by_queue in self.views.agent_rolling().items():
                for queue, merged in sorted(by_queue.items()):
                    ratio = merged.result()["occupancy_ratio"]
                    if ratio is not None:
                        occupancy.add_metric([queue, window], ratio)
        yield agents
        yield occupancy
        yield from self._staffing(summary)

    def _staffing(self, summary: AgentSummary) -> Iterator[Metric]:
        def family(name: str, text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=["channel", "queue"])

        loads = family("ccpipe_offered_load_erlangs", "Offered load over the 15-minute rolling window")
        required = family("ccpipe_agents_required", "Agents Erlang C requires for the service-level target")
        staffed = family("ccpipe_agents_staffed", "Agents available, on contact or in after-contact work now")
        targets, settings = self.staffing, self.views.settings
        for (channel, queue), fields in sorted(self.views.rolling().get("15m", {}).items()):
            labels = [channel, queue]
            staffed.add_metric(labels, summary.staffed_for(channel, queue))
            aht = fields["handle_time_mean_seconds"]
            if aht is None:
                continue
            load = offered_load(fields["conversations_started"], ROLLING_SPANS["15m"], aht)
            agents, _ = required_agents(
                load, aht, settings.sla_target(channel), service_level=targets.staffing_service_level,
                max_occupancy=targets.staffing_max_occupancy, shrinkage=targets.staffing_shrinkage,
            )  # fmt: skip
            loads.add_metric(labels, load)
            required.add_metric(labels, agents)
        yield loads
        yield required
        yield staffed


class StallCollector(Collector):
    """How long each assigned input partition has had records waiting and made no progress."""

    def __init__(self, stalled: Callable[[], dict[tuple[str, int], float]]) -> None:
        self.stalled = stalled

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "ccpipe_partition_stalled_seconds",
            "Seconds an input partition has had records beyond its position without progress (0: none)",
            labels=["topic", "partition"],
        )
        for (topic, partition), seconds in sorted(self.stalled().items()):
            family.add_metric([topic, str(partition)], seconds)
        yield family


class Exporter:
    """The worker's metrics registry: counters from batches plus the scrape-time views."""

    def __init__(
        self,
        views: Views,
        *,
        newest_processed: Callable[[], float | None],
        store_pending_rows: Callable[[], int] | None = None,
        runtime_stats: Callable[[], Any] | None = None,
        stalled: Callable[[], dict[tuple[str, int], float]] | None = None,
        staffing: StaffingSettings | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "ccpipe_events", "Valid events processed", ["type", "channel"], registry=self.registry
        )
        self.invalid = Counter(
            "ccpipe_events_invalid",
            "Invalid events sent to the dead-letter topic",
            ["reason"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "ccpipe_events_duplicate",
            "Events dropped as duplicates (repeated event_id)",
            registry=self.registry,
        )
        self.late = Counter(
            "ccpipe_events_late", "Events later than the allowed lateness", registry=self.registry
        )
        self.frt = Histogram(
            "ccpipe_first_response_duration_seconds", "First response time of each conversation",
            ["channel", "queue"], buckets=FRT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.registry.register(RollingCollector(views))
        self.registry.register(QueueCollector(views, newest_processed))
        self.registry.register(AgentCollector(views, staffing or StaffingSettings()))
        self.registry.register(PartialsCollector(views))
        self.store_rows = Counter(
            "ccpipe_store_rows_written",
            "Rows durably written to ClickHouse",
            ["table"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "ccpipe_store_write_errors", "Failed ClickHouse write attempts", registry=self.registry
        )
        if runtime_stats is not None:
            self.registry.register(RecoveryCollector(runtime_stats))
        if stalled is not None:
            self.registry.register(StallCollector(stalled))
        if store_pending_rows is not None:
            buffer = Gauge(
                "ccpipe_store_buffer_rows", "Rows waiting to be written to ClickHouse", registry=self.registry
            )
            buffer.set_function(store_pending_rows)

    def store_written(self, table: str, rows: int) -> None:
        self.store_rows.labels(table).inc(rows)

    def store_error(self) -> None:
        self.store_errors.inc()

    def observe(self, batch: Batch) -> None:
        for (event_type, channel), count in batch.valid.items():
            self.events.labels(event_type, channel).inc(count)
        for invalid in batch.invalid:
            self.invalid.labels(invalid.reason).inc()
        if batch.duplicates:
            self.duplicates.inc(batch.duplicates)
        if batch.late:
            self.late.inc(batch.late)
        for (channel, queue), seconds in batch.first_responses:
            self.frt.labels(channel, queue).observe(seconds)
