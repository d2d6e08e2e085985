"""Every engine setting in one place: its default, its meaning and its validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Channel first-response targets (seconds) for `frt_sla_ratio`; any other channel uses the default.
DEFAULT_SLA_TARGETS: dict[str, float] = {"phone": 20.0, "chat": 60.0, "sms": 300.0, "email": 3600.0}
DEFAULT_SLA_TARGET = 3600.0

RUN_STORE = "chdb://var/run/chdb"  # where `ccpipe run` keeps its embedded store (and `ccpipe sql` looks)

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


# --- worker settings, from the environment -------------------------------------------------


def _parse_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 < value < float("inf"):
        raise SettingError(f"{name} must be a number of seconds greater than 0, got {raw!r}")
    return value


def _parse_seconds_or_zero(name: str, raw: str) -> float:
    if raw.strip() in {"0", "0.0"}:
        return 0.0
    return _parse_seconds(name, raw)


def _parse_count(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name} must be a whole number greater than 0, got {raw!r}") from None
    if value <= 0:
        raise SettingError(f"{name} must be a whole number greater than 0, got {raw!r}")
    return value


def _parse_port(name: str, raw: str) -> int:
    value = _parse_count(name, raw)
    if value > 65535:
        raise SettingError(f"{name} must be a TCP port (1-65535), got {raw!r}")
    return value


def _parse_text(name: str, raw: str) -> str:
    if not raw.strip():
        raise SettingError(f"{name} must not be empty")
    return raw.strip()


def _parse_optional_text(name: str, raw: str) -> str | None:
    return raw.strip() or None


def _parse_choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper()
        if value not in choices:
            raise SettingError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _parse_sla_targets(name: str, raw: str) -> dict[str, float]:
    """`phone=20,chat=60`: channel targets in seconds."""
    targets: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        channel, sep, seconds = part.partition("=")
        if not sep or not channel.strip():
            raise SettingError(f"{name} must look like 'phone=20,chat=60', got {raw!r}")
        targets[channel.strip()] = _parse_seconds(f"{name} ({channel.strip()})", seconds)
    return targets


def _parse_hostport_list(name: str, raw: str) -> str:
    hosts = [h.strip() for h in raw.split(",") if h.strip()]
    for host in hosts:
        _, sep, port = host.rpartition(":")
        if not sep or not port.isdigit():
            raise SettingError(f"{name} must be a comma-separated list of host:port, got {raw!r}")
    if not hosts:
        raise SettingError(f"{name} must be a comma-separated list of host:port, got {raw!r}")
    return ",".join(hosts)


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: its name, default, meaning and parser."""

    env: str
    default: str
    help: str
    parse: Callable[[str, str], Any]

    @property
    def field(self) -> str:
        return self.env.removeprefix("CCPIPE_").lower()


