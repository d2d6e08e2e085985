"""The compiled hot path (pipeline/native.py): in use in this suite, and the same as the pure-
Python path it is compiled from — the engine's tests pass on the pure path too, and a Hypothesis
property holds both to the same outputs on simulated and broken input."""

from __future__ import annotations

import ast
import importlib
import itertools
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import outputs

from pipeline import native
from pipeline.calendars import load_calendars
from pipeline.engine import Engine
from pipeline.engine.dedup import EventIdSet
from pipeline.engine.pickling import attribute_names, restore
from pipeline.engine.windows import ACCUMULATORS
from pipeline.events import decode_event
from pipeline.settings import EngineSettings
from pipeline.simulate import SimulationSettings, Simulator

TESTS = Path(__file__).parent
PURE = os.environ.get(native.PURE_ENV) == "1"


@pytest.mark.skipif(PURE, reason="this run is the pure-Python path by request")
def test_the_suite_runs_the_compiled_hot_path() -> None:
    assert native.MODE == "compiled", (
        f"{native.MODE}: `make test` compiles it (python -m pipeline.build_native)"
    )
    for name in native.MODULES:
        module = importlib.import_module(name)
        assert module.__file__ is not None and module.__file__.endswith(".so"), f"{name} is not compiled"


def test_a_windows_annotations_follow_its_declared_accumulators() -> None:
    tree = ast.parse((TESTS.parent / "pipeline" / "engine" / "windows.py").read_text())
    window = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "WindowAggregate")
    annotated = [n for n in window.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    assert [n.target.id for n in annotated if isinstance(n.target, ast.Name)] == [
        a.name for a in ACCUMULATORS
    ]
    # An empty window: numbers start at zero of their type, samples are made by the constructor.
    empty = {"Float64": 0.0, "Array(Float64)": None}
    for node, accumulator in zip(annotated, ACCUMULATORS, strict=True):
        value = ast.literal_eval(node.value) if node.value is not None else None
        assert value == empty.get(accumulator.type, 0) and type(value) is type(
            empty.get(accumulator.type, 0)
        ), accumulator.name


@pytest.mark.skipif(PURE, reason="this run is the pure-Python path already")
def test_the_engine_tests_pass_on_the_pure_python_path() -> None:
    files = ["test_engine_scenarios.py", "test_engine_properties.py", "test_agents.py", "test_events.py",
             "test_calendars.py", "test_bounded_state.py", "test_partials_chain.py", "test_native.py"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(TESTS / f) for f in files)],
        env={**os.environ, native.PURE_ENV: "1"}, capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout.decode()[-3000:]


def test_a_checkpoint_of_an_engine_with_every_kind_of_state_restores() -> None:
    """Checkpoints pickle the engine with its settings (calendars included)."""
    calendars = load_calendars(
        yaml.safe_load((TESTS.parent / "deploy" / "calendars.example.yaml").read_text())
    )
    lines = [
        orjson.dumps(e).decode()
        for e in itertools.islice(Simulator(SimulationSettings(seed=5)).events(), 3000)
    ]
    engine = Engine(EngineSettings(calendars=calendars))
    engine.process([decode_event(line.encode()) for line in lines[:2000]])
    restored = pickle.loads(pickle.dumps(engine))
    rest = [decode_event(line.encode()) for line in lines[2000:]]
    assert _rows(restored.process(rest)) == _rows(engine.process(rest))


def test_a_restore_skips_an_attribute_the_class_no_longer_has() -> None:
    """A checkpoint's attributes are by name: one another version had (here "gone") is skipped,
    the others land where their names say."""
    ids = EventIdSet(60.0)
    ids.add("e-1", 5.0)
    names = attribute_names(EventIdSet)
    values = tuple(getattr(ids, name) for name in names)
    restored = restore(EventIdSet, (60.0,), ("gone", *reversed(names)), (1, *reversed(values)))
    assert isinstance(restored, EventIdSet) and "e-1" in restored and len(restored) == 1


def _rows(batch: Any) -> list[dict[str, Any]]:
    return [row.as_dict() for row in batch.windows] + [row.as_dict() for row in batch.agent_windows]


@pytest.fixture(scope="module")
def pure_engine() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "pure_engine.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=TESTS,
    )
    yield process
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=30)


def _broken(line: str, how: int) -> str:
    """One of a few ways real producers break an event (a line already cut stays as it is)."""
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if how == 1:
        body.pop("timestamp", None)
    elif how == 2:
        body["channel"] = "Not A Channel"
    elif how == 3:
        return line[: len(line) // 2]
    elif how == 4:
        body["timestamp"] = "2026-03-02 09:00"
    return orjson.dumps(body).decode()


@pytest.mark.skipif(PURE, reason="both sides would be pure Python")
def test_a_checkpoint_made_on_one_path_goes_on_on_the_other(pure_engine: subprocess.Popen[bytes]) -> None:
    """A worker that ran pure Python (its build stale) and one that runs compiled read each
    other's checkpoints: each state class pickles the same on both (pipeline/engine/pickling.py)."""
    simulated = Simulator(SimulationSettings(seed=8)).events()
    lines = [orjson.dumps(event).decode() for event in itertools.islice(simulated, 4000)]
    first, rest = lines[:2500], lines[2500:]
    compiled = Engine()
    outputs(first, 100, compiled, flush=False)
    image = pickle.dumps(compiled)
    expected = orjson.loads(orjson.dumps(outputs(rest, 100, compiled)))

    # compiled -> pure
    pure = _ask(pure_engine, {"lines": rest, "batch": 100, "image": image.hex()})
    del pure["image"]
    assert pure == expected
    # pure -> compiled
    pure_image = _ask(pure_engine, {"lines": first, "batch": 100, "flush": False})["image"]
    resumed = outputs(rest, 100, pickle.loads(bytes.fromhex(pure_image)))
    assert orjson.loads(orjson.dumps(resumed)) == expected
    assert expected["agents"] and expected["windows"] and expected["conversations"]


def _ask(pure_engine: subprocess.Popen[bytes], request: dict[str, Any]) -> dict[str, Any]:
    assert pure_engine.stdin is not None and pure_engine.stdout is not None
    pure_engine.stdin.write(orjson.dumps(request) + b"\n")
    pure_engine.stdin.flush()
    answer: dict[str, Any] = orjson.loads(pure_engine.stdout.readline())
    return answer


@pytest.mark.skipif(PURE, reason="both sides would be pure Python")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), conversations=st.integers(3, 40), batch=st.integers(1, 400),
       broken=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 4)), max_size=5))  # fmt: skip
def test_compiled_and_pure_python_give_the_same_outputs(
    pure_engine: subprocess.Popen[bytes],
    seed: int,
    conversations: int,
    batch: int,
    broken: list[tuple[int, int]],
) -> None:
    simulated = Simulator(SimulationSettings(seed=seed, conversations=conversations)).events()
    lines = [orjson.dumps(event).decode() for event in itertools.islice(simulated, 12 * conversations)]
    for where, how in broken:
        if lines:
            lines[where % len(lines)] = _broken(lines[where % len(lines)], how)
    pure = _ask(pure_engine, {"lines": lines, "batch": batch})
    del pure["image"]
    assert orjson.loads(orjson.dumps(outputs(lines, batch))) == pure
