"""Every setting, declared once: its field, environment name, parser, default and help.

A setting is a field of `EngineSettings` (what the metric engine needs, identical for
`ccpipe compute` and the live workers) or of `WorkerSettings` (what a worker process needs
besides), declared with `setting(...)`. The environment reading (`WorkerSettings.from_env`),
the `ccpipe compute` flags (`ENGINE_SETTINGS`), the README's configuration table
(`settings_table`, held equal by a test) and the deploy manifests' names all come from those
declarations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.calendars import ALWAYS_OPEN, CalendarError, Calendars, load_calendars

# Channel first-response targets (seconds) for `frt_sla_ratio`; any other channel uses the default.
DEFAULT_SLA_TARGETS: dict[str, float] = {"phone": 20.0, "chat": 60.0, "sms": 300.0, "email": 3600.0}
DEFAULT_SLA_TARGET = 3600.0

RUN_STORE = "chdb://var/run/chdb"  # where `ccpipe run` keeps its embedded store (and `ccpipe sql` looks)

ROLLING_SPANS: dict[str, float] = {"5m": 300.0, "15m": 900.0, "1h": 3600.0}

KAFKA_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")  # every codec Kafka has; workers read them all


class SettingError(ValueError):
    """A setting has a value it cannot take; the message names the setting and the expected form."""


# --- parsers: (name of the setting as the user wrote it, raw text) -> value -------------------


def parse_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 < value < float("inf"):
        raise SettingError(f"{name} must be a number of seconds greater than 0, got {raw!r}")
    return value


def parse_seconds_or_zero(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise SettingError(f"{name} must be a number of seconds, 0 or more, got {raw!r}")
    return value


def _parse_share(low_open: bool, high_open: bool) -> Callable[[str, str], float]:
    """A share (0..1) with the given ends excluded, e.g. (0, 1] for a service-level target."""
    low, high = "(0" if low_open else "[0", "1)" if high_open else "1]"

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        inside = (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
        if not inside:
            raise SettingError(f"{name} must be a number in {low}, {high}, got {raw!r}")
        return value

    return parse


def _parse_count(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name} must be a whole number greater than 0, got {raw!r}") from None
    if value <= 0:
        raise SettingError(f"{name} must be a whole number greater than 0, got {raw!r}")
    return value


def parse_port(name: str, raw: str) -> int:
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


def _parse_compression(name: str, raw: str) -> str | None:
    """A Kafka codec for the records ccpipe produces; `none` or empty: uncompressed."""
    value = raw.strip().lower() or "none"
    if value not in KAFKA_CODECS:
        raise SettingError(f"{name} must be one of {', '.join(KAFKA_CODECS)}, got {raw!r}")
    return None if value == "none" else value


def _parse_sla_targets(name: str, raw: str) -> dict[str, float]:
    """`phone=20,chat=60`: channel targets in seconds."""
    targets: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        channel, sep, seconds = part.partition("=")
        if not sep or not channel.strip():
            raise SettingError(f"{name} must look like 'phone=20,chat=60', got {raw!r}")
        targets[channel.strip()] = parse_seconds(f"{name} ({channel.strip()})", seconds)
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


def _parse_calendars(name: str, raw: str) -> Calendars:
    """A calendars YAML file (contract §6.3); empty: every queue always open."""
    path = raw.strip()
    if not path:
        return ALWAYS_OPEN
    import yaml  # noqa: PLC0415 - only when a calendars file is given

    try:
        document = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SettingError(f"{name}: {path}: cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SettingError(f"{name}: {path}: {where}not YAML ({getattr(exc, 'problem', exc)})") from None
    try:
        return load_calendars(document)
    except CalendarError as exc:
        raise SettingError(f"{name}: {path}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Setting:
    """One declared setting, as `settings_table`, the environment and the flags see it."""

    field: str
    env: str
    flag: str
    default: Any
    help: str
    parse: Callable[[str, str], Any]
    secret: bool

    @property
    def shown_default(self) -> str:
        """The default as one would write it in the environment (empty: none)."""
        value = self.default
        if value is None or value is ALWAYS_OPEN:
            return ""
        if isinstance(value, dict):
            return ",".join(f"{key}={target:g}" for key, target in value.items())
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    def read(self, environ: Mapping[str, str]) -> Any:
        raw = env_or_file(environ, self.env) if self.secret else environ.get(self.env)
        return self.default if raw is None else self.parse(self.env, raw)


def setting(
    default: Any,
    help: str,
    parse: Callable[[str, str], Any],
    *,
    env: str | None = None,
    flag: str | None = None,
    secret: bool = False,
) -> Any:
    """A dataclass field that carries its declaration (env name from the field name unless given)."""
    meta = {"ccpipe": {"help": help, "parse": parse, "env": env, "flag": flag, "secret": secret}}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta, repr=not secret)


def declared(cls: type) -> tuple[Setting, ...]:
    """The settings a dataclass declares, in field order."""
    found = []
    for item in dataclasses.fields(cls):
        meta = item.metadata.get("ccpipe")
        if meta is None:
            continue
        default = item.default_factory() if item.default is dataclasses.MISSING else item.default  # type: ignore[operator]
        found.append(Setting(
            field=item.name, env=meta["env"] or f"CCPIPE_{item.name.upper()}",
            flag=meta["flag"] or "--" + item.name.replace("_", "-"), default=default, help=meta["help"],
            parse=meta["parse"], secret=meta["secret"],
        ))  # fmt: skip
    return tuple(found)


def _positive(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise SettingError(f"{name} must be a number of seconds greater than 0, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise SettingError(f"{name} must be a number of seconds, 0 or more, got {value!r}")


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """What the metric engine needs to know; identical for `ccpipe compute` and the live workers."""

    window_seconds: float = setting(60.0, "tumbling window size W", parse_seconds)
    fcr_horizon_seconds: float = setting(604800.0, "FCR horizon H", parse_seconds)
    allowed_lateness_seconds: float = setting(300.0, "allowed lateness", parse_seconds_or_zero)
    sla_targets: dict[str, float] = setting(
        DEFAULT_SLA_TARGETS, "FRT target per channel, seconds", _parse_sla_targets
    )
    sla_default_seconds: float = setting(
        DEFAULT_SLA_TARGET, "FRT target of channels not listed", parse_seconds
    )
    future_tolerance_seconds: float = setting(
        86400.0,
        "an event this far ahead of the newest valid event is invalid (contract: 24 h)",
        parse_seconds,
    )
    dedup_horizon_seconds: float = setting(
        86400.0, "how long event ids are remembered (event time)", parse_seconds
    )
    idle_timeout_seconds: float = setting(
        604800.0, "an unresolved idle conversation leaves memory after this", parse_seconds
    )
    short_abandon_seconds: float = setting(
        0.0, "an abandon less than this after the start is a short abandon (0: none)", parse_seconds_or_zero
    )
    calendars: Calendars = setting(
        ALWAYS_OPEN, "YAML file of business hours per queue (none: always open)", _parse_calendars,
        env="CCPIPE_CALENDARS_FILE", flag="--calendars",
    )  # fmt: skip
    agent_stale_seconds: float = setting(
        28800.0, "an agent whose latest event is this far behind the newest event time is offline",
        parse_seconds,
    )  # fmt: skip

    def __post_init__(self) -> None:
        _positive("window_seconds", self.window_seconds)
        _positive("fcr_horizon_seconds", self.fcr_horizon_seconds)
        _non_negative("allowed_lateness_seconds", self.allowed_lateness_seconds)
        _positive("future_tolerance_seconds", self.future_tolerance_seconds)
        _positive("dedup_horizon_seconds", self.dedup_horizon_seconds)
        _positive("sla_default_seconds", self.sla_default_seconds)
        _non_negative("short_abandon_seconds", self.short_abandon_seconds)
        _positive("agent_stale_seconds", self.agent_stale_seconds)
        for channel, target in self.sla_targets.items():
            _positive(f"sla_targets[{channel}]", target)
        if self.idle_timeout_seconds < self.allowed_lateness_seconds:
            raise SettingError(
                "idle_timeout_seconds must be at least allowed_lateness_seconds "
                f"({self.allowed_lateness_seconds}), got {self.idle_timeout_seconds}"
            )

    def sla_target(self, channel: str) -> float:
        return self.sla_targets.get(channel, self.sla_default_seconds)


ENGINE_SETTINGS = declared(EngineSettings)


@dataclass(frozen=True, slots=True)
class StaffingSettings:
    """The Erlang C model's targets (contract §7.3), for the staffing gauges and `ccpipe staffing`."""

    staffing_service_level: float = setting(
        0.8, "target share of contacts answered within the channel's FRT target (Erlang C)",
        _parse_share(low_open=True, high_open=False), flag="--service-level",
    )  # fmt: skip
    staffing_max_occupancy: float = setting(
        1.0, "highest occupancy required agents may run at (1: no cap)",
        _parse_share(low_open=True, high_open=False), flag="--max-occupancy",
    )  # fmt: skip
    staffing_shrinkage: float = setting(
        0.0, "share of scheduled time agents are not available (breaks, training)",
        _parse_share(low_open=False, high_open=True), flag="--shrinkage",
    )  # fmt: skip


