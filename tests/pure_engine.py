"""The pure-Python engine in a process of its own, for tests/test_native.py: a JSON request a
line in ({"lines": [...], "batch": N}, optionally "image": a hex pickled engine to go on from,
and "flush": false), `support.outputs` of it a line out, with "image": the engine after."""

from __future__ import annotations

import os
import pickle
import sys

os.environ["CCPIPE_PURE_PYTHON"] = "1"  # before pipeline is imported: every hot-path module from source

import orjson
from support import outputs

from pipeline import native
from pipeline.engine import Engine

assert native.MODE.startswith("pure"), native.MODE
for line in sys.stdin:
    request = orjson.loads(line)
    engine = pickle.loads(bytes.fromhex(request["image"])) if "image" in request else Engine()
    out = outputs(request["lines"], request["batch"], engine, request.get("flush", True))
    out["image"] = pickle.dumps(engine).hex()
    sys.stdout.buffer.write(orjson.dumps(out) + b"\n")
    sys.stdout.flush()
