"""Child processes that ccpipe starts (broker, workers, simulator) and stops by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def spawn_cli(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m pipeline.cli ARGS` in its own session, output appended to `log`."""
    with open(log, "ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args], env=dict(env), stdout=handle, stderr=handle,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout)
