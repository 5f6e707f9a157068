"""Batch records cross the shuffle as byte chunks: what crosses must give back every record as it was,
and fragments from many chunks must still fill payloads and keep order_by's order."""
import json
import threading

import apache_beam as beam
import numpy
import pytest
from apache_beam.transforms import window

from connector.beam import batch
from connector.beam.chunks import chunk_payloads, decode_chunk, encode_chunk
from connector.beam.encoders import JsonLinesEncoder, get_encoder
from connector.beam.packing import Packer
from connector.beam.routing import make_router
from connector.protocol.device import Device
from connector.protocol.limits import MAX_PAYLOAD_BYTES
from write_support import run_write, write_credentials


@pytest.fixture
def credentials(tmp_path, devices):
    return write_credentials(tmp_path / "credentials.json", devices)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of about five records, so each device's records cross the shuffle in many of them."""
    monkeypatch.setattr(batch, "CHUNK_BYTES", 500)


def _readings(device, count):
    """Records whose fragments are all the same length (four-digit seq and time)."""
    return [{"productKey": device["productKey"], "deviceName": device["deviceName"], "seq": 1000 + i,
             "time": 9000 - i, "note": "x" * 60} for i in range(count)]


def _payloads(emulator, device):
    messages = emulator.messages(device=(device["productKey"], device["deviceName"]))
    return [m["payload"] for m in sorted(messages, key=lambda m: m["messageId"])]


