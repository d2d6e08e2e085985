"""Erlang C staffing (contract §7.3): offered load, service level, ASA and required agents.

Pure functions, no I/O: the exporter's staffing gauges and `ccpipe staffing` both call them.
P_wait comes from the Erlang B recursion B(k) = A·B(k-1) / (k + A·B(k-1)), B(0) = 1, and
C = N·B / (N - A·(1 - B)): no factorial and no power of A is ever formed, so it is exact to
floating point at a thousand agents and more, where the textbook formula overflows.

Assumptions of the model (docs/staffing.md): arrivals are Poisson, handle times exponential,
nobody abandons, an agent handles one contact at a time, and a multi-queue agent counts in
each of the queues they serve.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

# A required-agents value within this of an integer is that integer (contract §7.3).
INTEGER_TOLERANCE = 1e-9
# The table `ccpipe staffing` prints: this many agent counts below and above the required one.
AROUND = 2


@dataclass(frozen=True, slots=True)
class Staffing:
    """The Erlang C figures for `agents` agents facing `offered_load` Erlangs."""

    agents: int
    service_level: float
    asa_seconds: float
    occupancy: float
    p_wait: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def offered_load(contacts: float, interval_seconds: float, aht_seconds: float) -> float:
    """A = λ · AHT, in Erlangs, with λ = contacts / interval."""
    return contacts / interval_seconds * aht_seconds


def _erlang_b(load: float) -> Iterator[tuple[int, float]]:
    """(k, B(k, A)) for k = 1, 2, 3, …"""
    blocking = 1.0
    for k in itertools.count(1):
        blocking = load * blocking / (k + load * blocking)
        yield k, blocking


def _figures(agents: int, load: float, blocking: float, aht: float, answer_within: float) -> Staffing:
    p_wait = agents * blocking / (agents - load * (1.0 - blocking))
    spare = agents - load
    return Staffing(
        agents=agents,
        service_level=1.0 - p_wait * math.exp(-spare * answer_within / aht),
        asa_seconds=p_wait * aht / spare,
        occupancy=load / agents,
        p_wait=p_wait,
    )


def staffing(agents: int, load: float, aht: float, answer_within: float) -> Staffing:
    """Service level, ASA, occupancy and P_wait with `agents` > `load` agents."""
    if not agents > load:
        raise ValueError(f"Erlang C needs more agents than the offered load ({agents} <= {load:g})")
    _, blocking = next(itertools.islice(_erlang_b(load), agents - 1, None))
    return _figures(agents, load, blocking, aht, answer_within)


def required_agents(
    load: float,
    aht: float,
    answer_within: float,
    *,
    service_level: float = 0.8,
    max_occupancy: float = 1.0,
    shrinkage: float = 0.0,
) -> tuple[int, Staffing | None]:
    """The agents to schedule (after shrinkage) and the figures of the smallest N > A that
    meets the service level and the occupancy cap; (0, None) when there is no load."""
    if load <= 0:
        return 0, None
    for k, blocking in _erlang_b(load):
        if k <= load or load / k > max_occupancy:
            continue
        figures = _figures(k, load, blocking, aht, answer_within)
        if figures.service_level >= service_level:
            return _after_shrinkage(k, shrinkage), figures
    raise AssertionError("unreachable: service level tends to 1 as agents grow")  # pragma: no cover


def _after_shrinkage(agents: int, shrinkage: float) -> int:
    scheduled = agents / (1.0 - shrinkage)
    nearest = round(scheduled)
    return nearest if abs(scheduled - nearest) <= INTEGER_TOLERANCE else math.ceil(scheduled)


def table(load: float, aht: float, answer_within: float, required: int) -> list[Staffing]:
    """Figures for the few agent counts around `required` (each above the load)."""
    low = max(math.floor(load) + 1, required - AROUND)
    return [staffing(n, load, aht, answer_within) for n in range(low, max(low, required + AROUND) + 1)]
