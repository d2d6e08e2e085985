"""The pure-Python engine in a process of its own, for tests/test_native.py: a JSON request a
line in ({"lines": [...], "batch": N}), `support.outputs` of it a line out."""

from __future__ import annotations

import os
import sys

os.environ["CCPIPE_PURE_PYTHON"] = "1"  # before pipeline is imported: every hot-path module from source

import orjson
from support import outputs

from pipeline import native

assert native.MODE.startswith("pure"), native.MODE
for line in sys.stdin:
    request = orjson.loads(line)
    sys.stdout.buffer.write(orjson.dumps(outputs(request["lines"], request["batch"])) + b"\n")
    sys.stdout.flush()
