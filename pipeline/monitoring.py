"""A local Prometheus with ccpipe's rules, for `ccpipe run --with-prometheus` and the tests.

Prometheus comes from the system (Debian's `prometheus` package; `make` installs it). The rule
files are the ones in deploy/prometheus/rules, unchanged; only scrape and evaluation intervals
are shorter than in production, so a person watching sees things move.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipeline.ports import LOOPBACK, free_port
from pipeline.processes import spawn, stop_process

RULES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules"
RUNBOOKS = Path(__file__).resolve().parents[1] / "docs" / "runbooks.md"


@dataclass
class LocalPrometheus:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def query(self, expr: str) -> list[dict[str, object]]:
        """An instant query's result vector (or matrix/scalar as Prometheus gives it)."""
        data = urllib.parse.urlencode({"query": expr}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10) as response:
            body = orjson.loads(response.read())
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {expr!r}: {body.get('error')}")
        result = body["data"]["result"]
        return result if isinstance(result, list) else [{"value": result}]

    def stop(self) -> None:
        stop_process(self.process)


def config(targets: list[str], interval: float) -> str:
    """prometheus.yml for scraping `targets` (host:port) with the deploy rules."""
    rules = "\n".join(f"  - {path}" for path in sorted(RULES_DIR.glob("*.yml")))
    target_list = ", ".join(f'"{t}"' for t in targets)
    return (
        f"global:\n  scrape_interval: {interval:g}s\n  evaluation_interval: {interval:g}s\n"
        f"  external_labels:\n    runbook_base: file://{RUNBOOKS}\n"
        f"rule_files:\n{rules}\n"
        f"scrape_configs:\n  - job_name: ccpipe\n    static_configs:\n      - targets: [{target_list}]\n"
    )


def start_prometheus(
    targets: list[str], workdir: Path, interval: float = 5.0, timeout: float = 60.0
) -> LocalPrometheus:
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError(
            "prometheus is not installed; `make install-tools` installs it (Debian package 'prometheus')"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(config(targets, interval))
    port = free_port()
    process = spawn(
        [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address={LOOPBACK}:{port}", "--storage.tsdb.retention.time=1d"],
        workdir / "prometheus.log",
    )  # fmt: skip
    prometheus = LocalPrometheus(process, port)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return prometheus
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            prometheus.stop()
            raise RuntimeError(f"Prometheus did not start; see {workdir / 'prometheus.log'}")
        time.sleep(0.2)
