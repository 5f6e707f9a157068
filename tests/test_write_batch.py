"""WriteToIoTPlatform in batch, against the emulator over TLS: exact accounting on every runner."""
import datetime
import decimal
import json
import threading

import pytest

import connector
from connector.beam.encoders import get_encoder
from connector.beam.results import RecordText
from connector.beam.rows import record_json
from connector.emulator.accounting import account, canonical
from connector.protocol.limits import MAX_PAYLOAD_BYTES
from write_support import MULTI_PROCESS, run_write, write_credentials


def readings(devices, per_device, pad=150):
    return [{"productKey": d["productKey"], "deviceName": d["deviceName"], "seq": i,
             "time": 1_700_000_000_000 + i * 1000, "temperature": 20.5 + i % 7, "note": "x" * pad}
            for i in range(per_device) for d in devices]


@pytest.fixture
def credentials(tmp_path, devices):
    return write_credentials(tmp_path / "credentials.json", devices)


def assert_exact(run, emulator, records, encoder="jsonl"):
    """Every record accepted or failed, never both, never neither; receipts match the store."""
    messages = emulator.messages()
    result = account(records, messages, run.failed, get_encoder(encoder))
    assert result.lost == 0 and result.unexpected == 0, result.summary()
    assert result.duplicated == 0 and result.delivered_and_failed == 0, result.summary()
    assert sorted(r.message_id for r in run.receipts) == sorted(m["messageId"] for m in messages)
    assert sum(r.record_count for r in run.receipts) == result.delivered
    return result


def test_batch_publishes_every_record_in_full_payloads(clean_emulator, devices, credentials, tmp_path):
    records = readings(devices, 1500)
    run = run_write(records, clean_emulator, credentials, tmp_path)
    result = assert_exact(run, clean_emulator, records)
    assert result.delivered == len(records) and not run.failed
    by_device = {}
    for receipt in run.receipts:
        assert receipt.payload_bytes <= MAX_PAYLOAD_BYTES
        assert receipt.message_id > 2 ** 53
        by_device.setdefault(receipt.device_name, []).append(receipt.payload_bytes)
    for sizes in by_device.values():
        full = sorted(sizes)[1:] if len(sizes) > 1 else []
        assert all(size >= 0.95 * MAX_PAYLOAD_BYTES for size in full), sizes
    assert run.counters["records_in"] == len(records)
    assert run.counters["records_published"] == len(records)
    assert run.counters["messages"] == len(run.receipts)
    assert run.counters["auth_calls"] == len(devices)


def test_records_keep_their_order_within_a_device(clean_emulator, devices, credentials, tmp_path):
    records = readings(devices[:1], 3000)
    run_write(records, clean_emulator, credentials, tmp_path)
    messages = sorted(clean_emulator.messages(), key=lambda m: m["messageId"])
    seqs = [json.loads(line)["seq"] for m in messages for line in m["payload"].splitlines()]
    assert seqs == list(range(3000))


def test_order_by_sorts_each_device_by_timestamp(clean_emulator, devices, credentials, tmp_path):
    records = readings(devices[:2], 800)
    shuffled = sorted(records, key=lambda r: (r["seq"] * 7919) % 800)
    run_write(shuffled, clean_emulator, credentials, tmp_path, order_by="time")
    for device in devices[:2]:
        messages = sorted(clean_emulator.messages(device=(device["productKey"], device["deviceName"])),
                          key=lambda m: m["messageId"])
        times = [json.loads(line)["time"] for m in messages for line in m["payload"].splitlines()]
        assert times == sorted(times) and len(times) == 800


def test_order_by_fails_each_record_whose_value_cannot_be_ordered_with_the_others(clean_emulator, devices,
                                                                                 credentials, tmp_path):
    records = readings(devices[:1], 300)
    odd = [dict(records[5], time="2023-11-14T22:13:25Z"), dict(records[9], time=[1, 2])]
    rest = [r for r in records if r["seq"] not in (5, 9)]
    no_order = [dict(r, time={"s": r["seq"]}) for r in readings(devices[1:2], 3)]  # dicts: none can be ordered
    run = run_write(rest[::-1] + odd + no_order, clean_emulator, credentials, tmp_path, order_by="time")
    failed = {(f.device_name, f.record["seq"]): f for f in run.failed}
    assert sorted(failed) == [(devices[0]["deviceName"], 5), (devices[0]["deviceName"], 9)] + \
        [(devices[1]["deviceName"], i) for i in range(3)]
    assert {f.reason for f in run.failed} == {"unorderable"}
    assert "'time' holds a str, which cannot be ordered with the number values" in \
        failed[devices[0]["deviceName"], 5].message
    assert "'time' holds dict values, which have no order" in failed[devices[1]["deviceName"], 0].message
    messages = sorted(clean_emulator.messages(), key=lambda m: m["messageId"])
    times = [json.loads(line)["time"] for m in messages for line in m["payload"].splitlines()]
    assert times == sorted(r["time"] for r in rest)  # the others ordered all the same


