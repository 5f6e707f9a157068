"""The relay reading a real Kafka broker (python -m pipelines.runners kafka) on embedded Flink, through
the expansion service `fetch kafka` assembles: readings produced before and while the relay runs, on a
topic of 2 partitions, at parallelism 1 and 2, ended by --duration; every reading stored, the malformed values
and unknown devices' readings in the dead letters, the accounting complete."""
import json
import os
import re
import threading
import time

import pytest

from connector.emulator import Emulator, make_devices
from connector.emulator.accounting import account
from pipelines import dead_letters, stream
from pipelines.runners import kafka_broker, kafka_expansion
from runner_support import JSONL, as_failed, require_flink, unavailable

pytestmark = pytest.mark.runners


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


def reading(device, n):
    return {"productKey": device["productKey"], "deviceName": device["deviceName"], "seq": n,
            "ts": int(time.time() * 1000)}


@pytest.mark.parametrize("parallelism", [1, 2])
def test_relay_from_kafka_on_embedded_flink_loses_nothing(broker, tmp_path, capsys, parallelism):
    """At parallelism 1 one source task reads both partitions: a reader of two partitions read one
    record of each and no more (2 of 1,000, exit 0) until each partition got a reader of its own."""
    from kafka import KafkaProducer  # the test extras' client: producing is the test's part, not the relay's

    devices = make_devices(10, product_key="a1KafkaRelay", prefix="k-")
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps(devices[:9]))  # the last device is unknown to the relay
    topic, produced = f"readings-{parallelism}", []
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)

    def produce(count):
        for _ in range(count):
            record = reading(devices[len(produced) % len(devices)], len(produced))
            produced.append(record)
            producer.send(topic, json.dumps(record).encode())
        producer.flush()

    produce(100)  # before the relay starts: a new group starts at the earliest offset
    malformed = [b'{"productKey": "a1', b"\xff\xfe not UTF-8", b"[1, 2]"]
    for value in malformed:
        producer.send(topic, value)
    producer.flush()
    stop = threading.Event()
    live = threading.Thread(target=lambda: [produce(5) for _ in iter(lambda: stop.wait(0.1), True)], daemon=True)
    live.start()
    threading.Timer(8, stop.set).start()  # while the relay runs, and done before its --duration ends
    with Emulator(devices[:9]) as emulator:
        status = stream.run(["--endpoint", emulator.endpoint, "--ca-file", emulator.ca_file,
                             "--credentials", str(credentials), "--dead-letter", str(tmp_path / "dead" / "failed"),
                             "--kafka_bootstrap_servers", broker.bootstrap_servers, "--kafka-topic", topic,
                             "--kafka_group", f"test-relay-{parallelism}", "--duration", "25",
                             "--max-buffering-delay", "2",
                             "--runner=FlinkRunner", "--flink_master=[local]", f"--parallelism={parallelism}",
                             "--checkpointing_interval=2000"])
        live.join()
        messages = emulator.messages()
    producer.close()
    failed = [as_failed(row) for row in dead_letters.read_all(str(tmp_path / "dead" / "failed"))]
    out = capsys.readouterr().out
    assert status == 0, out[-2000:]
    result = account(produced, messages, [f for f in failed if isinstance(f.record, dict)], JSONL)
    unknown = sum(1 for r in produced if r["deviceName"] == devices[9]["deviceName"])
    assert result.complete and result.duplicated == 0, result.summary()
    assert result.delivered == len(produced) - unknown and result.failed == {"unknown_device": unknown}, (
        result.summary())
    assert sorted(f.record for f in failed if not isinstance(f.record, dict)) == sorted(malformed)
    read = int(re.findall(r"^records read +([\d,]+)$", out, re.M)[-1].replace(",", ""))
    assert read == len(produced) + len(malformed)  # the summary counts what the relay read, as the check did
