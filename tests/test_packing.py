"""Packing: payloads never pass the limit, keep every record in order, and are as full as allowed."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from connector.beam.encoders import Encoder, JsonLinesEncoder, get_encoder
from connector.beam.packing import Packer, Payload, RecordTooLarge, pack
from connector.protocol.device import Device
from connector.protocol.limits import MAX_PAYLOAD_BYTES

DEVICE = Device("a1B2c3D4e5F", "sensor-01")
T = 1524448722000
SCHEMA = {"type": "record", "name": "R", "fields": [{"name": "i", "type": "long"}, {"name": "s", "type": "string"}]}


def _dict_record(i, text):
    return {"i": i, "s": text}


def _history_record(i, text):
    return {"time": T + i, "i": i, "s": text}


def _raw_record(i, text):
    return b"%d:" % i + text.encode("utf-8")


def _same(record):
    return record


def _history_properties(record):
    return {"i": {"value": record["i"], "time": record["time"]}, "s": {"value": record["s"], "time": record["time"]}}


# name -> (encoder, how to build record i with some text, what decode gives back for a record)
CASES = {
    "jsonl": (lambda: get_encoder("jsonl"), _dict_record, _same),
    "json-array": (lambda: get_encoder("json-array"), _dict_record, _same),
    "avro": (lambda: get_encoder("avro", schema=SCHEMA), _dict_record, _same),
    "alink-history": (lambda: get_encoder("alink-history"), _history_record, _history_properties),
    "raw-with-separator": (lambda: get_encoder("raw", separator=b"\n"), _raw_record, _same),
}


def bound(encoder, fragments):
    """The size the packer counts for a body of these fragments."""
    return encoder.overhead(DEVICE) + sum(map(len, fragments)) + len(encoder.separator) * (len(fragments) - 1)


def split(outputs):
    payloads = [item for item in outputs if isinstance(item, Payload)]
    too_large = [item for item in outputs if not isinstance(item, Payload)]
    return payloads, too_large


@st.composite
def workloads(draw, overhead):
    """A limit (small ones, and the platform's) and record text lengths around and beyond it."""
    limit = draw(st.one_of(st.integers(overhead + 1, overhead + 3000), st.just(MAX_PAYLOAD_BYTES)))
    room = limit - overhead
    length = st.one_of(st.integers(0, 300), st.integers(0, room), st.integers(max(0, room - 40), room + 40))
    texts = draw(st.lists(st.tuples(length, st.sampled_from("xé€")).map(lambda t: t[1] * t[0]), max_size=25))
    return limit, texts


@pytest.mark.parametrize("name", sorted(CASES))
def test_packing_properties(name):
    make_encoder, make_record, decoded = CASES[name]
    encoder = make_encoder()
    overhead = encoder.overhead(DEVICE)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(workloads(overhead))
    def check(workload):
        limit, texts = workload
        records = [make_record(i, text) for i, text in enumerate(texts)]
        fragments = {id(r): encoder.encode(r) for r in records}
        fits = [r for r in records if overhead + len(fragments[id(r)]) <= limit]
        outputs = list(pack(encoder, DEVICE, ((r, fragments[id(r)]) for r in records), limit))
        payloads, too_large = split(outputs)

        # (1) within the limit, and within the bound the packer counts
        for payload in payloads:
            assert len(payload.body) <= limit
            assert len(payload.body) <= bound(encoder, [fragments[id(r)] for r in payload.records])
        # (2) every record once, in order: the ones that fit in payloads, the others refused alone
        assert [r for p in payloads for r in p.records] == fits
        assert [record for record, _ in too_large] == [r for r in records if r not in fits]
        assert all(isinstance(error, RecordTooLarge) for _, error in too_large)
        for payload in payloads:
            assert encoder.decode(payload.body) == [decoded(r) for r in payload.records]
        # (3) greedy: each payload but the last closed because the next record would not fit
        for payload, following in zip(payloads, payloads[1:]):
            next_fragment = fragments[id(following.records[0])]
            with_next = [fragments[id(r)] for r in payload.records] + [next_fragment]
            assert bound(encoder, with_next) > limit

    check()


@pytest.mark.parametrize("name", sorted(CASES))
def test_small_records_fill_payloads_to_at_least_95_percent(name):
    make_encoder, make_record, _ = CASES[name]
    encoder = make_encoder()
    text = "x" * (200 - len(encoder.encode(make_record(0, ""))))  # ~200-byte records
    records = [make_record(i, text) for i in range(2000)]
    payloads = list(pack(encoder, DEVICE, ((r, encoder.encode(r)) for r in records)))
    assert len(payloads) >= 3 and all(isinstance(p, Payload) for p in payloads)
    full = [len(p.body) for p in payloads[:-1]]
    assert sum(full) / len(full) >= 0.95 * MAX_PAYLOAD_BYTES


def test_max_payload_bytes_above_the_platform_limit_is_refused():
    with pytest.raises(ValueError, match="above the platform's limit of 131072"):
        Packer(JsonLinesEncoder(), DEVICE, MAX_PAYLOAD_BYTES + 1)
    with pytest.raises(ValueError, match="above the platform's limit"):
        list(pack(JsonLinesEncoder(), DEVICE, [], MAX_PAYLOAD_BYTES + 1))


def test_max_payload_bytes_must_leave_room_beside_the_envelope():
    encoder = get_encoder("json-array")
    with pytest.raises(ValueError, match="leaves no room"):
        Packer(encoder, DEVICE, encoder.overhead(DEVICE))
    Packer(encoder, DEVICE, encoder.overhead(DEVICE) + 1)


def test_a_record_exactly_at_the_limit_fits_and_one_byte_more_does_not():
    packer = Packer(JsonLinesEncoder(), DEVICE, 10)
    assert packer.add("a", b"12345") == []
    assert packer.add("b", b"1234") == [Payload(b"12345\n1234", ["a", "b"])]  # 5 + 1 newline + 4 = 10
    assert packer.add("c", b"12345") == []
    assert packer.add("d", b"12345") == [Payload(b"12345", ["c"])]  # 5 + 1 + 5 = 11
    assert packer.flush() == Payload(b"12345", ["d"])
    assert packer.flush() is None


def test_a_full_payload_closes_at_once_without_waiting_for_the_next_record():
    """Exactly filled (5 + 1 newline + 4 = 10 bytes), or too full for a newline and one byte more: no
    record can join it. Two bytes short, one still can."""
    for last, full in ((b"1234", True), (b"123", True), (b"12", False)):
        packer = Packer(JsonLinesEncoder(), DEVICE, 10)
        assert packer.add("a", b"12345") == []
        assert packer.add("b", last) == ([Payload(b"12345\n" + last, ["a", "b"])] if full else [])
    assert packer.add("c", b"12345678") == [Payload(b"12345\n12", ["a", "b"])]  # 8 + 1 + 8 > 10: the open one
    assert packer.add("d", b"1") == [Payload(b"12345678\n1", ["c", "d"])]  # and this one, full at 10
    assert packer.flush() is None
    assert packer.add("e", b"123") == [] and packer.add("f", b"x" * 10) == [Payload(b"123", ["e"]),
                                                                            Payload(b"x" * 10, ["f"])]
    assert packer.is_full(2, 9) and packer.is_full(2, 8) and not packer.is_full(1, 8) and not packer.is_full(0, 0)


def test_a_record_too_large_leaves_the_open_payload_as_it_was():
    packer = Packer(JsonLinesEncoder(), DEVICE, 10)
    packer.add("a", b"123")
    with pytest.raises(RecordTooLarge) as refused:
        packer.add("big", b"x" * 11)
    assert str(refused.value) == "a record encodes to 11 bytes, more than a payload holds (10 bytes at most)"
    assert packer.add("b", b"456") == []
    assert packer.flush() == Payload(b"123\n456", ["a", "b"])


def test_a_too_large_record_is_told_what_the_envelope_takes():
    encoder = get_encoder("alink-history")
    overhead = encoder.overhead(DEVICE)
    with pytest.raises(RecordTooLarge) as refused:
        Packer(encoder, DEVICE, 1000).check(b"x" * (1001 - overhead))
    assert str(refused.value) == (f"a record encodes to {1001 - overhead} bytes, more than a payload holds "
                                  f"(1000 bytes at most, {overhead} of them for the alink-history envelope)")


@pytest.mark.parametrize("encoder", [get_encoder("alink-property"), get_encoder("raw")], ids=["alink-property", "raw"])
def test_encoders_capped_at_one_record_get_one_payload_each(encoder):
    record = {"t": 1.0} if encoder.name == "alink-property" else b"r"
    outputs = list(pack(encoder, DEVICE, [(record, encoder.encode(record))] * 3))
    assert [len(p.records) for p in outputs] == [1, 1, 1]


def test_pack_yields_a_too_large_record_as_soon_as_it_is_met():
    outputs = list(pack(JsonLinesEncoder(), DEVICE, [("a", b"1"), ("big", b"x" * 20), ("b", b"2")], 10))
    assert outputs[0][0] == "big" and isinstance(outputs[0][1], RecordTooLarge)
    assert outputs[1] == Payload(b"1\n2", ["a", "b"])


class _Understating(Encoder):
    """An encoder that breaks its contract: its envelope is larger than overhead() says."""

    name = "understating"

    def payload(self, device, fragments):
        return b"??" + b"".join(fragments)


def test_a_body_over_the_limit_is_reported_as_a_bug():
    packer = Packer(_Understating(), DEVICE, 10)
    packer.add("a", b"x" * 9)  # one byte short of full: it stays open
    with pytest.raises(AssertionError, match="bug"):
        packer.flush()


@pytest.mark.parametrize("name", sorted(CASES) + ["alink-property"])
def test_extend_closes_the_payloads_add_would_close_one_record_at_a_time(name):
    """extend() takes a chunk from the shuffle at once; chunks cut anywhere must pack as records do."""
    make_encoder, make_record, _ = CASES.get(name, (lambda: get_encoder(name), _history_record, None))
    encoder = make_encoder()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(workload=workloads(encoder.overhead(DEVICE)), cuts=st.lists(st.integers(0, 25), max_size=5))
    def check(workload, cuts):
        limit, texts = workload
        records = [make_record(i, text) for i, text in enumerate(texts)]
        fragments = [encoder.encode(r) for r in records]
        max_fragment_bytes = Packer(encoder, DEVICE, limit).max_fragment_bytes
        fitting = [(r, f) for r, f in zip(records, fragments) if len(f) <= max_fragment_bytes]
        one_by_one = Packer(encoder, DEVICE, limit)
        expected = [p for r, f in fitting for p in one_by_one.add(r, f)] + [one_by_one.flush()]
        chunked = Packer(encoder, DEVICE, limit)
        got, bounds = [], sorted({0, len(fitting), *(min(c, len(fitting)) for c in cuts)})
        for start, stop in zip(bounds, bounds[1:]):
            chunk = fitting[start:stop]
            got += chunked.extend([r for r, _ in chunk], [f for _, f in chunk])
        got.append(chunked.flush())
        contents = lambda payloads: [(p.records, encoder.decode(p.body)) for p in payloads if p]  # noqa: E731 (Alink ids differ)
        assert contents(got) == contents(expected) and [p is None for p in got] == [p is None for p in expected]
        if len(fitting) < len(records):  # a chunk with a record too large: refused whole, nothing added
            with pytest.raises(RecordTooLarge):
                chunked.extend(records, fragments)
            assert chunked.flush() is None

    check()
