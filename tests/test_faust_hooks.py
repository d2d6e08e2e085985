"""The private Faust/mode hooks ccpipe extends exist in the installed versions: an upgrade that
renames one fails here, loudly, instead of silently changing how a worker stops."""

from __future__ import annotations

from pipeline.stream.faust_internals import HOOKS, bounded_worker, check_hooks


def test_every_hook_exists() -> None:
    check_hooks()
    assert len(HOOKS) == 3


def test_the_bounded_worker_extends_them() -> None:
    import faust

    app = faust.App("hooks-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    worker = bounded_worker(app, 1.0, quiet=True, redirect_stdouts=False, loglevel="WARNING")
    for _, name in HOOKS:
        assert name in type(worker).__dict__, name  # overridden, not inherited unchanged
    assert isinstance(worker, faust.Worker)
