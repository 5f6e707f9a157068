"""The pipelines end to end: real Beam runners, the real emulator over TLS on 127.0.0.1, no mocks.

Every input record must end up in exactly one place: an accepted payload at the emulator, or a dead
letter with the reason the sample says it must have.
"""
import collections
import csv
import glob
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys

import apache_beam as beam
import fastavro
import pyarrow
import pyarrow.parquet
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream

from conftest import reset_around
from connector import FailedRecord, Reason, WriteToIoTPlatform, get_encoder
from connector.beam.rows import record_json
from connector.emulator import Emulator
from pipelines import backfill, batch, dead_letters, dry_run, options, replay, sample_data, stream, summary
from pipelines.runners.tools import beam_release, free_port
from pipelines.summary import HINTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = [f"--runner={options.LOCAL_RUNNER}"]
JSONL = get_encoder("jsonl")
DEVICE = sample_data.PRODUCT_KEY, "meter-00000"
NOT_FOUND = "endpoint_not_found"


def key(record):
    """A record's identity across Avro, JSON payloads and dead letters (NaN included): its JSON under the
    value mapping (timestamps as text...), read back as JSON readers read it (decimals as floats)."""
    return json.dumps(json.loads(record_json(record)), sort_keys=True)


def read_input(pattern):
    records = []
    for path in sorted(glob.glob(pattern)):
        with open(path, "rb") as f:
            records.extend(fastavro.reader(f))
    return records


def published(emulator):
    """Records in accepted payloads, and messages per device."""
    records, per_device = [], collections.Counter()
    for message in emulator.messages():
        records.extend(JSONL.decode(message["payload"]))
        per_device[f"{message['productKey']}/{message['deviceName']}"] += 1
    return records, per_device


def assert_accounted(records, sent, failed, expected_failures):
    """Each record is sent or failed, never both, never neither; failures by reason exactly as expected."""
    failed_keys = collections.Counter(key(dead_letters.original_record(row)) for row in failed)
    sent_keys = collections.Counter(key(record) for record in sent)
    assert sent_keys + failed_keys == collections.Counter(key(record) for record in records)
    assert not set(sent_keys) & set(failed_keys)
    assert collections.Counter(row["reason"] for row in failed) == expected_failures


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return sample_data.generate(str(tmp_path_factory.mktemp("sample")), devices=8, days=1, interval_minutes=60)


@pytest.fixture(scope="module")
def platform(sample):
    with Emulator(sample.devices_file) as running:
        yield running


@pytest.fixture
def emulator(platform):
    yield from reset_around(platform)


def sink_args(sample, emulator, dead_letter, credentials=None, endpoint=None):
    return ["--endpoint", endpoint or emulator.endpoint, "--ca-file", emulator.ca_file,
            "--credentials", credentials or sample.credentials_file, "--dead-letter", str(dead_letter)]


def test_backfill_accounts_for_every_record(sample, emulator, tmp_path, capsys):
    dead_letter = tmp_path / "dead" / "failed"
    status = backfill.run(["--input", sample.input_pattern, *sink_args(sample, emulator, dead_letter),
                           "--order-by", "ts", *LOCAL])
    assert status == 0
    sent, per_device = published(emulator)
    failed = dead_letters.read_all(str(dead_letter))
    assert_accounted(read_input(sample.input_pattern), sent, failed, sample.expected_failures)
    assert len(per_device) == sample.good_devices
    out = capsys.readouterr().out
    assert f"records published{len(sent):>21,}" in out
    assert "auth_failed" in out and "clock" in out  # the summary names the cause to check
    assert not any(device["deviceSecret"] in out for device in json.load(open(sample.devices_file)))


def test_backfill_with_alink_history_publishes_to_the_history_topic(sample, emulator, tmp_path):
    dead_letter = tmp_path / "failed"
    status = backfill.run(["--input", sample.input_pattern, *sink_args(sample, emulator, dead_letter),
                           "--encoder", "alink-history", "--time-field", "ts", "--order-by", "ts", *LOCAL])
    assert status == 0
    history = get_encoder("alink-history")
    reported = 0
    for message in emulator.messages():
        assert message["topic"] == (f"/sys/{message['productKey']}/{message['deviceName']}"
                                    "/thing/event/property/history/post")
        assert json.loads(message["payload"])["method"] == "thing.event.property.history.post"
        reported += len(history.decode(message["payload"]))
    failed = dead_letters.read_all(str(dead_letter))
    assert collections.Counter(row["reason"] for row in failed) == sample.expected_failures
    assert reported == sample.records - sum(sample.expected_failures.values())


def test_sign_method_option(sample, emulator, tmp_path):
    args = ["--input", sample.input_pattern, *sink_args(sample, emulator, tmp_path / "failed"), *LOCAL]
    assert backfill.run([*args, "--sign-method", "hmacmd5"]) == 0
    assert emulator.counters()["sign_methods"] == {"hmacmd5": sample.good_devices}
    with pytest.raises(SystemExit):
        backfill.run([*args, "--sign-method", "hmacsha512"])


def test_strict_exits_3_when_a_record_failed_and_0_when_none(sample, emulator, tmp_path):
    args = sink_args(sample, emulator, tmp_path / "failed") + ["--strict", *LOCAL]
    assert backfill.run(["--input", sample.input_pattern, *args]) == 3
    good_device = sample_data.PRODUCT_KEY, "meter-00000"
    clean = tmp_path / "clean.avro"
    with open(clean, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(sample_data.SCHEMA),
                        [r for r in read_input(sample.input_pattern)
                         if (r["productKey"], r["deviceName"]) == good_device and r["note"] is None
                         and r["humidity"] == r["humidity"]])
    assert backfill.run(["--input", str(clean), *args]) == 0


