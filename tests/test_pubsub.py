"""Google's Pub/Sub test server as users run it (`python -m pipelines.runners fetch pubsub`, `pubsub start
--topic T --subscription S`, `pubsub status`, `pubsub stop`): google-cloud-pubsub publishes to it and
pulls back what it published, with PUBSUB_EMULATOR_HOST as `start` printed it. And the relay reading a
subscription there (--input_subscription) on Beam's local runner, and on Prism where Beam is new enough
for the streaming sink there: every reading published once or in the dead letters, every message acked.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from connector.emulator import Emulator, make_devices
from connector.emulator.accounting import account
from pipelines import dead_letters, stream
from pipelines.runners import prism, pubsub_server
from runner_support import JSONL, as_failed, require_prism, unavailable

pytestmark = pytest.mark.runners
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


@pytest.mark.parametrize("runner_options", [
    pytest.param([], id="local"),
    pytest.param(["--runner=PrismRunner"], id="prism"),
])
def test_relay_from_pubsub_loses_nothing_and_acks_what_it_handed_on(runner_options, tmp_path, monkeypatch, capsys):
    """Readings published before the relay starts and while it runs, over 6 devices of which the relay's
    credentials know 5; three messages that are not JSON objects. The relay reads for --duration: every
    reading is published once or, the unknown device's, in the dead letters; the malformed messages are
    there with their bytes; the source's check agrees with the sink; it exits 0. Then, past the ack
    deadline, the subscription gives nothing more: every message read was acknowledged."""
    require_pubsub()
    if runner_options:
        require_prism()
        if not prism.streams_in_real_time():
            pytest.skip(f"Prism {prism.BEAM_VERSION} runs the streaming sink's records twice (docs/runners.md)")
    from google.cloud import pubsub_v1

    devices = make_devices(6, product_key="a1PubSubRelay", prefix="p-")
    (tmp_path / "credentials.json").write_text(json.dumps(devices[:5]))
    published, malformed = [], [b'{"productKey": "a1', b"\xff\xfe not UTF-8", b"[1, 2]"]
    with pubsub_server.PubSubServer(str(tmp_path / "pubsub")).start() as server, Emulator(devices[:5]) as emulator:
        subscription = server.create(PROJECT, "readings", "relay")
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.emulator_host)
        publisher = pubsub_v1.PublisherClient()
        topic = publisher.topic_path(PROJECT, "readings")

        def publish(count):
            futures = []
            for _ in range(count):
                device = devices[len(published) % len(devices)]
                reading = {"productKey": device["productKey"], "deviceName": device["deviceName"],
                           "seq": len(published), "ts": int(time.time() * 1000)}
                published.append(reading)
                futures.append(publisher.publish(topic, json.dumps(reading).encode()))
            for future in futures:
                future.result(timeout=30)

        publish(120)  # before the relay starts
        for data in malformed:
            publisher.publish(topic, data).result(timeout=30)
        running = threading.Event()

        def live():  # 20 a second from the first message at the platform, for 6 s
            while not emulator.counters()["messages"]:
                time.sleep(0.1)
            running.set()
            for _ in range(60):
                publish(2)
                time.sleep(0.1)

        publishing = threading.Thread(target=live, name="publish", daemon=True)
        publishing.start()
        status = stream.run(["--endpoint", emulator.endpoint, "--ca-file", emulator.ca_file,
                             "--credentials", str(tmp_path / "credentials.json"),
                             "--dead-letter", str(tmp_path / "dead" / "failed"), "--input_subscription", subscription,
                             "--duration", "25", "--max-buffering-delay", str(DELAY), *runner_options])
        publishing.join(timeout=30)
        messages = emulator.messages()
        time.sleep(ACK_DEADLINE_SECONDS + 1)  # what was read and not acked would come again by now
        subscriber = pubsub_v1.SubscriberClient()
        left = subscriber.pull(subscription=subscription, max_messages=100, timeout=10).received_messages
        subscriber.close()
    out = capsys.readouterr().out
    assert running.is_set() and not publishing.is_alive(), "the relay published nothing while readings came"
    assert status == 0, out[-3000:]
    failed = [as_failed(row) for row in dead_letters.read_all(str(tmp_path / "dead" / "failed"))]
    result = account(published, messages, [f for f in failed if isinstance(f.record, dict)], JSONL)
    unknown = sum(1 for reading in published if reading["deviceName"] == devices[5]["deviceName"])
    assert result.complete and result.duplicated == 0, result.summary()
    assert result.delivered == len(published) - unknown and result.failed == {"unknown_device": unknown}, (
        result.summary())
    assert sorted(f.record for f in failed if not isinstance(f.record, dict)) == sorted(malformed)
    records_read = int(re.findall(r"^records read +([\d,]+)$", out, re.M)[-1].replace(",", ""))
    assert records_read == len(published) + len(malformed)
    assert "RECORDS LOST" not in out and "COUNTED TWICE" not in out, out[-2000:]
    assert [m.message.data for m in left] == []
