"""A realistic sample for the demo and the tests: a fleet's readings in Avro, its devices and credentials,
with a few bad records of every kind a backfill meets, and the failures they must cause.

The readings carry what real sensor history does besides numbers: the reading time as an Avro
`timestamp-millis` (read back as a datetime in UTC) and the energy meter's count as a `decimal`, so that
every run of the demo publishes them as the value mapping says (ISO-8601 text, exact digits).

Deterministic for a seed, except device secrets (fresh each time, as the emulator's make_devices makes).
"""
import collections
import datetime
import decimal
import json
import math
import os
import random
from typing import NamedTuple

import fastavro

from connector import Reason
from connector.emulator import make_devices

PRODUCT_KEY = "a1DemoFleet"
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: history, well before today
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
TOO_LARGE_NOTE = "x" * 140_000  # a record over the platform's 128 KB message limit
SCHEMA = {
    "type": "record", "name": "Reading", "namespace": "demo.sensors",
    "fields": [
        {"name": "productKey", "type": ["null", "string"]},
        {"name": "deviceName", "type": ["null", "string"]},
        {"name": "ts", "type": "long", "doc": "epoch milliseconds"},
        {"name": "read_at", "type": {"type": "long", "logicalType": "timestamp-millis"}, "doc": "ts as a timestamp"},
        {"name": "energy_kwh", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 3},
         "doc": "the meter's count, exact to the watt-hour"},
        {"name": "temperature", "type": "double"},
        {"name": "humidity", "type": "double"},
        {"name": "pressure", "type": "double"},
        {"name": "battery", "type": "int"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


class Sample(NamedTuple):
    input_pattern: str  # glob of the Avro files
    devices_file: str  # every device with its true secret: what the platform (emulator) knows
    credentials_file: str  # what the pipeline is given: one device missing, one with a wrong secret
    records: int
    expected_failures: dict  # reason -> records that must fail
    good_devices: int  # devices whose records can all be published
    unknown_device: str  # "pk/dn" of the device missing from the credentials
    wrong_secret_device: str  # "pk/dn" of the device whose secret is wrong


def _readings(device, rng, count, interval_ms):
    """A device's day-and-night temperature and humidity curves with noise, a draining battery, and an
    energy meter counting up."""
    base = rng.uniform(15, 25)
    energy = decimal.Decimal(rng.randrange(10**6, 10**8)).scaleb(-3)
    for i in range(count):
        ts = START_MS + i * interval_ms
        phase = 2 * math.pi * (ts % 86_400_000) / 86_400_000
        energy += decimal.Decimal(rng.randrange(0, 500)).scaleb(-3)
        yield {"productKey": device["productKey"], "deviceName": device["deviceName"], **_times(ts),
               "energy_kwh": energy,
               "temperature": round(base + 5 * math.sin(phase) + rng.gauss(0, 0.3), 2),
               "humidity": round(50 - 15 * math.sin(phase) + rng.gauss(0, 1), 1),
               "pressure": round(1013 + rng.gauss(0, 2), 1),
               "battery": max(0, 100 - i * 100 // (count * 2)), "note": None}


def _times(ts):
    """A reading's time, as epoch milliseconds and as the timestamp it is."""
    return {"ts": ts, "read_at": _EPOCH + datetime.timedelta(milliseconds=ts)}


def generate(directory, devices=300, days=3, interval_minutes=15, files=2, seed=7):
    """Write the sample under directory and describe it. Records per device = days * 24 * 60 / interval."""
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(seed)
    per_device = days * 24 * 60 // interval_minutes
    interval_ms = interval_minutes * 60_000
    fleet = make_devices(devices + 2, product_key=PRODUCT_KEY, prefix="meter-")
    unknown, wrong = fleet[-2], fleet[-1]
    records = [r for device in fleet for r in _readings(device, rng, per_device, interval_ms)]
    failures = collections.Counter({Reason.UNKNOWN_DEVICE: per_device, Reason.AUTH_FAILED: per_device})
    good = [d for d in fleet if d not in (unknown, wrong)]
    for bad_kind, reason in (("missing_device", Reason.UNROUTABLE), ("nan", Reason.UNENCODABLE),
                             ("too_large", Reason.TOO_LARGE)):
        for _ in range(2):
            record = dict(next(_readings(rng.choice(good), rng, 1, interval_ms)),
                          **_times(START_MS - rng.randrange(1, 10**6)))
            if bad_kind == "missing_device":
                record["deviceName"] = None
            elif bad_kind == "nan":
                record["humidity"] = float("nan")
            else:
                record["note"] = TOO_LARGE_NOTE
            records.append(record)
            failures[reason] += 1
    rng.shuffle(records)  # history arrives in no particular order
    for shard in range(files):
        with open(os.path.join(directory, f"readings-{shard:03d}.avro"), "wb") as out:
            fastavro.writer(out, fastavro.parse_schema(SCHEMA), records[shard::files], codec="deflate")
    devices_file = os.path.join(directory, "devices.json")
    credentials_file = os.path.join(directory, "credentials.json")
    _write_json(devices_file, fleet)
    _write_json(credentials_file, good + [dict(wrong, deviceSecret="0" * 32)])
    return Sample(os.path.join(directory, "readings-*.avro"), devices_file, credentials_file, len(records),
                  dict(failures), len(good), _name(unknown), _name(wrong))


def _name(device):
    return f"{device['productKey']}/{device['deviceName']}"


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as out:
        json.dump(value, out, indent=1)
