"""Rules, alerts and dashboards, checked by their own tools and against a real Prometheus
scraping a real pipeline (embedded broker, worker, simulator with a spike)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from streaming import WorkerProcess, wait_until

from pipeline.broker import EmbeddedBroker
from pipeline.monitoring import LocalPrometheus, start_prometheus
from pipeline.processes import spawn_cli, stop_process
from pipeline.store.backends import open_backend

ROOT = Path(__file__).parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def load_builder() -> Any:
    spec = importlib.util.spec_from_file_location("grafana_build", ROOT / "grafana" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_prometheus_config_and_rules_pass_promtool() -> None:
    for args in (
        ("promtool", "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")),
        ("promtool", "check", "rules", *map(str, sorted((PROMETHEUS_DIR / "rules").glob("*.yml")))),
        ("promtool", "test", "rules", str(PROMETHEUS_DIR / "tests" / "alerts_test.yml")),
        ("amtool", "check-config", str(ROOT / "deploy" / "alertmanager" / "alertmanager.yml")),
    ):
        result = tool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_a_severity_and_a_runbook() -> None:
    alerts = [rule for group in yaml.safe_load((PROMETHEUS_DIR / "rules" / "alerts.yml").read_text())["groups"]
              for rule in group["rules"]]  # fmt: skip
    tests = (PROMETHEUS_DIR / "tests" / "alerts_test.yml").read_text()
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("page", "ticket")
        assert f"alertname: {name}" in tests, f"{name} has no promtool test"
        assert f"## {name}\n" in runbooks, f"{name} has no runbook"
        assert alert["annotations"]["runbook_url"].endswith(f"#{name.lower()}")


def test_alertmanager_routes_pages_and_tickets() -> None:
    config = str(ROOT / "deploy" / "alertmanager" / "alertmanager.yml")
    for labels, receiver in ((["severity=page", "alertname=CcpipeFrtSpike", "channel=phone"], "pager"),
                             (["severity=ticket", "alertname=CcpipeFcrDrop"], "tickets")):  # fmt: skip
        result = tool("amtool", "config", "routes", "test", f"--config.file={config}", *labels)
        assert result.stdout.strip() == receiver, result.stdout + result.stderr


def test_committed_dashboards_are_what_the_code_builds() -> None:
    builder = load_builder()
    for name, board in builder.dashboards().items():
        committed = json.loads((ROOT / "grafana" / "dashboards" / name).read_text())
        assert committed == board, f"grafana/dashboards/{name} is stale: run `make dashboards`"


def prometheus_queries(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", []) if "expr" in t]


def recording_rules() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "rules" / "recording.yml").read_text())["groups"]
    return [rule["record"] for group in groups for rule in group["rules"]]


def expand_macros(sql: str) -> str:
    """Grafana ClickHouse macros, as the plugin expands them, over the last 30 days."""
    now = int(time.time())
    start, end = now - 30 * 86400, now + 86400
    while "$__timeFilter(" in sql:
        head, _, rest = sql.partition("$__timeFilter(")
        column, _, tail = rest.partition(")")
        sql = f"{head}{column} >= toDateTime({start}) AND {column} <= toDateTime({end}){tail}"
    return sql


@pytest.mark.timeout(900)
def test_live_pipeline_feeds_every_panel_and_raises_the_frt_spike_alert_on_the_spiked_channel(
    broker: EmbeddedBroker, topics: dict[str, str], tmp_path: Path
) -> None:
    builder = load_builder()
    boards = builder.dashboards()
    worker = WorkerProcess(broker.bootstrap, tmp_path, **topics).start()
    simulator = spawn_cli(
        ["simulate", "--rate", "20", "--backfill", "3600", "--spike", "phone", "--spike-after", "3300",
         "--duration", "600", "--seed", "3"],
        worker.env, tmp_path / "simulator.log",
    )  # fmt: skip
    prometheus: LocalPrometheus | None = None
    try:
        prometheus = start_prometheus([f"127.0.0.1:{worker.port}"], tmp_path / "prometheus", interval=2.0)
        queries = [q for name in ("wall.json", "operations.json") for q in prometheus_queries(boards[name])]
        queries += recording_rules()

        def empty_queries() -> list[str]:
            assert prometheus is not None
            return [q for q in queries if not prometheus.query(q)]

        wait_until(
            empty_queries, timeout=240, what="Prometheus panel queries and recording rules without data"
        )

        def spike_not_raised() -> list[str]:
            """The alert's condition holds on phone only (pending, or firing once its `for` is
            over: that part is Prometheus's own, and the promtool unit tests hold it)."""
            assert prometheus is not None
            raised = prometheus.query('ALERTS{alertname="CcpipeFrtSpike"}')
            channels = {alert["metric"]["channel"] for alert in raised}  # type: ignore[index]
            return [] if channels == {"phone"} else [f"raised on {sorted(channels)}"]

        wait_until(spike_not_raised, timeout=420, what="the FRT spike alert raised on phone only")
    finally:
        stop_process(simulator)
        if prometheus is not None:
            prometheus.stop()
        worker.stop()

    # Every ClickHouse panel's SQL, macros expanded, returns rows from the real tables.
    store = open_backend(f"chdb://{tmp_path}/chdb")
    try:
        for panel in boards["analyst.json"]["panels"]:
            for target in panel["targets"]:
                rows = store.select(expand_macros(target["rawSql"])).rows
                assert rows, f"{panel['title']}: no rows"
    finally:
        store.close()
