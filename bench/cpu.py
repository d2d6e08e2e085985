"""Where a running worker's CPU goes: py-spy samples it, and each sample is put in one share.

A sample belongs to the innermost frame that names a part of the pipeline: scoring a text is
"sentiment" even though the engine called it, and asyncio's own frames count as the
framework's unless ccpipe code is further in.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (share, path fragments of its frames), innermost match wins
# fmt: off
PARTS = (
    ("sentiment (VADER)", ("vaderSentiment/", "pipeline/engine/sentiment.py")),
    ("JSON decoding + validation", ("pipeline/events.py", "pipeline/timefmt.py")),
    ("engine", ("pipeline/engine/",)),
    ("ClickHouse writer", ("pipeline/store/", "chdb/", "pyarrow/", "pandas/")),
    ("partials, checkpoints, gauges", ("pipeline/stream/partials.py", "pipeline/stream/checkpoints.py",
                                       "pipeline/exporter.py", "prometheus_client/", "aiohttp/")),
    ("ccpipe runtime (batches, routing)", ("pipeline/",)),
    ("Faust, aiokafka, asyncio", ("faust/", "mode/", "aiokafka/", "kafka/", "asyncio/", "selectors.py")),
)
# fmt: on
OTHER = "other"
EXTRA = os.environ.get("PYSPY_EXTRA", "").split()
FRAME = re.compile(r"\((?P<path>[^():]+)(?::\d+)?\)$")


class Profiler:
    """py-spy recording one process until stopped (SIGINT makes it write its samples)."""

    def __init__(self, pid: int, output: Path, rate: int = 200) -> None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if spy is None:
            raise RuntimeError("py-spy is not installed: pip install -e '.[dev]' (or make bench)")
        self.output = output
        command = [spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                   "--output", str(output), "--nonblocking", *EXTRA]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, float]:
        """Stop recording; the share of samples of each part."""
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        return shares(self.output.read_text())


def part_of(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        found = FRAME.search(frame)
        path = found.group("path") if found else ""
        for part, fragments in PARTS:
            if any(fragment in path for fragment in fragments):
                return part
    return OTHER


def shares(raw: str) -> dict[str, float]:
    """{part: share of samples} from py-spy's raw (collapsed stacks) output."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack:
            counts[part_of(stack)] += int(samples)
    every = sum(counts.values()) or 1
    return {part: counts[part] / every for part in [*(p for p, _ in PARTS), OTHER] if counts[part]}
