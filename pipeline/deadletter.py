"""One record type for a refused input, below both the stream and the store.

A dead letter is built in one place and rendered two ways: the value of the Kafka dead-letter
topic and the row of the `dead_letters` table. Its payload is clipped, with the full size kept
beside it, so a dead letter always fits in a Kafka message whatever record it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

# A refused payload is kept whole up to this size; a larger one is cut, its full size recorded.
PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Where a record was refused, why, and what it held (clipped)."""

    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    payload: bytes  # at most PAYLOAD_BYTES of the record's value
    payload_bytes: int  # the value's full size (0 for a tombstone)
    received_at: float

    @classmethod
    def of(
        cls, *, topic: str, partition: int, offset: int, reason: str, detail: str, value: bytes | None,
        received_at: float,
    ) -> DeadLetter:  # fmt: skip
        """The dead letter of a record whose value is `value` (None: a tombstone)."""
        value = value or b""
        return cls(topic, partition, offset, reason, detail, value[:PAYLOAD_BYTES], len(value), received_at)

    def kafka_value(self) -> bytes:
        """The dead-letter topic's record: the clipped payload with why and where it was refused."""
        return orjson.dumps(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "received_at": self.received_at,
            "payload": self.payload.decode("utf-8", "replace"),
            "payload_bytes": self.payload_bytes,
        }
