"""Loopback ports: finding a free one, binding one with an error that names its setting, waiting.

A busy port is a person's problem to solve, so the error says which port, on which address,
and which flag or setting picks another one, instead of an "address already in use" traceback.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


class PortInUseError(OSError):
    """A port ccpipe must listen on is taken; the message names the setting that changes it."""

    def __init__(self, host: str, port: int, setting: str) -> None:
        super().__init__(f"port {port} on {host} is in use: choose another with {setting}")
        self.host, self.port, self.setting = host, port, setting

    def __str__(self) -> str:
        return str(self.args[0])


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listen(host: str, port: int, setting: str) -> socket.socket:
    """A listening socket on host:port (SO_REUSEADDR, as aiohttp binds), or PortInUseError naming
    `setting`. Binding before anything else starts means a busy port fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise PortInUseError(host, port, setting) from exc
    sock.setblocking(False)
    return sock


def is_free(host: str, port: int) -> bool:
    try:
        listen(host, port, "").close()
    except PortInUseError:
        return False
    return True


def wait_for_port(
    host: str, port: int, timeout: float, check: Callable[[], None] | None = None, every: float = 0.05
) -> None:
    """Until something accepts connections on host:port; `check` runs between attempts and may
    raise to give up early (the process that should listen has died, say)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s") from None
            if check is not None:
                check()
            time.sleep(every)
