"""Google's Pub/Sub test server as users run it (`python -m pipelines.runners fetch pubsub`, `pubsub start
--topic T --subscription S`, `pubsub status`, `pubsub stop`): google-cloud-pubsub publishes to it and
pulls back what it published, with PUBSUB_EMULATOR_HOST as `start` printed it. And the relay reading a
subscription there (--input_subscription) on Beam's local runner, and on Prism where Beam is new enough
for the streaming sink there (prism_streaming): every reading published once or in the dead letters,
every message acked, and a relay stopped with Ctrl-C leaving the rest to the next; and the relay's reader
alone, giving each message at its publish time.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that

from connector.emulator import Emulator, make_devices
from connector.emulator.accounting import account
from pipelines import dead_letters, pubsub_source, stream
from pipelines.options import LOCAL_RUNNER
from pipelines.runners import pubsub_server
from runner_support import JSONL, ROOT, as_failed, relay_stopped_with_ctrl_c, require_prism, unavailable

pytestmark = pytest.mark.runners
PROJECT = "iot-relay-test"
DELAY = 2
ACK_DEADLINE_SECONDS = 10  # pstest's, for a subscription created without one


def runners(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.runners", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def require_pubsub():
    if not os.path.exists(pubsub_server.binary_path()):
        unavailable("Pub/Sub: the test server is not built (python -m pipelines.runners fetch pubsub)")
    if importlib.util.find_spec("google.cloud.pubsub_v1") is None:
        unavailable("Pub/Sub: google-cloud-pubsub is not installed (pip install 'apache-beam[gcp]')")


def test_pubsub_start_serves_a_topic_and_subscription_until_stop(tmp_path, monkeypatch):
    require_pubsub()
    from google.cloud import pubsub_v1

    workdir = tmp_path / "pubsub"
    started = runners("pubsub", "start", "--project", "iot-relay-test", "--topic", "readings",
                      "--subscription", "relay", "--workdir", str(workdir))
    assert started.returncode == 0, started.stderr
    server = json.loads(started.stdout.strip().splitlines()[-1])
    try:
        assert server["emulator_host"].startswith("127.0.0.1:")
        assert server["subscription"] == "projects/iot-relay-test/subscriptions/relay"
        assert runners("pubsub", "status", "--workdir", str(workdir)).returncode == 0
        again = runners("pubsub", "start", "--workdir", str(workdir))
        assert again.returncode == 2 and "is running" in again.stderr
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server["emulator_host"])
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        sent = [json.dumps({"deviceName": "d", "seq": n}).encode() for n in range(25)]
        for data in sent:
            publisher.publish(publisher.topic_path("iot-relay-test", "readings"), data).result(timeout=30)
        got = []
        while len(got) < len(sent):
            pulled = subscriber.pull(subscription=server["subscription"], max_messages=10, timeout=10)
            assert pulled.received_messages, f"{len(got)} of {len(sent)} came back"
            got += [m.message.data for m in pulled.received_messages]
            subscriber.acknowledge(subscription=server["subscription"],
                                   ack_ids=[m.ack_id for m in pulled.received_messages])
        subscriber.close()
        assert sorted(got) == sorted(sent)
    finally:
        stopped = runners("pubsub", "stop", "--workdir", str(workdir))
    assert stopped.returncode == 0, stopped.stderr
    status = runners("pubsub", "status", "--workdir", str(workdir))
    assert status.returncode == 1 and "not running" in status.stdout


class Readings:
    """Readings of `devices` (round robin) published to `topic`, numbered by `seq`, stamped with their
    publish time in `ts` (epoch ms)."""

    def __init__(self, topic, devices):
        from google.cloud import pubsub_v1
        self.topic, self.devices, self.published = topic, devices, []
        self._publisher = pubsub_v1.PublisherClient()

    def publish(self, count):
        """Publish `count` readings and wait until the server has them all."""
        futures = []
        for _ in range(count):
            device = self.devices[len(self.published) % len(self.devices)]
            reading = {"productKey": device["productKey"], "deviceName": device["deviceName"],
                       "seq": len(self.published), "ts": int(time.time() * 1000)}
            self.published.append(reading)
            futures.append(self._publisher.publish(self.topic, json.dumps(reading).encode()))
        for future in futures:
            future.result(timeout=30)

    def send_raw(self, data):
        self._publisher.publish(self.topic, data).result(timeout=30)

    def live(self, when, seconds):
        """A started thread publishing 20 readings a second for `seconds` once `when()` is true."""
        def run():
            while not when():
                time.sleep(0.1)
            for _ in range(int(seconds * 10)):
                self.publish(2)
                time.sleep(0.1)
        thread = threading.Thread(target=run, name="publish", daemon=True)
        thread.start()
        return thread


@pytest.fixture
def pubsub(tmp_path, monkeypatch):
    """A started server's subscription `relay` to topic `readings`, PUBSUB_EMULATOR_HOST set to the server."""
    require_pubsub()
    with pubsub_server.PubSubServer(str(tmp_path / "pubsub")).start() as server:
        subscription = server.create(PROJECT, "readings", "relay")
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.emulator_host)
        yield subscription