def test_bad_records_fail_with_their_reason_and_the_rest_arrive(clean_emulator, devices, credentials, tmp_path):
    good = readings(devices, 50)
    pk = devices[0]["productKey"]
    bad = [
        "not a dict",
        {"deviceName": "d"},
        {"productKey": pk, "deviceName": ""},
        {"productKey": pk, "deviceName": "noSuchDevice", "v": 1},
        {"productKey": pk, "deviceName": devices[1]["deviceName"], "v": float("nan")},
        {"productKey": pk, "deviceName": devices[2]["deviceName"], "blob": "y" * (MAX_PAYLOAD_BYTES + 10)},
        {"productKey": pk, "deviceName": devices[3]["deviceName"], "price": decimal.Decimal("NaN")},
    ]
    run = run_write(good + bad, clean_emulator, credentials, tmp_path)
    assert run.failed_reasons() == {"invalid_record": 1, "unroutable": 2, "unknown_device": 1,
                                    "unencodable": 2, "too_large": 1}
    result = account(good, clean_emulator.messages(), [], get_encoder("jsonl"))
    assert result.delivered == len(good) and result.lost == 0
    for entry in run.failed:
        assert entry.message and entry.attempts == 0  # none of them was sent
        assert canonical(entry.record) in {canonical(b) for b in bad}  # not ==: NaN != NaN


def test_invalid_topic_templates_fail_the_records_not_the_pipeline(clean_emulator, devices, credentials, tmp_path):
    records = [dict(r, kind=kind) for r, kind in zip(readings(devices, 3), ["ok", "a+b", "", "x" * 130] * 3)]
    run = run_write(records, clean_emulator, credentials, tmp_path,
                    topic="/{productKey}/{deviceName}/user/{kind}")
    reasons = run.failed_reasons()
    assert reasons == {"invalid_topic": sum(1 for r in records if r["kind"] != "ok")}
    assert sum(r.record_count for r in run.receipts) == sum(1 for r in records if r["kind"] == "ok")
    assert all("/user/ok" in r.topic for r in run.receipts)


def test_wrong_secret_fails_exactly_that_devices_records(clean_emulator, devices, tmp_path):
    wrong = [dict(d) for d in devices]
    wrong[0]["deviceSecret"] = "not-the-secret"
    credentials = write_credentials(tmp_path / "credentials.json", wrong)
    records = readings(devices, 40)
    run = run_write(records, clean_emulator, credentials, tmp_path)
    assert_exact(run, clean_emulator, records)
    assert run.failed_reasons() == {"auth_failed": 40}
    assert {f.device_name for f in run.failed} == {devices[0]["deviceName"]}
    assert all(f.code == 20000 for f in run.failed)
    # Every /auth sent is counted, the refused ones too (the device is paused after a refusal).
    auth_requests = sum(clean_emulator.counters()["requests"]["auth"].values())
    assert run.counters["auth_calls"] == auth_requests and auth_requests > len(devices) - 1


def test_multi_process_runner_authenticates_once_per_device_per_process(clean_emulator, devices, credentials, tmp_path):
    records = readings(devices, 600)
    run = run_write(records, clean_emulator, credentials, tmp_path, options=MULTI_PROCESS)
    assert_exact(run, clean_emulator, records)
    auths = clean_emulator.counters()["requests"]["auth"].get("0", 0)
    assert len(devices) <= auths <= 2 * len(devices)


def test_receipts_have_a_deterministic_coder_and_failed_records_one_that_takes_any_record():
    """Receipts can be grouped; a failed record holds whatever its record is (nothing groups on it), and
    its coder cannot fail: a record it cannot pickle crosses as its text, as the dead letters write it."""
    from apache_beam import coders
    assert coders.registry.get_coder(connector.Receipt).is_deterministic()
    coder = coders.registry.get_coder(connector.FailedRecord)
    assert not coder.is_deterministic()
    deep = []
    for _ in range(50_000):  # Beam's FastPrimitivesCoder crashes the process on this
        deep = [deep]
    records = [{"b": 1, "a": [1.5, "x"]}, {"at": datetime.datetime(2024, 1, 1), "n": decimal.Decimal("1.50"),
                                           1: "int key", (1, 2): "tuple key"}, b"\x00raw"]
    for record in records:
        failed = connector.FailedRecord(record, "pk", "dn", "/pk/dn/user/update", "auth_failed", 20000,
                                        "auth check error", 1)
        assert coder.decode(coder.encode(failed)) == failed
    for record in ({"lock": threading.Lock(), "view": memoryview(b"ab")}, deep):  # pickle refuses these
        failed = connector.FailedRecord(record, None, None, None, "unencodable", None, "why", 0)
        decoded = coder.decode(coder.encode(failed))
        assert isinstance(decoded.record, RecordText) and decoded[1:] == failed[1:]
        assert decoded.record == record_json(record) and record_json(decoded.record) == record_json(record)
    assert decoded.record.startswith("[[[[") and "nested deeper than" in decoded.record
    receipt = connector.Receipt("pk", "dn", "/t", 1207967842654323713, 3, 100)
    assert coders.registry.get_coder(connector.Receipt).decode(
        coders.registry.get_coder(connector.Receipt).encode(receipt)).message_id == 1207967842654323713
    assert receipt.to_json_dict()["message_id"] == "1207967842654323713"


