"""Encoders: round trips, the errors a bad record gets, and the Alink bodies docs/protocol.md describes."""
import dataclasses
import datetime
import decimal
import enum
import io
import itertools
import json
import os
import pickle
import tracemalloc
import uuid

import fastavro
import hypothesis
import numpy
import pandas
import pytest
from apache_beam.utils.timestamp import Timestamp

from connector.beam import encoders
from connector.beam.encoders import AvroEncoder, EncodeError, Encoder, RawEncoder, get_encoder
from connector.protocol.device import Device

DEVICE = Device("a1B2c3D4e5F", "sensor-01")
SCHEMA = {
    "type": "record",
    "name": "Reading",
    "fields": [
        {"name": "sensor", "type": "string"},
        {"name": "time", "type": "long"},
        {"name": "temperature", "type": "double"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
}
READINGS = [
    {"sensor": "s1", "time": 1524448722000, "temperature": 21.5, "tags": ["a", "é"]},
    {"sensor": "s2", "time": 1524448723000, "temperature": 10.0, "tags": []},
]
T = 1524448722000


def make(name, **more):
    options = {"avro": {"schema": SCHEMA}, "raw-lines": {"separator": b"\n"}}.get(name, {})
    return get_encoder(name.replace("raw-lines", "raw"), **options, **more)


def body_of(encoder, records):
    return encoder.payload(DEVICE, [encoder.encode(r) for r in records])


ROUND_TRIPS = [
    ("jsonl", READINGS + [{"nested": {"a": [1, None, True]}, "text": "line\nbreak \u2028 €"}]),
    ("json-array", READINGS + [{}]),
    ("avro", READINGS),
    ("raw", [b"\x00\xffbinary\n"]),
    ("raw-lines", [b"one", b"", b"three \xe2\x82\xac"]),
]


@pytest.mark.parametrize("name,records", ROUND_TRIPS, ids=[case[0] for case in ROUND_TRIPS])
def test_round_trip(name, records):
    encoder = make(name)
    fragments = [encoder.encode(r) for r in records]
    body = encoder.payload(DEVICE, fragments)
    assert encoder.decode(body) == records
    bound = encoder.overhead(DEVICE) + sum(map(len, fragments)) + len(encoder.separator) * (len(records) - 1)
    assert len(body) <= bound


def test_jsonl_is_compact_utf8_lines_without_trailing_newline():
    body = body_of(make("jsonl"), [{"a": 1, "b": "é"}, {"c": [1.0]}])
    assert body == '{"a":1,"b":"é"}\n{"c":[1.0]}'.encode()


def test_json_array_payload_is_one_array():
    body = body_of(make("json-array"), [{"a": 1}, {"b": 2}])
    assert body == b'[{"a":1},{"b":2}]'
    assert json.loads(body) == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize("name", ["jsonl", "json-array", "alink-property", "alink-history"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_json_encoders_refuse_nan_and_infinity(name, value):
    with pytest.raises(EncodeError, match="NaN/Infinity cannot be encoded as JSON"):
        make(name).encode({"temperature": value, "time": T})


class _Secret:
    def __repr__(self):
        return "secret-value"


@pytest.mark.parametrize("value,type_name", [(_Secret(), "_Secret"), (object(), "object")])
def test_json_names_the_type_and_field_it_cannot_encode_without_the_value(value, type_name):
    with pytest.raises(EncodeError) as error:
        make("jsonl").encode({"outer": {"items": [1, value]}})
    message = str(error.value)
    assert f"type {type_name}" in message and "outer.items.1" in message
    assert "secret-value" not in message


def test_json_refuses_circular_records():
    record = {}
    record["self"] = record
    with pytest.raises(EncodeError, match="circular"):
        make("jsonl").encode(record)


@pytest.mark.parametrize("name", ["jsonl", "json-array", "alink-property", "alink-history"])
@pytest.mark.parametrize("record", [[1, 2], "text", b"{}", None])
def test_json_encoders_need_dict_records(name, record):
    with pytest.raises(EncodeError, match="must be dicts"):
        make(name).encode(record)


# --- Alink ------------------------------------------------------------------------------------------

def assert_alink_id(message_id):
    assert isinstance(message_id, str) and message_id.isdigit()
    assert 0 <= int(message_id) <= 4294967295


def test_alink_property_body_matches_protocol():
    encoder = make("alink-property")
    record = {"productKey": "pk", "deviceName": "dn", "time": T, "temperature": 10.0, "mode": "eco"}
    body = body_of(encoder, [record])
    message = json.loads(body)
    assert list(message) == ["id", "version", "params", "method"]
    assert_alink_id(message["id"])
    assert message["version"] == "1.0"
    assert message["method"] == "thing.event.property.post"
    assert message["params"] == {"temperature": {"value": 10.0, "time": T}, "mode": {"value": "eco", "time": T}}
    assert b'"value":10.0,' in body  # floats keep their decimal point
    assert encoder.max_records == 1
    assert encoder.decode(body) == [message["params"]]


def test_alink_property_without_time_sends_values_only():
    message = json.loads(body_of(make("alink-property"), [{"temperature": 21.5}]))
    assert message["params"] == {"temperature": {"value": 21.5}}


def test_alink_property_selection_and_exclusion():
    record = {"time": T, "temperature": 1.5, "humidity": 40, "site": "x"}
    chosen = get_encoder("alink-property", properties=["humidity", "missing"])
    assert chosen.properties_of(record) == {"humidity": {"value": 40, "time": T}}
    excluded = get_encoder("alink-property", exclude=["site"], time_field="ts")
    assert excluded.properties_of({"ts": T, "temperature": 1.5, "site": "x"}) == {
        "temperature": {"value": 1.5, "time": T}}


@pytest.mark.parametrize("name", ["alink-property", "alink-history"])
def test_alink_needs_a_property(name):
    with pytest.raises(EncodeError, match="no properties"):
        make(name).encode({"productKey": "pk", "deviceName": "dn", "time": T})


def test_alink_history_body_matches_protocol():
    encoder = make("alink-history")
    device = Device("pk\"1", "dévice")  # the identity is JSON-escaped, not pasted in
    records = [{"time": T, "temperature": 21.5, "humidity": 40.1}, {"time": T + 1000, "temperature": 22.0}]
    body = encoder.payload(device, [encoder.encode(r) for r in records])
    message = json.loads(body)
    assert list(message) == ["id", "version", "method", "params"]
    assert_alink_id(message["id"])
    assert message["version"] == "1.0"
    assert message["method"] == "thing.event.property.history.post"
    assert message["params"] == [{
        "identity": {"productKey": "pk\"1", "deviceName": "dévice"},
        "properties": [
            {"temperature": {"value": 21.5, "time": T}, "humidity": {"value": 40.1, "time": T}},
            {"temperature": {"value": 22.0, "time": T + 1000}},
        ],
        "events": [],
    }]
    assert b'"value":22.0,' in body
    assert encoder.decode(body) == message["params"][0]["properties"]


@pytest.mark.parametrize("time", [None, True, 1524448722.0, "1524448722000", -1, datetime.date(2024, 1, 1),
                                  datetime.datetime(1969, 12, 31, 23, 59, 59), "2018-04-23", "yesterday 10:00",
                                  "1969-12-31T23:59:59Z"])
def test_alink_refuses_invalid_time(time):
    for name in ("alink-property", "alink-history"):
        with pytest.raises(EncodeError, match="epoch milliseconds"):
            make(name).encode({"time": time, "temperature": 1.0})


@pytest.mark.parametrize("time", [
    T, numpy.int64(T), datetime.datetime(2018, 4, 23, 1, 58, 42), pandas.Timestamp("2018-04-23T01:58:42Z"),
    datetime.datetime(2018, 4, 23, 9, 58, 42, tzinfo=datetime.timezone(datetime.timedelta(hours=8))),
    Timestamp(micros=T * 1000), numpy.datetime64("2018-04-23T01:58:42.000"),
    "2018-04-23T01:58:42.000Z", "2018-04-23 09:58:42+08:00", "2018-04-23T01:58:42"])  # text: as dead letters keep it
def test_alink_time_field_takes_epoch_milliseconds_or_a_timestamp(time):
    """A timestamp is an instant: naive ones are UTC, as the value mapping reads them."""
    for name in ("alink-property", "alink-history"):
        assert make(name).properties_of({"time": time, "t": 1.0}) == {"t": {"value": 1.0, "time": T}}


def test_alink_history_requires_time():
    with pytest.raises(EncodeError, match="need their time field 'time'"):
        make("alink-history").encode({"temperature": 1.0})
    with pytest.raises(EncodeError, match="need their time field 'time'"):
        make("alink-history", require_time=False).encode({"temperature": 1.0})  # history cannot do without


def test_alink_property_requires_time_only_when_asked():
    """Without a time a live report is stamped with its arrival; a run that names its time field wants
    that field, and a record without it fails rather than going out stamped with the wrong time."""
    assert make("alink-property").properties_of({"temperature": 1.0}) == {"temperature": {"value": 1.0}}
    with pytest.raises(EncodeError, match="need their time field 'ts'"):
        make("alink-property", time_field="ts", require_time=True).encode({"time": T, "temperature": 1.0})


def test_alink_ids_count_up_and_wrap_at_2_to_the_32(monkeypatch):
    monkeypatch.setattr(encoders, "_ids", itertools.count(2**32 - 2))
    assert [encoders.next_message_id() for _ in range(3)] == ["4294967294", "4294967295", "0"]


@pytest.mark.parametrize("name", ["alink-property", "alink-history"])
def test_alink_overhead_reserves_the_widest_id(name, monkeypatch):
    monkeypatch.setattr(encoders, "_ids", itertools.count(2**32 - 1))
    encoder = make(name)
    fragment = encoder.encode({"time": T, "t": 1.0})
    assert len(encoder.payload(DEVICE, [fragment])) == encoder.overhead(DEVICE) + len(fragment)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_repeat_the_parents_ids():
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, encoders.next_message_id().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 16).decode()
    os.waitpid(pid, 0)
    os.close(read_end)
    assert child_id != encoders.next_message_id()  # equal only with chance 2**-32


# --- Avro -------------------------------------------------------------------------------------------

def test_avro_payload_is_one_container_file_with_one_block():
    encoder = make("avro")
    body = body_of(encoder, READINGS)
    reader = fastavro.reader(io.BytesIO(body))
    assert list(reader) == READINGS
    assert reader.metadata["avro.codec"] == "null"
    blocks = list(fastavro.block_reader(io.BytesIO(body)))
    assert [block.num_records for block in blocks] == [2]
    assert body == body_of(make("avro"), READINGS)  # deterministic sync marker


def test_avro_accepts_a_json_schema_string():
    assert make("avro").encode(READINGS[0]) == get_encoder("avro", schema=json.dumps(SCHEMA)).encode(READINGS[0])


@pytest.mark.parametrize("change,expected", [
    ({"temperature": "warm"}, "Reading.temperature: expected double, got str"),
    ({"time": 1.5}, "Reading.time: expected long, got float"),
    ({"time": True}, "Reading.time: expected long, got bool"),
    ({"sensor": None}, "Reading.sensor: expected string, got NoneType"),
])
def test_avro_refuses_records_that_do_not_match_the_schema(change, expected):
    with pytest.raises(EncodeError, match="does not match the Avro schema") as error:
        make("avro").encode({**READINGS[0], **change})
    assert expected in str(error.value)


def test_avro_refuses_an_invalid_schema_at_construction():
    with pytest.raises(ValueError, match="invalid Avro schema"):
        AvroEncoder({"type": "record", "name": "R", "fields": [{"name": "x", "type": "nosuchtype"}]})


# --- Raw --------------------------------------------------------------------------------------------

def test_raw_sends_bytes_as_they_are_one_per_message():
    encoder = make("raw")
    assert encoder.max_records == 1
    for record in (b"abc", bytearray(b"abc"), memoryview(b"abc")):
        assert encoder.payload(DEVICE, [encoder.encode(record)]) == b"abc"


@pytest.mark.parametrize("record", ["text", 5, {"a": 1}])
def test_raw_needs_bytes(record):
    with pytest.raises(EncodeError, match="must be bytes"):
        make("raw").encode(record)


@pytest.mark.parametrize("record", [b"line one\n", b"\nline two", b"a-\n", b"x\n\ny"])
def test_raw_refuses_what_would_make_a_multi_byte_separator_beside_another_record(record):
    """Beside the separator, a record ending with its first bytes (or starting with its last) reads as
    another split: [b"line one\\n", b"\\nline two"] joined by b"\\n\\n" reads back as three records."""
    with pytest.raises(EncodeError, match="part of it"):
        RawEncoder(separator=b"\n\n").encode(record)
    assert RawEncoder(separator=b"\n").encode(b"a") == b"a"


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(records=hypothesis.strategies.lists(hypothesis.strategies.binary(max_size=5), min_size=1, max_size=6),
                  separator=hypothesis.strategies.binary(min_size=1, max_size=3))
def test_raw_gives_back_exactly_the_records_it_encodes(records, separator):
    encoder = RawEncoder(separator=separator)
    fragments = []
    for record in records:
        try:
            fragments.append((record, encoder.encode(record)))
        except EncodeError:
            pass
    payload = encoder.payload(DEVICE, [fragment for _, fragment in fragments])
    if fragments:
        assert encoder.decode(payload) == [record for record, _ in fragments]


def test_raw_with_separator_packs_several_and_refuses_records_holding_it():
    encoder = RawEncoder(separator=b"\n")
    assert encoder.max_records is None and encoder.separator == b"\n"
    with pytest.raises(EncodeError, match="contains the separator"):
        encoder.encode(b"a\nb")
    with pytest.raises(ValueError):
        RawEncoder(separator="\n")


# --- Lookup and pickling ----------------------------------------------------------------------------

ALL = ["jsonl", "json-array", "avro", "raw", "raw-lines", "alink-property", "alink-history"]


@pytest.mark.parametrize("name", ALL)
def test_encoders_survive_pickling(name):
    encoder = make(name)
    record = {"raw": b"x", "raw-lines": b"x"}.get(name, READINGS[0])
    fragment = encoder.encode(record)
    copy = pickle.loads(pickle.dumps(encoder))
    assert copy.encode(record) == fragment
    assert copy.overhead(DEVICE) == encoder.overhead(DEVICE)


def test_get_encoder_by_name_and_instance():
    assert [get_encoder(name).name for name in ("jsonl", "json-array", "alink-property")] == [
        "jsonl", "json-array", "alink-property"]
    instance = RawEncoder()
    assert get_encoder(instance) is instance
    assert isinstance(get_encoder("alink-history", time_field="ts"), Encoder)
    with pytest.raises(ValueError, match="would be ignored"):
        get_encoder(instance, separator=b"\n")


def test_get_encoder_lists_names_for_unknown_ones():
    with pytest.raises(ValueError) as error:
        get_encoder("protobuf")
    for name in ("jsonl", "json-array", "avro", "raw", "alink-property", "alink-history"):
        assert name in str(error.value)


# --- JSON: orjson for speed, the json module as the reference ---------------------------------------

class Mode(enum.Enum):
    ECO = "eco"


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


@pytest.mark.parametrize("with_null", [False, True], ids=["orjson", "json-module"])
def test_uuids_and_enums_are_written_the_same_on_both_paths(with_null):
    record = {"id": uuid.UUID(int=7), "mode": Mode.ECO, "level": Level.HIGH, "gone": None if with_null else 0}
    assert json.loads(make("jsonl").encode(record)) == {
        "id": "00000000-0000-0000-0000-000000000007", "mode": "eco", "level": 3, "gone": None if with_null else 0}


@pytest.mark.parametrize("record", [
    pytest.param({"big": 2 ** 70, "small": -2 ** 64}, id="int-beyond-64-bits"),
    pytest.param({1: "int key", None: "null key", 2.5: "float key"}, id="non-string-keys"),
    pytest.param({"name": Name("sub"), "nested": [Name("x")]}, id="str-subclass"),
    pytest.param({"text": "null", "n": None, "deep": [[{"x": None}]]}, id="nulls"),
])
def test_what_orjson_leaves_to_the_json_module_is_encoded_as_it_encodes(record):
    expected = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    assert make("jsonl").encode(record) == expected


@dataclasses.dataclass
class Point:
    x: int
    at: datetime.date


@pytest.mark.parametrize("name", ["jsonl", "json-array", "alink-property", "alink-history"])
def test_every_json_encoder_writes_values_by_the_one_mapping(name):
    """The value mapping (json_values, the README's table) is the JSON family's: a timestamp, a date, a
    Decimal, bytes, a dataclass come out the same in every encoder, as property values for Alink."""
    values = {"at": datetime.datetime(2026, 11, 26, 8, tzinfo=datetime.timezone(datetime.timedelta(hours=8))),
              "day": datetime.date(2026, 11, 26), "price": decimal.Decimal("12.340"), "blob": b"\x00\xff",
              "point": Point(1, datetime.date(2026, 1, 2))}
    expected = {"at": "2026-11-26T00:00:00.000Z", "day": "2026-11-26", "price": 12.34, "blob": "AP8=",
                "point": {"x": 1, "at": "2026-01-02"}}
    encoder = make(name)
    fragment = encoder.encode({"time": T, **values})
    assert b"12.340" in fragment  # the Decimal's own digits
    (decoded,) = encoder.decode(encoder.payload(DEVICE, [fragment]))
    if name.startswith("alink"):
        decoded = {field: stamped["value"] for field, stamped in decoded.items()}
    else:
        del decoded["time"]
    assert decoded == expected


@pytest.mark.parametrize("name", ["jsonl", "alink-history"])
def test_timestamps_as_epoch_milliseconds_on_request(name):
    encoder = get_encoder(name, timestamps="epoch-ms")
    record = {"time": datetime.datetime(2024, 1, 1, 0, 0, 0, 1500), "at": datetime.datetime(2024, 1, 1)}
    (decoded,) = encoder.decode(encoder.payload(DEVICE, [encoder.encode(record)]))
    if name == "jsonl":
        assert decoded == {"time": 1704067200001, "at": 1704067200000}
    else:
        assert decoded == {"at": {"value": 1704067200000, "time": 1704067200001}}
    with pytest.raises(ValueError, match="timestamps must be one of iso, epoch-ms"):
        get_encoder(name, timestamps="unix")


def test_fragments_take_the_memory_of_their_size():
    """Fragments wait in streaming state and open payloads: each must hold about its own length."""
    encoder = make("jsonl")
    record = {"productKey": "pk", "deviceName": "dn", "ts": T, "temperature": 21.5}
    tracemalloc.start()
    try:
        fragments = [encoder.encode(record) for _ in range(1000)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 1000 * (len(fragments[0]) + 200), held / 1000


def test_nan_beside_a_null_is_refused():
    with pytest.raises(EncodeError, match=r"NaN/Infinity .*\(field b\)"):
        make("jsonl").encode({"a": None, "b": float("nan")})


_json_values = hypothesis.strategies.recursive(
    hypothesis.strategies.none() | hypothesis.strategies.booleans() | hypothesis.strategies.floats()
    | hypothesis.strategies.integers(min_value=-2 ** 80, max_value=2 ** 80) | hypothesis.strategies.text(),
    lambda children: hypothesis.strategies.lists(children, max_size=4)
    | hypothesis.strategies.dictionaries(hypothesis.strategies.text(max_size=5) | hypothesis.strategies.integers(),
                                         children, max_size=4),
    max_leaves=20)


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(hypothesis.strategies.dictionaries(hypothesis.strategies.text(max_size=5), _json_values, max_size=5))
def test_the_json_encoders_accept_and_refuse_exactly_what_the_json_module_does(record):
    try:
        expected = json.loads(json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (ValueError, UnicodeEncodeError):
        with pytest.raises(EncodeError):
            make("jsonl").encode(record)
        return
    assert json.loads(make("jsonl").encode(record)) == expected


# --- restores: which records a batch chunk may carry as their fragment alone --------------------------

def _typed(value):
    """A value with the type of everything in it, so that equal values of other types (1 and 1.0, a
    list and a tuple, a str and its subclass) compare unequal."""
    if isinstance(value, dict):
        return type(value), [(_typed(k), _typed(v)) for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return type(value), [_typed(v) for v in value]
    return type(value), value


_flat_json_values = (hypothesis.strategies.none() | hypothesis.strategies.booleans()
                     | hypothesis.strategies.floats() | hypothesis.strategies.integers(min_value=-2 ** 80,
                                                                                        max_value=2 ** 80)
                     | hypothesis.strategies.text())


@pytest.mark.parametrize("name", ["jsonl", "json-array"])
@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(records=hypothesis.strategies.lists(
    hypothesis.strategies.dictionaries(hypothesis.strategies.text(max_size=5), _flat_json_values, max_size=6),
    min_size=1, max_size=4))
def test_the_json_encoders_restore_a_flat_record_exactly(name, records):
    encoder = make(name)
    try:
        fragments = [encoder.encode(r) for r in records]
    except EncodeError:  # NaN, Infinity or text that is not UTF-8: refused, never restored
        return
    assert all(map(encoder.restores, records))
    assert _typed(encoder.decode(encoder.payload(DEVICE, fragments))) == _typed(records)


@pytest.mark.parametrize("record", [
    {"pair": (1, "a")}, {"list": [1]}, {"nested": {"a": 1}}, {1: "int key"}, {"id": uuid.UUID(int=7)},
    {"mode": Mode.ECO}, {"level": Level.HIGH}, {"name": Name("sub")}, {Name("key"): 1},
], ids=["tuple", "list", "dict", "int-key", "uuid", "enum", "int-enum", "str-subclass", "str-subclass-key"])
def test_the_json_encoders_keep_what_json_would_give_back_changed_or_might(record):
    for name in ("jsonl", "json-array"):
        assert not make(name).restores(record)


def test_raw_restores_bytes_and_the_other_encoders_restore_nothing():
    raw = make("raw-lines")
    assert raw.restores(b"one") and not raw.restores(bytearray(b"one")) and not raw.restores(memoryview(b"one"))
    assert raw.decode(raw.payload(DEVICE, [raw.encode(b"one"), raw.encode(b"")])) == [b"one", b""]
    for name in ("avro", "alink-property", "alink-history"):
        assert not make(name).restores(READINGS[0])
    assert not Encoder().restores({"a": 1})


class _Versioned(encoders.JsonLinesEncoder):
    """A user's encoder that writes a field the record does not have."""

    def encode(self, record):
        return super().encode(dict(record, version=2))


class _VersionedSaysSo(_Versioned):
    def restores(self, record):
        return record.get("version") == 2 and encoders.JsonLinesEncoder.restores(self, record)


def test_a_subclass_that_changes_the_format_restores_nothing_unless_it_says_again():
    record = {"a": 1}
    assert not _Versioned().restores(record)  # decode would give back {"a": 1, "version": 2}
    assert _Versioned().decode(_Versioned().encode(record)) != [record]
    assert _VersionedSaysSo().restores({"a": 1, "version": 2}) and not _VersionedSaysSo().restores(record)
    assert make("json-array").restores(record)  # changes the payload, and says again