STAFFING_SETTINGS = declared(StaffingSettings)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """A worker's whole configuration; `from_env` is the only way settings enter a worker."""

    kafka_bootstrap_servers: str = setting(
        "127.0.0.1:9092", "Kafka brokers, host:port[,host:port]", _parse_hostport_list
    )
    input_topic: str = setting("interactions", "topic of interaction events", _parse_text)
    dlq_topic: str = setting("interactions.dlq", "dead-letter topic for invalid events", _parse_text)
    checkpoint_topic: str = setting(
        "ccpipe.checkpoints", "engine checkpoints (this name and NAME.data)", _parse_text
    )
    partials_topic: str = setting(
        "ccpipe.partials",
        "per-partition window partials, merged by the worker owning each (channel, queue)",
        _parse_text,
    )
    partitions: int = setting(12, "partitions of the topics ccpipe creates", _parse_count)
    replication_factor: int = setting(1, "replication factor of the topics ccpipe creates", _parse_count)
    group_id: str = setting(
        "ccpipe", "consumer group (Faust app id); workers sharing it share the load", _parse_text
    )
    kafka_security_protocol: str = setting(
        "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        _parse_choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    )  # fmt: skip
    kafka_sasl_mechanism: str = setting(
        "PLAIN",
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        _parse_choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
    )
    kafka_sasl_username: str | None = setting(None, "SASL user name", _parse_optional_text)
    kafka_sasl_password: str | None = setting(
        None, "SASL password (or CCPIPE_KAFKA_SASL_PASSWORD_FILE)", _parse_optional_text, secret=True
    )
    kafka_ssl_cafile: str | None = setting(
        None, "CA bundle for TLS to Kafka (default: system CAs)", _parse_optional_text
    )
    kafka_compression: str | None = setting(
        None, "codec of the records ccpipe produces (replay, simulate, dead letters): "
        "none, gzip, snappy, lz4 or zstd", _parse_compression,
    )  # fmt: skip
    kafka_max_fetch_bytes: int = setting(
        4 * 1024 * 1024, "bytes a worker fetches per partition at most; must exceed the topics' "
        "max.message.bytes (a larger record batch stops the worker, naming it)", _parse_count,
    )  # fmt: skip
    partition_stall_seconds: float = setting(
        60.0, "a partition with records waiting and no progress this long is logged as stalled",
        parse_seconds,
    )  # fmt: skip
    store_url: str | None = setting(
        None,
        "chdb:///dir, clickhouse://user:pass@host:9000/db or clickhouses://... (or CCPIPE_STORE_URL_FILE); "
        "empty: chDB in CCPIPE_DATA_DIR/chdb",
        _parse_optional_text,
        secret=True,
    )
    store_batch_rows: int = setting(20000, "rows that trigger a write", _parse_count)
    store_flush_seconds: float = setting(1.0, "longest time a row waits to be written", parse_seconds)
    store_max_buffer_rows: int = setting(
        200000, "rows buffered at most; consumption pauses beyond", _parse_count
    )
    store_ttl_days: int = setting(400, "days rows are kept (set when tables are created)", _parse_count)
    query_port: int = setting(9465, "loopback port where `ccpipe sql` reaches a running worker", parse_port)
    metrics_bind: str = setting("127.0.0.1", "address the /metrics endpoint binds to", _parse_text)
    metrics_port: int = setting(9464, "port of the /metrics endpoint", parse_port)
    batch_size: int = setting(10_000, "most input records fetched at once (all partitions)", _parse_count)
    checkpoint_interval_seconds: float = setting(
        30.0, "how often each partition's engine state is checkpointed", parse_seconds
    )
    kafka_session_timeout_seconds: float = setting(30.0, "consumer group session timeout", parse_seconds)
    shutdown_timeout_seconds: float = setting(
        25.0, "on SIGTERM/SIGINT/SIGHUP a worker stops gracefully, and exits after this at the latest",
        parse_seconds,
    )  # fmt: skip
    data_dir: str = setting("var/ccpipe", "local working directory of the worker", _parse_text)
    log_level: str = setting(
        "WARNING", "DEBUG, INFO, WARNING or ERROR", _parse_choice("DEBUG", "INFO", "WARNING", "ERROR")
    )
    engine_settings: EngineSettings = field(default_factory=EngineSettings)
    staffing: StaffingSettings = field(default_factory=StaffingSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WorkerSettings:
        """Read every CCPIPE_* variable (defaults for the absent ones)."""
        engine = EngineSettings(**{s.field: s.read(environ) for s in ENGINE_SETTINGS})
        staffing = StaffingSettings(**{s.field: s.read(environ) for s in STAFFING_SETTINGS})
        return cls(
            **{s.field: s.read(environ) for s in WORKER_ONLY}, engine_settings=engine, staffing=staffing
        )

    def store(self) -> str:
        """The store URL, defaulting to chDB files in the data directory."""
        return self.store_url or f"chdb://{Path(self.data_dir).resolve()}/chdb"

    def engine(self) -> EngineSettings:
        return self.engine_settings


WORKER_ONLY = declared(WorkerSettings)
WORKER_SETTINGS = WORKER_ONLY + ENGINE_SETTINGS + STAFFING_SETTINGS  # all a worker reads from its environment
SECRETS = tuple(s.env for s in WORKER_SETTINGS if s.secret)  # also read from NAME_FILE (mounted secrets)


def settings_table() -> str:
    """The README's configuration table (a test holds the README equal to it)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for s in WORKER_SETTINGS:
        shown = f"`{s.shown_default}`" if s.shown_default else "(none)"
        lines.append(f"| `{s.env}` | {shown} | {s.help} |")
    return "\n".join(lines) + "\n"


def env_or_file(environ: Mapping[str, str], name: str) -> str | None:
    """The variable `name`, or the content of the file `name`_FILE names (which wins)."""
    path = environ.get(f"{name}_FILE")
    if not path:
        return environ.get(name)
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SettingError(f"{name}_FILE cannot be read: {exc.strerror}") from None