def test_backfill_on_portable_runner_with_external_workers(sample, emulator, tmp_path, worker_pool):
    workers_before = worker_pool.workers_started()
    dead_letter = tmp_path / "failed"
    status = backfill.run(["--input", sample.input_pattern, *sink_args(sample, emulator, dead_letter),
                           *worker_pool.options])
    assert status == 0
    sent, _ = published(emulator)
    assert_accounted(read_input(sample.input_pattern), sent, dead_letters.read_all(str(dead_letter)),
                     sample.expected_failures)
    workers = worker_pool.workers_started() - workers_before
    assert workers >= 1
    # One /auth per device per worker process: the good devices succeed once, the wrong secret is refused.
    auth = emulator.counters()["requests"]["auth"]
    assert auth["0"] == sample.good_devices * workers
    assert auth["20000"] == workers


def test_the_plan_publishes_nothing_and_predicts_the_messages_a_run_sends(sample, emulator, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    status = backfill.run(["--input", sample.input_pattern, "--credentials", sample.credentials_file,
                           "--plan", "--plan-output", str(plan), *LOCAL])
    assert status == 0
    assert emulator.counters()["messages"] == 0
    assert "Dry run: nothing was published" in capsys.readouterr().out
    rows = dry_run.read_plan(str(plan))
    total = dry_run.totals(rows)
    assert total["records"] == sample.records
    # Everything but a wrong secret (only the platform can tell) is foreseen.
    assert total["failed"] == {reason: n for reason, n in sample.expected_failures.items()
                               if reason != Reason.AUTH_FAILED}

    assert backfill.run(["--input", sample.input_pattern, *sink_args(sample, emulator, tmp_path / "f"), *LOCAL]) == 0
    _, per_device = published(emulator)
    predicted = {row["device"]: row["messages"] for row in rows
                 if row["messages"] and row["device"] != sample.wrong_secret_device}
    assert predicted == dict(per_device)


@pytest.mark.parametrize("program", [backfill, replay])
@pytest.mark.parametrize("spelling", ["--dry_run", "--dry_run=False", "--dry-run=True"])
def test_a_dry_run_that_could_be_the_plan_or_dataflows_is_refused(program, spelling, sample, capsys):
    """--plan is the plan, --dry_run=True Dataflow's: a spelling between them could mean either (Beam
    takes --dry_run=False as true)."""
    assert program.main(["--input", sample.input_pattern, "--credentials", sample.credentials_file, spelling]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {spelling} is ambiguous: give --plan for the plan (read, route, encode and pack; publish "
        "nothing; on any runner), or --dry_run=True for Dataflow's dry run (DataflowRunner builds the job "
        "and submits nothing)")


def test_dataflows_dry_run_is_refused_on_a_runner_that_would_publish(sample, emulator, tmp_path, capsys):
    status = backfill.main(["--input", sample.input_pattern, *sink_args(sample, emulator, tmp_path / "f"),
                            "--dry_run=True", *LOCAL])
    assert status == 2
    assert emulator.counters()["messages"] == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --dry_run=True is Dataflow's (DataflowRunner builds the job and submits nothing); FnApiRunner "
        "ignores it and would publish: to publish nothing on any runner, the backfill and replay take --plan")


def test_replay_sends_dead_letters_once_the_credentials_are_fixed(sample, emulator, tmp_path):
    first = tmp_path / "first" / "failed"
    assert backfill.run(["--input", sample.input_pattern, *sink_args(sample, emulator, first), *LOCAL]) == 0
    sent_first, _ = published(emulator)
    fixed = tmp_path / "fixed-credentials.json"
    fixed.write_text(open(sample.devices_file).read())  # every device, with its true secret

    again = tmp_path / "again" / "failed"
    status = replay.run(["--input", f"{first}*.avro", *sink_args(sample, emulator, again, str(fixed)), *LOCAL])
    assert status == 0
    sent_all, per_device = published(emulator)
    assert sample.wrong_secret_device in per_device and sample.unknown_device in per_device
    # The records that failed for credentials arrived; the rest failed again, for the same reasons.
    still_bad = {r: n for r, n in sample.expected_failures.items()
                 if r not in (Reason.AUTH_FAILED, Reason.UNKNOWN_DEVICE)}
    assert_accounted(read_input(sample.input_pattern), sent_all, dead_letters.read_all(str(again)), still_bad)
    assert len(sent_all) - len(sent_first) == (sample.expected_failures[Reason.AUTH_FAILED]
                                               + sample.expected_failures[Reason.UNKNOWN_DEVICE])


def test_replay_sends_records_where_and_as_their_run_meant_to(sample, emulator, tmp_path, capsys):
    """An alink-history backfill's dead letters go back to the history topic in the history format, each
    reading with its own time from the run's time field (a timestamp: the dead letters keep it as text)."""
    first = tmp_path / "first" / "failed"
    assert backfill.run(["--input", sample.input_pattern, *sink_args(sample, emulator, first),
                         "--encoder", "alink-history", "--time-field", "read_at", *LOCAL]) == 0
    before = len(emulator.messages())
    fixed = tmp_path / "fixed-credentials.json"
    fixed.write_text(open(sample.devices_file).read())  # every device, with its true secret
    again = tmp_path / "again" / "failed"
    capsys.readouterr()
    assert replay.run(["--input", f"{first}*.avro", *sink_args(sample, emulator, again, str(fixed)), *LOCAL]) == 0
    replayed = emulator.messages()[before:]
    assert {f"{m['productKey']}/{m['deviceName']}" for m in replayed} == {sample.wrong_secret_device,
                                                                         sample.unknown_device}
    readings_sent = []
    for message in replayed:
        assert message["topic"] == (f"/sys/{message['productKey']}/{message['deviceName']}"
                                    "/thing/event/property/history/post")
        assert json.loads(message["payload"])["method"] == "thing.event.property.history.post"
        readings_sent += get_encoder("alink-history").decode(message["payload"])
    assert len(readings_sent) == (sample.expected_failures[Reason.AUTH_FAILED]
                                  + sample.expected_failures[Reason.UNKNOWN_DEVICE])
    assert all({p["time"] for p in reading.values()} == {reading["ts"]["value"]} for reading in readings_sent)
    assert "replay: encoding as the dead letters say: alink-history (time_field=read_at" in capsys.readouterr().err
    # What fails again keeps how this replay encoded, for the next one.
    rows = dead_letters.read_all(str(again))
    assert {(row["encoder"], json.loads(row["encoder_options"])["time_field"]) for row in rows} == {
        ("alink-history", "read_at")}


def test_replay_refuses_in_one_line_what_it_cannot_resolve_and_does_what_it_is_told(sample, emulator, tmp_path):
    history, lines = tmp_path / "history" / "failed", tmp_path / "lines" / "failed"
    assert backfill.run(["--input", sample.input_pattern, *sink_args(sample, emulator, history),
                         "--encoder", "alink-history", "--time-field", "ts", *LOCAL]) == 0
    assert backfill.run(["--input", sample.input_pattern, *sink_args(sample, emulator, lines), *LOCAL]) == 0
    before = len(emulator.messages())
    fixed = tmp_path / "fixed-credentials.json"
    fixed.write_text(open(sample.devices_file).read())
    again = sink_args(sample, emulator, tmp_path / "again" / "failed", str(fixed))
    done = command("replay", "--input", f"{history}*.avro", *again, "--encoder", "jsonl")
    assert_one_line_error(done, "/thing/event/property/history/post takes alink-history payloads",
                          "would send jsonl there", "--topic")
    done = command("replay", "--input", f"{history}*.avro", f"{lines}*.avro", *again)
    assert_one_line_error(done, "encoded differently", "alink-history (time_field=ts", "jsonl (timestamps=iso)")
    assert len(emulator.messages()) == before  # nothing was sent
    # Told otherwise, with a topic: JSON lines there.
    assert replay.run(["--input", f"{history}*.avro", *again, "--encoder", "jsonl",
                       "--topic", "/{productKey}/{deviceName}/user/update", *LOCAL]) == 0
    replayed = emulator.messages()[before:]
    assert {m["topic"].rsplit("/", 2)[-2:] == ["user", "update"] for m in replayed} == {True}
    assert sum(len(JSONL.decode(m["payload"])) for m in replayed) == (
        sample.expected_failures[Reason.AUTH_FAILED] + sample.expected_failures[Reason.UNKNOWN_DEVICE])


def replay_a_mapped_history_backfill(sample, emulator, tmp_path, runner_options):
    """A backfill routed by --device-map to the device whose secret is wrong, with alink-history; its dead
    letters replayed with the right secret and no device map: only the dead letters know the device and
    topic. The readings sent, with the replay's exit status."""
    device = sample.wrong_secret_device.split("/")
    readings_file = tmp_path / "by-sensor.jsonl"
    records = [{"sensor_id": 17, "ts": 1_700_000_000_000 + i * 1000, "temperature": 20.5 + i} for i in range(5)]
    readings_file.write_text("".join(json.dumps(record) + "\n" for record in records))
    device_map = tmp_path / "map.csv"
    device_map.write_text(f"sensor_id,productKey,deviceName\n17,{device[0]},{device[1]}\n")
    first = tmp_path / "first" / "failed"
    assert backfill.run(["--input", str(readings_file), *sink_args(sample, emulator, first), "--device-map",
                         str(device_map), "--encoder", "alink-history", "--time-field", "ts", *runner_options]) == 0
    assert [row["reason"] for row in dead_letters.read_all(str(first))] == [Reason.AUTH_FAILED] * 5
    fixed = tmp_path / "fixed-credentials.json"
    fixed.write_text(open(sample.devices_file).read())
    status = replay.run(["--input", f"{first}*.avro",
                         *sink_args(sample, emulator, tmp_path / "again" / "failed", str(fixed)), *runner_options])
    history = f"/sys/{device[0]}/{device[1]}/thing/event/property/history/post"
    sent = [reading for message in emulator.messages(topic=history)
            for reading in get_encoder("alink-history").decode(message["payload"])]
    expected = [{"temperature": {"value": r["temperature"], "time": r["ts"]}} for r in records]
    return status, sorted(sent, key=lambda r: r["temperature"]["time"]), expected


def test_replay_sends_to_the_dead_letters_device_and_topic_without_the_device_map(sample, emulator, tmp_path):
    status, sent, expected = replay_a_mapped_history_backfill(sample, emulator, tmp_path, LOCAL)
    assert status == 0 and sent == expected


OLD_DEAD_LETTER_SCHEMA = dict(dead_letters.SCHEMA, fields=[
    field for field in dead_letters.SCHEMA["fields"] if field["name"] not in ("encoder", "encoder_options")])


def write_dead_letters(path, failed, schema=dead_letters.SCHEMA, encoder_specs=None):
    """Dead letters as a run writes them: FailedRecords, each stamped with its (encoder, options) or not."""
    specs = encoder_specs or [None] * len(failed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), [
            dead_letters.to_avro(entry, dead_letters.stamp(spec)) for entry, spec in zip(failed, specs)])


