"""WriteToIoTPlatform under the platform's failures: expired tokens, throttling, transient codes,
gateway errors, ambiguous hang-ups, and retries running out. Every run ends in the accounting check."""
import json
import threading

import pytest

import connector
from connector.beam.encoders import get_encoder
from connector.emulator.accounting import account
from test_write_batch import readings
from write_support import run_write, write_credentials

FAST = dict(device_messages_per_second=0, max_payload_bytes=4096,
            retry=connector.RetryPolicy(initial_backoff=0.01, max_backoff=0.2, throttled_backoff=0.05,
                                        max_attempts=40))


@pytest.fixture
def credentials(tmp_path, devices):
    return write_credentials(tmp_path / "credentials.json", devices)


@pytest.fixture
def fast_emulator(clean_emulator):
    """No per-device rate limit, so fault tests run quickly; clean_emulator restores it."""
    clean_emulator.set_limits(device_qps=100_000)
    return clean_emulator


def accounted(run, emulator, records):
    result = account(records, emulator.messages(), run.failed, get_encoder("jsonl"))
    assert result.lost == 0 and result.unexpected == 0, result.summary()
    return result


def topic_codes(emulator):
    return emulator.counters()["requests"]["topic"]


def test_tokens_expiring_mid_run_are_renewed_and_everything_arrives(fast_emulator, devices, credentials, tmp_path):
    records = readings(devices, 800)
    stop = threading.Event()

    def expire_repeatedly():
        while not stop.wait(0.15):
            fast_emulator.expire_tokens()

    expirer = threading.Thread(target=expire_repeatedly)
    expirer.start()
    try:
        run = run_write(records, fast_emulator, credentials, tmp_path,
                        **dict(FAST, device_messages_per_second=100))
    finally:
        stop.set()
        expirer.join()
    result = accounted(run, fast_emulator, records)
    assert result.delivered == len(records) and not run.failed
    assert topic_codes(fast_emulator).get("20001", 0) > 0
    assert run.counters["auth_calls"] > len(devices)


def test_throttling_is_waited_out_and_counted(fast_emulator, devices, credentials, tmp_path):
    fast_emulator.set_limits(device_qps=5)
    records = readings(devices[:2], 200)
    run = run_write(records, fast_emulator, credentials, tmp_path, **FAST)
    result = accounted(run, fast_emulator, records)
    assert result.delivered == len(records) and not run.failed
    assert topic_codes(fast_emulator).get("40000", 0) > 0
    assert run.counters["throttled_msecs"] > 0 and run.counters["retries"] > 0


def test_pacing_keeps_throttling_rare(fast_emulator, devices, credentials, tmp_path):
    fast_emulator.set_limits(device_qps=5)
    records = readings(devices[:2], 200)
    run = run_write(records, fast_emulator, credentials, tmp_path, **dict(FAST, device_messages_per_second=5))
    accounted(run, fast_emulator, records)
    codes = topic_codes(fast_emulator)
    assert codes.get("40000", 0) <= 0.02 * codes["0"], codes


def test_transient_codes_and_gateway_errors_are_retried(fast_emulator, devices, credentials, tmp_path):
    fast_emulator.set_faults(error_rate={"30001": 0.15, "10000": 0.1}, http_status_rate={"503": 0.1, "502": 0.05},
                             seed=7)
    records = readings(devices, 400)
    run = run_write(records, fast_emulator, credentials, tmp_path, **FAST)
    result = accounted(run, fast_emulator, records)
    assert result.delivered == len(records) and result.duplicated == 0 and not run.failed
    counts = fast_emulator.counters()["faults"]
    assert counts.get("error_30001", 0) and counts.get("http_503", 0)
    assert run.counters["retries"] == sum(counts.values())  # every injected fault cost one attempt


