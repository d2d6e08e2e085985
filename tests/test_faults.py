"""Reliability on real processes: fuzzed input into a running worker, the broker frozen, the
store failing under load, and secrets kept out of the logs.

(A worker SIGKILLed mid-batch is in test_streaming.py, a rebalance while writing in
test_scale_out.py.)"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer
from storage import assert_views_equal_compute
from streaming import (
    WorkerProcess,
    committed,
    fresh_topics,
    gauges_match,
    scenario,
    settings_for,
    sql_problems,
    wait_until,
)

from pipeline.broker import EmbeddedBroker, start_broker
from pipeline.events import MAX_EVENT_BYTES, InvalidEvent, decode_event
from pipeline.produce import send_lines
from pipeline.store.backends import open_backend
from pipeline.stream.topics import ensure_topics

FAULTS = Path(__file__).parent / "faults"
VALID = b'{"event_id": "e", "type": "message", "conversation_id": "c", "customer_id": "u", "channel": "chat", "queue": "q", "timestamp": 1772442100, "direction": "inbound", "author": "customer", "text": "hi"}'


def _broken(template: bytes, field: bytes, value: bytes) -> bytes:
    """The valid template with one field's value replaced by `value` (raw JSON text)."""
    body = orjson.loads(template)
    marker = b'"__x__"'
    body[field.decode()] = "__x__"
    return orjson.dumps(body).replace(marker, value)


bad_payloads = st.one_of(
    st.binary(min_size=1, max_size=300),  # random bytes
    st.integers(1, len(VALID) - 1).map(lambda cut: VALID[:cut]),  # truncated JSON
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),  # deep nesting
    st.integers(1, 5000).map(lambda depth: VALID[:-1] + b', "x": ' + b"{" * depth + b"}" * depth + b"}"),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]).map(
        lambda v: _broken(VALID, b"sentiment", v)
    ),
    st.sampled_from([b"timestamp", b"channel", b"type", b"customer_id", b"csat", b"direction"]).flatmap(
        lambda field: st.sampled_from([b"5", b'"five"', b"[]", b"{}", b"null", b"true"]).map(
            lambda value: _broken(VALID, field, value)
        )
    ),  # wrong types
    st.sampled_from(
        [b"1e300", b"-1e300", b"0", b"253402300800", b'"9999-12-31T23:59:59Z"', b'"0001-01-01T00:00:00Z"']
    ).map(lambda value: _broken(VALID, b"timestamp", value)),  # extreme timestamps
).filter(lambda payload: isinstance(decode_event(payload), InvalidEvent))