def test_replay_reads_dead_letters_written_before_they_kept_their_encoder(sample, emulator, tmp_path, capsys):
    """Encoded as the command says, each record to its own topic; one bound for an encoder's thing-model
    topic is refused unless the command names that encoder."""
    pk, dn = DEVICE
    update, history = f"/{pk}/{dn}/user/update", f"/sys/{pk}/{dn}/thing/event/property/history/post"
    records = readings(2)
    write_dead_letters(tmp_path / "old" / "lines.avro", [
        FailedRecord(r, pk, dn, update, Reason.AUTH_FAILED, 20000, "refused", 0) for r in records],
        OLD_DEAD_LETTER_SCHEMA)
    write_dead_letters(tmp_path / "old" / "history.avro", [
        FailedRecord(r, pk, dn, history, Reason.AUTH_FAILED, 20000, "refused", 0) for r in records],
        OLD_DEAD_LETTER_SCHEMA)
    args = [*sink_args(sample, emulator, tmp_path / "again" / "failed"), *LOCAL]
    assert replay.run(["--input", str(tmp_path / "old" / "lines.avro"), *args]) == 0
    assert "2 of the files" not in capsys.readouterr().err
    assert [(m["topic"], JSONL.decode(m["payload"])) for m in emulator.messages()] == [(update, records)]
    done = command("replay", "--input", str(tmp_path / "old" / "history.avro"), *args)
    assert_one_line_error(done, "history.avro", "takes alink-history payloads", "--encoder alink-history")
    assert replay.run(["--input", str(tmp_path / "old" / "history.avro"), *args,
                       "--encoder", "alink-history", "--time-field", "ts"]) == 0
    [message] = emulator.messages(topic=history)
    assert [reading["temperature"]["time"] for reading in get_encoder("alink-history").decode(message["payload"])] \
        == [r["ts"] for r in records]
    assert "written before dead letters kept their encoder" in capsys.readouterr().err


