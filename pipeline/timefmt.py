"""Event-time parsing and RFC 3339 formatting, shared by validation and every output."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# RFC 3339 date-time (§5.6) with a mandatory offset; "T" and "Z" in either case.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)

# Epoch-number timestamps we accept: 1970-01-01 up to the end of year 9999 (what RFC 3339 can print).
EPOCH_MIN = 0.0
EPOCH_MAX = 253402300799.0


def parse_rfc3339(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 string, or None when it is not one (no offset, bad date, ...)."""
    if not _RFC3339.match(text):
        return None
    try:
        return datetime.fromisoformat(text.upper()).timestamp()
    except ValueError:
        return None


def format_rfc3339(seconds: float | None) -> str | None:
    """`2026-11-22T10:00:00Z`, with a microsecond fraction only when there is one; None stays None."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"
