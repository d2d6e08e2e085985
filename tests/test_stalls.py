"""The stall watch, on a stepped clock: progress, catching up and a stuck partition."""

from __future__ import annotations

import logging

import pytest

from pipeline.stream.stalls import StallWatch

TP = ("interactions", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_behind_that_does_not_move_is_stalled_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    watch = StallWatch(bound=60, clock=clock)
    caplog.set_level(logging.WARNING, "ccpipe.worker")
    watch.observe({TP: 10}, {TP: 50})
    for _ in range(20):
        clock.now += 5
        watch.observe({TP: 10}, {TP: 50})
    assert watch.stalled() == {TP: 100.0}
    stalled = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalled) == 1 and "interactions partition 1" in stalled[0] and "offset 10" in stalled[0]
    assert "records up to 49" in stalled[0]
    clock.now += 5
    watch.observe({TP: 11}, {TP: 50})  # it moves again
    assert watch.stalled() == {TP: 0.0}
    assert any("moves again" in r.getMessage() for r in caplog.records)


def test_progress_or_no_records_waiting_is_no_stall() -> None:
    clock = Clock()
    watch = StallWatch(bound=60, clock=clock)
    for step in range(30):
        clock.now += 5
        watch.observe({TP: 10 + step, ("interactions", 2): 7}, {TP: 1000, ("interactions", 2): 7})
    stalled = watch.stalled()
    assert stalled[("interactions", 2)] == 0.0 and stalled[TP] == 0.0


def test_partitions_that_leave_are_forgotten() -> None:
    watch = StallWatch(bound=60, clock=Clock())
    watch.observe({TP: 1}, {TP: 5})
    watch.observe({}, {})
    assert watch.stalled() == {}