@pytest.fixture
def devices(tmp_path):
    """6 devices; the relay's credentials file holds the first 5: the last one is unknown to it."""
    devices = make_devices(6, product_key="a1PubSubRelay", prefix="p-")
    (tmp_path / "credentials.json").write_text(json.dumps(devices[:5]))
    return devices


def relay_args(emulator, tmp_path, subscription, *more):
    return ["--endpoint", emulator.endpoint, "--ca-file", emulator.ca_file,
            "--credentials", str(tmp_path / "credentials.json"), "--dead-letter", str(tmp_path / "dead" / "failed"),
            "--input_subscription", subscription, "--max-buffering-delay", str(DELAY), *more]


def redelivered(subscription):
    """What the subscription gives once its ack deadline has passed: the messages read and not acked."""
    from google.cloud import pubsub_v1
    time.sleep(ACK_DEADLINE_SECONDS + 1)
    subscriber = pubsub_v1.SubscriberClient()
    left = subscriber.pull(subscription=subscription, max_messages=100, timeout=10).received_messages
    subscriber.close()
    return [received.message.data for received in left]


def accounted(readings, messages, tmp_path, unknown_device):
    """The accounting of the readings' JSON objects at the emulator and in the dead letters, after
    checking that the unknown device's readings failed as unknown_device; and the failed non-objects."""
    failed = [as_failed(row) for row in dead_letters.read_all(str(tmp_path / "dead" / "failed"))]
    result = account(readings.published, messages, [f for f in failed if isinstance(f.record, dict)], JSONL)
    unknown = sum(1 for reading in readings.published if reading["deviceName"] == unknown_device["deviceName"])
    assert result.complete and result.duplicated == 0, result.summary()
    assert result.delivered == len(readings.published) - unknown and result.failed == {"unknown_device": unknown}, (
        result.summary())
    return [f.record for f in failed if not isinstance(f.record, dict)]


@pytest.mark.parametrize("runner_options", [
    pytest.param([], id="local"),
    pytest.param(["--runner=PrismRunner"], id="prism", marks=pytest.mark.prism_streaming),
])
def test_relay_from_pubsub_loses_nothing_and_acks_what_it_handed_on(runner_options, pubsub, devices, tmp_path,
                                                                    capsys):
    """Readings published before the relay starts and while it runs, over 6 devices of which the relay's
    credentials know 5; three messages that are not JSON objects. The relay reads for --duration: every
    reading is published once or, the unknown device's, in the dead letters; the malformed messages are
    there with their bytes; the source's check agrees with the sink; it exits 0. Then, past the ack
    deadline, the subscription gives nothing more: every message read was acknowledged."""
    if runner_options:
        require_prism()
    subscription = pubsub
    readings = Readings(f"projects/{PROJECT}/topics/readings", devices)
    malformed = [b'{"productKey": "a1', b"\xff\xfe not UTF-8", b"[1, 2]"]
    with Emulator(devices[:5]) as emulator:
        readings.publish(120)  # before the relay starts
        for data in malformed:
            readings.send_raw(data)
        live = readings.live(lambda: emulator.counters()["messages"], seconds=6)
        status = stream.run(relay_args(emulator, tmp_path, subscription, "--duration", "25", *runner_options))
        live.join(timeout=30)
        messages = emulator.messages()
    out = capsys.readouterr().out
    assert not live.is_alive() and len(readings.published) == 240, "the relay published nothing while readings came"
    assert status == 0, out[-3000:]
    assert sorted(accounted(readings, messages, tmp_path, devices[5])) == sorted(malformed)
    records_read = int(re.findall(r"^records read +([\d,]+)$", out, re.M)[-1].replace(",", ""))
    assert records_read == len(readings.published) + len(malformed)
    assert "RECORDS LOST" not in out and "COUNTED TWICE" not in out, out[-2000:]
    assert redelivered(subscription) == []


