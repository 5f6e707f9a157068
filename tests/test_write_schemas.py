"""Schema'd records in (beam.Row, NamedTuples) and schema'd outputs (Parquet, Select), against the emulator."""
import datetime
import decimal
import glob
import io
import json
import os
import typing

import apache_beam as beam
import fastavro
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

import connector
from connector.beam.encoders import AvroEncoder, get_encoder
from connector.beam.schemas import as_dict, avro_schema_of
from connector.emulator.accounting import account, canonical
from test_write_batch import credentials  # noqa: F401  (a fixture)
from write_support import FN_API, run_write


class Reading(typing.NamedTuple):
    productKey: str
    deviceName: str
    seq: int
    time: int
    temperature: float
    kind: str


beam.coders.registry.register_coder(Reading, beam.coders.RowCoder)


def reading_tuples(devices, per_device):
    return [Reading(d["productKey"], d["deviceName"], i, 1_700_000_000_000 + i * 1000, 20.5 + i % 7, "ok")
            for i in range(per_device) for d in devices]


def as_rows(records):
    return [beam.Row(**record._asdict()) for record in records]


def by_dict(record):
    return canonical(as_dict(record))


def assert_exact(run, emulator, records, encoder):
    result = account(records, emulator.messages(), run.failed, encoder, identity=by_dict)
    assert result.complete and result.duplicated == 0 and result.delivered_and_failed == 0, result.summary()
    return result


def test_rows_route_by_fields_and_template_and_sort_by_order_by(clean_emulator, devices, credentials, tmp_path):
    records = reading_tuples(devices[:2], 300)
    shuffled = as_rows(sorted(records, key=lambda r: (r.seq * 7919) % 300))
    unknown = beam.Row(**dict(records[0]._asdict(), deviceName="noSuchDevice"))
    run = run_write(shuffled + [unknown], clean_emulator, credentials, tmp_path, order_by="time",
                    topic="/{productKey}/{deviceName}/user/{kind}")
    result = assert_exact(run, clean_emulator, shuffled + [unknown], get_encoder("jsonl"))
    assert result.delivered == len(records) and run.failed_reasons() == {"unknown_device": 1}
    assert run.failed[0].record == as_dict(unknown)  # failed records hold the row's fields as a dict
    for device in devices[:2]:
        messages = sorted(clean_emulator.messages(device=(device["productKey"], device["deviceName"])),
                          key=lambda m: m["messageId"])
        assert {m["topic"] for m in messages} == {f"/{device['productKey']}/{device['deviceName']}/user/ok"}
        times = [json.loads(line)["time"] for m in messages for line in m["payload"].splitlines()]
        assert times == sorted(times) and len(times) == 300


def test_named_tuples_with_row_coder_infer_the_avro_schema(clean_emulator, devices, credentials, tmp_path):
    records = reading_tuples(devices, 100)
    source = beam.Create(records, reshuffle=False).with_output_types(Reading)
    run = run_write(None, clean_emulator, credentials, tmp_path, source=source, encoder="avro")
    result = assert_exact(run, clean_emulator, records, AvroEncoder(avro_schema_of(Reading)))
    assert result.delivered == len(records) and not run.failed
    schema = fastavro.reader(io.BytesIO(clean_emulator.messages()[0]["payload"])).writer_schema
    assert [field["name"] for field in schema["fields"]] == list(Reading._fields)


def test_avro_without_a_schema_needs_schemad_input(clean_emulator, credentials):
    pipeline = beam.Pipeline(options=PipelineOptions(FN_API))
    dicts = pipeline | beam.Create([{"productKey": "pk", "deviceName": "dn"}])
    try:
        dicts | connector.WriteToIoTPlatform(clean_emulator.endpoint, credentials, encoder="avro")
    except ValueError as error:
        assert "encoder_options" in str(error) and "NamedTuple" in str(error)
    else:
        raise AssertionError("avro without a schema accepted input that has none")


