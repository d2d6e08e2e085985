"""Event validation (contract §1): every invalid class gives its reason, never an exception,
and the runtime validator agrees with schemas/interaction-event.schema.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pipeline.events import REASONS, Event, InvalidEvent, decode_event, validate_event

SCHEMA = json.loads((Path(__file__).parents[1] / "schemas" / "interaction-event.schema.json").read_text())
SCHEMA_VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)

BASE: dict[str, Any] = {
    "event_id": "e1",
    "type": "message",
    "conversation_id": "c1",
    "customer_id": "u1",
    "channel": "chat",
    "timestamp": "2026-03-02T09:00:00Z",
    "direction": "inbound",
    "author": "customer",
}
SURVEY = BASE | {"type": "survey", "csat": 4}
AGENT: dict[str, Any] = {"event_id": "x1", "type": "agent_state", "agent_id": "ana", "state": "available",
                         "timestamp": "2026-03-02T09:00:00Z"}  # fmt: skip
CONTACT = AGENT | {"state": "on_contact", "conversation_id": "c1", "channel": "chat"}


def without(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != field}


VALID = [
    BASE,
    BASE | {"queue": "tech", "agent_id": "a1", "text": "hello", "sentiment": -1, "extra": {"x": [1]}},
    BASE | {"timestamp": 1772442000},
    BASE | {"timestamp": 1772442000.25},
    BASE | {"timestamp": "2026-03-02T14:30:00.123456+05:30"},
    BASE | {"timestamp": "2026-03-02t09:00:00z"},
    BASE | {"queue": None, "text": None},
    BASE | {"text": "x" * 65536},
    BASE | {"channel": "whatsapp_business-2"},
    without(without(BASE, "direction"), "author") | {"type": "conversation_started"},
    without(without(BASE, "direction"), "author") | {"type": "agent_assigned", "agent_id": "a9"},
    BASE | {"type": "conversation_resolved"},
    BASE | {"type": "conversation_reopened"},
    BASE | {"type": "conversation_abandoned"},
    SURVEY,
    SURVEY | {"csat": None, "nps": 0},
    SURVEY | {"csat": 5.0, "ces": 7},
    BASE | {"event_id": "x" * 128},
    AGENT,
    AGENT | {"queues": ["billing", "tech"], "channels": ["chat", "phone"], "reason": "back"},
    AGENT | {"state": "away", "reason": "l" * 64, "queues": ["q" * 64] * 50, "channels": []},
    AGENT | {"state": "offline", "customer_id": "ignored", "timestamp": 1772442000},
    CONTACT,
    CONTACT | {"state": "after_contact_work", "queue": "billing"},
]

INVALID: list[tuple[str, Any]] = [
    ("not_object", []),
    ("not_object", "text"),
    ("not_object", None),
    ("missing_field", without(BASE, "event_id")),
    ("missing_field", without(BASE, "type")),
    ("missing_field", without(BASE, "conversation_id")),
    ("missing_field", without(BASE, "customer_id")),
    ("missing_field", without(BASE, "channel")),
    ("missing_field", without(BASE, "timestamp")),
    ("missing_field", without(BASE, "direction")),
    ("missing_field", without(BASE, "author")),
    ("missing_field", without(SURVEY, "csat")),
    ("wrong_type", BASE | {"event_id": 17}),
    ("wrong_type", BASE | {"event_id": None}),
    ("wrong_type", BASE | {"type": 3}),
    ("wrong_type", BASE | {"type": ["message"]}),
    ("wrong_type", BASE | {"customer_id": {"id": 1}}),
    ("wrong_type", BASE | {"channel": 5}),
    ("wrong_type", BASE | {"queue": 5}),
    ("wrong_type", BASE | {"timestamp": True}),
    ("wrong_type", BASE | {"timestamp": [1]}),
    ("wrong_type", BASE | {"sentiment": "high"}),
    ("wrong_type", BASE | {"sentiment": True}),
    ("wrong_type", BASE | {"text": 12}),
    ("wrong_type", BASE | {"agent_id": 12}),
    ("wrong_type", SURVEY | {"csat": 4.5}),
    ("wrong_type", SURVEY | {"csat": "4"}),
    ("wrong_type", SURVEY | {"csat": True}),
    ("out_of_range", BASE | {"event_id": ""}),
    ("out_of_range", BASE | {"event_id": "x" * 129}),
    ("out_of_range", BASE | {"conversation_id": ""}),
    ("out_of_range", BASE | {"channel": "Chat!"}),
    ("out_of_range", BASE | {"channel": "c" * 33}),
    ("out_of_range", BASE | {"queue": ""}),
    ("out_of_range", BASE | {"queue": "q" * 65}),
    ("out_of_range", BASE | {"direction": "sideways"}),
    ("out_of_range", BASE | {"author": "robot"}),
    ("out_of_range", BASE | {"sentiment": 1.01}),
    ("out_of_range", BASE | {"text": "x" * 65537}),
    ("out_of_range", SURVEY | {"csat": 0}),
    ("out_of_range", SURVEY | {"csat": 6}),
    ("out_of_range", SURVEY | {"nps": 11}),
    ("out_of_range", SURVEY | {"ces": 8}),
    ("unknown_type", BASE | {"type": "teleport"}),
    ("missing_field", without(AGENT, "agent_id")),
    ("missing_field", without(AGENT, "state")),
    ("missing_field", without(CONTACT, "conversation_id")),
    ("missing_field", without(CONTACT, "channel")),
    ("out_of_range", AGENT | {"state": "lunch"}),
    ("out_of_range", AGENT | {"queues": []}),
    ("out_of_range", AGENT | {"queues": ["q"] * 51}),
    ("out_of_range", AGENT | {"queues": [""]}),
    ("out_of_range", AGENT | {"channels": ["Chat!"]}),
    ("out_of_range", AGENT | {"reason": "r" * 65}),
    ("out_of_range", AGENT | {"agent_id": ""}),
    ("wrong_type", AGENT | {"queues": "billing"}),
    ("wrong_type", AGENT | {"channels": [5]}),
    ("wrong_type", AGENT | {"state": 3}),
    ("bad_timestamp", BASE | {"timestamp": "yesterday"}),
    ("bad_timestamp", BASE | {"timestamp": "2026-03-02T10:00:00"}),  # no offset
    ("bad_timestamp", BASE | {"timestamp": "2026-03-02"}),
    ("bad_timestamp", BASE | {"timestamp": "2026-13-02T10:00:00Z"}),
    ("bad_timestamp", BASE | {"timestamp": "2026-03-02T10:00:61Z"}),
    ("bad_timestamp", BASE | {"timestamp": -5}),
    ("bad_timestamp", BASE | {"timestamp": 1e13}),
]


@pytest.mark.parametrize("body", VALID, ids=range(len(VALID)))
def test_valid_events_pass_both_validators(body: dict[str, Any]) -> None:
    assert isinstance(validate_event(body), Event)
    assert list(SCHEMA_VALIDATOR.iter_errors(body)) == []


@pytest.mark.parametrize(("reason", "body"), INVALID, ids=[f"{i}-{r}" for i, (r, _) in enumerate(INVALID)])
def test_invalid_events_fail_both_validators_with_their_reason(reason: str, body: Any) -> None:
    result = validate_event(body)
    assert isinstance(result, InvalidEvent)
    assert result.reason == reason, result.detail
    assert result.detail
    assert not SCHEMA_VALIDATOR.is_valid(body)


# Values that are no JSON object at all, each with its own reason.
UNPARSABLE = [
    ("not_json", b"{not json"),
    ("not_json", b'{"a": 1} trailing'),
    ("tombstone", None),
    ("empty", b""),
    ("empty", b" \n\t"),
    ("not_utf8", b"\xff\xfe"),
    ("not_utf8", b'{"text": "\xc3\x28"}'),
    ("not_finite", b'{"a": NaN}'),
    ("not_finite", b'{"a": -Infinity}'),
    ("not_finite", b'{"a": 1e400}'),
    ("too_deep", b"[" * 2000 + b"]" * 2000),
    ("too_large", b'{"text": "' + b"x" * (2 * 1024 * 1024) + b'"}'),
]


def test_every_reason_code_is_exercised() -> None:
    seen = {reason for reason, _ in INVALID} | {reason for reason, _ in UNPARSABLE}
    assert seen | {"future_timestamp", "key_too_large"} == set(
        REASONS
    )  # those two: tests of the engine, runtime


@pytest.mark.parametrize(("reason", "value"), UNPARSABLE, ids=[r for r, _ in UNPARSABLE])
def test_decode_names_why_a_value_is_no_json_object(reason: str, value: bytes | None) -> None:
    result = decode_event(value)
    assert isinstance(result, InvalidEvent) and result.reason == reason, result
    assert result.detail


def test_decoded_event_is_normalized() -> None:
    result = decode_event(orjson.dumps(BASE | {"timestamp": "2026-03-02T14:30:00+05:30"}), origin="line 3")
    assert isinstance(result, Event)
    assert result.timestamp == 1772442000.0
    assert result.queue == "default"
    assert result.origin == "line 3"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FIELD_VALUES = st.sampled_from(
    [None, "", "x", "message", "survey", "chat", "inbound", "customer", 0, 5, -1.5, True, [], {}]
)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*sorted(BASE), "csat", "nps", "ces", "queue", "text", "sentiment"]),
        FIELD_VALUES | JSON_VALUES,
    )
)
def test_validator_never_raises_and_agrees_with_schema_on_structure(body: dict[str, Any]) -> None:
    result = validate_event(body)
    if isinstance(result, Event):
        assert SCHEMA_VALIDATOR.is_valid(body)
    else:
        assert result.reason in REASONS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_decoder_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    result = decode_event(data)
    assert isinstance(result, Event | InvalidEvent)
