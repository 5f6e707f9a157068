"""Property tests of the sink's contract over the zoo of values real records hold (zoo_support): on the
batch path (FnApiRunner) and the streaming path (TestStream), whatever the records hold, each ends in
`.published` or `.failed` exactly once, no bundle fails, published payloads decode to the value mapping,
and `.failed` round-trips its coder, ToRows(), the dead letters' Avro writer, and pipelines.replay reads
the dead letters back; the dry run, with the run's own steps, foresees every failure but a wrong secret.

Few examples, each a real pipeline of some dozens of records: enough kinds meet in every run.
"""
import base64
import collections
import json
import pickle
from datetime import datetime

import apache_beam as beam
import hypothesis
import pytest
from apache_beam.testing import test_stream
from hypothesis import strategies as st

import connector
from connector.beam.encoders import get_encoder
from connector.beam.results import FailedRecordCoder, RecordText
from connector.beam.rows import record_json
from pipelines import backfill, dead_letters, dry_run, options, replay
from pipelines.options import LOCAL_RUNNER
from write_support import run_write, write_credentials
from zoo_support import zoo_records, zoo_values

# No shrinking: each example is a pipeline run, and a failing one is reported as drawn.
SETTINGS = dict(deadline=None, suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.reuse, hypothesis.Phase.generate])
_CODER = FailedRecordCoder()
_TIMES = st.one_of(st.integers(0, 2**42), st.datetimes(datetime(1970, 1, 2), datetime(2100, 1, 1)), zoo_values())
_KINDS = ["good"] * 8 + ["wrong secret", "no secret", "no device", "not a record"]


@st.composite
def zoo_batches(draw, min_size=8, max_size=30):
    """Records of the zoo, each with its seq, and the kind of device it is for (see _for_devices); some
    are not records at all."""
    records = []
    for seq in range(draw(st.integers(min_size, max_size))):
        kind = draw(st.sampled_from(_KINDS))
        if kind == "not a record":
            records.append((kind, seq))
            continue
        record = dict(draw(zoo_records()), seq=seq, time=draw(_TIMES), when=draw(_TIMES), kind=kind)
        records.append(record)
    return records


def _for_devices(records, devices):
    """The records routed to the test's devices: three good ones, one whose secret is wrong, one not
    in the credentials at all, and none."""
    names = {"wrong secret": devices[3]["deviceName"], "no secret": "ghost"}
    routed = []
    for record in records:
        if isinstance(record, dict):
            record = dict(record, productKey=devices[0]["productKey"])
            kind = record.pop("kind")
            if kind != "no device":
                record["deviceName"] = names.get(kind, devices[record["seq"] % 3]["deviceName"])
        routed.append(record)
    return routed


def frozen_clock():
    """TestStream's processing clock on the BundleBasedDirectRunner starts at 0 (README: processing_clock)."""
    return 0.0


def _credentials(tmp_path, devices):
    return write_credentials(tmp_path / "credentials.json",
                             devices[:3] + [dict(devices[3], deviceSecret="0" * 32)])


def seq_of(record):
    """Which input record a failed or published one is."""
    if isinstance(record, RecordText):
        record = json.loads(record)
    if isinstance(record, tuple):
        return record[1]
    return record["seq"]


def published_records(emulator, encoder):
    """(seq, record as published) of every record in an accepted payload; an Alink record as its
    properties' values."""
    published = []
    for message in emulator.messages():
        for record in encoder.decode(message["payload"]):
            if encoder.name.startswith("alink"):
                record = {name: stamped["value"] for name, stamped in record.items()}
            published.append((record["seq"], record))
    return published


def as_published(record, encoder):
    """What the value mapping makes of an input record, as a JSON reader reads it."""
    if encoder.name.startswith("alink"):
        record = {name: stamped["value"] for name, stamped in encoder.properties_of(record).items()}
    return json.loads(record_json(record))


def assert_each_record_once(records, published, failed):
    ends = collections.Counter([seq for seq, _ in published] + [seq_of(f.record) for f in failed])
    assert ends == collections.Counter(range(len(records))), ends
    by_seq = dict(enumerate(records))
    for f in failed:
        assert f.reason in connector.Reason.ALL and f.message
        assert record_json(f.record) == record_json(by_seq[seq_of(f.record)])


def assert_published_as_the_mapping_says(records, published, encoder):
    for seq, record in published:
        assert record == as_published(records[seq], encoder)


def assert_failed_round_trips_its_coder(failed):
    for entry in failed:
        decoded = _CODER.decode(_CODER.encode(entry))
        assert decoded[1:] == entry[1:] and record_json(decoded.record) == record_json(entry.record)