def test_fragments_of_many_chunks_are_packed_again_into_the_fewest_messages(
        small_chunks, clean_emulator, devices, credentials, tmp_path):
    records = [r for d in devices[:2] for r in _readings(d, 300)]
    fragment = len(get_encoder("jsonl").encode(records[0]))
    run = run_write(records, clean_emulator, credentials, tmp_path, max_payload_bytes=4000)
    assert not run.failed
    per_payload = (4000 + 1) // (fragment + 1)  # jsonl: fragments and the newlines between them
    for device in devices[:2]:
        payloads = _payloads(clean_emulator, device)
        assert len(payloads) == -(-300 // per_payload)  # not one message (or more) per chunk
        assert sorted(json.loads(line)["seq"] for p in payloads for line in p.splitlines()) == \
            [r["seq"] for r in _readings(device, 300)]


def test_order_by_orders_a_device_whose_records_came_in_many_chunks(
        small_chunks, clean_emulator, devices, credentials, tmp_path):
    records = _readings(devices[0], 400)
    shuffled = sorted(records, key=lambda r: (r["seq"] * 7919) % 400)
    run_write(shuffled, clean_emulator, credentials, tmp_path, order_by="time")
    times = [json.loads(line)["time"] for p in _payloads(clean_emulator, devices[0]) for line in p.splitlines()]
    assert times == sorted(r["time"] for r in records)


def _typed(record):
    """A record with each value's type, so that 1 and 1.0, or a list and a tuple, differ (in key order:
    Beam's Create hands dicts over with their keys sorted)."""
    return sorted((str(key), type(value).__name__, repr(value)) for key, value in record.items())


@pytest.mark.parametrize("encoder,order_by", [("jsonl", None), ("json-array", None), ("jsonl", "time")])
def test_a_failed_payload_reports_each_record_as_it_was_given(encoder, order_by, small_chunks, clean_emulator,
                                                              devices, tmp_path):
    """Records the fragments restore (floats, huge ints, null, text) cross the shuffle as fragments alone
    and are restored from their payload; the others (every third: a tuple, an int key) beside them."""
    wrong = [dict(d, deviceSecret="not-the-secret") for d in devices[:1]]
    records = [dict(r, level=float(r["seq"]), big=2 ** 70 + r["seq"], gone=None, even=r["seq"] % 2 == 0,
                    text="é\u2028\n") for r in _readings(devices[0], 40)]
    for r in records[::3]:
        r.update(pair=(r["seq"], "a"), nested={1: [2.5, None]})
    run = run_write(records, clean_emulator, write_credentials(tmp_path / "wrong.json", wrong), tmp_path,
                    encoder=encoder, order_by=order_by)
    assert run.failed_reasons() == {"auth_failed": 40}
    failed = sorted((f.record for f in run.failed), key=lambda r: r["seq"])
    assert [_typed(r) for r in failed] == [_typed(r) for r in records]
    assert all(type(r["pair"]) is tuple for r in failed[::3])


def _records_until_the_bundle_sends(records):
    """How many records a bundle takes before it sends what it holds, and the chunks it sends then."""
    fn = batch._RouteAndEncodeFn(make_router(), get_encoder("jsonl"), 131072)
    fn.setup()
    fn.start_bundle()
    for count, record in enumerate(records, 1):
        sent = fn.process(record)
        if sent:
            return count, [decode_chunk(out.value[1]) for out in sent]
    raise AssertionError("the bundle never sent what it held")


def test_a_bundle_sends_all_it_holds_at_bundle_bytes_counting_kept_records_at_their_weight(monkeypatch):
    """Many devices' open chunks are bounded together: at BUNDLE_BYTES of memory held the bundle sends
    every device's chunk. A record kept beside its fragment (a tuple in it) weighs more than a fragment.
    (tests/test_memory.py checks what is counted against what is held.)"""
    monkeypatch.setattr(batch, "BUNDLE_BYTES", 80_000)
    plain = [{"productKey": "pk", "deviceName": f"d{i % 10}", "seq": 1000 + i, "note": "x" * 80} for i in range(2000)]
    fragment = len(get_encoder("jsonl").encode(plain[0]))
    count, chunks = _records_until_the_bundle_sends(plain)
    assert len(chunks) == 10 and sum(len(fragments) for _, fragments in chunks) == count
    assert count * fragment < 80_000 <= count * (fragment + 64) + 10 * 1024  # fragments, chunks and checks
    kept = [dict(r, pair=(1, 2)) for r in plain]
    kept_count, kept_chunks = _records_until_the_bundle_sends(kept)
    assert kept_count < count / 3
    assert all(len(originals.kept()) == len(fragments) for originals, fragments in kept_chunks)


@pytest.mark.parametrize("encoder", ["alink-property", "jsonl"])
def test_batch_sends_a_full_payload_before_it_reads_the_next_chunk(encoder):
    """A payload goes as soon as it is full: one record of alink-property, or jsonl records that fill
    it exactly, not when the group's next chunk (which may have to be read from the shuffle) comes."""
    alink = encoder == "alink-property"
    device = Device("pk", "d0")
    packer = Packer(get_encoder(encoder), device, MAX_PAYLOAD_BYTES)
    size = packer.max_fragment_bytes if alink else (MAX_PAYLOAD_BYTES - 1) // 2
    sizes = [[size], [size, size]] if alink else [[size, MAX_PAYLOAD_BYTES - 1 - size], [size, 10]]
    chunks = [encode_chunk([b"x" * n for n in chunk], {}) for chunk in sizes]
    read = []

    def from_the_shuffle():
        for chunk in chunks:
            read.append(chunk)
            yield chunk
    payloads = []
    for payload in chunk_payloads(packer, from_the_shuffle()):
        payloads.append((len(payload.records), len(read)))
    assert payloads == ([(1, 1), (1, 2), (1, 2)] if alink else [(2, 1), (2, 2)])


class _InMinuteWindows(beam.PTransform):
    """Batch records stamped with their "time" (seconds) in one-minute windows."""

    def __init__(self, records):
        super().__init__()
        self._records = records

    def expand(self, begin):
        return (begin | beam.Create(self._records, reshuffle=False)
                | beam.Map(lambda r: window.TimestampedValue(r, r["time"]))
                | beam.WindowInto(window.FixedWindows(60)))


def test_windows_other_than_the_global_one_are_chunked_and_packed_apart(clean_emulator, devices, credentials,
                                                                        tmp_path):
    records = [dict(r, time=r["seq"] % 2 * 60 + 1) for r in _readings(devices[0], 40)]  # two windows
    run = run_write(None, clean_emulator, credentials, tmp_path, source=_InMinuteWindows(records))
    assert not run.failed and sum(r.record_count for r in run.receipts) == 40
    payloads = _payloads(clean_emulator, devices[0])
    assert sorted({json.loads(line)["time"] for line in p.splitlines()} for p in payloads) == [{1}, {61}]


class _Shouting(JsonLinesEncoder):
    """A user's encoder whose restores() promises too much: its decode upper-cases text."""

    def decode(self, payload):
        return [{key: value.upper() if isinstance(value, str) else value for key, value in record.items()}
                for record in super().decode(payload)]

    def restores(self, record):
        return JsonLinesEncoder.restores(self, record)


class _Dropping(_Shouting):
    """Worse: its decode loses a record."""

    def decode(self, payload):
        return super().decode(payload)[1:]

    restores = _Shouting.restores


@pytest.mark.parametrize("encoder, note", [
    (_Shouting(), "record restored from its payload unverified: the records its decode gave do not encode to the "
                  "payload's bytes again"),
    (_Dropping(), "record not restored: its decode gave 39 records for 40; the record is the payload it was in")])
def test_a_restore_that_is_not_verified_is_never_passed_off_as_the_record(encoder, note, clean_emulator, devices,
                                                                         tmp_path, caplog):
    """Encoding the restored records again must give the payload's bytes: else each failed record says
    so in its message (a warning too), and none is lost."""
    wrong = write_credentials(tmp_path / "wrong.json", [dict(devices[0], deviceSecret="not-the-secret")])
    records = [dict(r, note=f"quiet {r['seq']}") for r in _readings(devices[0], 40)]
    run = run_write(records, clean_emulator, wrong, tmp_path, encoder=encoder)
    assert run.failed_reasons() == {"auth_failed": 40}
    assert all(f.message.startswith("auth check error") and f.message.endswith(note + ")") for f in run.failed)
    if isinstance(encoder, _Dropping):
        assert all(isinstance(f.record, bytes) and b"quiet 1000" in f.record for f in run.failed)
    else:
        assert sorted(f.record["seq"] for f in run.failed) == [r["seq"] for r in records]
    assert "restores records it cannot give back exactly" in caplog.text


def test_a_kept_record_that_cannot_be_pickled_fails_alone_and_its_chunk_crosses_without_it():
    """A record the encoder takes but pickle does not (an encoder that writes only some fields, a lock
    in another): it cannot cross the shuffle beside its fragment, so it fails there."""
    fn = batch._RouteAndEncodeFn(make_router(), get_encoder("alink-property", properties=["v"]), 131072)
    fn.setup()
    fn.start_bundle()
    records = [{"productKey": "pk", "deviceName": "dn", "v": n, "lock": threading.Lock() if n == 1 else None}
               for n in range(3)]
    assert all(fn.process(record) is None for record in records)
    outputs = list(fn.finish_bundle())
    (failed,) = [output.value.value for output in outputs if isinstance(output, beam.pvalue.TaggedOutput)]
    assert failed.reason == "unencodable" and failed.record is records[1] and "pickled" in failed.message
    (chunk,) = [output.value for output in outputs if not isinstance(output, beam.pvalue.TaggedOutput)]
    originals, fragments = decode_chunk(chunk[1])
    assert [record["v"] for record in originals.kept().values()] == [0, 2] and len(fragments) == 2


class _Buggy(JsonLinesEncoder):
    """A user's encoder with a bug that raises something other than EncodeError for some records."""

    def encode(self, record):
        if record.get("seq") == 1003:
            raise KeyError("a bug in the encoder")
        return super().encode(record)


@pytest.mark.parametrize("streaming", [False, True], ids=["batch", "streaming"])
def test_whatever_an_encoder_raises_fails_the_record_not_the_bundle(streaming, clean_emulator, devices,
                                                                   credentials, tmp_path):
    records = _readings(devices[0], 10)
    run = run_write(records, clean_emulator, credentials, tmp_path, encoder=_Buggy(), streaming=streaming)
    [failed] = run.failed
    assert failed.reason == "unencodable" and failed.message == "KeyError: 'a bug in the encoder'"
    assert sum(r.record_count for r in run.receipts) == 9


def test_order_by_values_whose_comparison_raises_fail_as_unorderable(clean_emulator, devices, credentials,
                                                                     tmp_path):
    """numpy arrays compare element-wise, and their truth raises ValueError: no order among them."""
    records = [dict(r, at=numpy.array([r["seq"], 1])) for r in _readings(devices[0], 3)] + _readings(devices[1], 3)
    run = run_write(records, clean_emulator, credentials, tmp_path, order_by="at")
    assert run.failed_reasons() == {"unorderable": 3}
    assert sum(r.record_count for r in run.receipts) == 3