def test_replay_fails_a_dead_letter_its_file_says_was_encoded_otherwise(sample, emulator, tmp_path):
    """Replay reads how each file's run encoded from its first dead letter; one further on that says
    otherwise (a file put together by hand) fails rather than going out in the wrong format."""
    pk, dn = DEVICE
    history = f"/sys/{pk}/{dn}/thing/event/property/history/post"
    records = readings(2)
    specs = [("alink-history", {"time_field": "ts", "exclude": ["productKey", "deviceName"], "timestamps": "iso"}),
             ("jsonl", {"timestamps": "iso"})]
    write_dead_letters(tmp_path / "mixed.avro", [FailedRecord(r, pk, dn, history, Reason.AUTH_FAILED, 20000, "x", 0)
                                                 for r in records], encoder_specs=specs)
    again = tmp_path / "again" / "failed"
    assert replay.run(["--input", str(tmp_path / "mixed.avro"), *sink_args(sample, emulator, again), *LOCAL]) == 0
    [message] = emulator.messages()
    assert message["topic"] == history and len(get_encoder("alink-history").decode(message["payload"])) == 1
    [row] = dead_letters.read_all(str(again))
    assert dead_letters.original_record(row) == records[1] and row["reason"] == Reason.INVALID_RECORD
    assert "its run encoded as jsonl" in row["message"] and "replay it apart" in row["message"]


def test_alink_property_fails_records_without_the_time_field_it_is_given(sample, emulator, tmp_path):
    """Only the records can tell that --time-field names no field of theirs: each such record fails
    (unencodable, saying so) instead of going out stamped with its arrival; replay with the right one."""
    write_avro(tmp_path / "in.avro", readings(3))
    first = tmp_path / "first" / "failed"
    assert backfill.run(["--input", str(tmp_path / "in.avro"), *sink_args(sample, emulator, first),
                         "--encoder", "alink-property", "--time-field", "time_ms", *LOCAL]) == 0
    assert emulator.messages() == []
    failed = dead_letters.read_all(str(first))
    assert [row["reason"] for row in failed] == [Reason.UNENCODABLE] * 3
    assert "need their time field 'time_ms'" in failed[0]["message"]
    assert replay.run(["--input", f"{first}*.avro", *sink_args(sample, emulator, tmp_path / "again" / "failed"),
                       "--time-field", "ts", *LOCAL]) == 0
    reported = [get_encoder("alink-property").decode(m["payload"])[0] for m in emulator.messages()]
    assert sorted(p["temperature"]["time"] for p in reported) == [r["ts"] for r in readings(3)]
    assert {m["topic"] for m in emulator.messages()} == {f"/sys/{DEVICE[0]}/{DEVICE[1]}/thing/event/property/post"}


def test_dead_letters_keep_records_as_replay_sends_them_again(tmp_path):
    records = [{"ts": 1, "deviceName": "dn", "temperature": float("inf"), "note": "é"}, b"\x00raw",
               bytearray(b"\x00raw"), memoryview(b"\x00raw")]
    path = tmp_path / "failed.avro"
    with open(path, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(dead_letters.SCHEMA), [dead_letters.to_avro(
            FailedRecord(record, None, None, None, Reason.UNKNOWN_DEVICE, None, "no secret", 0))
            for record in records])
    rows = dead_letters.read_all(str(tmp_path / "failed"))
    assert [dead_letters.original_record(row) for row in rows] == [records[0]] + [b"\x00raw"] * 3
    assert rows[0]["record"] == '{"deviceName":"dn","note":"é","temperature":Infinity,"ts":1}'  # as FailedRow
    assert [row["record"] for row in rows[1:]] == [json.dumps(str(b"\x00raw"))] * 3  # documented: its str()


def test_streaming_relay_with_test_stream(sample, emulator, tmp_path):
    devices = json.load(open(sample.devices_file))
    good = [{"productKey": d["productKey"], "deviceName": d["deviceName"], "ts": 1_700_000_000_000 + i,
             "temperature": 20.0 + i} for i, d in enumerate(devices[:3] * 4)]
    bad = {Reason.UNENCODABLE: dict(good[0], temperature=float("nan")),
           Reason.UNROUTABLE: dict(good[0], deviceName=""),
           Reason.UNKNOWN_DEVICE: dict(good[0], deviceName=sample.unknown_device.split("/")[1]),
           Reason.AUTH_FAILED: dict(good[0], deviceName=sample.wrong_secret_device.split("/")[1])}
    source = (test_stream.TestStream()
              .add_elements(good[:6] + [bad[Reason.UNENCODABLE]], event_timestamp=10)
              .advance_watermark_to(20)
              .add_elements(good[6:] + [bad[Reason.UNROUTABLE], bad[Reason.UNKNOWN_DEVICE]], event_timestamp=30)
              .advance_processing_time(5)
              .add_elements([bad[Reason.AUTH_FAILED]], event_timestamp=40)
              .advance_watermark_to_infinity())
    sent, failed = run_relay_on_test_stream(source, sample, emulator, tmp_path)
    assert_accounted(good + list(bad.values()), sent, failed, {reason: 1 for reason in bad})


