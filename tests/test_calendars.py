"""Business hours (contract §6.3): hand-computed open times across DST changes, holidays, split
shifts and multi-day spans; Hypothesis properties; a bad file refused with its place and reason."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.calendars import Calendars, load_calendars
from pipeline.settings import SettingError, WorkerSettings

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0


def at(text: str, zone: ZoneInfo = BERLIN) -> float:
    """Epoch seconds of a local wall time (fold=0)."""
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def calendars(hours: dict[str, list[str]], holidays: list[str] | None = None, **queues: str) -> Calendars:
    return load_calendars({
        "calendars": {
            "default": {"timezone": "Europe/Berlin", "hours": hours, "holidays": holidays or []},
            "us": {"timezone": "America/New_York", "hours": {"mon": ["09:00-17:00"]}},
        },
        "queues": queues,
    })  # fmt: skip


WEEKDAYS = {day: ["08:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")}


def test_a_closed_night_counts_only_open_minutes() -> None:
    cal = calendars(WEEKDAYS)
    # Monday 22:00 to Tuesday 08:05: closed all night, five minutes of Tuesday morning.
    assert cal.business_seconds("email", at("2026-03-02T22:00"), at("2026-03-03T08:05")) == 300


def test_split_shift_and_multi_day_span() -> None:
    cal = calendars({"mon": ["08:00-12:00", "13:00-17:00"], "fri": ["08:00-18:00"]})
    assert cal.business_seconds("q", at("2026-03-02T11:30"), at("2026-03-02T13:30")) == HOUR  # lunch closed
    # Friday 17:00 to the Monday after, 09:00: one hour on Friday, a closed weekend, one on Monday.
    assert cal.business_seconds("q", at("2026-03-06T17:00"), at("2026-03-09T09:00")) == 2 * HOUR


def test_a_holiday_adds_nothing() -> None:
    cal = calendars(WEEKDAYS, holidays=["2026-12-25"])
    assert cal.business_seconds("q", at("2026-12-25T00:00"), at("2026-12-26T00:00")) == 0
    assert cal.business_seconds("q", at("2026-12-24T17:00"), at("2026-12-28T09:00")) == 2 * HOUR


def test_spring_forward_counts_real_time_and_reads_skipped_times_before_the_change() -> None:
    # 2026-03-29, Europe/Berlin: 02:00 CET becomes 03:00 CEST.
    day = ("2026-03-29T00:00", "2026-03-30T00:00")
    assert calendars({"sun": ["01:00-04:00"]}).business_seconds("q", *map(at, day)) == 2 * HOUR
    # "02:30" does not exist that night: read with the offset before the change, it is 03:30 CEST.
    assert calendars({"sun": ["02:30-04:00"]}).business_seconds("q", *map(at, day)) == 0.5 * HOUR


def test_fall_back_counts_the_repeated_hour_once_more() -> None:
    # 2026-10-25, Europe/Berlin: 03:00 CEST becomes 02:00 CET; 01:00-04:00 lasts four real hours.
    day = ("2026-10-25T00:00", "2026-10-26T00:00")
    assert calendars({"sun": ["01:00-04:00"]}).business_seconds("q", *map(at, day)) == 4 * HOUR
    # "02:30" occurs twice: its first occurrence (CEST) opens the interval.
    assert calendars({"sun": ["02:30-04:00"]}).business_seconds("q", *map(at, day)) == 2.5 * HOUR


def test_each_queue_follows_its_calendar_and_unnamed_queues_the_default() -> None:
    cal = calendars({"mon": ["08:00-09:00"]}, billing="us")
    new_york = ZoneInfo("America/New_York")
    day = (at("2026-03-02T00:00", new_york), at("2026-03-03T00:00", new_york))
    assert cal.business_seconds("billing", *day) == 8 * HOUR
    assert cal.business_seconds("sales", at("2026-03-02T00:00"), at("2026-03-03T00:00")) == HOUR
    assert Calendars().business_seconds("sales", 100.0, 250.5) == 150.5  # no file: always open


def test_24_00_ends_the_day() -> None:
    cal = calendars({"mon": ["20:00-24:00"], "tue": ["00:00-02:00"]})
    assert cal.business_seconds("q", at("2026-03-02T00:00"), at("2026-03-04T00:00")) == 6 * HOUR


INSTANTS = st.floats(at("2026-01-01T00:00"), at("2027-01-01T00:00"), allow_nan=False)
INTERVAL = st.tuples(st.integers(0, 23 * 60), st.integers(1, 240)).map(
    lambda p: (
        f"{p[0] // 60:02d}:{p[0] % 60:02d}-{min(24 * 60, p[0] + p[1]) // 60:02d}:{min(24 * 60, p[0] + p[1]) % 60:02d}"
    )
)


@st.composite
def week(draw: st.DrawFn) -> dict[str, list[str]]:
    hours = {}
    for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
        intervals = sorted(set(draw(st.lists(INTERVAL, max_size=2))))
        kept: list[str] = []
        for interval in intervals:  # no overlaps within a day
            start = interval.split("-")[0]
            if not kept or kept[-1].split("-")[1] <= start:
                kept.append(interval)
        hours[day] = kept
    return hours


@settings(max_examples=200, deadline=None)
@given(
    week(),
    st.lists(INSTANTS, min_size=3, max_size=3),
    st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
)
def test_business_time_is_additive_bounded_and_never_negative(
    hours: dict[str, list[str]], instants: list[float], zone: str
) -> None:
    cal = load_calendars({"calendars": {"default": {"timezone": zone, "hours": hours}}})
    a, b, c = sorted(instants)
    whole = cal.business_seconds("q", a, c)
    assert whole == pytest.approx(cal.business_seconds("q", a, b) + cal.business_seconds("q", b, c), abs=1e-6)
    assert 0 <= whole <= c - a + 1e-6


@settings(max_examples=150, deadline=None)
@given(week(), INSTANTS, st.floats(0, 7 * 86400, allow_nan=False))
def test_after_open_is_the_inverse_of_business_time(
    hours: dict[str, list[str]], a: float, seconds: float
) -> None:
    cal = load_calendars({"calendars": {"default": {"timezone": "Europe/Berlin", "hours": hours}}})
    if not any(hours.values()):
        with pytest.raises(ValueError, match="never open"):
            cal.after_open("q", a, seconds)
        return
    b = cal.after_open("q", a, seconds)
    assert b >= a and cal.business_seconds("q", a, b) == pytest.approx(seconds, abs=1e-3)


@settings(max_examples=100, deadline=None)
@given(st.lists(INSTANTS, min_size=2, max_size=2), st.sampled_from(["Europe/Berlin", "America/New_York"]))
def test_always_open_is_calendar_time(instants: list[float], zone: str) -> None:
    a, b = sorted(instants)
    always = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    cal = load_calendars({"calendars": {"default": {"timezone": zone, "hours": always}}})
    assert cal.business_seconds("q", a, b) == pytest.approx(b - a, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(week(), st.dates(min_value=datetime(2026, 1, 2).date(), max_value=datetime(2026, 12, 30).date()))
def test_a_closed_day_adds_nothing(hours: dict[str, list[str]], day: object) -> None:
    cal = load_calendars(
        {"calendars": {"default": {"timezone": "Europe/Berlin", "hours": hours, "holidays": [str(day)]}}}
    )
    start = datetime.fromisoformat(f"{day}T00:00").replace(tzinfo=BERLIN).timestamp()
    end = datetime.fromisoformat(f"{day}T23:59:59").replace(tzinfo=BERLIN).timestamp()
    assert cal.business_seconds("q", start, end) == 0


BAD = [
    ("calendars: [unclosed", "line 1, column 21: not YAML"),
    (
        "calendars: {default: {timezone: Mars/Olympus}}",
        "calendars.default.timezone: unknown time zone 'Mars/Olympus'",
    ),
    (
        "calendars: {default: {timezone: UTC, hours: {mon: ['18:00-08:00']}}}",
        "calendars.default.hours.mon[0]: '18:00-08:00' is empty",
    ),
    (
        "calendars: {default: {timezone: UTC, hours: {mon: ['08:00-12:00', '11:00-13:00']}}}",
        "calendars.default.hours.mon[1]: '11:00-13:00' overlaps '08:00-12:00'",
    ),
    ("calendars: {default: {timezone: UTC}}\nqueues: {billing: us}", "queues.billing: unknown calendar 'us'"),
    (
        "calendars: {default: {timezone: UTC, hours: {monday: ['08:00-12:00']}}}",
        "calendars.default.hours: unknown weekday 'monday'",
    ),
    (
        "calendars: {default: {timezone: UTC, holidays: ['25.12.2026']}}",
        "calendars.default.holidays[0]: '25.12.2026' is not a date",
    ),
]


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_a_bad_file_is_refused_with_the_file_the_place_and_the_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "calendars.yaml"
    path.write_text(text)
    with pytest.raises(SettingError) as refused:
        WorkerSettings.from_env({"CCPIPE_CALENDARS_FILE": str(path)})
    assert str(refused.value).startswith(f"CCPIPE_CALENDARS_FILE: {path}: ")
    assert reason in str(refused.value)
    # The same words from `ccpipe compute --calendars`, before any input is read.
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "compute", "--input", "-", "--windows-out", str(tmp_path / "w"),
         "--conversations-out", str(tmp_path / "c"), "--calendars", str(path)],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2 and reason in result.stderr and f"--calendars: {path}: " in result.stderr


def test_the_example_calendars_file_loads() -> None:
    example = Path(__file__).parents[1] / "deploy" / "calendars.example.yaml"
    loaded = load_calendars(yaml.safe_load(example.read_text()))
    assert loaded.of("billing") is not None and not loaded.always_open
