"""The compiled hot path: the modules every event goes through, compiled by mypyc.

`python -m pipeline.build_native` (make runs it after installing) compiles `MODULES` in place
into extension modules beside their sources, and records a fingerprint of the sources it
compiled. Importing `pipeline` calls `choose()`: the compiled modules are used when they were
built from the sources as they are now; otherwise, or with CCPIPE_PURE_PYTHON=1, every one of
them is loaded from its source (all or none: compiled modules call each other natively). The
pure-Python path is the same code, so it stays importable and tested (tests/test_native.py).

Every class is compiled as a native class. Checkpoints pickle the engine's state, and a native
class can only be made by calling its constructor: pipeline/engine/pickling.py says how.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PURE_ENV = "CCPIPE_PURE_PYTHON"
PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
# Per event: validation, the engine, the partials' snapshots and the rows for ClickHouse. (Not
# pipeline.calendars: its frozen dataclasses, pickled with every checkpoint's settings, do not
# unpickle once compiled.)
MODULES = (
    "pipeline.timefmt",
    "pipeline.events",
    "pipeline.engine.pickling",
    "pipeline.engine.dedup",
    "pipeline.engine.waiting",
    "pipeline.engine.windows",
    "pipeline.engine.conversations",
    "pipeline.engine.agents",
    "pipeline.engine.engine",
    "pipeline.stream.partials",
    "pipeline.store.rows",
)
GROUP = "pipeline._native"  # the shared library of the group lives in the package
FINGERPRINT = PACKAGE / "_native.fingerprint"


def source(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def fingerprint() -> str:
    """What the compiled modules must have been built from: their sources."""
    digest = hashlib.sha256()
    for module in MODULES:
        digest.update(module.encode())
        digest.update(source(module).read_bytes())
    return digest.hexdigest()


def built() -> str | None:
    """The fingerprint of the compiled modules beside the sources, None when there are none."""
    try:
        return FINGERPRINT.read_text().strip()
    except OSError:
        return None


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the hot-path modules as sources, ahead of the extension modules beside them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source(fullname))


MODE = "compiled"  # or "pure Python (why)"; set by choose()


def choose() -> str:
    """Use the compiled modules if they are today's, else the sources; returns which."""
    global MODE  # noqa: PLW0603 - decided once per process, before any hot-path module loads
    why = None
    if os.environ.get(PURE_ENV) == "1":
        why = f"{PURE_ENV}=1"
    elif (stamp := built()) is None:
        why = "not compiled (make compiles it)"
    elif stamp != fingerprint():
        why = "compiled from older sources (make recompiles it)"
        sys.stderr.write("ccpipe: the compiled hot path predates its sources; running pure Python\n")
    if why is not None:
        MODE = f"pure Python ({why})"
        if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
            sys.meta_path.insert(0, _SourceFinder())
    return MODE


def extension(module: str) -> Path:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return ROOT / (module.replace(".", "/") + suffix)
