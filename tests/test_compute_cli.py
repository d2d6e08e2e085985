"""`ccpipe compute` end to end, as a user runs it: the worked example of the contract."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# A copy of the contract's worked example (events and an independent implementation's output).
EXAMPLE = Path(__file__).parent / "data" / "example"


def ccpipe(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def load(path: Path, key: Any) -> dict[Any, dict[str, Any]]:
    return {key(row): row for row in map(json.loads, path.read_text().splitlines())}


SECTION_6 = {
    "conversations.jsonl": {"resolution_seconds", "frt_business_seconds"},
    "windows.jsonl": {"resolutions_timed", "resolution_mean_seconds", "resolution_p50_seconds",
                      "resolution_p90_seconds", "abandoned_short", "service_level_ratio",
                      "frt_business_mean_seconds", "frt_business_p90_seconds", "frt_business_sla_ratio",
                      "handle_seconds"},  # §7.2, 0 without agent events
}  # fmt: skip


def same(field: str, want: Any, got: Any) -> bool:
    if isinstance(want, float) and isinstance(got, int | float):
        tolerance = 0.01 if field.startswith("frt_p") else 1e-9  # quantiles may be approximate
        return math.isclose(want, got, rel_tol=tolerance, abs_tol=1e-9)
    return want == got


@pytest.fixture(scope="module")
def example_output(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[bytes]]:
    out = tmp_path_factory.mktemp("example")
    result = ccpipe(
        "compute", "--input", str(EXAMPLE / "events.jsonl"),
        "--windows-out", str(out / "windows.jsonl"), "--conversations-out", str(out / "conversations.jsonl"),
        "--window-seconds", "60", "--fcr-horizon-seconds", "1800",
    )  # fmt: skip
    return out, result


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("conversations.jsonl", lambda r: r["conversation_id"]),
        ("windows.jsonl", lambda r: (r["window_start"], r["channel"], r["queue"])),
    ],
)
def test_worked_example_matches_the_reference(example_output: Any, name: str, key: Any) -> None:
    out, result = example_output
    assert result.returncode == 0, result.stderr.decode()
    want, got = load(EXAMPLE / name, key), load(out / name, key)
    assert got.keys() == want.keys()
    for k, row in want.items():
        for field, value in row.items():
            assert same(field, value, got[k][field]), (k, field, value, got[k][field])
        assert set(got[k]) == set(row) | SECTION_6[name]  # the example predates contract §6 and §7


def test_output_is_ordered_like_the_reference(example_output: Any) -> None:
    out, _ = example_output
    windows = [json.loads(line) for line in (out / "windows.jsonl").read_text().splitlines()]
    keys = [(w["window_start"], w["channel"], w["queue"]) for w in windows]
    assert keys == sorted(keys)
    conversations = [json.loads(line) for line in (out / "conversations.jsonl").read_text().splitlines()]
    starts = [c["started_at"] for c in conversations]
    assert starts == sorted(starts)


def test_invalid_lines_are_reported_with_line_number_and_reason(example_output: Any) -> None:
    _, result = example_output
    errors = result.stderr.decode().splitlines()
    reported = [line for line in errors if line.startswith("line ")]
    assert len(reported) == 15
    assert "line 65: not_json: " in "\n".join(reported)
    assert "line 153: unknown_type: type 'teleport'" in "\n".join(reported)
    assert "15 invalid" in errors[-1] and "9 duplicates" in errors[-1]


def test_reads_stdin_and_exits_zero_on_garbage(tmp_path: Path) -> None:
    events = b'{"event_id":"e1","type":"conversation_started","conversation_id":"c1","customer_id":"u1",' \
             b'"channel":"chat","timestamp":1772442000}\n\xff\xfe garbage\n[]\n'  # fmt: skip
    result = ccpipe("compute", "--input", "-", "--windows-out", str(tmp_path / "w"),
                    "--conversations-out", str(tmp_path / "c"), stdin=events)  # fmt: skip
    assert result.returncode == 0
    assert b"line 2: not_utf8" in result.stderr and b"line 3: not_object" in result.stderr
    window = json.loads((tmp_path / "w").read_text())
    assert (window["window_start"], window["conversations_started"], window["window_seconds"]) == (
        "2026-03-02T09:00:00Z", 1, 60.0)  # fmt: skip
    assert json.loads((tmp_path / "c").read_text())["started_at"] == "2026-03-02T09:00:00Z"


def test_bad_arguments_name_the_setting(tmp_path: Path) -> None:
    result = ccpipe("compute", "--input", "-", "--windows-out", str(tmp_path / "w"),
                    "--conversations-out", str(tmp_path / "c"), "--window-seconds", "soon")  # fmt: skip
    assert result.returncode == 2
    assert b"--window-seconds must be a number of seconds, got 'soon'" in result.stderr
    missing = ccpipe("compute", "--input", str(tmp_path / "nope.jsonl"), "--windows-out", str(tmp_path / "w"),
                     "--conversations-out", str(tmp_path / "c"))  # fmt: skip
    assert missing.returncode == 2 and b"No such file" in missing.stderr
