"""Windowed steps after WriteToIoTPlatform's .published and .failed in streaming: a fixed-window
GroupByKey and a CombinePerKey count every receipt and failed record, nothing dropped as late, on
TestStream (the BundleBasedDirectRunner), Prism (Beam 2.66 on) and embedded Flink (Beam 2.62).

The sink stamps each output at a time the watermark has not passed (streaming._BufferedPublishFn):
a flush in process at its record's time, the window's flush at the window's end, the delay's flush at
the time of the record that set the delay's timer. The streams below move the watermark past records
while they wait in the sink's buffer, which is when a record's own time comes late downstream.

The BundleBasedDirectRunner keeps no watermark hold for a timer (Beam's own TODO in its
direct_userstate.py): a step after a stateful DoFn sees the watermark pass the timer before it fires,
so whatever a timer emits comes late there into a window that ended before it, GroupIntoBatches'
batches too. What the sink's timers emit is counted on Prism and Flink, which keep the holds (as
Dataflow does); on the BundleBasedDirectRunner, the test of flushes in process and the exact stamps.
"""
import json

import apache_beam as beam
import pytest
from apache_beam import coders
from apache_beam.testing import test_stream
from apache_beam.transforms import window
from apache_beam.transforms.window import GlobalWindow, IntervalWindow

from connector.beam.encoders import get_encoder
from connector.beam.packing import Packer
from connector.protocol.device import Device
from runner_support import require_flink, require_prism
from test_write_streaming import DIRECT, PRISM, assert_accounted, frozen_clock, run_stream, stamped

# Bundles of one element: Flink holds a stage's watermark back until its bundle ends (1,000 elements
# or 1 s by default), and these streams come within one; the code before its output times were
# right lost outputs on Flink only so (2 of these 3 tests).
FLINK = ["--runner=FlinkRunner", "--flink_master=[local]", "--parallelism=2", "--streaming",
         "--environment_type=LOOPBACK", "--max_bundle_size=1"]
# The windows of the steps after the sink: shorter than the sink's own, so one ends while records wait.
DOWNSTREAM_SECONDS = 10
HOLDING = [pytest.param(name, marks=marks) for name, marks in (
    ("prism", [pytest.mark.runners, pytest.mark.prism_streaming]), ("flink", [pytest.mark.runners]))]


def options_for(runner):
    if runner == "direct":
        return DIRECT
    if runner == "prism":
        require_prism()
        return PRISM
    require_flink()
    return FLINK


def json_stream(*steps):
    """A TestStream of records as JSON bytes, which every runner's TestStream can code (Flink's is Java's),
    made dicts again after it. steps: lists of TimestampedValues to add, or a watermark to advance to."""
    stream = test_stream.TestStream(coder=coders.BytesCoder())
    for step in steps:
        if isinstance(step, list):
            stream = stream.add_elements([window.TimestampedValue(json.dumps(v.value).encode(), v.timestamp)
                                          for v in step])
        else:
            stream = stream.advance_watermark_to(step)
    return stream.advance_watermark_to_infinity().with_output_types(bytes) | beam.Map(json.loads)


def _counted(pcoll, name, weight):
    """pcoll in fixed windows of DOWNSTREAM_SECONDS, summed with CombinePerKey and grouped by device."""
    windowed = pcoll | f"Window{name}" >> beam.WindowInto(window.FixedWindows(DOWNSTREAM_SECONDS))
    sums = (windowed | f"Weigh{name}" >> beam.Map(lambda value: ("all", weight(value)))
            | f"Sum{name}" >> beam.CombinePerKey(sum) | f"Sums{name}" >> beam.Values())
    groups = (windowed | f"Key{name}" >> beam.Map(lambda value: (value.device_name, value))
              | f"Group{name}" >> beam.GroupByKey() | f"Sizes{name}" >> beam.Map(lambda group: len(list(group[1]))))
    return {f"{name}Sums": sums, f"{name}Groups": groups}


def aggregations(result):
    return {**_counted(result.published, "Published", lambda receipt: receipt.record_count),
            **_counted(result.failed, "Failed", lambda failed: 1)}


def assert_counted(run, delivered, failed):
    """The windowed steps saw every output: records published and failed, receipts and failed records."""
    assert sum(r.record_count for r in run.receipts) == delivered and len(run.failed) == failed, run.failed_reasons()
    assert sum(run.more["PublishedSums"]) == delivered and sum(run.more["PublishedGroups"]) == len(run.receipts), (
        run.more, [r.record_count for r in run.receipts])
    assert sum(run.more["FailedSums"]) == failed == sum(run.more["FailedGroups"]), run.more


def ghosts(devices, count, start_seconds):
    """Records of a device the platform does not know: they fail when their payload is published."""
    return [window.TimestampedValue({"productKey": devices[0]["productKey"], "deviceName": "ghost", "seq": i},
                                    start_seconds + i * 0.001) for i in range(count)]


def filling(device, seq, seconds):
    """A record whose JSON line fills a payload alone."""
    record = {"productKey": device["productKey"], "deviceName": device["deviceName"], "seq": seq, "note": ""}
    encoder = get_encoder("jsonl")
    room = Packer(encoder, Device(device["productKey"], device["deviceName"])).max_fragment_bytes
    record["note"] = "x" * (room - len(encoder.encode(record)))
    return window.TimestampedValue(record, seconds)


