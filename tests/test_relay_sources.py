"""The relay's sources, without a broker: event time from a reading's field (--timestamp_field), and the
check that compares what a source handed over with what the sink took in (summary.SourceCheck), for the
simulated fleet on Beam's local runner. The Kafka source's check runs against a real broker in
test_kafka.py and test_runners.py."""
import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to

from connector.emulator import Emulator, make_devices
from pipelines import fleet, stream, summary
from pipelines.options import LOCAL_RUNNER


@pytest.mark.parametrize("handed_over, read, findings, status, loud", [
    (10, 10, [], None, []),
    (236, 2, [], summary.EXIT_UNACCOUNTED,
     ["RECORDS LOST: Kafka topic t handed over 236 records and the sink took in 2: 234 never reached it"]),
    (2, 3, [], summary.EXIT_UNACCOUNTED,
     ["RECORDS COUNTED TWICE: the sink took in 3 records where Kafka topic t handed over 2"]),
    (0, 0, [("NOTHING READ: ...", 4), ("a note", None)], 4, ["NOTHING READ: ..."]),
    (5, 5, [("a note", None)], None, []),
])
def test_a_source_check_is_loud_and_fails_the_run_when_the_counts_differ(handed_over, read, findings, status, loud):
    check = summary.SourceCheck("Kafka topic t", handed_over, read, findings)
    assert check.status() == status
    assert [line for line, is_loud in check.lines() if is_loud] == loud
    assert [line for line, is_loud in check.lines() if not is_loud] == [line for line, s in findings if s is None]


@pytest.mark.parametrize("count, handed_over, last, stopped, short", [
    (3000, 3000, 2999, False, False),
    (3000, 0, None, False, True),  # the issue-22 run: the fleet's readings never came
    (3000, 1200, 1199, False, True),  # the runner ended the fleet's source early
    (3000, 1200, 1199, True, False),  # Ctrl-C
    (fleet.UNLIMITED, 1200, 1199, False, False),  # no --duration: nothing more was due
    (3000, 3000, None, False, False),  # a runner without distributions: the counts say enough
    (3000, 700, 2999, False, False),  # restored from a checkpoint: its attempt counted from there
])
def test_the_fleet_says_when_it_emitted_fewer_readings_than_were_due(count, handed_over, last, stopped, short):
    found = fleet.shortfall(count, handed_over, last, stopped)
    assert bool(found) == short
    assert all(line.startswith("READINGS NOT EMITTED") and status == summary.EXIT_UNACCOUNTED
               for line, status in found)


def test_the_fleet_counts_what_it_emits_as_the_sink_counts_what_it_takes_in(tmp_path):
    """On the relay's local runner: 150 readings due, emitted, counted by the fleet and the sink alike."""
    devices = make_devices(5, product_key="a1FleetCheck", prefix="f-")
    (tmp_path / "credentials.json").write_text(json.dumps(devices))
    with Emulator(devices) as emulator:
        args, _ = stream.make_parser().parse_known_args([
            "--endpoint", emulator.endpoint, "--ca-file", emulator.ca_file, "--credentials",
            str(tmp_path / "credentials.json"), "--dead-letter", str(tmp_path / "failed"),
            "--max-buffering-delay", "0.5"])
        source = fleet.SimulatedFleet([(d["productKey"], d["deviceName"]) for d in devices], rate=100, duration=1.5)
        pipeline = beam.Pipeline(options=PipelineOptions([f"--runner={LOCAL_RUNNER}", "--streaming"]))
        stream.build(pipeline, source, args)
        result = pipeline.run()
        result.wait_until_finish()
        check = fleet.check(result, source.count, stopped=False)
    assert source.count == 150 and check.handed_over == check.read == 150, (check.handed_over, check.read)
    assert check.status() is None and check.lines() == []


def test_event_time_comes_from_the_timestamp_field_else_from_the_source():
    """--timestamp_field ts: a reading's ts (epoch ms) is its event time; a reading whose ts is missing or
    not a number keeps the time its source gave it (Kafka's record time, Pub/Sub's publish time): the
    relay's readings as its sink gets them."""
    readings = [{"deviceName": "a", "ts": 1_700_000_000_000}, {"deviceName": "b", "ts": "yesterday"},
                {"deviceName": "c"}, {"deviceName": "d", "ts": True}]
    source = (test_stream.TestStream()
              .add_elements([json.dumps(reading).encode() for reading in readings], event_timestamp=1_600_000_000)
              .advance_watermark_to_infinity())
    args, _ = stream.make_parser().parse_known_args(["--timestamp-field", "ts"])
    with beam.Pipeline(options=PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])) as pipeline:
        stamped = stream.readings(pipeline, source, args, json_messages=True) | beam.Map(
            lambda reading, at=beam.DoFn.TimestampParam: (reading["deviceName"], at.micros // 1000))
        assert_that(stamped, equal_to([("a", 1_700_000_000_000), ("b", 1_600_000_000_000),
                                       ("c", 1_600_000_000_000), ("d", 1_600_000_000_000)]))