def test_relay_stopped_with_ctrl_c_leaves_the_rest_to_the_next_run(pubsub, devices, tmp_path):
    """The relay as a user runs it, with no --duration: Ctrl-C (SIGINT to the whole command, as a
    terminal sends it) stops its pulls, flushes its buffers, and it exits 0. Readings keep coming
    meanwhile and while no relay runs. Started again on the subscription (--duration), it reads what the
    first left: across the two runs every reading published once, none lost, none twice."""
    subscription = pubsub
    readings = Readings(f"projects/{PROJECT}/topics/readings", devices)
    with Emulator(devices[:5]) as emulator:
        readings.publish(60)  # before the relay starts
        live = readings.live(lambda: emulator.counters()["messages"], seconds=12)
        first = relay_stopped_with_ctrl_c(relay_args(emulator, tmp_path, subscription),
                                          ready=lambda: emulator.counters()["messages"], settle=4, timeout=120)
        assert first.returncode == 0, (first.stdout[-2000:], first.stderr[-3000:])
        assert "stopping: reading no more" in first.stderr
        stopped_with = len(emulator.messages())
        status = stream.run(relay_args(emulator, tmp_path, subscription, "--duration", "20"))
        live.join(timeout=30)
        messages = emulator.messages()
    assert status == 0
    assert not live.is_alive() and len(messages) > stopped_with > 0
    assert accounted(readings, messages, tmp_path, devices[5]) == []
    assert redelivered(subscription) == []


def test_the_reader_gives_each_message_at_its_publish_time_and_stops_when_told(pubsub, tmp_path):
    """The relay's reader on the local runner: each message's data at its publish time (the relay's event
    time unless --timestamp_field), read for 3 s and then ended, the job with it."""
    subscription = pubsub
    readings = Readings(f"projects/{PROJECT}/topics/readings", make_devices(2, product_key="a1T", prefix="t-"))
    before = time.time()
    readings.publish(5)
    after = time.time()
    time.sleep(2)  # so that the time of a pull could not pass for the publish time

    def at_publish_time(stamped):
        assert sorted(json.loads(data)["seq"] for data, _ in stamped) == list(range(5))
        assert all(before - 0.1 <= at <= after + 0.1 for _, at in stamped), (before, after, stamped)

    with beam.Pipeline(options=PipelineOptions([f"--runner={LOCAL_RUNNER}", "--streaming"])) as pipeline:
        stamped = (pipeline | pubsub_source.ReadPubSubMessages(subscription, str(tmp_path / "stop"), 3)
                   | beam.Map(lambda data, at=beam.DoFn.TimestampParam: (data, at.micros / 1e6)))
        assert_that(stamped, at_publish_time)


def test_the_relay_refuses_a_subscription_that_is_not_there_in_one_line(pubsub, devices, tmp_path, capsys):
    emulator_host = os.environ["PUBSUB_EMULATOR_HOST"]
    status = stream.main(["--endpoint", "https://127.0.0.1:9", "--credentials", str(tmp_path / "credentials.json"),
                          "--dead-letter", str(tmp_path / "failed"),
                          "--input_subscription", f"projects/{PROJECT}/subscriptions/missing"])
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: Pub/Sub has no subscription projects/{PROJECT}/subscriptions/missing (the server at {emulator_host})")