@pytest.mark.parametrize("runner", ["direct", *HOLDING])
def test_flushes_in_process_are_counted_by_windowed_steps_after_the_sink(runner, clean_emulator, devices, tmp_path):
    """No delay: 100 records of 1 KB a device wait while the watermark passes them, until a record that
    fills a payload alone comes; it flushes them, and goes at once itself, nothing left for the end."""
    ghost = {"productKey": devices[0]["productKey"], "deviceName": "ghost"}
    first = stamped(devices[:2], 100, 1, pad=1000) + ghosts(devices, 2, 2)
    last = [filling(device, 31000, 31) for device in [*devices[:2], ghost]]
    run = run_stream(json_stream(first, 30, last), clean_emulator, devices, tmp_path, runner=options_for(runner),
                     max_buffering_delay=None, more=aggregations)
    assert_accounted(first + last, clean_emulator, run, delivered=202)
    assert sorted(r.record_count for r in run.receipts) == [1, 1, 100, 100]
    assert_counted(run, delivered=202, failed=3)


@pytest.mark.parametrize("runner", HOLDING)
def test_window_end_flushes_are_counted_by_windowed_steps_after_the_sink(runner, clean_emulator, devices, tmp_path):
    """Fixed windows of 60 s, no delay: each window's records wait for its end, the watermark passing
    them; of 125 records of 1 KB a device, 121 fill a payload before it."""
    first = stamped(devices[:2], 125, 1, pad=1000) + ghosts(devices, 3, 2)
    second = stamped(devices[:2], 4, 70) + ghosts(devices, 1, 75)
    run = run_stream(json_stream(first, 65, second), clean_emulator, devices, tmp_path,
                     windowing=window.FixedWindows(60), runner=options_for(runner), max_buffering_delay=None,
                     more=aggregations)
    assert_accounted(first + second, clean_emulator, run, delivered=258)
    assert sorted(r.record_count for r in run.receipts) == [4, 4, 4, 4, 121, 121]  # a payload went on size
    assert_counted(run, delivered=258, failed=4)


@pytest.mark.parametrize("runner", HOLDING)
def test_the_global_windows_final_flush_is_counted_by_windowed_steps_after_the_sink(runner, clean_emulator, devices,
                                                                                    tmp_path):
    """The global window, no delay: what the sink holds when the input ends goes at the global window's
    end, the watermark having passed every record; the steps after it count it in their last window."""
    records = stamped(devices[:2], 20, 1) + ghosts(devices, 2, 3)
    run = run_stream(json_stream(records, 30), clean_emulator, devices, tmp_path, runner=options_for(runner),
                     max_buffering_delay=None, more=aggregations)
    assert_accounted(records, clean_emulator, run, delivered=40)
    assert_counted(run, delivered=40, failed=2)


@pytest.mark.runners
@pytest.mark.prism_streaming
def test_delay_flushes_are_counted_by_windowed_steps_after_the_sink_on_prism(clean_emulator, devices, tmp_path):
    """The delay's flush comes after the watermark passed the records (TestStream's processing time
    moves after it: Flink's TestStream cannot move it)."""
    require_prism()
    first = stamped(devices[:2], 5, 1) + ghosts(devices, 2, 2)
    second = stamped(devices[:2], 3, 40)
    stream = (test_stream.TestStream().add_elements(first).advance_watermark_to(30).advance_processing_time(10)
              .add_elements(second).advance_watermark_to_infinity())
    run = run_stream(stream, clean_emulator, devices, tmp_path, runner=PRISM, max_buffering_delay=5,
                     more=aggregations)
    assert_accounted(first + second, clean_emulator, run, delivered=16)
    assert_counted(run, delivered=16, failed=2)


def test_outputs_are_stamped_where_the_watermark_is_held_for_them(clean_emulator, devices, tmp_path):
    """A flush in process at its record's time, the window's flush at the window's end, the delay's flush
    at the time of the record that set its timer (before 1970 too: no time is clamped at 0)."""
    def stamps(result):
        return {"Stamps": result.published | beam.Map(lambda receipt, at=beam.DoFn.TimestampParam:
                                                      (receipt.device_name, receipt.record_count, at))}
    sized = stamped(devices[:1], 122, -7000, pad=1000)  # a payload holds 121 of them
    delayed = stamped(devices[1:2], 3, -1000)
    stream = (test_stream.TestStream().add_elements(sized).advance_watermark_to(-3600)
              .add_elements(delayed).advance_processing_time(10).advance_watermark_to_infinity())
    run = run_stream(stream, clean_emulator, devices, tmp_path, windowing=window.FixedWindows(3600),
                     max_buffering_delay=5, processing_clock=frozen_clock, more=stamps)
    assert_accounted(sized + delayed, clean_emulator, run, delivered=125)
    window_end = IntervalWindow(-7200, -3600).max_timestamp()
    first, second = devices[0]["deviceName"], devices[1]["deviceName"]
    assert sorted(run.more["Stamps"]) == sorted([(first, 121, sized[121].timestamp), (first, 1, window_end),
                                                 (second, 3, delayed[0].timestamp)]), run.more["Stamps"]
    assert GlobalWindow().max_timestamp() > window_end