WORKER_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "CCPIPE_KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:9092",
        "Kafka brokers, host:port[,host:port]",
        _parse_hostport_list,
    ),
    Setting("CCPIPE_INPUT_TOPIC", "interactions", "topic of interaction events", _parse_text),
    Setting("CCPIPE_DLQ_TOPIC", "interactions.dlq", "dead-letter topic for invalid events", _parse_text),
    Setting(
        "CCPIPE_CHECKPOINT_TOPIC",
        "ccpipe.checkpoints",
        "engine checkpoints (this name and NAME.data)",
        _parse_text,
    ),
    Setting(
        "CCPIPE_PARTIALS_TOPIC",
        "ccpipe.partials",
        "per-partition window partials, merged by the worker owning each (channel, queue)",
        _parse_text,
    ),
    Setting("CCPIPE_PARTITIONS", "12", "partitions of the topics ccpipe creates", _parse_count),
    Setting(
        "CCPIPE_REPLICATION_FACTOR", "1", "replication factor of the topics ccpipe creates", _parse_count
    ),
    Setting(
        "CCPIPE_GROUP_ID",
        "ccpipe",
        "consumer group (Faust app id); workers sharing it share the load",
        _parse_text,
    ),
    Setting(
        "CCPIPE_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        _parse_choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    ),
    Setting(
        "CCPIPE_KAFKA_SASL_MECHANISM",
        "PLAIN",
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        _parse_choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
    ),
    Setting("CCPIPE_KAFKA_SASL_USERNAME", "", "SASL user name", _parse_optional_text),
    Setting(
        "CCPIPE_KAFKA_SASL_PASSWORD",
        "",
        "SASL password (or CCPIPE_KAFKA_SASL_PASSWORD_FILE)",
        _parse_optional_text,
    ),
    Setting(
        "CCPIPE_KAFKA_SSL_CAFILE",
        "",
        "CA bundle for TLS to Kafka (default: system CAs)",
        _parse_optional_text,
    ),
    Setting(
        "CCPIPE_STORE_URL",
        "",
        "chdb:///dir, clickhouse://user:pass@host:9000/db or clickhouses://... (or CCPIPE_STORE_URL_FILE); "
        "empty: chDB in CCPIPE_DATA_DIR/chdb",
        _parse_optional_text,
    ),
    Setting("CCPIPE_STORE_BATCH_ROWS", "20000", "rows that trigger a write", _parse_count),
    Setting("CCPIPE_STORE_FLUSH_SECONDS", "1", "longest time a row waits to be written", _parse_seconds),
    Setting(
        "CCPIPE_STORE_MAX_BUFFER_ROWS",
        "200000",
        "rows buffered at most; consumption pauses beyond",
        _parse_count,
    ),
    Setting("CCPIPE_STORE_TTL_DAYS", "400", "days rows are kept (set when tables are created)", _parse_count),
    Setting(
        "CCPIPE_QUERY_PORT", "9465", "loopback port where `ccpipe sql` reaches a running worker", _parse_port
    ),
    Setting("CCPIPE_METRICS_BIND", "127.0.0.1", "address the /metrics endpoint binds to", _parse_text),
    Setting("CCPIPE_METRICS_PORT", "9464", "port of the /metrics endpoint", _parse_port),
    Setting("CCPIPE_WINDOW_SECONDS", "60", "tumbling window size", _parse_seconds),
    Setting("CCPIPE_FCR_HORIZON_SECONDS", "604800", "FCR horizon H", _parse_seconds),
    Setting("CCPIPE_ALLOWED_LATENESS_SECONDS", "300", "allowed lateness", _parse_seconds_or_zero),
    Setting(
        "CCPIPE_SLA_TARGETS",
        ",".join(f"{c}={t:g}" for c, t in DEFAULT_SLA_TARGETS.items()),
        "FRT target per channel, seconds",
        _parse_sla_targets,
    ),
    Setting(
        "CCPIPE_SLA_DEFAULT_SECONDS",
        f"{DEFAULT_SLA_TARGET:g}",
        "FRT target of channels not listed",
        _parse_seconds,
    ),
    Setting(
        "CCPIPE_IDLE_TIMEOUT_SECONDS",
        "604800",
        "an unresolved idle conversation leaves memory after this",
        _parse_seconds,
    ),
    Setting(
        "CCPIPE_DEDUP_HORIZON_SECONDS",
        "86400",
        "how long event ids are remembered (event time)",
        _parse_seconds,
    ),
    Setting("CCPIPE_BATCH_SIZE", "2000", "events handed to the engine at once", _parse_count),
    Setting("CCPIPE_BATCH_WITHIN_SECONDS", "0.2", "longest wait to fill a batch", _parse_seconds),
    Setting(
        "CCPIPE_CHECKPOINT_INTERVAL_SECONDS",
        "30",
        "how often each partition's engine state is checkpointed",
        _parse_seconds,
    ),
    Setting("CCPIPE_KAFKA_SESSION_TIMEOUT_SECONDS", "30", "consumer group session timeout", _parse_seconds),
    Setting(
        "CCPIPE_SHUTDOWN_TIMEOUT_SECONDS",
        "25",
        "on SIGTERM/SIGINT/SIGHUP a worker stops gracefully, and exits after this at the latest",
        _parse_seconds,
    ),
    Setting("CCPIPE_DATA_DIR", "var/ccpipe", "local working directory of the worker", _parse_text),
    Setting(
        "CCPIPE_LOG_LEVEL",
        "WARNING",
        "DEBUG, INFO, WARNING or ERROR",
        _parse_choice("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
)


# Settings that carry credentials: also read from the file NAME_FILE names (mounted secrets).
SECRETS = ("CCPIPE_KAFKA_SASL_PASSWORD", "CCPIPE_STORE_URL")


def env_or_file(environ: Mapping[str, str], name: str) -> str | None:
    """The variable `name`, or the content of the file `name`_FILE names (which wins)."""
    path = environ.get(f"{name}_FILE")
    if not path:
        return environ.get(name)
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SettingError(f"{name}_FILE cannot be read: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """A worker's whole configuration; `from_env` is the only way settings enter a worker."""

    kafka_bootstrap_servers: str
    input_topic: str
    dlq_topic: str
    checkpoint_topic: str
    partials_topic: str
    partitions: int
    replication_factor: int
    group_id: str
    kafka_security_protocol: str
    kafka_sasl_mechanism: str
    kafka_sasl_username: str | None
    kafka_sasl_password: str | None = field(repr=False)
    kafka_ssl_cafile: str | None
    store_url: str | None = field(repr=False)
    store_batch_rows: int
    store_flush_seconds: float
    store_max_buffer_rows: int
    store_ttl_days: int
    query_port: int
    metrics_bind: str
    metrics_port: int
    window_seconds: float
    fcr_horizon_seconds: float
    allowed_lateness_seconds: float
    sla_targets: dict[str, float]
    sla_default_seconds: float
    idle_timeout_seconds: float
    dedup_horizon_seconds: float
    batch_size: int
    batch_within_seconds: float
    checkpoint_interval_seconds: float
    kafka_session_timeout_seconds: float
    shutdown_timeout_seconds: float
    data_dir: str
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> WorkerSettings:
        """Read every CCPIPE_* variable (defaults for the absent ones); `overrides` win."""
        values: dict[str, Any] = {}
        for setting in WORKER_SETTINGS:
            raw = env_or_file(environ, setting.env) if setting.env in SECRETS else environ.get(setting.env)
            values[setting.field] = setting.parse(setting.env, setting.default if raw is None else raw)
        values.update(overrides)
        settings = cls(**values)
        settings.engine()  # validates the engine settings together
        return settings

    def store(self) -> str:
        """The store URL, defaulting to chDB files in the data directory."""
        return self.store_url or f"chdb://{Path(self.data_dir).resolve()}/chdb"

    def engine(self) -> EngineSettings:
        return EngineSettings(
            window_seconds=self.window_seconds,
            fcr_horizon_seconds=self.fcr_horizon_seconds,
            allowed_lateness_seconds=self.allowed_lateness_seconds,
            sla_targets=dict(self.sla_targets),
            sla_default_seconds=self.sla_default_seconds,
            idle_timeout_seconds=self.idle_timeout_seconds,
            dedup_horizon_seconds=self.dedup_horizon_seconds,
        )
