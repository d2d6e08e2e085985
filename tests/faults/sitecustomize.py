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
