"""Dashboards as code: `python grafana/build.py` writes grafana/dashboards/*.json.

Built with grafana-foundation-sdk. A test rebuilds them and checks the committed JSON is
what this file produces, and runs every panel's query against a real Prometheus (and, for
the analyst dashboard, on the real ClickHouse tables).

- Wall display: a row per channel, big numbers readable across a room, colored against the
  channel's FRT target, with the agents staffed against the agents needed (red when short) and
  the load on them; a last row of agents by state and occupancy per queue; kiosk-friendly (no
  variables, 10 s refresh).
- Operations: throughput, lag, invalid/duplicate/late rates, store buffer and errors, per worker.
- Analyst: ClickHouse panels over the views (FRT by hour, FCR by day, sentiment, agents, handle
  time, occupancy, the half-hour interval report).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueColorMode, BigValueGraphMode, BigValueTextMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

OUT = Path(__file__).parent / "dashboards"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="ccpipe-prometheus")
CLICKHOUSE = DataSourceRef(type_val="grafana-clickhouse-datasource", uid="ccpipe-clickhouse")

# Channel → FRT target in seconds (the defaults of CCPIPE_SLA_TARGETS; others 3600).
CHANNELS = {"phone": 20, "chat": 60, "sms": 300, "email": 3600, "social": 3600, "whatsapp": 3600}


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def promql(expr: str, legend: str = "") -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(PROMETHEUS).ref_id("A")
    return query.legend_format(legend) if legend else query


def big(title: str, expr: str, unit: str, steps: dashboard.ThresholdsConfig, description: str) -> stat.Panel:
    """A number for a wall: value only, background colored by thresholds."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(promql(expr).instant())
        .unit(unit)
        .decimals(0 if unit in ("s", "short") else 1)
        .thresholds(steps)
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
        .text_mode(BigValueTextMode.VALUE)
        .no_value("-")
        .height(6)
        .span(3)
    )


def weighted_mean(ratio: str, weight: str, selector: str) -> str:
    """A per-queue gauge averaged over queues, each weighted by its sample count."""
    return f"sum({ratio}{{{selector}}} * {weight}{{{selector}}}) / sum({weight}{{{selector}}})"


def wall() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("Contact center — wall display")
        .uid("ccpipe-wall")
        .tags(["ccpipe", "wall"])
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .editable()
    )
    for channel, target in CHANNELS.items():
        c = f'channel="{channel}"'
        board = board.with_row(dashboard.Row(f"{channel.upper()}  ·  target {target} s"))
        for panel in (
            big("First reply, 90% within (5 min)",
                f'max(ccpipe_frt_seconds{{{c}, quantile="0.9", window="5m"}})',
                "s", thresholds((None, "green"), (0.8 * target, "yellow"), (target, "red")),
                "FRT p90 over the last 5 minutes, worst queue, against the channel's target."),
            big("Within target (5 min)",
                weighted_mean("ccpipe_frt_sla_ratio", "ccpipe_first_responses", f'{c}, window="5m"'),
                "percentunit", thresholds((None, "red"), (0.8, "yellow"), (0.9, "green")),
                "Share of first replies within the target, all queues."),
            big("Service level (15 min)",
                f'channel:ccpipe_service_level:ratio_15m{{{c}}}',
                "percentunit", thresholds((None, "red"), (0.8, "yellow"), (0.9, "green")),
                "Contacts answered within the target over answered plus abandoned (short abandons "
                "left out): the industry's '80% answered within 20 s'."),
            big("Business-hours reply, p90 (5 min)",
                f'max(ccpipe_frt_business_seconds{{{c}, quantile="0.9", window="5m"}})',
                "s", thresholds((None, "green"), (0.8 * target, "yellow"), (target, "red")),
                "FRT p90 counting only the open hours of each queue's calendar (equal to the FRT "
                "for a queue open all the time)."),
            big("Waiting now",
                f"sum(ccpipe_conversations_waiting{{{c}}})",
                "short", thresholds((None, "green"), (10, "yellow"), (25, "red")),
                "Customers who started and have had no reply yet."),
            big("Longest wait now",
                f"max(ccpipe_oldest_waiting_seconds{{{c}}})",
                "s", thresholds((None, "green"), (target, "yellow"), (3 * target, "red")),
                "How long the oldest waiting customer has waited."),
            big("Solved first time (1 h)",
                weighted_mean("ccpipe_fcr_ratio", "ccpipe_resolutions", f'{c}, window="1h"'),
                "percentunit", thresholds((None, "red"), (0.6, "yellow"), (0.75, "green")),
                "Real-time FCR: resolutions of the last hour not reopened and not a repeat contact."),
            big("Customer mood (15 min)",
                weighted_mean("ccpipe_sentiment_mean", "ccpipe_sentiment_samples", f'{c}, window="15m"'),
                "none", thresholds((None, "red"), (-0.05, "yellow"), (0.05, "green")),
                "Mean sentiment of customer messages, -1 (angry) to +1 (happy)."),
            big("Agents staffed",
                f"sum(ccpipe_agents_staffed{{{c}}})",
                "short", thresholds((None, "blue")),
                "Agents available, on contact or wrapping up now who serve this channel, all queues."),
            big("Agents needed",
                f"sum(ccpipe_agents_required{{{c}}})",
                "short", thresholds((None, "blue")),
                "Agents Erlang C requires for the service-level target over the last 15 minutes' "
                "arrivals and handle time, all queues (docs/staffing.md)."),
            big("Agents short",
                f"sum(clamp_min(ccpipe_agents_required{{{c}}} - ccpipe_agents_staffed{{{c}}}, 0))",
                "short", thresholds((None, "green"), (1, "red")),
                "Agents missing in the queues that are short (a queue with agents to spare does not "
                "lend them to another)."),
            big("Agent load (15 min)",
                f"sum(ccpipe_offered_load_erlangs{{{c}}}) / sum(ccpipe_agents_staffed{{{c}}})",
                "percentunit", thresholds((None, "green"), (0.85, "yellow"), (0.95, "red")),
                "Offered load in Erlangs over the agents staffed now: how busy they must be."),
        ):  # fmt: skip
            board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("AGENTS BY QUEUE"))
    for panel in (
        series("Agents by state, per queue",
               [('sum by (queue, state) (ccpipe_agents{state!="available"})', "{{queue}} {{state}}"),
                ('sum by (queue) (ccpipe_agents{state="available"})', "{{queue}} available")], "short",
               "Agents on contact, wrapping up, away and available now, per queue they serve."),
        series("Occupancy per queue (15 min)",
               [('max by (queue) (ccpipe_agent_occupancy_ratio{window="15m"})', "{{queue}}")], "percentunit",
               "(On contact + after-contact work) / staffed time over the last 15 minutes."),
    ):  # fmt: skip
        board = board.with_panel(panel)
    return board