def test_rows_feed_the_alink_history_encoder(clean_emulator, devices, credentials, tmp_path):
    records = as_rows(reading_tuples(devices[:1], 50))
    run = run_write(records, clean_emulator, credentials, tmp_path, encoder="alink-history",
                    encoder_options={"properties": ["temperature"]})
    assert not run.failed and sum(r.record_count for r in run.receipts) == len(records)
    reported = [p for m in clean_emulator.messages() for p in get_encoder("alink-history").decode(m["payload"])]
    assert reported == [{"temperature": {"value": r.temperature, "time": r.time}} for r in records]


def test_published_and_failed_write_to_parquet_and_select(clean_emulator, devices, credentials, tmp_path):
    good = [record._asdict() for record in reading_tuples(devices[:2], 20)]
    bad = [dict(good[0], deviceName="noSuchDevice"), dict(good[1], temperature=float("nan"))]
    out = str(tmp_path / "out")
    pipeline = beam.Pipeline(options=PipelineOptions(FN_API))
    result = (pipeline | beam.Create(good + bad, reshuffle=False)
              | connector.WriteToIoTPlatform(clean_emulator.endpoint, credentials, ca_file=clean_emulator.ca_file))
    result.published | "PublishedParquet" >> beam.io.WriteToParquet(f"{out}-published")
    failed_rows = result.failed | connector.ToRows()
    failed_rows | "FailedParquet" >> beam.io.WriteToParquet(f"{out}-failed")
    reasons = failed_rows | beam.Select("reason", "device_name")
    assert_that(reasons | beam.Map(tuple), equal_to([("unknown_device", "noSuchDevice"),
                                                     ("unencodable", devices[1]["deviceName"])]))
    receipt_rows = result.published | "ReceiptRows" >> connector.ToRows()
    counts = receipt_rows | beam.Select("record_count") | beam.Map(lambda row: row.record_count)
    assert_that(counts | beam.CombineGlobally(sum), equal_to([len(good)]), label="AllPublished")
    pipeline.run().wait_until_finish()

    published = _read_parquet(f"{out}-published")
    assert sorted(r["message_id"] for r in published) == sorted(m["messageId"] for m in clean_emulator.messages())
    failed = _read_parquet(f"{out}-failed")
    assert sorted(r["reason"] for r in failed) == ["unencodable", "unknown_device"]
    assert sorted(r["record_json"] for r in failed) == sorted(connector.FailedRow.of(
        connector.FailedRecord(record, *[None] * 7)).record_json for record in bad)
    assert all(r["record_bytes"] is None and r["message"] for r in failed)


def test_failed_rows_keep_bytes_records_as_bytes():
    row = connector.FailedRow.of(connector.FailedRecord(b"\x00raw", "pk", "dn", None, "unknown_device",
                                                        None, "no secret for pk/dn", 0))
    assert row.record_bytes == b"\x00raw" and row.record_json is None and row.reason == "unknown_device"
    coder = beam.coders.registry.get_coder(connector.FailedRow)
    assert coder.decode(coder.encode(row)) == row


def test_failed_rows_keep_the_record_as_the_dead_letters_do():
    """One rule with the pipelines' dead letters: sorted keys, values as the JSON encoders write them,
    NaN as JSON's common extension, what JSON cannot hold as its str() (text to fix and replay), raw
    records as bytes."""
    record = {"ts": 1, "deviceName": "dn", "day": datetime.date(2024, 1, 2), "price": decimal.Decimal("1.50"),
              "temperature": float("nan"), "thing": object}
    row = connector.FailedRow.of(connector.FailedRecord(record, *[None] * 7))
    assert row.record_json == ('{"day":"2024-01-02","deviceName":"dn","price":1.50,"temperature":NaN,'
                               '"thing":"<class \'object\'>","ts":1}')
    for raw in (bytearray(b"\x00raw"), memoryview(b"\x00raw")):
        row = connector.FailedRow.of(connector.FailedRecord(raw, *[None] * 7))
        assert row.record_bytes == b"\x00raw" and row.record_json is None


def _read_parquet(prefix):
    return [row for name in sorted(glob.glob(f"{prefix}*")) if os.path.getsize(name)
            for row in pq.read_table(name).to_pylist()]
