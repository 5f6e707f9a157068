"""The relay reading a real Kafka broker (python -m pipelines.runners kafka) on embedded Flink, through
the expansion service `fetch kafka` assembles, on a topic of 2 partitions: readings produced before and
while the relay runs, every one stored, malformed values and unknown devices' readings in the dead
letters, the buffering delay holding; and a relay stopped with Ctrl-C and started again on its group,
resuming from the offsets it committed. (The session cluster with a TaskManager killed: test_runners.)
"""
import json
import re
import time

import pytest

from connector.emulator import Emulator, make_devices
from connector.emulator.accounting import account
from kafka_support import Readings, broker, committed  # noqa: F401
from pipelines import dead_letters, stream
from pipelines.runners import kafka_expansion
from runner_support import JSONL, as_failed, copies_by_seq, first_arrivals, relay_stopped_with_ctrl_c, waits

pytestmark = pytest.mark.runners
DELAY = 2


@pytest.fixture
def devices(tmp_path):
    """10 devices; the relay's credentials file holds the first 9: the last one is unknown to it."""
    devices = make_devices(10, product_key="a1KafkaRelay", prefix="k-")
    (tmp_path / "credentials.json").write_text(json.dumps(devices[:9]))
    return devices


def relay_args(emulator, tmp_path, broker, topic, group, *more):
    return ["--endpoint", emulator.endpoint, "--ca-file", emulator.ca_file,
            "--credentials", str(tmp_path / "credentials.json"), "--dead-letter", str(tmp_path / "dead" / "failed"),
            "--kafka_bootstrap_servers", broker.bootstrap_servers, "--kafka-topic", topic, "--kafka_group", group,
            "--max-buffering-delay", str(DELAY), "--runner=FlinkRunner", "--flink_master=[local]",
            "--checkpointing_interval=2000", *more]


def summary_count(out, name):
    return int(re.findall(rf"^{name} +([\d,]+)$", out, re.M)[-1].replace(",", ""))


