"""Every private Faust/mode hook ccpipe relies on, in one place, checked at start.

faust-streaming and mode-streaming are pinned in pyproject.toml; `check_hooks()` runs when a
worker starts and in the test suite, so an upgrade that renames a hook fails loudly instead of
silently changing how a worker stops.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

log = logging.getLogger("ccpipe.worker")

# (class, attribute) pairs overridden or called below; each names the upstream code it extends.
HOOKS = (
    ("mode.worker.Worker", "_schedule_shutdown"),  # every stop signal ends up here
    ("mode.worker.Worker", "_install_signal_handlers_unix"),  # SIGINT/SIGTERM → _schedule_shutdown
    ("mode.worker.Worker", "on_worker_shutdown"),  # called once the worker leaves its main loop
)


def check_hooks() -> None:
    """Fail at start, naming the hook, if the installed Faust/mode lacks one we extend."""
    import importlib  # noqa: PLC0415

    for dotted, attribute in HOOKS:
        module, _, name = dotted.rpartition(".")
        owner = getattr(importlib.import_module(module), name)
        if not callable(getattr(owner, attribute, None)):
            raise RuntimeError(
                f"{dotted}.{attribute} is gone: this faust-streaming/mode-streaming version is not "
                "the one ccpipe is pinned to (pyproject.toml)"
            )


def bounded_worker(app: Any, shutdown_timeout: float, **options: Any) -> Any:
    """A `faust.Worker` that stops on SIGTERM, SIGINT and SIGHUP alike and always exits within
    `shutdown_timeout` seconds of the first of them (or of leaving its loop for any reason):
    graceful when the broker and the store let it, by `os._exit` when they do not."""
    import faust  # noqa: PLC0415 - slow import, only for workers

    check_hooks()

    class BoundedWorker(faust.Worker):  # type: ignore[misc]
        _deadline: threading.Timer | None = None

        def _install_signal_handlers_unix(self) -> None:  # mode.worker.Worker
            super()._install_signal_handlers_unix()
            self.loop.add_signal_handler(signal.SIGHUP, self._schedule_shutdown, signal.SIGHUP)

        def _schedule_shutdown(self, signum: signal.Signals) -> None:  # mode.worker.Worker
            self._arm(int(signum))
            super()._schedule_shutdown(signum)

        def on_worker_shutdown(self) -> None:  # mode.worker.Worker
            self._arm(int(signal.SIGTERM))
            super().on_worker_shutdown()

        def _arm(self, signum: int) -> None:
            if self._deadline is None:
                self._deadline = threading.Timer(shutdown_timeout, _give_up, args=(shutdown_timeout, signum))
                self._deadline.daemon = True
                self._deadline.start()

    return BoundedWorker(app, **options)


def _give_up(timeout: float, signum: int) -> None:
    """The graceful stop took too long (broker or store gone): leave now; the next owner of
    these partitions catches up from the last checkpoint, so nothing is lost."""
    sys.stderr.write(
        f"ccpipe worker: graceful stop did not finish within {timeout:g} s "
        "(CCPIPE_SHUTDOWN_TIMEOUT_SECONDS); exiting now\n"
    )
    sys.stderr.flush()
    os._exit(128 + signum)
