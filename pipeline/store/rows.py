"""The rows ccpipe writes: column names and ClickHouse types (they must match the DDL in
schemas/clickhouse/, a test holds them together), and converters from engine output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from pipeline.deadletter import DeadLetter
from pipeline.engine.agents import AgentRow
from pipeline.engine.sentiment import message_score
from pipeline.engine.windows import ACCUMULATORS, WindowRow
from pipeline.events import Event, decode_event
from pipeline.store.backends import Column

Row = tuple[Any, ...]


def _columns(spec: str) -> tuple[Column, ...]:
    """`name Type` a line, as in the DDL."""
    return tuple(Column(*line.split(None, 1)) for line in spec.strip().splitlines())


TABLES: dict[str, tuple[Column, ...]] = {
    "interactions": _columns(
        """
    event_id         String
    type             LowCardinality(String)
    conversation_id  String
    customer_id      String
    channel          LowCardinality(String)
    queue            LowCardinality(String)
    event_time       DateTime64(3, 'UTC')
    direction        LowCardinality(Nullable(String))
    author           LowCardinality(Nullable(String))
    agent_id         Nullable(String)
    text             Nullable(String)
    sentiment        Nullable(Float32)
    csat             Nullable(UInt8)
    nps              Nullable(UInt8)
    ces              Nullable(UInt8)
    raw              String
    source_partition UInt16
    source_offset    UInt64
"""
    ),
    "conversations": _columns(
        """
    conversation_id   String
    customer_id       String
    channel           LowCardinality(String)
    queue             LowCardinality(String)
    started_at        Nullable(DateTime64(3, 'UTC'))
    first_response_at Nullable(DateTime64(3, 'UTC'))
    frt_seconds       Nullable(Float64)
    first_agent_id    Nullable(String)
    messages_inbound  UInt32
    messages_outbound UInt32
    abandoned         Bool
    resolved_at       Nullable(DateTime64(3, 'UTC'))
    reopened          Bool
    repeat_contact    Bool
    fcr               Bool
    fcr_final         Bool
    sentiment_mean    Nullable(Float64)
    sentiment_first   Nullable(Float64)
    sentiment_last    Nullable(Float64)
    csat              Nullable(UInt8)
    nps               Nullable(UInt8)
    ces               Nullable(UInt8)
    resolution_seconds   Nullable(Float64)
    frt_business_seconds Nullable(Float64)
    fcr_final_at      Nullable(DateTime64(3, 'UTC'))
    version           UInt64
"""
    ),
    "metrics_window_partials": (
        *_columns(
            """
    window_start          DateTime64(3, 'UTC')
    window_seconds        Float64
    channel               LowCardinality(String)
    queue                 LowCardinality(String)
    source_partition      UInt16
"""
        ),
        *(Column(accumulator.column, accumulator.type) for accumulator in ACCUMULATORS),
        Column("final", "Bool"),
        Column("version", "UInt64"),
    ),
    "agent_window_partials": _columns(
        """
    window_start               DateTime64(3, 'UTC')
    window_seconds             Float64
    queue                      LowCardinality(String)
    source_partition           UInt16
    available_seconds          Float64
    on_contact_seconds         Float64
    after_contact_work_seconds Float64
    away_seconds               Float64
    final                      Bool
    version                    UInt64
"""
    ),
    "dead_letters": _columns(
        """
    topic       LowCardinality(String)
    partition   UInt16
    offset      Int64
    reason      LowCardinality(String)
    detail      String
    payload     String
    payload_bytes UInt64
    received_at DateTime64(3, 'UTC')
"""
    ),
}

# Tables whose rows replace older rows of the same key (ReplacingMergeTree(version), the key
# being the ORDER BY): only the newest row of a key needs writing. Each maps a row to its key.
REPLACING_KEYS: dict[str, Callable[[Row], Any]] = {
    "conversations": itemgetter(0),
    "metrics_window_partials": itemgetter(0, 1, 2, 3, 4),
    "agent_window_partials": itemgetter(0, 1, 2, 3),
}

# The contract's record fields; `fcr_final_at` (when the conversation becomes final, resolved_at +
# H) and `version` are the store's own.
_STORE_ONLY = frozenset({"fcr_final_at", "version"})
CONVERSATION_FIELDS = tuple(c.name for c in TABLES["conversations"] if c.name not in _STORE_ONLY)


def interaction_source(event: Event, partition: int, offset: int) -> Row:
    """What an interaction row is made of: the event's raw JSON, where it was read and the score
    of a customer's text (from the engine's cache). A quarter of the row's pickle, and the row is
    made where it is stored (`built`), in the store process, by decoding the JSON again."""
    customer_message = event.type == "message" and event.direction == "inbound" and event.author == "customer"
    score = message_score(event.sentiment, event.text) if customer_message else event.sentiment
    return (event.raw, partition, offset, score)


def interaction_row(source: Row) -> Row:
    raw, partition, offset, score = source
    event = decode_event(raw)
    assert isinstance(event, Event), f"an event valid in the worker is valid here: {event}"
    return (
        event.event_id, event.type, event.conversation_id, event.customer_id, event.channel, event.queue,
        event.timestamp, event.direction, event.author, event.agent_id, event.text, score, event.csat,
        event.nps, event.ces, raw.decode("utf-8", "replace"), partition, offset,
    )  # fmt: skip


def conversation_row(record: dict[str, Any], version: int, fcr_horizon: float) -> Row:
    resolved_at = record["resolved_at"]
    final_at = resolved_at + fcr_horizon if resolved_at is not None else None
    return (*(record[name] for name in CONVERSATION_FIELDS), final_at, version)


def window_row(row: WindowRow, partition: int, version: int) -> Row:
    """The window's accumulators as they are (exact samples), one column each."""
    return (row.window_start, row.window_seconds, row.channel, row.queue, partition, *row.aggregate.values(),
            row.final, version)  # fmt: skip


def agent_window_row(row: AgentRow, partition: int, version: int) -> Row:
    """One partition's seconds by state of a (window, queue) (contract §7.2)."""
    return (
        row.window_start,
        row.window_seconds,
        row.queue,
        partition,
        *row.window.state(),
        row.final,
        version,
    )


def dead_letter_row(letter: DeadLetter) -> Row:
    return (letter.topic, letter.partition, letter.offset, letter.reason, letter.detail,
            letter.payload.decode("utf-8", "replace"), letter.payload_bytes, letter.received_at)  # fmt: skip


# Tables whose buffered rows are sources, made into rows by `built` where they are inserted.
BUILDERS: dict[str, Callable[[Row], Row]] = {"interactions": interaction_row}


def built(table: str, rows: Sequence[Row]) -> Sequence[Row]:
    """The table's rows from what the writer buffered."""
    build = BUILDERS.get(table)
    return rows if build is None else [build(row) for row in rows]
