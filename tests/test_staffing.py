"""Erlang C (contract §7.3): the worked example, the textbook formula, and the model's own
properties; `ccpipe staffing` as a planner runs it."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.staffing import offered_load, required_agents, staffing, table


def textbook_p_wait(agents: int, load: float) -> float:
    """The contract's formula as written (fine for small N; the module never forms Aᴺ/N!)."""
    top = load**agents / math.factorial(agents) * agents / (agents - load)
    return top / (sum(load**k / math.factorial(k) for k in range(agents)) + top)


def test_the_worked_example() -> None:
    load = offered_load(100, 1800, 180)
    assert load == pytest.approx(10.0)
    assert staffing(13, load, 180, 20).service_level == pytest.approx(0.7956, abs=5e-5)
    fourteen = staffing(14, load, 180, 20)
    assert (
        round(fourteen.service_level, 4),
        round(fourteen.asa_seconds, 2),
        round(fourteen.occupancy, 3),
    ) == (0.8884, 7.84, 0.714)
    assert required_agents(load, 180, 20)[0] == 14
    assert required_agents(load, 180, 20, shrinkage=0.3)[0] == 20  # 14 / 0.7 = 20 exactly: no rounding up


def test_no_load_needs_no_agent_and_a_cap_on_occupancy_adds_agents() -> None:
    assert required_agents(0.0, 180, 20) == (0, None)
    load = offered_load(100, 1800, 180)
    assert required_agents(load, 180, 20, max_occupancy=0.6)[0] == 17  # 10 / 17 <= 0.6 < 10 / 16


@given(agents=st.integers(1, 60), share=st.floats(0.05, 0.98))
def test_the_recursion_equals_the_textbook_formula(agents: int, share: float) -> None:
    load = agents * share
    assert staffing(agents, load, 180, 20).p_wait == pytest.approx(textbook_p_wait(agents, load), rel=1e-9)


@given(load=st.floats(0.01, 1500), aht=st.floats(5, 3600), within=st.floats(0, 600),
       target=st.floats(0.05, 0.99))  # fmt: skip
def test_required_is_the_smallest_count_meeting_the_target(load: float, aht: float, within: float,
                                                           target: float) -> None:  # fmt: skip
    required, figures = required_agents(load, aht, within, service_level=target)
    assert figures is not None and figures.agents == required > load
    assert figures.service_level >= target and 0 < figures.occupancy < 1 and 0 <= figures.p_wait <= 1
    if required - 1 > load:
        assert staffing(required - 1, load, aht, within).service_level < target


@given(load=st.floats(0.5, 900), aht=st.floats(5, 3600), within=st.floats(1, 600))
def test_service_level_rises_and_waiting_falls_with_each_agent(
    load: float, aht: float, within: float
) -> None:
    rows = table(load, aht, within, math.floor(load) + 8)
    assert all(math.isfinite(r.service_level) and math.isfinite(r.asa_seconds) for r in rows)
    for fewer, more in itertools.pairwise(rows):
        assert more.service_level >= fewer.service_level and more.asa_seconds <= fewer.asa_seconds


def test_a_thousand_agents_do_not_overflow() -> None:
    required, figures = required_agents(980.0, 300, 20)
    assert figures is not None and 980 < required < 1100 and math.isfinite(figures.asa_seconds)


def _staffing(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pipeline.cli", "staffing", "--contacts", "100", "--interval-seconds", "1800",
               "--aht", "180", "--answer-within", "20", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_ccpipe_staffing_prints_the_required_agents_and_a_table_around_them() -> None:
    plain = _staffing()
    assert plain.returncode == 0 and plain.stdout.rstrip().endswith("required agents: 14")
    rows = {
        line.split()[0]: line.split()[1:5] for line in plain.stdout.splitlines() if line[:6].strip().isdigit()
    }
    assert rows["13"][0] == "0.7956" and rows["14"] == ["0.8884", "7.84s", "0.714", "0.1741"]
    assert _staffing("--shrinkage", "0.3").stdout.rstrip().endswith("required agents: 20")
    body = json.loads(_staffing("--format", "json", "--shrinkage", "0.3").stdout)
    assert body["offered_load_erlangs"] == pytest.approx(10) and body["required_agents"] == 20
    assert {row["agents"] for row in body["rows"]} >= {13, 14}
    assert set(body["rows"][0]) == {"agents", "service_level", "asa_seconds", "occupancy", "p_wait"}
    refused = _staffing("--service-level", "80")
    assert refused.returncode == 2 and "--service-level must be a number in (0, 1]" in refused.stderr