def series(title: str, queries: list[tuple[str, str]], unit: str, description: str) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).description(description).datasource(PROMETHEUS).unit(unit)
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(promql(expr, legend).ref_id(ref))
    return panel.height(8).span(12)


def operations() -> dashboard.Dashboard:
    panels = [
        series("Events processed per second, by worker",
               [("sum by (instance) (rate(ccpipe_events_total[1m]))", "{{instance}}")], "ops",
               "Valid events per second each worker processes."),
        series("Processing lag, by worker",
               [("max by (instance) (ccpipe_processing_lag_seconds)", "{{instance}}")], "s",
               "Wall clock minus the event time of the newest processed event."),
        series("Invalid events per second, by reason",
               [("sum by (reason) (rate(ccpipe_events_invalid_total[5m]))", "{{reason}}")], "ops",
               "Dead-lettered events: see the dead_letters table for the payloads."),
        series("Duplicates and late events per second",
               [("sum(rate(ccpipe_events_duplicate_total[5m]))", "duplicates"),
                ("sum(rate(ccpipe_events_late_total[5m]))", "late")], "ops",
               "Duplicates are dropped; late events update facts but not final windows."),
        series("Store buffer, by worker",
               [("sum by (instance) (ccpipe_store_buffer_rows)", "{{instance}}")], "short",
               "Rows waiting to be written to ClickHouse; consumption pauses when it is full."),
        series("Store writes and errors per second",
               [("sum by (table) (rate(ccpipe_store_rows_written_total[5m]))", "{{table}} rows"),
                ("sum(rate(ccpipe_store_write_errors_total[5m]))", "failed attempts")], "ops",
               "Rows written per table, and failed write attempts."),
        series("FRT p90 by channel, all workers (histogram)",
               [("channel:ccpipe_first_response_duration_seconds:p90_5m", "{{channel}}")], "s",
               "From ccpipe_first_response_duration_seconds, merged across workers by Prometheus."),
        series("Workers up", [('up{job="ccpipe"}', "{{instance}}")], "short",
               "1 when Prometheus can scrape the worker."),
    ]  # fmt: skip
    board = (
        dashboard.Dashboard("ccpipe — operations")
        .uid("ccpipe-ops")
        .tags(["ccpipe", "operations"])
        .refresh("30s")
        .time("now-3h", "now")
    )
    for panel in panels:
        board = board.with_panel(panel)
    return board


@dataclass
class ClickHouseQuery(cogvariants.Dataquery):
    """A raw-SQL target of the official grafana-clickhouse-datasource plugin."""

    sql: str
    table: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "refId": "A",
            "datasource": CLICKHOUSE.to_json(),
            "editorType": "sql",
            "format": 1 if self.table else 0,
            "queryType": "table" if self.table else "timeseries",
            "rawSql": self.sql,
        }


class ClickHouse(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, sql: str, table: bool) -> None:
        self.query = ClickHouseQuery(" ".join(sql.split()), table)

    def build(self) -> cogvariants.Dataquery:
        return self.query


