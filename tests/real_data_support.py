"""Real files, as sensor history lives in them, and what the backfill must make of them: a Parquet file
(pyarrow: timestamps ms/us/ns, naive and with a zone, date32, decimal128, list, struct, map, binary, int64
above 2^53, NaN, nulls), an Avro file with every logical type (timestamp-millis/micros, local-timestamp,
date, time-millis/micros, decimal as bytes and as fixed, uuid) and enum, fixed, map, array, nested record,
nullable unions, JSON lines (and lines that are not records), and a CSV file read with --csv-types
timestamp and decimal.

Each record has a seq, unique across the files. `expected` gives each publishable record as the
README's value table says a JSON encoder stores it (written out here, not computed by the code under
test), and `failures` the reason of each record that cannot be published.
"""
import csv
import datetime
import decimal
import json
import re
import uuid

import fastavro
import pyarrow
import pyarrow.parquet

from connector import Reason
from pipelines import dead_letters

UTC = datetime.UTC
SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))
BIG = 2**53 + 1  # a float cannot hold it: it must arrive exactly
L = {"type": "long"}


def _logical(base, logical, **more):
    return {"type": base, "logicalType": logical, **more}


AVRO_SCHEMA = {"type": "record", "name": "Reading", "namespace": "test.real", "fields": [
    {"name": "productKey", "type": "string"}, {"name": "deviceName", "type": "string"},
    {"name": "seq", "type": "long"},
    {"name": "t_ms", "type": _logical("long", "timestamp-millis")},
    {"name": "t_us", "type": _logical("long", "timestamp-micros")},
    {"name": "local_ms", "type": _logical("long", "local-timestamp-millis")},
    {"name": "local_us", "type": _logical("long", "local-timestamp-micros")},
    {"name": "day", "type": _logical("int", "date")},
    {"name": "tod_ms", "type": _logical("int", "time-millis")},
    {"name": "tod_us", "type": _logical("long", "time-micros")},
    {"name": "kwh", "type": _logical("bytes", "decimal", precision=12, scale=3)},
    {"name": "price", "type": {"type": "fixed", "name": "Price", "size": 8, "logicalType": "decimal",
                               "precision": 10, "scale": 2}},
    {"name": "id", "type": _logical("string", "uuid")},
    {"name": "mode", "type": {"type": "enum", "name": "Mode", "symbols": ["ECO", "BOOST"]}},
    {"name": "mac", "type": {"type": "fixed", "name": "Mac", "size": 6}},
    {"name": "counters", "type": {"type": "map", "values": "long"}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "where", "type": {"type": "record", "name": "Where", "fields": [
        {"name": "site", "type": "string"}, {"name": "floor", "type": ["null", "int"]}]}},
    {"name": "temperature", "type": ["null", "double"]},
    {"name": "note", "type": ["null", "string"]},
]}


