"""Business hours per queue (contract §6.3): open time between two instants.

A calendar is a time zone, open intervals per weekday in local time, and holidays (local
dates, closed all day). Local times become instants with Python's fold=0 rule, which is the
contract's: a time the clock skips on a spring-forward night is read with the offset in force
before the change ("02:30" is 30 minutes after the change), a time that occurs twice is its
first occurrence. Open time is the length of the intersection of [a, b] with the open
intervals, so it is additive over [a, b] + [b, c], never negative and never more than b - a.

Pure: `load_calendars` takes the parsed YAML document; reading the file is the shell's job.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_INTERVAL = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class CalendarError(ValueError):
    """A calendars document that cannot be used; the message gives the place and the reason."""


@dataclass(frozen=True, slots=True)
class Calendar:
    """One schedule: `hours[weekday]` holds sorted (start, end) minutes of the local day."""

    name: str
    timezone: str
    hours: tuple[tuple[tuple[int, int], ...], ...]
    holidays: frozenset[date]

    def open_seconds(self, a: float, b: float) -> float:
        """Seconds of [a, b] (epoch seconds) during which this calendar is open."""
        if b <= a:
            return 0.0
        zone = ZoneInfo(self.timezone)
        # Local dates whose open intervals can touch [a, b]: one day of margin on each side
        # covers every UTC offset.
        day = datetime.fromtimestamp(a, zone).date() - timedelta(days=1)
        last = datetime.fromtimestamp(b, zone).date() + timedelta(days=1)
        total = 0.0
        while day <= last:
            for start, end in _open_instants(self, day):
                total += max(0.0, min(b, end) - max(a, start))
            day += timedelta(days=1)
        return total

    def after_open(self, a: float, seconds: float) -> float:
        """The instant at which this calendar has been open `seconds` since `a` (the inverse of
        `open_seconds`: how a reply promised in business time lands in calendar time)."""
        weekly = sum(end - start for day in self.hours for start, end in day) * 60.0
        if weekly <= 0:
            raise ValueError(f"calendar {self.name!r} is never open")
        # Enough weeks for `seconds` of open time, a year more for holidays and DST.
        horizon_days = 7 * math.ceil(seconds / weekly) + 366
        zone = ZoneInfo(self.timezone)
        day = datetime.fromtimestamp(a, zone).date() - timedelta(days=1)
        remaining = seconds
        for _ in range(horizon_days):
            for start, end in _open_instants(self, day):
                begin = max(start, a)
                if end > begin:
                    if remaining <= end - begin:
                        return begin + remaining
                    remaining -= end - begin
            day += timedelta(days=1)
        raise ValueError(f"calendar {self.name!r} is not open for {seconds:g} s within {horizon_days} days")


@lru_cache(maxsize=65536)
def _open_instants(calendar: Calendar, day: date) -> tuple[tuple[float, float], ...]:
    """The open intervals of one local day as epoch seconds (cached: a day's answer never changes)."""
    if day in calendar.holidays:
        return ()
    zone = ZoneInfo(calendar.timezone)
    return tuple(
        (_instant(day, start, zone), _instant(day, end, zone)) for start, end in calendar.hours[day.weekday()]
    )


def _instant(day: date, minutes: int, zone: ZoneInfo) -> float:
    """Local `day` + `minutes` (up to 24:00) as epoch seconds, fold=0 (see the module docstring)."""
    if minutes == 24 * 60:
        day, minutes = day + timedelta(days=1), 0
    local = datetime(day.year, day.month, day.day, minutes // 60, minutes % 60, tzinfo=zone, fold=0)
    return local.timestamp()


@dataclass(frozen=True, slots=True)
class Calendars:
    """Which calendar each queue follows; a queue without one is open all the time."""

    calendars: Mapping[str, Calendar] = field(default_factory=dict)
    queues: Mapping[str, str] = field(default_factory=dict)

    def of(self, queue: str) -> Calendar | None:
        name = self.queues.get(queue, "default")
        return self.calendars.get(name)

    def business_seconds(self, queue: str, a: float, b: float) -> float:
        """Open time of `queue` between a and b; calendar time for an always-open queue."""
        calendar = self.of(queue)
        if calendar is None:
            return max(0.0, b - a)
        return calendar.open_seconds(a, b)

    def after_open(self, queue: str, a: float, seconds: float) -> float:
        """When `queue` has been open `seconds` since `a` (a + seconds for an always-open queue)."""
        calendar = self.of(queue)
        return a + seconds if calendar is None else calendar.after_open(a, seconds)

    @property
    def always_open(self) -> bool:
        return not self.calendars


ALWAYS_OPEN = Calendars()


def load_calendars(document: Any) -> Calendars:
    """Calendars from the parsed YAML document (contract §6.3), or CalendarError naming the place."""
    if not isinstance(document, dict) or not isinstance(document.get("calendars"), dict):
        raise CalendarError("top level: expected a mapping with 'calendars' (and optionally 'queues')")
    unknown = set(document) - {"calendars", "queues"}
    if unknown:
        raise CalendarError(f"top level: unknown key {sorted(unknown)[0]!r} (expected calendars, queues)")
    calendars = {
        str(name): _calendar(str(name), body, f"calendars.{name}")
        for name, body in document["calendars"].items()
    }
    queues = document.get("queues") or {}
    if not isinstance(queues, dict):
        raise CalendarError("queues: expected a mapping of queue -> calendar name")
    for queue, name in queues.items():
        if str(name) not in calendars:
            known = ", ".join(sorted(calendars))
            raise CalendarError(f"queues.{queue}: unknown calendar {name!r} (known: {known})")
    return Calendars(calendars, {str(queue): str(name) for queue, name in queues.items()})


def _calendar(name: str, body: Any, place: str) -> Calendar:
    if not isinstance(body, dict):
        raise CalendarError(f"{place}: expected a mapping with timezone, hours and holidays")
    unknown = set(body) - {"timezone", "hours", "holidays"}
    if unknown:
        expected = "expected timezone, hours, holidays"
        raise CalendarError(f"{place}: unknown key {sorted(unknown)[0]!r} ({expected})")
    zone = body.get("timezone")
    try:
        ZoneInfo(str(zone))
    except (ZoneInfoNotFoundError, ValueError):
        expected = "an IANA name, e.g. Europe/Berlin"
        raise CalendarError(f"{place}.timezone: unknown time zone {zone!r} ({expected})") from None
    hours = body.get("hours") or {}
    if not isinstance(hours, dict):
        raise CalendarError(f"{place}.hours: expected a mapping of weekday (mon..sun) -> intervals")
    week: list[tuple[tuple[int, int], ...]] = []
    for weekday in WEEKDAYS:
        intervals = hours.get(weekday) or []
        week.append(_day(intervals, f"{place}.hours.{weekday}"))
    for key in hours:
        if key not in WEEKDAYS:
            raise CalendarError(f"{place}.hours: unknown weekday {key!r} (mon, tue, wed, thu, fri, sat, sun)")
    holidays = set()
    for index, value in enumerate(body.get("holidays") or []):
        try:
            holidays.add(value if isinstance(value, date) else date.fromisoformat(str(value)))
        except ValueError:
            raise CalendarError(f"{place}.holidays[{index}]: {value!r} is not a date (YYYY-MM-DD)") from None
    return Calendar(name, str(zone), tuple(week), frozenset(holidays))


def _day(intervals: Any, place: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(intervals, list):
        raise CalendarError(f'{place}: expected a list of "HH:MM-HH:MM" intervals')
    parsed = []
    for index, text in enumerate(intervals):
        match = _INTERVAL.match(str(text).strip())
        where = f"{place}[{index}]: {text!r}"
        if not match:
            raise CalendarError(f'{where} is not an interval "HH:MM-HH:MM"')
        h1, m1, h2, m2 = map(int, match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
            raise CalendarError(f"{where} is not a time of day (00:00 to 24:00)")
        if end <= start:
            raise CalendarError(f"{where} is empty (its end is not after its start)")
        parsed.append((start, end, index))
    parsed.sort()
    for (_, end, first), (start, _, second) in itertools.pairwise(parsed):
        if start < end:
            raise CalendarError(f"{place}[{second}]: {intervals[second]!r} overlaps {intervals[first]!r}")
    return tuple((start, end) for start, end, _ in parsed)
