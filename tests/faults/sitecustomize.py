"""Fault injection for tests on real worker processes (on PYTHONPATH only in those tests).

With FAULT_STORE_DOWN_FLAG set, every ClickHouse insert of the process fails as an outage
would, for as long as the file it names exists.
"""

import os

FLAG = os.environ.get("FAULT_STORE_DOWN_FLAG")

if FLAG:
    from pipeline.store import backends

    _insert = backends.ChdbBackend.insert

    def _failing_insert(self, table, columns, data):  # type: ignore[no-untyped-def]
        if os.path.exists(FLAG):
            raise backends.StoreUnavailable(f"injected outage ({FLAG} exists)")
        return _insert(self, table, columns, data)

    backends.ChdbBackend.insert = _failing_insert

# With FAULT_NO_CODECS set, the codec library aiokafka decompresses snappy, lz4 and zstd with is
# missing, as it was before ccpipe pinned aiokafka's extras: such a batch cannot be read.
if os.environ.get("FAULT_NO_CODECS"):
    import sys

    sys.modules["cramjam"] = None  # type: ignore[assignment]

# With FAULT_CRASH_MARKER set, applying a batch that holds a record with that text raises, as a
# bug in processing would.
MARKER = os.environ.get("FAULT_CRASH_MARKER")

if MARKER:
    from pipeline.stream import runtime

    _apply = runtime.Runtime._apply

    async def _crashing_apply(self, state, messages, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(MARKER.encode() in (m.value or b"") for m in messages):
            raise RuntimeError(f"injected processing failure ({MARKER})")
        return await _apply(self, state, messages, *args, **kwargs)

    runtime.Runtime._apply = _crashing_apply

# With FAULT_SERVICE_CRASH set, one of the worker's timers raises, as a service of the Faust app
# crashing would.
if os.environ.get("FAULT_SERVICE_CRASH"):
    from pipeline.stream import worker

    async def _crashing_watch(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("injected service crash")

    worker.Worker._watch_stalls = _crashing_watch