class RealFiles:
    """The four files under a directory, and what a backfill of them must give."""

    def __init__(self, directory, devices):
        self.devices = devices  # (productKey, deviceName) of known good devices
        self.expected = {}  # seq -> the record as stored
        self.failures = {}  # seq -> reason
        self.exact = {}  # seq -> text the payload must hold as it is (a Decimal's digits)
        self.parquet = self._parquet(directory / "readings.parquet")
        self.avro = self._avro(directory / "readings.avro")
        self.jsonl = self._jsonl(directory / "readings.jsonl")
        self.csv = self._csv(directory / "readings.csv")
        self.csv_types = "seq=int,at=timestamp,kwh=decimal,temperature=float"

    @property
    def inputs(self):
        return [str(self.parquet), str(self.avro), str(self.jsonl), str(self.csv)]

    def _device(self, seq):
        product_key, device_name = self.devices[seq % len(self.devices)]
        return {"productKey": product_key, "deviceName": device_name}

    def _parquet(self, path):
        rows = range(100, 106)
        moments = [datetime.datetime(2024, 1, 1, 0, 0, seq - 100, 1001 * (seq - 100)) for seq in rows]
        columns = {
            "productKey": [self._device(seq)["productKey"] for seq in rows],
            "deviceName": [self._device(seq)["deviceName"] for seq in rows],
            "seq": pyarrow.array(list(rows), pyarrow.int64()),
            "at_ms": pyarrow.array([m.replace(microsecond=0) for m in moments], pyarrow.timestamp("ms")),
            "at_us_tz": pyarrow.array([m.replace(tzinfo=UTC) for m in moments],
                                      pyarrow.timestamp("us", tz="Asia/Shanghai")),
            "at_ns": pyarrow.array([1_704_067_200_000_000_000 + seq for seq in rows], pyarrow.timestamp("ns")),
            "day": pyarrow.array([datetime.date(2024, 1, seq - 99) for seq in rows], pyarrow.date32()),
            "kwh": pyarrow.array([decimal.Decimal(f"{seq}.120") for seq in rows], pyarrow.decimal128(12, 3)),
            "tags": pyarrow.array([["a", str(seq)] for seq in rows], pyarrow.list_(pyarrow.string())),
            "pos": pyarrow.array([{"x": 1.5, "y": float(seq)} for seq in rows],
                                 pyarrow.struct([("x", pyarrow.float64()), ("y", pyarrow.float64())])),
            "attrs": pyarrow.array([[("fw", seq), ("hw", 2)] for seq in rows],
                                   pyarrow.map_(pyarrow.string(), pyarrow.int64())),
            "blob": pyarrow.array([bytes([0, 255, seq]) for seq in rows], pyarrow.binary()),
            "counter": pyarrow.array([BIG + seq for seq in rows], pyarrow.int64()),
            "temperature": pyarrow.array([float("nan") if seq == 103 else 20.5 for seq in rows], pyarrow.float64()),
            "note": pyarrow.array([None if seq % 2 else "ok" for seq in rows], pyarrow.string()),
        }
        pyarrow.parquet.write_table(pyarrow.table(columns), str(path))
        for seq in rows:
            if seq == 103:
                self.failures[seq] = Reason.UNENCODABLE  # NaN: JSON has no such number
                continue
            second = f"2024-01-01T00:00:{seq - 100:02d}"
            self.expected[seq] = {
                **self._device(seq), "seq": seq, "at_ms": f"{second}.000Z",
                "at_us_tz": f"{second}.{(seq - 100) * 1001:06d}Z" if seq > 100 else f"{second}.000Z",
                "at_ns": f"2024-01-01T00:00:00.{seq:09d}Z", "day": f"2024-01-{seq - 99:02d}", "kwh": float(f"{seq}.12"),
                "tags": ["a", str(seq)], "pos": {"x": 1.5, "y": float(seq)}, "attrs": {"fw": seq, "hw": 2},
                "blob": {100: "AP9k", 101: "AP9l", 102: "AP9m", 104: "AP9o", 105: "AP9p"}[seq],
                "counter": BIG + seq, "temperature": 20.5, "note": None if seq % 2 else "ok"}
            self.exact[seq] = f'"kwh":{seq}.120'
        return path

    def _avro(self, path):
        records = []
        for seq in range(200, 204):
            n = seq - 200
            records.append({
                **self._device(seq), "seq": seq,
                "t_ms": datetime.datetime(2024, 1, 1, 8, 0, n, 123000, tzinfo=SHANGHAI),
                "t_us": datetime.datetime(2024, 1, 1, 0, 0, n, 123456, tzinfo=UTC),
                "local_ms": datetime.datetime(2024, 1, 1, 0, 0, n, 5000),
                "local_us": datetime.datetime(2024, 1, 1, 0, 0, n, 5),
                "day": datetime.date(2024, 2, 1 + n), "tod_ms": datetime.time(8, 30, n, 250000),
                "tod_us": datetime.time(8, 30, n, 250001), "kwh": decimal.Decimal(f"{seq}.500"),
                "price": decimal.Decimal(f"-{n}.05"), "id": uuid.UUID(int=seq), "mode": "BOOST" if n % 2 else "ECO",
                "mac": bytes([0, 1, 2, 3, 4, n]), "counters": {"boots": seq, "big": BIG},
                "tags": ["x", f"t{n}"], "where": {"site": "plant-1", "floor": None if n % 2 else n},
                "temperature": None if n == 2 else 19.25, "note": "é" if n == 1 else None})
            self.expected[seq] = {
                **self._device(seq), "seq": seq, "t_ms": f"2024-01-01T00:00:{n:02d}.123Z",
                "t_us": f"2024-01-01T00:00:{n:02d}.123456Z", "local_ms": f"2024-01-01T00:00:{n:02d}.005Z",
                "local_us": f"2024-01-01T00:00:{n:02d}.000005Z", "day": f"2024-02-{1 + n:02d}",
                "tod_ms": f"08:30:{n:02d}.250000", "tod_us": f"08:30:{n:02d}.250001", "kwh": float(f"{seq}.5"),
                "price": -float(f"{n}.05"), "id": f"00000000-0000-0000-0000-{seq:012x}",
                "mode": "BOOST" if n % 2 else "ECO", "mac": ["AAECAwQA", "AAECAwQB", "AAECAwQC", "AAECAwQD"][n],
                "counters": {"boots": seq, "big": BIG}, "tags": ["x", f"t{n}"],
                "where": {"site": "plant-1", "floor": None if n % 2 else n},
                "temperature": None if n == 2 else 19.25, "note": "é" if n == 1 else None}
            self.exact[seq] = f'"kwh":{seq}.500'
        with open(path, "wb") as out:
            fastavro.writer(out, fastavro.parse_schema(AVRO_SCHEMA), records)
        self.avro_records = records
        return path

    def _jsonl(self, path):
        lines = []
        for seq in range(400, 403):
            record = {**self._device(seq), "seq": seq, "nested": {"a": [1, {"b": None}]}, "big": 2**70 + seq,
                      "t": 21.5}
            lines.append(json.dumps(record))
            self.expected[seq] = record
        deep = json.dumps({**self._device(403), "seq": 403})[:-1] + ', "deep": ' + "[" * 300 + "]" * 300 + "}"
        too_deep = '{"seq": 404, "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"  # deeper than Python reads
        lines += [json.dumps({**self._device(405), "seq": 405, "t": float("nan")}), deep, too_deep,
                  '[{"seq": 406}, "an array, not an object"]', '{"seq": 407, "broken": ']
        self.failures.update({403: Reason.UNENCODABLE, 404: Reason.INVALID_RECORD, 405: Reason.UNENCODABLE,
                              406: Reason.INVALID_RECORD, 407: Reason.INVALID_RECORD})
        path.write_text("\n".join(lines) + "\n")
        return path

    def _csv(self, path):
        rows = [
            (300, "2024-01-01T08:00:00+08:00", "12.340", "21.5"), (301, "2024-01-01 00:00:01.5", "0.001", ""),
            (302, "2024-01-01T00:00:02Z", "-7", "19"), (303, "yesterday", "1.0", "1"),
            (304, "2024-01-01", "a lot", "1")]
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["productKey", "deviceName", "seq", "at", "kwh", "temperature"])
            for seq, at, kwh, temperature in rows:
                writer.writerow([*self._device(seq).values(), seq, at, kwh, temperature])
        self.expected.update({
            300: {**self._device(300), "seq": 300, "at": "2024-01-01T00:00:00.000Z", "kwh": 12.34, "temperature": 21.5},
            301: {**self._device(301), "seq": 301, "at": "2024-01-01T00:00:01.500Z", "kwh": 0.001, "temperature": None},
            302: {**self._device(302), "seq": 302, "at": "2024-01-01T00:00:02.000Z", "kwh": -7, "temperature": 19.0}})
        self.exact.update({300: '"kwh":12.340', 301: '"kwh":0.001'})
        self.failures.update({303: Reason.INVALID_RECORD, 304: Reason.INVALID_RECORD})
        return path

    def records(self):
        return len(self.expected) + len(self.failures)


def seq_of(record):
    """The seq of a record as published or as a dead letter gives it back (a line that is not a JSON
    object comes back as its text)."""
    if isinstance(record, dict):
        return record["seq"]
    if isinstance(record, list):
        return record[0]
    return int(re.search(r'"seq": ?(\d+)', record).group(1))


def check_backfill(files, messages, dead_letter_rows, encoder):
    """The accounting check, and every stored value as the README's table says."""
    published = {}
    for message in messages:
        for record in encoder.decode(message["payload"]):
            assert record["seq"] not in published, record["seq"]
            published[record["seq"]] = record
        for seq, text in files.exact.items():
            if f'"seq":{seq},' in message["payload"].decode():
                assert text in message["payload"].decode(), (seq, text)
    failed = {seq_of(dead_letters.original_record(row)): row for row in dead_letter_rows}
    assert not set(published) & set(failed)
    assert len(published) + len(failed) == files.records()
    assert {seq: row["reason"] for seq, row in failed.items()} == files.failures, {
        seq: row["message"] for seq, row in failed.items()}
    assert published == files.expected
    return failed