def run_relay_on_test_stream(source, sample, emulator, tmp_path, **build):
    """The relay of stream.build over a TestStream: the records published, and the dead letters."""
    dead_letter = tmp_path / "failed"
    args, _ = stream.make_parser().parse_known_args(sink_args(sample, emulator, dead_letter))
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"]))
    stream.build(pipeline, source, args, **build)
    pipeline.run().wait_until_finish()
    return published(emulator)[0], dead_letters.read_all(str(dead_letter))


@pytest.mark.parametrize("strict", [False, True])
def test_a_run_that_loses_records_says_so_last_and_fails_even_without_strict(tmp_path, capsys, strict):
    """Issue 22: the relay on Flink lost every reading (3,000 read, 0 published, 0 failed) with exit 0.
    Every pipeline's summary now checks its counts: one loud line, last, naming the runner, and exit 5."""
    args, _ = stream.make_parser().parse_known_args(["--dead-letter", str(tmp_path / "failed")]
                                                    + ["--strict"] * strict)
    status = batch.report({"records_in": 3000, "messages": 0}, 70.0, args, "FlinkRunner")
    out = capsys.readouterr()
    loud = "RECORDS LOST: 3,000 of the 3,000 records read on FlinkRunner were neither published (0) nor failed (0)"
    assert status == summary.EXIT_UNACCOUNTED == 5
    assert out.out.rstrip().splitlines()[-1] == loud and out.err.strip() == loud


def test_relay_dead_letters_malformed_messages_with_their_bytes_and_relays_the_rest(sample, emulator, tmp_path):
    """A Pub/Sub message that is not a JSON object must not fail its bundle: a streaming runner would
    retry that bundle for ever."""
    devices = json.load(open(sample.devices_file))
    good = [{"productKey": d["productKey"], "deviceName": d["deviceName"], "ts": 1_700_000_000_000 + i}
            for i, d in enumerate(devices[:3] * 2)]
    malformed = [b'{"productKey": "a1', b"\xff\xfe not UTF-8", b"[1, 2]", b'"text"', b"",
                 b'{"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"]  # Python's JSON reader raises RecursionError
    messages = [json.dumps(reading).encode() for reading in good]
    source = (test_stream.TestStream()
              .add_elements(messages[:3] + malformed[:2], event_timestamp=10)
              .advance_watermark_to(20)
              .add_elements(messages[3:] + malformed[2:], event_timestamp=30)
              .advance_watermark_to_infinity())
    sent, failed = run_relay_on_test_stream(source, sample, emulator, tmp_path, json_messages=True)
    assert sorted(map(key, sent)) == sorted(map(key, good))
    assert sorted(dead_letters.original_record(row) for row in failed) == sorted(malformed)
    assert {(row["reason"], row["message"].split(":")[0]) for row in failed} == {
        (Reason.INVALID_RECORD, "message is not JSON"),
        (Reason.INVALID_RECORD, "message is a JSON list, not an object"),
        (Reason.INVALID_RECORD, "message is a JSON str, not an object"),
        (Reason.INVALID_RECORD, "message is nested deeper than Python's JSON reader goes")}


def test_demo_runs_with_no_account_and_no_network():
    done = subprocess.run([sys.executable, "-m", "pipelines.backfill", "--demo", "--demo-devices", "5",
                           "--demo-days", "1"], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Summary" in done.stdout and "records published" in done.stdout
    assert "backfill: started" in done.stderr  # progress is shown while it runs


def test_demo_passes_the_other_options_on():
    done = subprocess.run([sys.executable, "-m", "pipelines.backfill", "--demo-devices=5", "--dry-run", "--demo",
                           "--demo-days", "1"], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "note: --dry-run is now --plan" in done.stderr  # the plan's old name still asks for it
    assert "--plan" in done.stderr.split("python -m pipelines.backfill")[-1]  # the command line the demo prints
    assert "Dry run" in done.stdout and "records published" not in done.stdout


def test_device_map_routes_by_source_id_and_fails_unmapped_ids(sample, emulator, tmp_path):
    device = sample_data.PRODUCT_KEY, "meter-00001"
    readings = tmp_path / "by-sensor.avro"
    schema = {"type": "record", "name": "R", "fields": [{"name": "sensor_id", "type": "long"},
                                                        {"name": "ts", "type": "long"}]}
    records = [{"sensor_id": 17, "ts": 1_700_000_000_000 + i} for i in range(5)] + [{"sensor_id": 99, "ts": 0}]
    with open(readings, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), records)
    device_map = tmp_path / "map.csv"
    device_map.write_text(f"sensor_id,productKey,deviceName\n17,{device[0]},{device[1]}\n")
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(readings), *sink_args(sample, emulator, dead_letter),
                         "--device-map", str(device_map), "--topic", "/{productKey}/{deviceName}/user/s{sensor_id}",
                         *LOCAL]) == 0
    (message,) = emulator.messages()
    assert (message["productKey"], message["deviceName"], message["topic"]) == (
        *device, f"/{device[0]}/{device[1]}/user/s17")
    assert_accounted(records, JSONL.decode(message["payload"]), dead_letters.read_all(str(dead_letter)),
                     {Reason.UNROUTABLE: 1})


def test_a_run_that_fails_exits_1_with_one_line(sample, emulator, tmp_path, caplog):
    corrupt = tmp_path / "readings.avro"
    corrupt.write_text("productKey,deviceName\n")  # not Avro: only the workers reading it can tell
    args = sink_args(sample, emulator, tmp_path / "failed")
    assert backfill.run(["--input", str(corrupt), *args, *LOCAL]) == 1
    assert emulator.counters()["messages"] == 0
    (line,) = [record.getMessage() for record in caplog.records if "backfill failed" in record.getMessage()]
    assert "Traceback" not in line and "--verbose" in line and len(line.splitlines()) == 1


# The command line as a user meets it: mistakes told in one line before the run starts, input
# formats, the retry options, a run that read nothing or cannot reach the platform.

