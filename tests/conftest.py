"""Fixtures that start real processes on free loopback ports and stop them by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streaming import fresh_topics

from pipeline.broker import EmbeddedBroker, start_broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A real Tansu broker process (Kafka API) for the whole session."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    running = start_broker(log_path=log)
    yield running
    running.stop()


@pytest.fixture
def topics() -> dict[str, str]:
    """Fresh topic and group names, so tests sharing the broker never see each other's data."""
    return fresh_topics()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
