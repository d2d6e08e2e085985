"""Child processes that ccpipe starts (broker, workers and their stores, simulator, Prometheus, wall)
and stops by PID.

Every child runs in a session of its own (a Ctrl-C at the terminal reaches only the parent,
which then stops the children in order) and gets a parent-death signal: when the process that
started it dies, even by SIGKILL, the kernel sends the child SIGTERM, so no child outlives its
parent. Linux only; elsewhere children rely on the parent's clean-up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

# util-linux's setpriv arms the parent-death signal and execs the command (no pre-exec hook in a
# threaded parent); util-linux is part of every Debian-based system, including the image.
SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def spawn(
    command: Sequence[str],
    log: Path | None,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session, output appended to `log` (or discarded), tied to this
    process's life by a parent-death signal; `pass_fds` stay open in it.

    The kernel sends that signal when the *thread* that forked exits, so it is armed only for
    children started from the main thread (one started from another thread would die with it)."""
    if SETPRIV and threading.current_thread() is threading.main_thread():
        command = [SETPRIV, "--pdeathsig", "TERM", "--", *command]
    handle: IO[bytes] | int = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            list(command), env=None if env is None else dict(env), stdout=handle, stderr=handle,
            stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=tuple(pass_fds),
        )  # fmt: skip
    finally:
        if not isinstance(handle, int):
            handle.close()  # the child keeps its own copy of the descriptor


def spawn_cli(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m pipeline.cli ARGS` as a child (see `spawn`)."""
    return spawn([sys.executable, "-m", "pipeline.cli", *args], log, env)


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


def log_tail(log: Path, lines: int = 15) -> str:
    """The last `lines` lines of a child's log, for a message that says why it stopped."""
    try:
        with open(log, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
