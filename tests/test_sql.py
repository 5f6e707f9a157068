"""Beam SQL on the sink's outputs: `.published` and `.failed` through `connector.ToRows()` into
SqlTransform, on embedded Flink (Beam SQL is Java: FnApiRunner cannot run it), against the emulator over TLS.

The SQL steps run in Beam SQL's expansion service, as their worker pool (no Docker here): see
pipelines/runners/sql_expansion.py. Its jar comes from `python -m pipelines.runners fetch sql`.
"""
import collections

import apache_beam as beam
import pytest
from apache_beam.transforms.sql import SqlTransform
from apache_beam.utils.subprocess_server import SubprocessServer

import connector
from pipelines.runners import sql_expansion
from runner_support import require_sql
from test_runners import FLINK_EMBEDDED
from test_write_batch import assert_exact, credentials  # noqa: F401  (a fixture)
from write_support import run_write

pytestmark = pytest.mark.runners

FLINK = [*FLINK_EMBEDDED, "--environment_type=LOOPBACK"]
JSONL = connector.get_encoder("jsonl")
PER_DEVICE = ("SELECT device_name, COUNT(*) AS messages, SUM(record_count) AS records "
              "FROM PCOLLECTION GROUP BY device_name")
PER_REASON = "SELECT reason, COUNT(*) AS failures, MIN(record_json) AS first_record FROM PCOLLECTION GROUP BY reason"


@pytest.fixture
def beam_sql():
    require_sql()


def sql_steps(result):
    """Both outputs through ToRows into Beam SQL; the query rows as plain tuples, for the test to read."""
    service = sql_expansion.without_docker()
    devices = (result.published | "ReceiptRows" >> connector.ToRows()
               | "PerDevice" >> SqlTransform(PER_DEVICE, expansion_service=service))
    reasons = (result.failed | "FailedRows" >> connector.ToRows()
               | "PerReason" >> SqlTransform(PER_REASON, expansion_service=service))
    return {"Devices": devices | "DeviceTuples" >> beam.Map(lambda row: (row.device_name, row.messages, row.records)),
            "Reasons": reasons | "ReasonTuples" >> beam.Map(lambda row: (row.reason, row.failures, row.first_record))}


def test_beam_sql_on_published_and_failed(beam_sql, clean_emulator, devices, credentials, tmp_path):
    # Each device its own number of readings, several messages each (2 KB payloads).
    records = [{"productKey": d["productKey"], "deviceName": d["deviceName"], "seq": n, "temperature": 20.5 + n % 7}
               for i, d in enumerate(devices) for n in range(40 * (i + 1))]
    bad = [dict(records[0], deviceName="noSuchDevice"), dict(records[0], deviceName="noSuchDevice2"),
           dict(records[1], temperature=float("nan"))]
    # The expansion service hosts the Java SQL workers: Beam's subprocess cache keeps it up for the run.
    with SubprocessServer.cache_subprocesses():
        run = run_write(records + bad, clean_emulator, credentials, tmp_path, options=FLINK,
                        more=sql_steps, max_payload_bytes=2048)
    assert_exact(run, clean_emulator, records + bad)
    messages, stored = collections.Counter(), collections.Counter()
    for message in clean_emulator.messages():
        messages[message["deviceName"]] += 1
        stored[message["deviceName"]] += len(JSONL.decode(message["payload"]))
    assert sorted(run.more["Devices"]) == sorted((name, messages[name], stored[name]) for name in stored)
    assert stored == {d["deviceName"]: 40 * (i + 1) for i, d in enumerate(devices)}
    assert min(messages.values()) > 1
    failed = collections.Counter(entry.reason for entry in run.failed)
    assert failed == {"unknown_device": 2, "unencodable": 1}
    first = {reason: min(connector.FailedRow.of(entry).record_json for entry in run.failed if entry.reason == reason)
             for reason in failed}
    assert sorted(run.more["Reasons"]) == sorted((reason, count, first[reason]) for reason, count in failed.items())
