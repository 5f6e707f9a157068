"""Google's Pub/Sub test server as users run it (`python -m pipelines.runners fetch pubsub`, `pubsub start
--topic T --subscription S`, `pubsub status`, `pubsub stop`): google-cloud-pubsub publishes to it and
pulls back what it published, with PUBSUB_EMULATOR_HOST as `start` printed it."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from pipelines.runners import pubsub_server
from runner_support import unavailable

pytestmark = pytest.mark.runners
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runners(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.runners", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_pubsub_start_serves_a_topic_and_subscription_until_stop(tmp_path, monkeypatch):
    if not os.path.exists(pubsub_server.binary_path()):
        unavailable("Pub/Sub: the test server is not built (python -m pipelines.runners fetch pubsub)")
    if importlib.util.find_spec("google.cloud.pubsub_v1") is None:
        unavailable("Pub/Sub: google-cloud-pubsub is not installed (pip install 'apache-beam[gcp]')")
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
