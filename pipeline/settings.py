"""Every engine setting in one place: its default, its meaning and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field

# Channel first-response targets (seconds) for `frt_sla_ratio`; any other channel uses the default.
DEFAULT_SLA_TARGETS: dict[str, float] = {"phone": 20.0, "chat": 60.0, "sms": 300.0, "email": 3600.0}
DEFAULT_SLA_TARGET = 3600.0

ROLLING_SPANS: dict[str, float] = {"5m": 300.0, "15m": 900.0, "1h": 3600.0}


class SettingError(ValueError):
    """A setting has a value it cannot take; the message names the setting and the expected form."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """What the metric engine needs to know; identical for `ccpipe compute` and the live workers."""

    window_seconds: float = 60.0
    fcr_horizon_seconds: float = 7 * 86400.0
    allowed_lateness_seconds: float = 300.0
    sla_targets: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SLA_TARGETS))
    sla_default_seconds: float = DEFAULT_SLA_TARGET
    # An event more than this far ahead of the newest valid event is invalid (contract §1).
    future_tolerance_seconds: float = 86400.0
    # How long (event time) an event_id is remembered for de-duplication.
    dedup_horizon_seconds: float = 86400.0
    # An unresolved conversation with no event for this long leaves memory.
    idle_timeout_seconds: float = 7 * 86400.0

    def __post_init__(self) -> None:
        _positive("window_seconds", self.window_seconds)
        _positive("fcr_horizon_seconds", self.fcr_horizon_seconds)
        _non_negative("allowed_lateness_seconds", self.allowed_lateness_seconds)
        _positive("future_tolerance_seconds", self.future_tolerance_seconds)
        _positive("dedup_horizon_seconds", self.dedup_horizon_seconds)
        _positive("sla_default_seconds", self.sla_default_seconds)
        for channel, target in self.sla_targets.items():
            _positive(f"sla_targets[{channel}]", target)
        if self.idle_timeout_seconds < self.allowed_lateness_seconds:
            raise SettingError(
                "idle_timeout_seconds must be at least allowed_lateness_seconds "
                f"({self.allowed_lateness_seconds}), got {self.idle_timeout_seconds}"
            )

    def sla_target(self, channel: str) -> float:
        return self.sla_targets.get(channel, self.sla_default_seconds)


def _positive(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise SettingError(f"{name} must be a number of seconds greater than 0, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise SettingError(f"{name} must be a number of seconds, 0 or more, got {value!r}")