ANALYST_PANELS = (
    ("FRT p90 by hour and channel", False, "s",
     "SELECT hour AS time, channel, max(frt_p90_seconds) AS frt_p90 FROM frt_hourly "
     "WHERE $__timeFilter(hour) GROUP BY time, channel ORDER BY time"),
    ("First-contact resolution by day and channel", False, "percentunit",
     "SELECT toDateTime(day) AS time, channel, sum(first_contact_resolved) / sum(resolved) AS fcr "
     "FROM fcr_daily WHERE $__timeFilter(day) GROUP BY time, channel ORDER BY time"),
    ("Customer sentiment by day and channel", False, "none",
     "SELECT toDateTime(day) AS time, channel, sum(sentiment_mean * messages) / sum(messages) AS sentiment "
     "FROM sentiment_daily WHERE $__timeFilter(day) GROUP BY time, channel ORDER BY time"),
    ("Resolution time p90 by hour and channel", False, "s",
     "SELECT hour AS time, channel, max(resolution_p90_seconds) AS resolution_p90 FROM resolution_hourly "
     "WHERE $__timeFilter(hour) GROUP BY time, channel ORDER BY time"),
    ("Service level by hour and channel", False, "percentunit",
     "SELECT hour AS time, channel, sum(answered_within_target) / "
     "nullIf(sum(answered) + sum(abandoned) - sum(abandoned_short), 0) AS service_level "
     "FROM service_level_hourly WHERE $__timeFilter(hour) GROUP BY time, channel ORDER BY time"),
    ("What customers are upset about today", True, "none",
     "SELECT word, sum(mentions) AS mentions, sum(conversations) AS conversations, "
     "groupUniqArray(3)(channel) AS channels FROM negative_words_daily "
     "WHERE day = (SELECT max(day) FROM negative_words_daily) GROUP BY word "
     "ORDER BY mentions DESC LIMIT 25"),
    ("Agents", True, "none",
     "SELECT agent_id, sum(conversations) AS handled, round(sum(frt_mean_seconds * conversations) / "
     "sum(conversations), 1) AS frt_mean_s, max(frt_p90_seconds) AS frt_p90_s, sum(resolved) AS resolved, "
     "round(avg(fcr_ratio), 3) AS fcr, round(avg(csat_mean), 2) AS csat FROM agent_daily "
     "WHERE $__timeFilter(day) GROUP BY agent_id ORDER BY handled DESC LIMIT 100"),
    ("Handle time (AHT) by hour and channel", False, "s",
     "SELECT toStartOfHour(window_start) AS time, channel, "
     "sum(handle_seconds) / nullIf(sum(first_responses), 0) AS aht FROM metrics_window "
     "WHERE $__timeFilter(window_start) GROUP BY time, channel ORDER BY time"),
    ("Occupancy by hour and queue", False, "percentunit",
     "SELECT toStartOfHour(window_start) AS time, queue, (sum(on_contact_seconds) + "
     "sum(after_contact_work_seconds)) / nullIf(sum(staffed_seconds), 0) AS occupancy FROM agent_window "
     "WHERE $__timeFilter(window_start) GROUP BY time, queue ORDER BY time"),
    ("Half hours (UTC): offered, answered, service level, ASA, AHT, occupancy", True, "none",
     "SELECT interval_start, channel, queue, offered, answered, abandoned, "
     "round(service_level_ratio, 3) AS sl, round(asa_seconds, 1) AS asa_s, round(aht_seconds, 1) AS aht_s, "
     "round(fcr_ratio, 3) AS fcr, round(occupancy_ratio, 3) AS occupancy "
     "FROM interval_report(minutes = 30, tz = 'UTC') "
     "WHERE $__timeFilter(interval_start) ORDER BY interval_start DESC, channel, queue LIMIT 500"),
    ("Minute windows", True, "none",
     "SELECT window_start, channel, queue, conversations_started, first_responses, frt_p90_seconds, "
     "frt_sla_ratio, abandonment_ratio, fcr_ratio, sentiment_mean, handle_seconds FROM metrics_window "
     "WHERE $__timeFilter(window_start) ORDER BY window_start DESC, channel, queue LIMIT 500"),
)  # fmt: skip


def analyst() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("Contact center — analysis (ClickHouse)")
        .uid("ccpipe-analyst")
        .tags(["ccpipe", "clickhouse"])
        .time("now-7d", "now")
    )
    for title, is_table, unit, sql in ANALYST_PANELS:
        panel = (
            (table.Panel() if is_table else timeseries.Panel().unit(unit)).title(title).datasource(CLICKHOUSE)
        )
        board = board.with_panel(
            panel.with_target(ClickHouse(sql, is_table)).height(9).span(24 if is_table else 12)
        )
    return board


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → dashboard JSON (as Grafana imports it)."""
    built = {"wall.json": wall(), "operations.json": operations(), "analyst.json": analyst()}
    return {name: json.loads(json.dumps(board.build(), cls=JSONEncoder)) for name, board in built.items()}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, board in dashboards().items():
        (OUT / name).write_text(json.dumps(board, indent=2, sort_keys=True) + "\n")
        print(f"wrote {OUT / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