@settings(max_examples=1, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(bad=st.lists(bad_payloads, min_size=60, max_size=60, unique=True), seed=st.integers(0, 2**32 - 1))
def test_a_running_worker_dead_letters_fuzzed_input_and_keeps_exact_results(
    broker: EmbeddedBroker, bad: list[bytes], seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path_factory.mktemp("fuzz")
    topics = fresh_topics()
    settings_ = settings_for(broker, topics)
    ensure_topics(settings_)
    valid = scenario(600, seed=seed % 1000)
    # Unknown fields are allowed by the contract: kept in `raw`, ignored by the metrics.
    valid = [line[:-1] + b', "x_unknown": {"deep": [1, 2, 3]}}' if i % 7 == 0 else line
             for i, line in enumerate(valid)]  # fmt: skip
    huge = VALID[:-1] + b', "note": "' + b"a" * (MAX_EVENT_BYTES + 10) + b'"}'
    mixed = list(valid)
    rng = random.Random(seed)
    for payload in bad:
        mixed.insert(rng.randrange(len(mixed) + 1), payload)

    worker = WorkerProcess(broker.bootstrap, workdir, **topics).start()
    try:
        send_lines(settings_, mixed)
        big = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=4 * MAX_EVENT_BYTES)
        big.send(settings_.input_topic, value=huge).get(30)
        big.close()
        refused = len(bad) + 1
        wait_until(gauges_match(worker, valid), timeout=120, what="gauges of the valid events")
        wait_until(lambda: _invalid_count(worker, refused), timeout=60, what="invalid events counted")
        samples = worker.scrape()
        assert samples[("ccpipe_events_invalid_total", (("reason", "too_large"),))] == 1
        wait_until(lambda: sql_problems(worker, "SELECT count() FROM (SELECT DISTINCT topic, partition, offset "
                                                "FROM dead_letters)", str(refused)),
                   timeout=30, what="dead_letters rows")  # fmt: skip
        assert worker.process is not None and worker.process.poll() is None, "the worker stopped"
        assert samples[("ccpipe_partition_recoveries_total", ())] == 4, "the worker restarted a partition"
    finally:
        worker.stop()

    dead = KafkaConsumer(settings_.dlq_topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                         consumer_timeout_ms=3000, fetch_max_bytes=16 * MAX_EVENT_BYTES,
                         max_partition_fetch_bytes=16 * MAX_EVENT_BYTES)  # fmt: skip
    letters = [orjson.loads(record.value) for record in dead]
    dead.close()
    assert len(letters) == refused
    assert all(letter["reason"] and letter["detail"] for letter in letters)
    reasons = {letter["reason"] for letter in letters}
    assert len(reasons) >= 4, reasons  # the generated input is varied
    assert {letter["payload"].encode("utf-8", "replace") for letter in letters if letter["reason"] != "too_large"} \
        == {payload.decode("utf-8", "replace").encode() for payload in bad}  # fmt: skip
    store = open_backend(f"chdb://{workdir}/chdb")
    try:
        assert_views_equal_compute(store, valid)
    finally:
        store.close()


def _invalid_count(worker: WorkerProcess, want: int) -> list[str]:
    got = sum(v for (name, _), v in worker.scrape().items() if name == "ccpipe_events_invalid_total")
    return [] if got == want else [f"{got} invalid events counted, want {want}"]


def _counted(worker: WorkerProcess) -> float:
    return sum(v for (name, _), v in worker.scrape().items() if name == "ccpipe_events_total")


def test_a_worker_rides_out_the_broker_frozen_for_30_seconds(tmp_path: Path) -> None:
    """SIGSTOP the broker: the worker keeps serving /metrics, shows the stall (no events, a
    growing processing lag), and after SIGCONT goes on by itself, exactly."""
    frozen = start_broker(log_path=tmp_path / "broker.log")
    topics = fresh_topics()
    settings_ = settings_for(frozen, topics)
    ensure_topics(settings_)
    lines = scenario(600)
    half = len(lines) // 2
    worker = WorkerProcess(frozen.bootstrap, tmp_path, **topics).start()
    try:
        send_lines(settings_, lines[:half])
        wait_until(gauges_match(worker, lines[:half]), timeout=120, what="gauges before the freeze")
        pid = worker.process.pid if worker.process else None
        before = _counted(worker)
        lags = []
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            for _ in range(6):
                time.sleep(5)
                samples = worker.scrape()  # the worker still answers
                lags.append(samples[("ccpipe_processing_lag_seconds", ())])
                assert _counted(worker) == before
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        assert lags == sorted(lags) and lags[-1] - lags[0] >= 20, lags  # the stall shows
        send_lines(settings_, lines[half:])
        wait_until(gauges_match(worker, lines), timeout=180, what="gauges after the broker came back")
        assert worker.process is not None and worker.process.poll() is None and worker.process.pid == pid
    finally:
        worker.stop()
        frozen.stop()


def test_a_store_outage_under_load_loses_nothing_and_pauses_consumption(
    broker: EmbeddedBroker, topics: dict[str, str], workdir: Path
) -> None:
    """The worker's ClickHouse writes fail while tests/faults/store_down exists (injected into
    the real worker process); the buffer stays bounded, consumption pauses, no offset is
    committed for records whose rows are not stored, and once writes succeed again every row
    is there and every offset committed."""
    settings_ = settings_for(broker, topics)
    ensure_topics(settings_)
    lines = scenario(900)
    flag = workdir / "store_down"
    flag.touch()
    worker = WorkerProcess(
        broker.bootstrap, workdir, **topics, PYTHONPATH=str(FAULTS), FAULT_STORE_DOWN_FLAG=str(flag),
        CCPIPE_STORE_MAX_BUFFER_ROWS="800", CCPIPE_BATCH_SIZE="100",
    ).start()  # fmt: skip
    try:
        send_lines(settings_, lines)
        time.sleep(8)
        samples = worker.scrape()
        assert samples[("ccpipe_store_write_errors_total", ())] >= 2
        buffered = samples[("ccpipe_store_buffer_rows", ())]
        assert 0 < buffered <= 800 + 4 * 100 * 3, buffered  # the bound, plus the batch that crossed it
        paused_at = _counted(worker)
        assert paused_at < len(lines) * 0.9, "consumption did not pause"
        time.sleep(3)
        assert _counted(worker) == paused_at
        assert committed(settings_) == 0, "offsets committed for records the store does not hold"
        flag.unlink()
        wait_until(gauges_match(worker, lines), timeout=120, what="gauges after the store came back")
        wait_until(lambda: [] if committed(settings_) == len(lines) else [f"{committed(settings_)} committed"],
                   timeout=30, what="every offset committed")  # fmt: skip
        unique = len({orjson.loads(line)["event_id"] for line in lines})
        wait_until(lambda: sql_problems(worker, "SELECT count() FROM interactions_dedup", str(unique)),
                   timeout=60, what="every event stored")  # fmt: skip
    finally:
        worker.stop()
    store = open_backend(f"chdb://{workdir}/chdb")
    try:
        assert_views_equal_compute(store, lines)
    finally:
        store.close()


def test_secrets_never_reach_the_logs(broker: EmbeddedBroker, topics: dict[str, str], workdir: Path) -> None:
    secret_password, secret_sasl = "pw-Zq81-do-not-log", "sasl-Kx22-do-not-log"
    env = (
        dict(os.environ)
        | topics
        | {
            "CCPIPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "CCPIPE_STORE_URL": f"clickhouse://analyst:{secret_password}@127.0.0.1:1/ccpipe",  # nobody listens
            "CCPIPE_KAFKA_SASL_PASSWORD": secret_sasl,
            "CCPIPE_LOG_LEVEL": "DEBUG",
            "CCPIPE_DATA_DIR": str(workdir),
        }
    )
    secret_file = workdir / "store-url"  # a mounted secret, as Kubernetes or Docker give it
    secret_file.write_text(env["CCPIPE_STORE_URL"] + "\n")
    for command, extra in ((["worker"], {}), (["migrate"], {"CCPIPE_STORE_URL_FILE": str(secret_file)}),
                           (["sql", "SELECT 1"], {})):  # fmt: skip
        if extra:
            env = {name: value for name, value in env.items() if name != "CCPIPE_STORE_URL"} | extra
        result = subprocess.run([sys.executable, "-m", "pipeline.cli", *command], env=env, capture_output=True,
                                timeout=120, check=False)  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode != 0, command  # the store is unreachable
        assert b"analyst:***@127.0.0.1:1" in output, output[-2000:]  # the URL, from the file too
        assert secret_password.encode() not in output and secret_sasl.encode() not in output, command


def test_coverage_guided_fuzzing_finds_no_crash_in_the_decoder(tmp_path: Path) -> None:
    """atheris (libFuzzer) mutates real events for a bounded number of runs (tests/fuzz/)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, line in enumerate([VALID, *scenario(120)[:40]]):
        (corpus / f"seed-{i}").write_bytes(line)
    runs = 40_000
    result = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "fuzz" / "decoder.py"), f"-runs={runs}", "-seed=7", str(corpus)],
        capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:].decode(errors="replace")
    assert f"Done {runs} runs".encode() in result.stderr


@pytest.mark.parametrize(
    "case",
    [
        ({"FAULT_NO_CODECS": "1"}, "snappy", 65, "cannot read topic {topic} partition"),
        ({"FAULT_CRASH_MARKER": "CRASH-ME"}, "none", 70, "processing a batch failed"),
        ({"FAULT_SERVICE_CRASH": "1"}, "none", 70, "a service crashed"),
    ],
    ids=["unreadable-batch", "failed-batch", "crashed-service"],
)
def test_a_worker_that_cannot_go_on_says_why_once_and_exits_non_zero_within_its_bound(
    broker: EmbeddedBroker, topics: dict[str, str], workdir: Path, case: tuple[dict[str, str], str, int, str]
) -> None:
    """A batch it cannot decode (a codec the worker lacks), a batch whose processing raises and a
    crashed service each end the worker with one line and a non-zero exit within
    CCPIPE_SHUTDOWN_TIMEOUT_SECONDS; /healthz stops answering ok meanwhile. A supervisor sees
    it and restarts it; nothing hangs half alive."""
    from confluent_kafka import Producer

    fault, compression, code, says = case
    settings_ = settings_for(broker, topics)
    ensure_topics(settings_)
    bound = 10.0
    worker = WorkerProcess(broker.bootstrap, workdir, **topics, PYTHONPATH=str(FAULTS),
                           CCPIPE_SHUTDOWN_TIMEOUT_SECONDS=str(bound), **fault).start()  # fmt: skip
    assert worker.process is not None
    try:
        healthz = worker.url.replace("/metrics", "/healthz")

        def healthy() -> list[str]:
            with urllib.request.urlopen(healthz, timeout=5) as answer:
                return [] if answer.read() == b"ok\n" else ["not ok"]

        wait_until(healthy, timeout=60, what="/healthz says ok")
        producer = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": compression})
        for line in scenario(120)[:20]:
            producer.produce(settings_.input_topic, value=line.replace(b'"chat"', b'"chat", "note": "CRASH-ME"'),
                             key=orjson.loads(line)["customer_id"].encode())  # fmt: skip
        producer.flush(10)
        began = time.monotonic()
        while worker.process.poll() is None and time.monotonic() - began < 90:
            time.sleep(0.1)
        assert worker.process.poll() == code, worker.log.read_text()[-3000:]
    finally:
        worker.stop()
    lines = [line for line in worker.log.read_text().splitlines() if line.startswith("ccpipe worker:")]
    assert len(lines) == 1 and says.format(topic=settings_.input_topic) in lines[0], lines
    if code == 65:  # an unreadable batch is no bug: the line says it all, no traceback follows
        assert "Traceback" not in worker.log.read_text().split(lines[0])[-1]