def _coded(failed):
    return base64.b64encode(_CODER.encode(failed)).decode()


class _Records(beam.PTransform):
    """The records, pickled through Create (whose type inference chokes on deep rows) and made again on
    the worker, as a reader upstream of the sink gives them."""

    def __init__(self, records):
        super().__init__()
        self._pickled = [pickle.dumps(record) for record in records]

    def expand(self, begin):
        return begin | beam.Create(self._pickled, reshuffle=False) | beam.Map(pickle.loads)


@pytest.mark.filterwarnings("ignore::UserWarning")
@hypothesis.settings(max_examples=6, **SETTINGS)
@hypothesis.given(zoo=zoo_batches(), encoder_name=st.sampled_from(["jsonl", "json-array", "alink-history",
                                                                   "alink-property"]),
                  order_by=st.sampled_from([None, "time", "when"]))
def test_batch_every_record_ends_published_or_failed_once_whatever_it_holds(zoo, encoder_name, order_by, emulator,
                                                                              devices, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("batch")
    emulator.reset()
    records = _for_devices(zoo, devices)
    credentials = _credentials(tmp_path, devices)
    dead_letter, plan = str(tmp_path / "dead" / "failed"), str(tmp_path / "plan.json")
    args, _ = backfill.make_parser().parse_known_args(
        ["--credentials", credentials, "--encoder", encoder_name, "--plan"]
        + (["--order-by", order_by] if order_by else []))

    def more(result):
        result.failed | "DeadLetters" >> dead_letters.WriteDeadLetters(dead_letter, options.encoder_spec(args))
        result.published.pipeline | "Again" >> _Records(records) | "Plan" >> dry_run.Plan(args, plan)
        return {"Coded": result.failed | "Code" >> beam.Map(_coded), "Rows": result.failed | connector.ToRows()}

    encoder = get_encoder(encoder_name)
    run = run_write(None, emulator, credentials, tmp_path, source=_Records(records), encoder=encoder_name,
                    order_by=order_by, more=more)

    published = published_records(emulator, encoder)
    assert_each_record_once(records, published, run.failed)
    assert_published_as_the_mapping_says(records, published, encoder)
    assert len(run.receipts) == len(emulator.messages())
    failed_texts = collections.Counter(record_json(f.record) for f in run.failed)
    coded = [_CODER.decode(base64.b64decode(text)) for text in run.more["Coded"]]
    assert collections.Counter(record_json(f.record) for f in coded) == failed_texts
    rows = run.more["Rows"]
    assert collections.Counter(row.record_json or record_json(row.record_bytes) for row in rows) == failed_texts
    letters = dead_letters.read_all(dead_letter)
    assert collections.Counter(row["record"] for row in letters) == failed_texts
    # The dry run foresees every failure but a wrong secret's, by the run's own steps.
    failed_reasons = collections.Counter(f.reason for f in run.failed)
    del failed_reasons[connector.Reason.AUTH_FAILED]
    assert dry_run.totals(dry_run.read_plan(plan))["failed"] == dict(failed_reasons)
    if letters:  # what replay reads back is every dead letter
        replayed = str(tmp_path / "replayed.json")
        assert replay.run(["--input", f"{dead_letter}*.avro", "--credentials", credentials, "--plan",
                           "--plan-output", replayed, f"--runner={LOCAL_RUNNER}"]) == 0
        assert dry_run.totals(dry_run.read_plan(replayed))["records"] == len(letters)


@pytest.mark.filterwarnings("ignore::UserWarning")
@hypothesis.settings(max_examples=5, **SETTINGS)
@hypothesis.given(zoo=zoo_batches(), encoder_name=st.sampled_from(["jsonl", "alink-history"]))
def test_streaming_every_record_ends_published_or_failed_once_whatever_it_holds(zoo, encoder_name, emulator,
                                                                                  devices, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("streaming")
    emulator.reset()
    records = _for_devices(zoo, devices)
    half = len(records) // 2
    stream = (test_stream.TestStream().add_elements(records[:half], event_timestamp=10).advance_watermark_to(20)
              .advance_processing_time(10).add_elements(records[half:], event_timestamp=30)
              .advance_watermark_to_infinity())
    encoder = get_encoder(encoder_name)
    run = run_write(None, emulator, _credentials(tmp_path, devices), tmp_path,
                    options=["--runner=BundleBasedDirectRunner", "--streaming"], source=stream,
                    encoder=encoder_name, processing_clock=frozen_clock, max_buffering_delay=5)
    published = published_records(emulator, encoder)
    assert_each_record_once(records, published, run.failed)
    assert_published_as_the_mapping_says(records, published, encoder)
    assert_failed_round_trips_its_coder(run.failed)