def command(program, *argv, cwd=REPO):
    """Runs `python -m pipelines.<program> argv` as a user would; the finished process."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", f"pipelines.{program}", *argv], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def assert_one_line_error(done, *words):
    """Exit 2 and a single line on stderr naming the problem: no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]


def readings(count=3, device=DEVICE):
    return [{"productKey": device[0], "deviceName": device[1], "ts": 1_700_000_000_000 + i,
             "temperature": 20.5 + i, "label": f"00{i}"} for i in range(count)]


def write_avro(path, records):
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "productKey", "type": "string"}, {"name": "deviceName", "type": "string"},
        {"name": "ts", "type": "long"}, {"name": "temperature", "type": "double"}, {"name": "label", "type": "string"}]}
    with open(path, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), records)


def test_beams_apitools_warning_is_silenced_and_other_warnings_are_not():
    # Beam 2.63 to 2.77 log this on the root logger when apache_beam is imported without Google Cloud's
    # extras (Beam 2.62 does not); the child logs it the way Beam does, and then imports Beam itself.
    beams = ("apitools not found, and bigquery client libraries are not available despite the import "
             "not raising an ImportError.")
    done = subprocess.run([sys.executable, "-c", "import logging, sys, pipelines; "
                           "logging.warning(sys.argv[1]); logging.warning('disk is full'); import apache_beam",
                           beams], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr
    assert "apitools" not in done.stderr and "disk is full" in done.stderr, done.stderr
    # Without the pipelines' filter, the installed Beam's own import says it (from 2.63 on), unless
    # Google Cloud's extras are installed (the test extras bring them, for the Dataflow dry run).
    bare = subprocess.run([sys.executable, "-c", "import apache_beam"], capture_output=True, text=True, timeout=60)
    says_it = beam_release() >= (2, 63) and importlib.util.find_spec("apitools") is None
    assert ("apitools not found" in bare.stderr) == says_it, bare.stderr


# Checked before submitting, each in one line.

@pytest.mark.parametrize("program", ["backfill", "stream"])
def test_an_http_endpoint_fails_at_launch_in_one_line(sample, tmp_path, program):
    source = ["--input", sample.input_pattern] if program == "backfill" else ["--duration", "1"]
    done = command(program, *source, "--endpoint", "http://127.0.0.1:1",
                   "--credentials", sample.credentials_file, "--dead-letter", str(tmp_path / "f"), *LOCAL)
    assert_one_line_error(done, "--endpoint", "https://")


def test_the_relay_names_a_missing_credentials_file_in_one_line(emulator, tmp_path):
    missing = str(tmp_path / "no-such-credentials.json")
    done = command("stream", "--duration", "1", "--endpoint", emulator.endpoint, "--credentials", missing,
                   "--ca-file", emulator.ca_file, "--dead-letter", str(tmp_path / "f"), *LOCAL)
    assert_one_line_error(done, "--credentials", missing)


def test_a_missing_credentials_file_is_named_in_one_line(sample, emulator, tmp_path):
    missing = str(tmp_path / "no-such-credentials.json")
    done = command("backfill", "--input", sample.input_pattern,
                   *sink_args(sample, emulator, tmp_path / "f", credentials=missing), *LOCAL)
    assert_one_line_error(done, "--credentials", missing)
    assert emulator.counters()["messages"] == 0


def test_a_credentials_csv_without_its_header_says_so_without_the_secret(sample, emulator, tmp_path):
    headless = tmp_path / "credentials.csv"
    headless.write_text(f"{DEVICE[0]},{DEVICE[1]},s3cretValue\n")
    done = command("backfill", "--input", sample.input_pattern,
                   *sink_args(sample, emulator, tmp_path / "f", credentials=str(headless)), *LOCAL)
    assert_one_line_error(done, str(headless), "header", "productKey,deviceName,deviceSecret")
    assert "s3cretValue" not in done.stderr


def test_a_credentials_file_that_is_not_json_is_named_in_one_line(sample, emulator, tmp_path):
    broken = tmp_path / "credentials.json"
    broken.write_text('[{"productKey": "a1", "deviceSecret": "s3cretValue"')
    done = command("backfill", "--input", sample.input_pattern,
                   *sink_args(sample, emulator, tmp_path / "f", credentials=str(broken)), *LOCAL)
    assert_one_line_error(done, f"--credentials {broken}: ")
    assert "s3cretValue" not in done.stderr


def test_whitespace_around_credentials_fields_is_trimmed(sample, emulator, tmp_path):
    secrets = {(d["productKey"], d["deviceName"]): d["deviceSecret"] for d in json.load(open(sample.devices_file))}
    spaced = tmp_path / "credentials.csv"
    spaced.write_text("productKey, deviceName, deviceSecret\n"
                      f" {DEVICE[0]} , {DEVICE[1]},  {secrets[DEVICE]} \n")
    write_avro(tmp_path / "in.avro", readings())
    dead_letter = tmp_path / "failed"
    done = command("backfill", "--input", str(tmp_path / "in.avro"),
                   *sink_args(sample, emulator, dead_letter, credentials=str(spaced)), *LOCAL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert published(emulator)[0] == readings()
    assert dead_letters.read_all(str(dead_letter)) == []


def test_an_input_glob_matching_nothing_is_one_line(sample, emulator, tmp_path):
    pattern = str(tmp_path / "nothing-*.avro")
    done = command("backfill", "--input", sample.input_pattern, pattern, *sink_args(sample, emulator, tmp_path / "f"),
                   *LOCAL)
    assert_one_line_error(done, pattern, "no file")


def test_verbose_shows_the_traceback(sample, emulator, tmp_path):
    done = command("backfill", "--input", str(tmp_path / "nothing-*.avro"),
                   *sink_args(sample, emulator, tmp_path / "f"), "--verbose", *LOCAL)
    assert done.returncode == 2 and "Traceback" in done.stderr


def test_relative_paths_work_on_a_portable_runner(sample, emulator, tmp_path, worker_pool, monkeypatch):
    for path in sorted(os.listdir(os.path.dirname(sample.input_pattern))):
        if path.startswith("readings-"):
            shutil.copy(os.path.join(os.path.dirname(sample.input_pattern), path), tmp_path)
    monkeypatch.chdir(tmp_path)
    status = backfill.run(["--input", "readings-*.avro", "--dead-letter", "dead/failed", "--endpoint",
                           emulator.endpoint, "--ca-file", emulator.ca_file, "--credentials",
                           sample.credentials_file, "--strict", *worker_pool.options])
    assert status == 3  # the sample's bad records failed: they were read
    failed = dead_letters.read_all(str(tmp_path / "dead" / "failed"))
    assert len(failed) == sum(sample.expected_failures.values())
    assert len(published(emulator)[0]) + len(failed) == sample.records


# A run that read nothing.

def test_a_run_that_read_no_record_exits_non_zero_and_says_why(sample, emulator, tmp_path):
    empty = tmp_path / "empty.avro"
    write_avro(empty, [])
    done = command("backfill", "--input", str(empty), *sink_args(sample, emulator, tmp_path / "f"), *LOCAL)
    assert done.returncode == 4, done.stderr[-3000:]
    assert "read 0 records" in done.stderr and str(empty) in done.stderr


# HTTP 404 is permanent.

def test_http_404_fails_at_once_with_a_reason_and_a_hint(sample, emulator, tmp_path):
    write_avro(tmp_path / "in.avro", readings())
    dead_letter = tmp_path / "failed"
    done = command("backfill", "--input", str(tmp_path / "in.avro"),
                   *sink_args(sample, emulator, dead_letter, endpoint=emulator.endpoint + "/no/such/path"), *LOCAL)
    assert done.returncode == 0, done.stderr[-3000:]
    failed = dead_letters.read_all(str(dead_letter))
    # /auth met the 404: no publish request left (attempts 0).
    assert [(row["reason"], row["attempts"]) for row in failed] == [(NOT_FOUND, 0)] * 3
    assert "404" in failed[0]["message"]
    assert f"  {NOT_FOUND}: {HINTS[NOT_FOUND]}" in done.stdout


# An unreachable endpoint, and the retry options.

def test_an_unreachable_endpoint_is_reported_while_retrying(sample, emulator, tmp_path):
    write_avro(tmp_path / "in.avro", readings())
    dead_letter = tmp_path / "failed"
    closed = f"https://127.0.0.1:{free_port()}"
    done = command("backfill", "--input", str(tmp_path / "in.avro"),
                   *sink_args(sample, emulator, dead_letter, endpoint=closed), "--retry-max-seconds", "3", *LOCAL)
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "cannot reach" in line]
    assert len(warnings) == 1 and closed in warnings[0] and "refused" in warnings[0], done.stderr[-3000:]
    assert [row["reason"] for row in dead_letters.read_all(str(dead_letter))] == [Reason.RETRIES_EXHAUSTED] * 3


def test_max_attempts_bounds_the_attempts(sample, emulator, tmp_path):
    emulator.set_faults(error_rate={"30001": 1})  # /auth answers, every publish is refused
    write_avro(tmp_path / "in.avro", readings(1))
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(tmp_path / "in.avro"), *sink_args(sample, emulator, dead_letter),
                         "--max-attempts", "2", *LOCAL]) == 0
    assert [row["attempts"] for row in dead_letters.read_all(str(dead_letter))] == [2]
    assert emulator.counters()["requests"]["topic"] == {"30001": 2}


