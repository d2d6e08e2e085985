"""Decode and validate one interaction event (contract §1).

Runs on every message, so it is a straight-line check on the decoded dict rather than a
generic JSON Schema walk; `schemas/interaction-event.schema.json` states the same rules and
a test feeds both the same examples. Validation never raises: a bad event becomes an
`InvalidEvent` carrying a stable reason code (a Prometheus label) and a human detail.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.timefmt import EPOCH_MAX, EPOCH_MIN, parse_rfc3339

EVENT_TYPES = frozenset(
    {
        "conversation_started",
        "message",
        "agent_assigned",
        "conversation_resolved",
        "conversation_reopened",
        "conversation_abandoned",
        "survey",
        "agent_state",  # contract §7.1: no event of a conversation
    }
)
AGENT_STATES = frozenset({"available", "on_contact", "after_contact_work", "away", "offline"})
HANDLING = frozenset({"on_contact", "after_contact_work"})  # states that name the contact handled
MAX_AGENT_QUEUES = 50
DIRECTIONS = frozenset({"inbound", "outbound"})
AUTHORS = frozenset({"customer", "agent", "bot", "system"})
DEFAULT_QUEUE = "default"

# Bytes above which a message is refused before it is parsed at all.
MAX_EVENT_BYTES = 1024 * 1024
MAX_TEXT_CHARS = 64 * 1024
# A record key longer than this cannot be a customer_id or agent_id (128 characters of UTF-8).
MAX_KEY_BYTES = 1024

_CHANNEL = re.compile(r"[a-z0-9_-]{1,32}")

# Reason codes: a closed set, so they are safe as metric labels and table values.
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
TOO_LARGE = "too_large"
TOMBSTONE = "tombstone"  # a record with a null value (compacted topics, Debezium, Kafka Connect)
EMPTY = "empty"  # an empty or blank value
NOT_UTF8 = "not_utf8"
NOT_FINITE = "not_finite"  # NaN or Infinity, which JSON does not have
TOO_DEEP = "too_deep"  # nested deeper than the parser's limit (1024)
KEY_TOO_LARGE = "key_too_large"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
OUT_OF_RANGE = "out_of_range"
UNKNOWN_TYPE = "unknown_type"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
REASONS = (
    NOT_JSON,
    NOT_OBJECT,
    TOO_LARGE,
    TOMBSTONE,
    EMPTY,
    NOT_UTF8,
    NOT_FINITE,
    TOO_DEEP,
    KEY_TOO_LARGE,
    MISSING_FIELD,
    WRONG_TYPE,
    OUT_OF_RANGE,
    UNKNOWN_TYPE,
    BAD_TIMESTAMP,
    FUTURE_TIMESTAMP,
)


@dataclass(slots=True)
class Event:
    """A valid event, normalized: `timestamp` is epoch seconds, `queue` is never absent. An
    `agent_state` event has no customer (`customer_id` is empty) and, unless it names the contact
    handled, no conversation or channel (empty too)."""

    event_id: str
    type: str
    conversation_id: str
    customer_id: str
    channel: str
    queue: str
    timestamp: float
    direction: str | None = None
    author: str | None = None
    agent_id: str | None = None
    text: str | None = None
    sentiment: float | None = None
    csat: int | None = None
    nps: int | None = None
    ces: int | None = None
    raw: bytes = b""
    # Where it came from ("line 12", "interactions[3]@1042"), for error reports.
    origin: str = ""
    # agent_state only (contract §7.1): the state, and the queues and channels served from now
    # on (None: as the agent's previous event says).
    state: str | None = None
    queues: tuple[str, ...] | None = None
    channels: tuple[str, ...] | None = None
    reason: str | None = None

    @property
    def routing_key(self) -> str:
        """Whose events must meet one engine: the customer's, or for agent events the agent's."""
        return self.customer_id or (self.agent_id or "")


@dataclass(slots=True)
class InvalidEvent:
    """An event refused by validation, kept whole for the dead-letter path."""

    reason: str
    detail: str
    raw: bytes
    origin: str = ""


class _Invalid(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def decode_event(raw: bytes | str | None, origin: str = "") -> Event | InvalidEvent:
    """Parse one message (bytes or str; None is a Kafka tombstone) and validate it; never raises."""
    if raw is None:
        return InvalidEvent(TOMBSTONE, "the record has no value (a tombstone)", b"", origin)
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > MAX_EVENT_BYTES:
        detail = f"message is {len(data)} bytes, limit {MAX_EVENT_BYTES}"
        return InvalidEvent(TOO_LARGE, detail, data, origin)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return InvalidEvent(*_unparsable(data, exc), data, origin)
    return validate_event(obj, data, origin)


_NON_FINITE = re.compile(rb"(?<![\w\"])-?(?:NaN|Infinity)(?![\w\"])")


def _unparsable(data: bytes, error: orjson.JSONDecodeError) -> tuple[str, str]:
    """Why a value is not JSON, as a reason code (only on the failure path: costs nothing else)."""
    message = str(error)
    if not data.strip():
        return EMPTY, "the record's value is empty"
    if "UTF-8" in message:
        return NOT_UTF8, f"not UTF-8: {message}"
    if "depth limit" in message or "recursion" in message:
        return TOO_DEEP, f"nested too deeply: {message}"
    if "infinity" in message or _NON_FINITE.search(data):
        return NOT_FINITE, f"NaN and Infinity are not JSON numbers: {message}"
    return NOT_JSON, f"not JSON: {message}"


def validate_event(obj: Any, raw: bytes = b"", origin: str = "") -> Event | InvalidEvent:
    """Check a decoded JSON value against contract §1; never raises."""
    if not isinstance(obj, dict):
        return InvalidEvent(NOT_OBJECT, f"expected a JSON object, got {_json_type(obj)}", raw, origin)
    try:
        return _build(obj, raw, origin)
    except _Invalid as bad:
        return InvalidEvent(bad.reason, bad.detail, raw, origin)


def _build(obj: dict[str, Any], raw: bytes, origin: str) -> Event:
    # Fast path: the common well-formed event passes these identity checks without a call each;
    # anything unusual falls through to the field checkers, which name the exact problem.
    get = obj.get
    event_type = get("type")
    if type(event_type) is not str or event_type not in EVENT_TYPES:
        event_type = _present(obj, "type", required=True)
        if not isinstance(event_type, str):
            raise _Invalid(WRONG_TYPE, f"type must be a string, got {_json_type(event_type)}")
        raise _Invalid(UNKNOWN_TYPE, f"type {event_type[:64]!r} is not one of {sorted(EVENT_TYPES)}")
    if event_type == "agent_state":
        return _build_agent(obj, raw, origin)
    event_id = get("event_id")
    conversation_id = get("conversation_id")
    customer_id = get("customer_id")
    if not (
        type(event_id) is str
        and type(conversation_id) is str
        and type(customer_id) is str
        and 0 < len(event_id) <= 128
        and 0 < len(conversation_id) <= 128
        and 0 < len(customer_id) <= 128
    ):
        event_id = _string(obj, "event_id", 1, 128, required=True)
        conversation_id = _string(obj, "conversation_id", 1, 128, required=True)
        customer_id = _string(obj, "customer_id", 1, 128, required=True)
    channel = get("channel")
    if type(channel) is not str or not _CHANNEL.fullmatch(channel):
        channel = _string(obj, "channel", 1, 32, required=True)
        raise _Invalid(OUT_OF_RANGE, f"channel {channel!r} must match [a-z0-9_-]{{1,32}}")
    queue = get("queue")
    if queue is None:
        queue = DEFAULT_QUEUE
    elif type(queue) is not str or not 0 < len(queue) <= 64:
        queue = _string(obj, "queue", 1, 64)
    raw_time: Any = get("timestamp")
    timestamp = (
        float(raw_time)
        if type(raw_time) in (int, float) and EPOCH_MIN <= raw_time <= EPOCH_MAX
        else _timestamp(obj)
    )
    direction = get("direction")
    author = get("author")
    if event_type == "message" or direction is not None or author is not None:
        required = event_type == "message"
        direction = _choice(obj, "direction", DIRECTIONS, required)
        author = _choice(obj, "author", AUTHORS, required)
    agent_id = get("agent_id")
    if agent_id is not None and (type(agent_id) is not str or not 0 < len(agent_id) <= 128):
        agent_id = _string(obj, "agent_id", 1, 128)
    text = get("text")
    if text is not None and (type(text) is not str or len(text) > MAX_TEXT_CHARS):
        text = _string(obj, "text", 0, MAX_TEXT_CHARS)
    sentiment = get("sentiment")
    if sentiment is not None:
        sentiment = _number(obj, "sentiment", -1.0, 1.0)
    csat = nps = ces = None
    if event_type == "survey" or "csat" in obj or "nps" in obj or "ces" in obj:
        csat = _integer(obj, "csat", 1, 5)
        nps = _integer(obj, "nps", 0, 10)
        ces = _integer(obj, "ces", 1, 7)
        if event_type == "survey" and csat is None and nps is None and ces is None:
            raise _Invalid(MISSING_FIELD, "a survey needs at least one of csat, nps, ces")
    return Event(
        event_id, event_type, conversation_id, customer_id, channel, queue, timestamp,
        direction, author, agent_id, text, sentiment, csat, nps, ces, raw, origin,
    )  # fmt: skip


def _build_agent(obj: dict[str, Any], raw: bytes, origin: str) -> Event:
    """An `agent_state` event (contract §7.1)."""
    event_id = _string(obj, "event_id", 1, 128, required=True)
    agent_id = _string(obj, "agent_id", 1, 128, required=True)
    state = _choice(obj, "state", AGENT_STATES, required=True)
    timestamp = _timestamp(obj)
    handling = state in HANDLING
    conversation_id = _string(obj, "conversation_id", 1, 128, required=handling) or ""
    channel = _string(obj, "channel", 1, 32, required=handling) or ""
    if channel and not _CHANNEL.fullmatch(channel):
        raise _Invalid(OUT_OF_RANGE, f"channel {channel!r} must match [a-z0-9_-]{{1,32}}")
    queue = _string(obj, "queue", 1, 64) or DEFAULT_QUEUE
    queues = _names(obj, "queues", lambda name: 0 < len(name) <= 64, "1-64 characters", MAX_AGENT_QUEUES)
    channels = _names(obj, "channels", _CHANNEL.fullmatch, "[a-z0-9_-]{1,32}", None)
    reason = _string(obj, "reason", 0, 64)
    return Event(
        event_id, "agent_state", conversation_id, "", channel, queue, timestamp, agent_id=agent_id, raw=raw,
        origin=origin, state=state, queues=queues, channels=channels, reason=reason,
    )  # fmt: skip


def _names(
    obj: dict[str, Any], field: str, valid: Any, form: str, most: int | None
) -> tuple[str, ...] | None:
    """An optional array of names (queues, channels); a queue list holds 1 to `most` of them."""
    value = obj.get(field)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _Invalid(WRONG_TYPE, f"{field} must be an array, got {_json_type(value)}")
    if most is not None and not 1 <= len(value) <= most:
        raise _Invalid(OUT_OF_RANGE, f"{field} must hold 1-{most} names, got {len(value)}")
    for name in value:
        if not isinstance(name, str):
            raise _Invalid(WRONG_TYPE, f"{field} must hold strings, got {_json_type(name)}")
        if not valid(name):
            raise _Invalid(OUT_OF_RANGE, f"{field}: {name[:64]!r} must be {form}")
    return tuple(dict.fromkeys(value))


def _present(obj: dict[str, Any], field: str, required: bool) -> Any:
    """The field's value; absent and null are the same for optional fields."""
    value = obj.get(field)
    if value is None and required:
        if field in obj:
            raise _Invalid(WRONG_TYPE, f"{field} is null, expected a value")
        raise _Invalid(MISSING_FIELD, f"required field {field} is missing")
    return value


