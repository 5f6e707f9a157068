"""Bad input and scale: every kind of bad record fails alone with its reason while the good records of
the same run all arrive; thousands of devices with one record each; one device with a long history.
Every test runs a real pipeline and ends in the accounting check."""
import decimal
import json
import time

import apache_beam as beam
import pytest

import connector
from connector.beam.encoders import get_encoder
from connector.client.errors import UnknownDevice
from connector.client.tokens import TokenCache
from connector.emulator import make_devices
from connector.protocol.codes import Action
from connector.protocol.limits import MAX_PAYLOAD_BYTES
from reliability_support import accounted
from write_support import run_write, write_credentials

PK = "pkTest00001"  # the product key of the `devices` fixture
AVRO_SCHEMA = {"type": "record", "name": "Reading", "fields": [
    {"name": "productKey", "type": "string"}, {"name": "deviceName", "type": "string"},
    {"name": "seq", "type": "long"}, {"name": "temperature", "type": "double"}]}


def route_raw(record):
    """Raw records are b"deviceName|payload"; the device part must be UTF-8."""
    name = record.split(b"|", 1)[0].decode("utf-8")
    return (PK, name), f"/{PK}/{name}/user/raw"


def _json_good(devices):
    return [{"productKey": d["productKey"], "deviceName": d["deviceName"], "seq": i, "temperature": 20.5,
             "kind": "ok", "target": d["deviceName"]} for d in devices for i in range(5)]


def _avro_good(devices):
    return [{"productKey": d["productKey"], "deviceName": d["deviceName"], "seq": i, "temperature": 20.5}
            for d in devices for i in range(5)]


def _raw_good(devices):
    return [f"{d['deviceName']}|reading {i}".encode() for d in devices for i in range(5)]


def _dev(n, **fields):
    return dict({"productKey": PK, "deviceName": f"device{n:05d}"}, **fields)


def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def _exploding_topic(record, device):
    """A topic callable with a bug: it raises something other than the errors a topic usually meets."""
    if record.get("explode"):
        raise ZeroDivisionError("a bug in the topic callable")
    return f"/{device.product_key}/{device.device_name}/user/update"


BY_KIND = "/{productKey}/{deviceName}/user/{kind}"
AVRO = dict(encoder="avro", encoder_options={"schema": AVRO_SCHEMA})
RAW = dict(encoder="raw", router=route_raw)