# Input formats.

def test_csv_input_with_typed_columns(sample, emulator, tmp_path):
    path = tmp_path / "readings.csv"
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, ["productKey", "deviceName", "ts", "temperature", "label"])
        writer.writeheader()
        writer.writerows(readings())
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(path), *sink_args(sample, emulator, dead_letter), "--order-by", "ts",
                         *LOCAL]) == 0
    assert published(emulator)[0] == readings()  # numbers as numbers, "000" stays text
    emulator.reset()
    assert backfill.run(["--input", str(path), *sink_args(sample, emulator, dead_letter), "--order-by", "ts",
                         "--csv-types", "label=int,temperature=str", *LOCAL]) == 0
    assert published(emulator)[0] == [dict(r, label=int(r["label"]), temperature=str(r["temperature"]))
                                   for r in readings()]


def test_csv_values_that_do_not_parse_as_their_type_go_to_the_dead_letters(sample, emulator, tmp_path, capsys):
    path = tmp_path / "readings.csv"
    good = readings(3)
    empty_ts = dict(readings(4)[3], ts="")  # empty is null, as in undeclared columns
    not_float = dict(good[0], temperature="abc", label="bad-1")
    not_int = dict(good[1], ts="1.5", label="bad-2")
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, ["productKey", "deviceName", "ts", "temperature", "label"])
        writer.writeheader()
        writer.writerows([good[0], not_float, good[1], not_int, good[2], empty_ts])
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(path), *sink_args(sample, emulator, dead_letter),
                         "--csv-types", "ts=int,temperature=float,label=str", *LOCAL]) == 0
    sent = published(emulator)[0]
    assert sorted(map(key, sent)) == sorted(map(key, good + [dict(empty_ts, ts=None)]))
    failed = sorted(dead_letters.read_all(str(dead_letter)), key=lambda row: row["message"])
    assert [row["reason"] for row in failed] == [Reason.INVALID_RECORD] * 2
    assert [(row["product_key"], row["device_name"]) for row in failed] == [DEVICE] * 2  # the device each row names
    assert [dead_letters.original_record(row) for row in failed] == [not_float, not_int]
    assert [row["message"] for row in failed] == [
        f"{path} line 3: column 'temperature': 'abc' is not float (see --csv-types)",
        f"{path} line 5: column 'ts': '1.5' is not int (see --csv-types)"]
    out = capsys.readouterr().out
    assert f"records read{6:>26,}" in out and f"records published{4:>21,}" in out
    assert f"{'  invalid_record':<22}{2:>16}" in out and "--csv-types" in out  # the hint names the option


