"""Coverage-guided fuzzing of the decoder and validator with atheris (libFuzzer).

Run by tests/test_faults.py with a bounded number of runs; by hand:
python tests/fuzz/decoder.py -runs=200000 (or -max_total_time=600).
Any exception, or a result other than an Event or an InvalidEvent, is a crash.
"""

import sys

import atheris

with atheris.instrument_imports():
    from pipeline.events import Event, InvalidEvent, decode_event


def one_input(data: bytes) -> None:
    result = decode_event(data, "fuzz")
    if not isinstance(result, Event | InvalidEvent):
        raise AssertionError(f"decode_event returned {type(result).__name__}")
    if isinstance(result, InvalidEvent) and not (result.reason and result.detail):
        raise AssertionError("an invalid event without its reason")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