# (kind, bad records, WriteToIoTPlatform options, good-record factory, {reason: count}, delivered too)
CATALOGUE = [
    ("int", [42], {}, _json_good, {"invalid_record": 1}, 0),
    ("list", [[1, 2]], {}, _json_good, {"invalid_record": 1}, 0),
    ("none", [None], {}, _json_good, {"invalid_record": 1}, 0),
    ("missing device fields", [{"temperature": 1.0}, {"productKey": PK}], {}, _json_good, {"unroutable": 2}, 0),
    ("empty device fields", [_dev(0, deviceName=""), {"productKey": "", "deviceName": "device00000"}], {},
     _json_good, {"unroutable": 2}, 0),
    ("non-string device fields", [_dev(0, deviceName=7), {"productKey": [PK], "deviceName": "device00000"}], {},
     _json_good, {"unroutable": 2}, 0),
    ("device with no secret", [_dev(0, deviceName="ghost")], {}, _json_good, {"unknown_device": 1}, 0),
    ("wrong secret", [_dev(3, seq=i) for i in range(3)], {}, _json_good, {"auth_failed": 3}, 0),
    ("NaN", [_dev(0, seq=-1, temperature=float("nan"))], {}, _json_good, {"unencodable": 1}, 0),
    ("Infinity", [_dev(1, seq=-1, temperature=float("-inf"))], {}, _json_good, {"unencodable": 1}, 0),
    ("Decimal NaN", [_dev(2, seq=-1, price=decimal.Decimal("NaN"))], {}, _json_good, {"unencodable": 1}, 0),
    ("nested deeper than JSON is written", [_dev(1, seq=-1, deep=_nested(300))], {}, _json_good,
     {"unencodable": 1}, 0),
    ("topic callable that raises", [_dev(0, explode=True)], dict(topic=_exploding_topic), _json_good,
     {"invalid_topic": 1}, 0),
    ("avro wrong types", [_dev(0, seq="one", temperature=1.0), _dev(1, seq=1, temperature="warm"),
                          _dev(2, seq=1)], AVRO, _avro_good, {"unencodable": 3}, 0),
    ("record over 128 KB", [_dev(0, seq=-1, blob="x" * MAX_PAYLOAD_BYTES)], {}, _json_good, {"too_large": 1}, 0),
    ("topic with wildcards", [_dev(0, kind="a+b"), _dev(1, kind="#")], dict(topic=BY_KIND), _json_good,
     {"invalid_topic": 2}, 0),
    ("topic with empty levels", [_dev(0, kind=""), _dev(1, kind="a//b")], dict(topic=BY_KIND), _json_good,
     {"invalid_topic": 2}, 0),
    ("topic over 128 bytes", [_dev(0, kind="x" * 110)], dict(topic=BY_KIND), _json_good, {"invalid_topic": 1}, 0),
    ("topic of another device", [_dev(0, target="device00001")],
     dict(topic="/{productKey}/{target}/user/update"), _json_good, {"invalid_topic": 1}, 0),
    ("raw: non-UTF-8 device part", [b"\xff\xfe|payload"], RAW, _raw_good, {"unroutable": 1}, 0),
    ("raw: not bytes", ["device00000|text"], RAW, _raw_good, {"unroutable": 1}, 0),
    ("raw: record holds the separator", [b"device00000|two\nlines"], dict(RAW, encoder_options={"separator": b"\n"}),
     _raw_good, {"unencodable": 1}, 0),
    # Not bad: raw payloads are octet-streams, sent as they are.
    ("raw: non-UTF-8 payload", [b"device00001|\xff\xfe\x00"], RAW, _raw_good, {}, 1),
]


@pytest.mark.parametrize("kind, bad, options, good_for, reasons, delivered_too", CATALOGUE,
                         ids=[case[0] for case in CATALOGUE])
def test_bad_input_catalogue(kind, bad, options, good_for, reasons, delivered_too, clean_emulator, devices,
                             tmp_path):
    known = [dict(d) for d in devices]
    known[3]["deviceSecret"] = "not-the-secret"  # device00003's records fail auth; the good ones skip it
    credentials = write_credentials(tmp_path / "credentials.json", known)
    good = good_for(devices[:3])
    run = run_write(good + bad, clean_emulator, credentials, tmp_path, **options)
    assert run.failed_reasons() == reasons
    encoder = get_encoder(options.get("encoder", "jsonl"), **options.get("encoder_options", {}))
    messages = clean_emulator.messages()
    result = accounted(run, messages, good + bad, encoder)
    assert result.delivered == len(good) + delivered_too, result.summary()  # nothing else was lost
    assert result.duplicated == 0 and result.delivered_and_failed == 0
    for entry in run.failed:
        assert entry.message and entry.reason in reasons
        assert entry.code == (20000 if entry.reason == "auth_failed" else None)


class _Generate(beam.PTransform):
    """count records of one device, made on the workers (not pickled into the graph), in chunks."""

    def __init__(self, product_key, device_name, count, chunk=10_000):
        super().__init__()
        self._args = product_key, device_name, count, chunk

    def expand(self, begin):
        product_key, device_name, count, chunk = self._args
        return (begin | beam.Create(list(range(0, count, chunk)))
                | beam.FlatMap(lambda start: ({"productKey": product_key, "deviceName": device_name, "seq": n,
                                               "v": n % 97} for n in range(start, min(start + chunk, count)))))