def test_portable_runner_with_an_external_worker_pool(clean_emulator, devices, credentials, tmp_path, worker_pool):
    records = readings(devices, 400)
    run = run_write(records, clean_emulator, credentials, tmp_path, options=worker_pool.options)
    assert_exact(run, clean_emulator, records)
    auths = clean_emulator.counters()["requests"]["auth"].get("0", 0)
    assert len(devices) <= auths <= 2 * len(devices)  # once per device per worker process


@pytest.mark.parametrize("name, tail", [
    ("alink-history", "thing/event/property/history/post"),
    ("alink-property", "thing/event/property/post"),
])
def test_alink_encoders_publish_to_their_thing_topic_unless_a_topic_is_given(
        clean_emulator, devices, credentials, tmp_path, name, tail):
    records = readings(devices[:2], 3)
    encoder = get_encoder(name, exclude=["productKey", "deviceName", "seq", "note"])

    def identity(record):  # what the encoder's decode gives back for a record
        return canonical(encoder.properties_of(record))

    run = run_write(records, clean_emulator, credentials, tmp_path / "default", encoder=encoder)
    result = account(records, clean_emulator.messages(), run.failed, encoder, identity)
    assert result.delivered == len(records) and not run.failed, result.summary()
    assert {m["topic"] for m in clean_emulator.messages()} == {
        f"/sys/{d['productKey']}/{d['deviceName']}/{tail}" for d in devices[:2]}

    clean_emulator.reset()
    run = run_write(records, clean_emulator, credentials, tmp_path / "given", encoder=encoder,
                    topic="/{productKey}/{deviceName}/user/history")
    assert not run.failed
    assert {m["topic"] for m in clean_emulator.messages()} == {
        f"/{d['productKey']}/{d['deviceName']}/user/history" for d in devices[:2]}


@pytest.mark.parametrize("method", ["hmacmd5", "hmacsha1", "hmacsha256"])
def test_each_sign_method_publishes_and_a_wrong_secret_is_refused(clean_emulator, devices, tmp_path, method):
    wrong = [dict(d) for d in devices]
    wrong[0]["deviceSecret"] = "not-the-secret"
    credentials = write_credentials(tmp_path / "credentials.json", wrong)
    records = readings(devices, 5)
    run = run_write(records, clean_emulator, credentials, tmp_path, sign_method=method)
    assert_exact(run, clean_emulator, records)
    assert run.failed_reasons() == {"auth_failed": 5}
    assert clean_emulator.counters()["sign_methods"] == {method: len(devices) - 1}


def test_the_default_sign_method_is_hmacsha1_which_the_spec_documents(clean_emulator, devices, credentials, tmp_path):
    run_write(readings(devices, 2), clean_emulator, credentials, tmp_path)
    assert clean_emulator.counters()["sign_methods"] == {"hmacsha1": len(devices)}


def test_an_unknown_sign_method_is_refused_when_the_pipeline_is_built(credentials):
    with pytest.raises(ValueError, match="unknown sign method 'hmacsha512'"):
        connector.WriteToIoTPlatform("https://127.0.0.1:1", credentials, sign_method="hmacsha512")


def test_a_topic_of_another_device_fails_before_sending(clean_emulator, devices, credentials, tmp_path):
    other = devices[1]
    records = readings(devices[:1], 5)
    run = run_write(records, clean_emulator, credentials, tmp_path,
                    topic=f"/{other['productKey']}/{other['deviceName']}/user/update")
    assert run.failed_reasons() == {"invalid_topic": 5}
    assert "may publish only to its own topics" in run.failed[0].message
    assert clean_emulator.counters()["requests"].get("topic", {}) == {}


def test_devices_are_paced_side_by_side_not_one_after_another(clean_emulator, devices, credentials, tmp_path):
    """A bundle hands a device's payloads over and moves on: while one device is held to its pace,
    the others publish. One after another, each device's messages would form one unbroken run."""
    records = readings(devices, 60)
    run_write(records, clean_emulator, credentials, tmp_path, max_payload_bytes=2048,
              device_messages_per_second=10)
    order = [m["deviceName"] for m in sorted(clean_emulator.messages(), key=lambda m: m["messageId"])]
    runs = 1 + sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert len(set(order)) == len(devices) and runs > 4 * len(devices), runs
