"""The cyclic garbage collector's policy for a process that holds an engine's state.

The state holds millions of long-lived objects (conversations, remembered event ids, windows)
that CPython's default thresholds (700, 10, 10) would have the collector traverse again and
again; the libraries loaded before the state exists never need it. So: freeze what is loaded,
and collect young objects rarely. `bench/engine.py` measures the difference side by side.
"""

from __future__ import annotations

import gc

# Allocations between young-generation collections, then collections between older ones.
THRESHOLDS = (50_000, 20, 100)


def for_long_lived_state() -> None:
    """Apply the policy to this process (before the state grows: what exists now is frozen)."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
