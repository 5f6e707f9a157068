"""Readings produced to a real Kafka broker (python -m pipelines.runners kafka) for the relay's tests and
benchmark: each reading with the partition and offset Kafka gave it, production at a steady rate on a
thread while the relay runs, where a consumer group stands, and when each reading reached the platform.
"""
import json
import os
import threading
import time

import pytest
from kafka import KafkaProducer  # the test extras' client: producing is the tests' part

from pipelines.runners import kafka_broker, kafka_expansion
from runner_support import require_flink, unavailable


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A broker of `kafka start --partitions 2`, stopped at the end."""
    require_flink()
    if not os.path.exists(os.path.join(kafka_broker.lib(), f"kafka_{kafka_broker.SCALA}-{kafka_broker.VERSION}.jar")) \
            or not os.path.exists(kafka_expansion.jar_path()):
        unavailable("Kafka: not fetched (python -m pipelines.runners fetch kafka)")
    workdir = tmp_path_factory.mktemp("kafka")
    os.chmod(workdir, 0o700)
    with kafka_broker.KafkaBroker(str(workdir)).start(partitions=2) as running:
        yield running


class Readings:
    """Readings of `devices` (round robin) produced to `topic`, numbered by `seq`, stamped with their
    produce time in `ts` (epoch ms); `where[seq]` is the (partition, offset) Kafka gave each."""

    def __init__(self, bootstrap_servers, topic, devices):
        self.topic, self.devices = topic, devices
        self.produced, self.where = [], {}
        self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=5)
        self._lock = threading.Lock()

    def produce(self, count):
        """Send `count` readings and wait until Kafka has them all."""
        sent = []
        with self._lock:
            for _ in range(count):
                device = self.devices[len(self.produced) % len(self.devices)]
                reading = {"productKey": device["productKey"], "deviceName": device["deviceName"],
                           "seq": len(self.produced), "ts": int(time.time() * 1000)}
                self.produced.append(reading)
                sent.append((reading["seq"], self._producer.send(self.topic, json.dumps(reading).encode())))
            self._producer.flush()
        for seq, future in sent:
            metadata = future.get(timeout=30)
            self.where[seq] = (metadata.partition, metadata.offset)

    def send_raw(self, value, key=None):
        """A record of the given value (bytes, or None with a key: a tombstone), as it is."""
        self._producer.send(self.topic, value, key=key).get(timeout=30)

    def live(self, per_tick, until, tick=0.1):
        """A started thread producing `per_tick` readings every `tick` seconds until `until()` is true."""
        def run():
            while not until():
                self.produce(per_tick)
                time.sleep(tick)
        thread = threading.Thread(target=run, name="produce", daemon=True)
        thread.start()
        return thread

    def produced_after(self, at):
        """The readings produced after `at` (epoch seconds)."""
        return [reading for reading in self.produced if reading["ts"] / 1000 > at]

    def close(self):
        self._producer.close()


def committed(bootstrap_servers, group, topic):
    """{partition: the group's committed offset} on `topic` (none where it has committed nothing), as the
    relay itself asks (kafka-python's admin API changed its names between releases)."""
    marks = kafka_expansion.offsets(bootstrap_servers, topic, {"group.id": group})
    return {partition: mark["committed"] for partition, mark in marks.items() if mark["committed"] is not None}
