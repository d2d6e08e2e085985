"""Checkpoint images made by a forked copy of the worker (pipeline/stream/checkpoints.py): the
image is the state at the instant of the capture, whatever happens to the state afterwards; a
failure in the copy is an error of the checkpoint, not a hang; the copy dies with the worker."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path

import orjson
import pytest
from support import outlived, outputs

from pipeline.engine import Engine
from pipeline.simulate import SimulationSettings, Simulator
from pipeline.stream.checkpoints import Capture, image, unpack

TESTS = Path(__file__).parent


def test_the_image_is_the_state_at_the_capture_not_after() -> None:
    lines = [
        orjson.dumps(e).decode()
        for e in itertools.islice(Simulator(SimulationSettings(seed=4)).events(), 3000)
    ]
    engine = Engine()
    outputs(lines[:2000], 100, engine, flush=False)
    at_capture = image(engine)

    async def capture_then_go_on() -> bytes:
        taken = Capture(engine)
        outputs(lines[2000:2500], 100, engine, flush=False)  # the loop goes on meanwhile
        return await taken.image()

    payload = asyncio.run(capture_then_go_on())
    captured, expected = unpack(payload), unpack(at_capture)
    assert isinstance(captured, Engine) and isinstance(expected, Engine)
    assert captured.newest == expected.newest != engine.newest
    rest = lines[2000:]
    assert outputs(rest, 100, captured) == outputs(rest, 100, expected)


def test_an_image_that_cannot_be_made_fails_the_checkpoint() -> None:
    async def capture() -> bytes:
        return await Capture({"not picklable": lambda: None}).image()

    with pytest.raises(RuntimeError, match="ended with 1"):
        asyncio.run(capture())


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_copy_making_an_image_dies_with_the_worker(how: signal.Signals) -> None:
    script = (
        "import asyncio, os, sys, time\n"
        "from pipeline.stream.checkpoints import Capture\n"
        "class Slow:\n"
        "    def __reduce__(self):\n"
        "        time.sleep(600)\n"
        "        return (Slow, ())\n"
        "taken = Capture(Slow())\n"
        "print(taken._pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    survivor = outlived(script, how, cwd=TESTS)
    assert survivor is None, f"the image's process {survivor} outlived its worker ({how.name})"