def test_one_device_with_a_long_history_arrives_whole_in_order_in_full_payloads(fresh_emulator, tmp_path):
    device = make_devices(1, product_key="pkHistory01")[0]
    credentials = write_credentials(tmp_path / "credentials.json", [device])
    emulator = fresh_emulator(devices=[device], device_qps=100_000)
    count = 300_000
    run = run_write(None, emulator, credentials, tmp_path, source=_Generate(device["productKey"],
                    device["deviceName"], count), order_by="seq", device_messages_per_second=0)
    messages = sorted(emulator.messages(), key=lambda m: m["messageId"])
    assert not run.failed and all(len(m["payload"]) <= MAX_PAYLOAD_BYTES for m in messages)
    seqs = [json.loads(line)["seq"] for m in messages for line in m["payload"].splitlines()]
    assert seqs == list(range(count))  # every record, once, in order
    sizes = sorted(len(m["payload"]) for m in messages)
    assert all(size >= 0.99 * MAX_PAYLOAD_BYTES for size in sizes[1:])  # full payloads but the last
    assert sum(r.record_count for r in run.receipts) == count and len(run.receipts) == len(messages)


def test_thousands_of_devices_with_one_record_each(fresh_emulator, tmp_path):
    fleet = make_devices(5_000, product_key="pkFleet0001")
    credentials = write_credentials(tmp_path / "credentials.json", fleet)
    emulator = fresh_emulator(devices=fleet[:1])
    emulator.add_devices(fleet[1:])  # the admin API adds devices to a running platform
    records = [{"productKey": d["productKey"], "deviceName": d["deviceName"], "seq": 0, "v": i}
               for i, d in enumerate(fleet)]
    started = time.monotonic()
    run = run_write(records, emulator, credentials, tmp_path, max_in_flight=32)
    elapsed = time.monotonic() - started
    result = accounted(run, emulator.messages(), records)
    assert result.delivered == len(fleet) and not run.failed and result.duplicated == 0
    requests = emulator.counters()["requests"]
    assert requests["auth"] == {"0": len(fleet)} and requests["topic"] == {"0": len(fleet)}
    assert run.counters["auth_calls"] == len(fleet)
    print(f"\n{len(fleet)} devices, one record each: {elapsed:.1f} s, {2 * len(fleet) / elapsed:.0f} requests/s")


def test_text_that_is_not_unicode_is_refused_by_beam_before_the_sink_and_by_the_client(emulator, devices, tmp_path):
    """Non-UTF-8 bytes decoded with surrogateescape give str with lone surrogates. Beam's coders
    cannot carry them (beam.Create, GroupByKey): the run fails at construction, before anything is
    sent, so such text must be cleaned upstream. The client refuses such a topic as invalid instead
    of failing inside the UTF-8 length check."""
    credentials = write_credentials(tmp_path / "credentials.json", devices)
    surrogate = b"dev\xff".decode("utf-8", "surrogateescape")
    before = emulator.counters()["requests"].get("topic", {})
    with pytest.raises(UnicodeEncodeError):
        run_write([_dev(0, note=surrogate)], emulator, credentials, tmp_path)
    assert emulator.counters()["requests"].get("topic", {}) == before
    client = connector.IoTPlatformClient(emulator.endpoint, ca_file=emulator.ca_file)
    device = connector.Device(devices[0]["productKey"], devices[0]["deviceName"])
    token = client.authenticate(device, devices[0]["deviceSecret"])
    with pytest.raises(connector.IoTPlatformError, match="lone surrogate") as refused:
        client.publish(token, f"/{PK}/{devices[0]['deviceName']}/user/{surrogate}", b"{}")
    assert refused.value.action is Action.PERMANENT


def test_a_device_without_a_secret_costs_no_auth_request_and_is_not_counted_as_one(clean_emulator, devices):
    client = connector.IoTPlatformClient(clean_emulator.endpoint, ca_file=clean_emulator.ca_file)
    cache = TokenCache(client, {})
    for _ in range(3):
        with pytest.raises(UnknownDevice):
            cache.get(connector.Device(PK, "ghost"))
    assert cache.auth_calls == 0 and "auth" not in clean_emulator.counters()["requests"]