def test_relay_from_kafka_on_embedded_flink_loses_nothing_and_holds_the_delay(broker, devices, tmp_path, capsys):
    """Parallelism 2. Readings are produced before the relay starts, while it starts (Flink's start-up
    took 15 to 40 s here), and for 6 s after the first message reached the platform, at 50 a second
    over 10 devices: a message carries about 10 readings. Those produced once it runs reach the
    platform within the delay and what Flink takes between stages. The relay reads for --duration from
    its job's start (30 s: a first message came up to 14 s after that on this loaded machine): it reads
everything, and its offsets are committed to the end."""
    topic, group = "readings-embedded", "test-relay-embedded"
    readings = Readings(broker.bootstrap_servers, topic, devices)
    readings.produce(100)  # before the relay starts: a new group starts at the earliest offset
    malformed = [b'{"productKey": "a1', b"\xff\xfe not UTF-8", b"[1, 2]"]
    for value in malformed:
        readings.send_raw(value)
    readings.send_raw(None, key=b"k-00001")  # a tombstone: no value, sent to the dead letters as no bytes
    with Emulator(devices[:9]) as emulator:
        running = []

        def until():
            if not running and emulator.counters()["messages"]:
                running.append(time.time())
            return bool(running) and time.time() > running[0] + 6

        live = readings.live(5, until)
        status = stream.run(relay_args(emulator, tmp_path, broker, topic, group, "--parallelism=2", "--duration", "30"))
        live.join()
        messages = emulator.messages()
    readings.close()
    out = capsys.readouterr().out
    assert status == 0, out[-3000:]
    assert running, "nothing reached the platform"
    failed = [as_failed(row) for row in dead_letters.read_all(str(tmp_path / "dead" / "failed"))]
    result = account(readings.produced, messages, [f for f in failed if isinstance(f.record, dict)], JSONL)
    unknown = sum(1 for r in readings.produced if r["deviceName"] == devices[9]["deviceName"])
    assert result.complete and result.duplicated == 0, result.summary()
    assert result.delivered == len(readings.produced) - unknown and result.failed == {"unknown_device": unknown}, (
        result.summary())
    assert sorted(f.record for f in failed if not isinstance(f.record, dict)) == sorted([*malformed, b""])
    assert summary_count(out, "records read") == len(readings.produced) + len(malformed) + 1
    ends = kafka_expansion.offsets(broker.bootstrap_servers, topic, {"group.id": group})
    assert all(marks["committed"] == marks["end"] for marks in ends.values()), ends  # committed to the end
    assert f"group {group} has committed the end of {topic}" in out, out[-2000:]
    assert "NOTHING READ" not in out and "RECORDS LOST" not in out, out[-2000:]
    # The delay: readings produced once the relay ran, and the messages that carried them.
    live_readings = readings.produced_after(running[0])
    took = waits(live_readings, first_arrivals(messages))
    assert len(took) == sum(1 for r in live_readings if r["deviceName"] != devices[9]["deviceName"])
    median, longest = took[len(took) // 2], took[-1]
    later = [m for m in messages if m["receivedAt"] / 1000 > running[0] + DELAY]
    per_message = sum(len(JSONL.decode(m["payload"])) for m in later) / len(later)
    assert median < DELAY + 3 and longest < DELAY + 6 and per_message >= 5, (median, longest, per_message)
    print(f"Kafka relay on embedded Flink: {len(took)} readings produced while it ran waited {median:.1f} s "
          f"(median), {longest:.1f} s at most; {per_message:.1f} readings a message")


def test_relay_stopped_with_ctrl_c_and_started_again_resumes_from_its_committed_offsets(broker, devices, tmp_path):
    """The relay as a user runs it, at parallelism 1, with event time from the readings' ts field. Ctrl-C
    (SIGINT to the whole command, as a terminal sends it) stops its reads, flushes its buffers and
    commits its last checkpoint's offsets; it exits 0. Readings keep coming meanwhile. Started again on
    the same group (parallelism 2, --duration), it reads from those offsets: every reading stored but
    those produced after it stopped reading (beyond its committed offsets, for the next run), none twice
    but those the offsets say were read after the last commit."""
    topic, group = "readings-restart", "test-relay-restart"
    readings = Readings(broker.bootstrap_servers, topic, devices)
    readings.produce(50)
    second = {}  # when the second run's first message came

    with Emulator(devices[:9]) as emulator:
        def until():
            if "stopped" in second and "running" not in second and len(emulator.messages()) > second["messages"]:
                second["running"] = time.time()
            return time.time() > second.get("running", float("inf")) + 5

        live = readings.live(5, until)
        first = relay_stopped_with_ctrl_c(
            relay_args(emulator, tmp_path, broker, topic, group, "--parallelism=1", "--timestamp_field", "ts"),
            ready=lambda: emulator.counters()["messages"] >= 20, settle=3)
        assert first.returncode == 0, (first.stdout[-2000:], first.stderr[-3000:])
        assert "stopping: reading no more" in first.stderr
        after_first = committed(broker.bootstrap_servers, group, topic)
        second["messages"] = len(emulator.messages())
        second["stopped"] = stopped_at = time.time()
        time.sleep(3)  # readings produced while no relay runs
        status = stream.run(relay_args(emulator, tmp_path, broker, topic, group, "--parallelism=2", "--duration", "15",
                                       "--timestamp_field", "ts"))
        live.join()
        messages = emulator.messages()
    readings.close()
    assert status == 0
    # The second run read for 15 s from its job's start: what came later waits in Kafka, beyond the
    # offsets it committed, for the next run (readings were produced until 5 s after its first message).
    at_end = committed(broker.bootstrap_servers, group, topic)
    waiting = {seq for seq, (partition, offset) in readings.where.items() if offset >= at_end.get(partition, 0)}
    failed = [as_failed(row) for row in dead_letters.read_all(str(tmp_path / "dead" / "failed"))]
    result = account([r for r in readings.produced if r["seq"] not in waiting], messages, failed, JSONL)
    unknown = {r["seq"] for r in readings.produced if r["deviceName"] == devices[9]["deviceName"]}
    assert result.complete and result.failed == {"unknown_device": len(unknown - waiting)}, result.summary()
    assert all(readings.produced[seq]["ts"] / 1000 > second["running"] for seq in waiting)
    # The first run committed what it read: the second read from there, and sent nothing twice but
    # readings at or past those offsets (read after its last commit).
    copies = copies_by_seq(messages)
    twice = [seq for seq, count in copies.items() if count > 1]
    assert all(readings.where[seq][1] >= after_first.get(readings.where[seq][0], 0) for seq in twice), (
        twice, after_first)
    by_first = {r["seq"] for m in messages if m["receivedAt"] / 1000 <= stopped_at for r in JSONL.decode(m["payload"])}
    read_by_first = {seq for seq, (partition, offset) in readings.where.items()
                     if offset < after_first.get(partition, 0)}
    assert read_by_first and read_by_first - unknown <= by_first, sorted(read_by_first - unknown - by_first)[:20]
    assert not waiting & set(copies)  # what waits was not read: the drain committed all it read
    between = [r for r in readings.produced if stopped_at < r["ts"] / 1000 < stopped_at + 3]
    assert between and all(r["seq"] in copies or r["seq"] in unknown for r in between)
    print(f"stopped with Ctrl-C at offsets {after_first}; started again: {result.summary()}, {len(twice)} twice")