def _string(obj: dict[str, Any], field: str, low: int, high: int, required: bool = False) -> Any:
    value = _present(obj, field, required)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(WRONG_TYPE, f"{field} must be a string, got {_json_type(value)}")
    if not low <= len(value) <= high:
        raise _Invalid(OUT_OF_RANGE, f"{field} must be {low}-{high} characters, got {len(value)}")
    return value


def _choice(obj: dict[str, Any], field: str, allowed: frozenset[str], required: bool) -> Any:
    value = _present(obj, field, required)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(WRONG_TYPE, f"{field} must be a string, got {_json_type(value)}")
    if value not in allowed:
        raise _Invalid(OUT_OF_RANGE, f"{field} {value!r} is not one of {sorted(allowed)}")
    return value


def _number(obj: dict[str, Any], field: str, low: float, high: float) -> float | None:
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(WRONG_TYPE, f"{field} must be a number, got {_json_type(value)}")
    if not low <= value <= high:
        raise _Invalid(OUT_OF_RANGE, f"{field} {value} is outside [{low}, {high}]")
    return float(value)


def _integer(obj: dict[str, Any], field: str, low: int, high: int) -> int | None:
    value = obj.get(field)
    if value is None:
        return None
    # JSON Schema counts 4.0 as an integer; so do we.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(WRONG_TYPE, f"{field} must be an integer, got {_json_type(value)}")
    if not low <= value <= high:
        raise _Invalid(OUT_OF_RANGE, f"{field} {value} is outside [{low}, {high}]")
    return value


def _timestamp(obj: dict[str, Any]) -> float:
    value = _present(obj, "timestamp", required=True)
    if isinstance(value, str):
        seconds = parse_rfc3339(value)
        if seconds is None:
            raise _Invalid(BAD_TIMESTAMP, f"timestamp {value[:64]!r} is not RFC 3339 with an offset")
        return seconds
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(WRONG_TYPE, f"timestamp must be a string or a number, got {_json_type(value)}")
    if not math.isfinite(value) or not EPOCH_MIN <= value <= EPOCH_MAX:
        raise _Invalid(BAD_TIMESTAMP, f"epoch timestamp {value} is outside years 1970-9999")
    return float(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__