def test_csv_missing_values_are_null_and_bool_takes_only_its_words(sample, emulator, tmp_path):
    path = tmp_path / "readings.csv"
    rows = [{**r, "ok": ok} for r, ok in zip(readings(4), ["Yes", "0", "maybe", None])]
    with open(path, "w", newline="") as out:
        out.write("productKey,deviceName,ts,temperature,label,ok\n")
        for row in rows:  # the last row is short: its "ok" field is missing
            out.write(",".join(str(value) for value in row.values() if value is not None) + "\n")
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(path), *sink_args(sample, emulator, dead_letter),
                         "--csv-types", "ok=bool,label=str", *LOCAL]) == 0
    assert sorted(map(key, published(emulator)[0])) == sorted(map(key, [
        dict(rows[0], ok=True), dict(rows[1], ok=False), rows[3]]))
    [failed] = dead_letters.read_all(str(dead_letter))
    assert dead_letters.original_record(failed) == rows[2] and failed["reason"] == Reason.INVALID_RECORD
    assert "line 4: column 'ok': 'maybe' is not bool" in failed["message"]


def test_a_csv_row_longer_than_its_header_goes_to_the_dead_letters(sample, emulator, tmp_path):
    path = tmp_path / "readings.csv"
    good = readings(2)
    with open(path, "w", newline="") as out:
        out.write("productKey,deviceName,ts,temperature,label\n")
        for extra, row in zip(["", ",7,x"], good):
            out.write(",".join(str(value) for value in row.values()) + extra + "\n")
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(path), *sink_args(sample, emulator, dead_letter), *LOCAL]) == 0
    assert published(emulator)[0] == good[:1]
    [failed] = dead_letters.read_all(str(dead_letter))
    assert failed["reason"] == Reason.INVALID_RECORD
    assert dead_letters.original_record(failed) == dict(good[1], _extra_values=["7", "x"])
    assert failed["message"] == f"{path} line 3: 2 values more than the header's 5 columns"


def test_jsonl_and_parquet_input(sample, emulator, tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in readings(2)))
    parquet = tmp_path / "b.parquet"
    later = [dict(r, ts=r["ts"] + 10) for r in readings(2)]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(later), str(parquet))
    assert backfill.run(["--input", str(jsonl), str(parquet), *sink_args(sample, emulator, tmp_path / "f"),
                         "--order-by", "ts", *LOCAL]) == 0
    assert published(emulator)[0] == readings(2) + later


def test_an_explicit_input_format_wins_over_the_extension(sample, emulator, tmp_path):
    path = tmp_path / "readings.txt"
    path.write_text("".join(json.dumps(r) + "\n" for r in readings(2)))
    assert backfill.run(["--input", str(path), "--input-format", "jsonl", *sink_args(sample, emulator, tmp_path / "f"),
                         *LOCAL]) == 0
    assert published(emulator)[0] == readings(2)


# Beam's spelling of our own options.

def test_underscore_spellings_of_our_options_are_ours(sample, emulator, tmp_path):
    write_avro(tmp_path / "in.avro", list(reversed(readings())))
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(tmp_path / "in.avro"), "--endpoint", emulator.endpoint, "--ca_file",
                         emulator.ca_file, "--credentials", sample.credentials_file, f"--dead_letter={dead_letter}",
                         "--order_by", "ts", *LOCAL]) == 0
    assert published(emulator)[0] == readings()
    assert dead_letters.read_all(str(dead_letter)) == []


def test_the_pipelines_default_to_the_transforms_settings():
    """One default per setting, whichever way a user publishes (the relay's delay was 2 s against the
    transform's 5 s, and the docs gave the backfill 16 requests in flight against 64: test_docs checks
    the pages' option tables against these parsers)."""
    transform = inspect.signature(WriteToIoTPlatform.__init__).parameters
    for parser in (backfill.make_parser(), replay.make_parser(), stream.make_parser()):
        assert parser.get_default("max_in_flight") == transform["max_in_flight"].default
    assert stream.make_parser().get_default("max_buffering_delay") == transform["max_buffering_delay"].default


@pytest.mark.parametrize("runner", ["FnApiRunner", "PrismRunner", "FlinkRunner", "DataflowRunner"])
def test_the_relay_is_a_streaming_pipeline_on_every_runner(runner):
    """Issue 22: without --streaming the relay on Flink ran as a batch job (nothing sent for 36 s). It sets
    --streaming itself, and on Flink the option that keeps checkpoints from losing whole runs."""
    added = stream._beam_options([f"--runner={runner}"], runner, duration=None)
    assert "--streaming" in added
    assert ("--finish_bundle_before_checkpointing" in added) == (runner == "FlinkRunner")
    assert stream._beam_options(["--streaming", "--finish_bundle_before_checkpointing"], runner, None) == []


def test_the_relay_reads_kafka_only_where_it_can(emulator, sample, tmp_path):
    done = command("stream", "--kafka_bootstrap_servers", "127.0.0.1:9", "--kafka-topic", "t",
                   *sink_args(sample, emulator, tmp_path / "failed"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: the relay reads Kafka on Flink (--runner=FlinkRunner), not FnApiRunner: Beam's Kafka read "
        "runs in the runner's Java processes")


def test_the_relay_reads_pubsub_only_where_it_was_run(emulator, sample, tmp_path):
    """Off Dataflow, the local runner and Prism, the relay's Pub/Sub reader is untested: one line, exit 2."""
    done = command("stream", "--input_subscription", "projects/p/subscriptions/s", "--runner=FlinkRunner",
                   *sink_args(sample, emulator, tmp_path / "failed"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: the relay reads Pub/Sub on Dataflow, the local runner (no --runner) or Prism, not FlinkRunner: "
        "the relay's own reader (which --duration and Ctrl-C stop) was run on those alone")