def test_a_retried_payload_keeps_its_place_in_its_devices_order(fast_emulator, devices, credentials, tmp_path):
    """A payload being retried holds its device's lane: the device's later payloads wait for it."""
    fast_emulator.set_faults(error_rate={"10000": 0.2}, http_status_rate={"503": 0.1}, seed=5)
    records = readings(devices, 300)
    run = run_write(records, fast_emulator, credentials, tmp_path, **FAST)
    assert accounted(run, fast_emulator, records).delivered == len(records) and run.counters["retries"]
    stored = sorted(fast_emulator.messages(), key=lambda m: m["messageId"])
    for device in devices:
        seqs = [json.loads(line)["seq"] for m in stored if m["deviceName"] == device["deviceName"]
                for line in m["payload"].splitlines()]
        assert seqs == list(range(300)), device["deviceName"]


def test_hang_ups_after_acceptance_are_resent_and_the_duplicates_counted(fast_emulator, devices, credentials, tmp_path):
    fast_emulator.set_faults(drop_after_store_rate=0.2, drop_rate=0.1, seed=3)
    records = readings(devices, 300)
    run = run_write(records, fast_emulator, credentials, tmp_path, **FAST)
    result = accounted(run, fast_emulator, records)
    assert result.delivered == len(records) and not run.failed
    duplicated_messages = fast_emulator.counters()["faults"]["drop_after_store"]
    assert duplicated_messages > 0 and result.duplicated > 0
    assert run.counters["ambiguous_resends"] >= duplicated_messages


def test_exhausted_retries_fail_the_payloads_records_with_the_last_code(fast_emulator, devices, credentials, tmp_path):
    fast_emulator.set_faults(error_rate={"30001": 1.0})
    records = readings(devices[:2], 30)
    run = run_write(records, fast_emulator, credentials, tmp_path, **dict(
        FAST, retry=connector.RetryPolicy(max_attempts=3, initial_backoff=0.01)))
    result = accounted(run, fast_emulator, records)
    assert result.delivered == 0 and run.failed_reasons() == {"retries_exhausted": len(records)}
    assert {(f.code, f.attempts, f.message) for f in run.failed} == {(30001, 3, "publish message error")}


def test_attempts_count_the_publish_requests_that_left(fast_emulator, devices, credentials, tmp_path):
    """0 for a record whose payload never left (refused before sending, no secret, refused at /auth, /auth
    never answered); N for a payload sent N times. A dead letter with 0 cannot be a duplicate."""
    wrong = [dict(devices[1], deviceSecret="not-its-secret")]
    mixed = write_credentials(tmp_path / "mixed.json", [devices[0], *wrong])  # devices[2] has no secret
    records = (readings(devices[:1], 2) + readings(devices[1:3], 1)
               + [dict(readings(devices[:1], 1)[0], note="x" * 5000)])  # too large for a 4096-byte payload
    run = run_write(records, fast_emulator, mixed, tmp_path, **FAST)
    assert {(f.reason, f.attempts) for f in run.failed} == {("auth_failed", 0), ("unknown_device", 0),
                                                            ("too_large", 0)}
    assert topic_codes(fast_emulator) == {"0": 1}  # the one good payload; nothing else reached /topic

    fast_emulator.reset()
    fast_emulator.set_faults(http_status_rate={"503": 1.0})  # /auth never answers: nothing is published
    run = run_write(readings(devices[:1], 2), fast_emulator, credentials, tmp_path / "b", **dict(
        FAST, retry=connector.RetryPolicy(max_attempts=3, initial_backoff=0.01)))
    assert {(f.reason, f.attempts) for f in run.failed} == {("retries_exhausted", 0)}
    assert run.counters["retries"] == 2  # it was tried three times all the same
    assert "topic" not in fast_emulator.counters()["requests"]

    fast_emulator.set_faults(error_rate={"30001": 1.0})  # /auth answers; every publish is refused
    run = run_write(readings(devices[:1], 2), fast_emulator, credentials, tmp_path / "c", **dict(
        FAST, retry=connector.RetryPolicy(max_attempts=4, initial_backoff=0.01)))
    assert {(f.reason, f.attempts) for f in run.failed} == {("retries_exhausted", 4)}
    assert topic_codes(fast_emulator) == {"30001": 4}
