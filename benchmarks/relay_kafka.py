"""The relay from Kafka: readings per second it sustains, and how long a reading waits from produce to
the platform, on embedded Flink and on a Flink session cluster of 2 TaskManagers, side by side.

    python -m benchmarks.relay_kafka [--rate 400] [--seconds 60] [--devices 50] [--delay 2]
                                     [--scenarios embedded,cluster] [--json PATH]

One broker (`kafka start`'s, 2 partitions) and one emulator on 127.0.0.1 (its per-device and account
limits raised, so throttling is not what is measured). Each scenario relays its own topic with the
README's command (`python -m pipelines.stream --runner=FlinkRunner --kafka_bootstrap_servers ...
--duration`, parallelism 2, LOOPBACK workers) in a child process, while a producer sends readings at
--rate readings/s over --devices devices until --seconds after the first message reached the platform.
The baseline is that offered rate, in the same run: a relay that keeps up delivers it.

Figures, over the readings produced once the relay's first message came (its start-up left out):
sustained readings/s (those readings over the span from the first of them produced to the last of
them delivered), their wait from produce (the reading's ts) to the platform's receipt of the first
message that carried it (median, 99th percentile, max), readings per message, and the accounting:
produced = delivered + waiting in Kafka past the read's end, lost 0.
(Needs `python -m pipelines.runners fetch kafka` and `fetch flink`.)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from kafka import KafkaProducer

from connector import get_encoder
from connector.emulator import Emulator, make_devices
from pipelines.runners import flink_job_server, kafka_broker
from pipelines.runners.flink_cluster import FlinkCluster
from pipelines.runners.tools import free_port

JSONL = get_encoder("jsonl")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Producer(threading.Thread):
    """Readings to `topic` at `rate` per second until `until()`; `produced[seq]` = produce time (s)."""

    def __init__(self, bootstrap_servers, topic, devices, rate, until):
        super().__init__(name=f"produce-{topic}", daemon=True)
        self.topic, self.devices, self.rate, self.until = topic, devices, rate, until
        self.produced = []
        self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=5)

    def run(self):
        started, tick = time.time(), 0.05
        while not self.until():
            due = int((time.time() - started) * self.rate)
            while len(self.produced) < due:
                device = self.devices[len(self.produced) % len(self.devices)]
                now = time.time()
                reading = {"productKey": device["productKey"], "deviceName": device["deviceName"],
                           "seq": len(self.produced), "ts": int(now * 1000), "temperature": 21.5}
                self.produced.append(now)
                self._producer.send(self.topic, json.dumps(reading).encode())
            self._producer.flush()
            time.sleep(tick)
        self._producer.flush()
        self._producer.close()


def percentile(sorted_values, share):
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


def run_scenario(name, master_args, broker, emulator, credentials, devices, args, workdir):
    topic = f"bench-{name}"
    messages_before = len(emulator.messages())
    first = []

    def until():
        if not first and len(emulator.messages()) > messages_before:
            first.append(time.time())
        return bool(first) and time.time() > first[0] + args.seconds

    producer = Producer(broker.bootstrap_servers, topic, devices, args.rate, until)
    producer.start()
    # The relay reads for --duration from its job's start: start-up (15-40 s here) plus the measured span.
    command = [sys.executable, "-m", "pipelines.stream", "--runner=FlinkRunner", *master_args, "--parallelism=2",
               "--kafka_bootstrap_servers", broker.bootstrap_servers, "--kafka_topic", topic,
               "--kafka_group", f"bench-{name}", "--endpoint", emulator.endpoint, "--ca-file", emulator.ca_file,
               "--credentials", credentials, "--dead-letter", os.path.join(workdir, name, "failed"),
               "--max-buffering-delay", str(args.delay), "--duration", str(args.seconds + 60)]
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    relay = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.seconds + 400)
    producer.join(timeout=60)
    arrived = {}
    messages = emulator.messages()[messages_before:]
    for message in messages:
        at = message["receivedAt"] / 1000
        for reading in JSONL.decode(message["payload"]):
            arrived[reading["seq"]] = min(arrived.get(reading["seq"], at), at)
    if relay.returncode != 0 or not first:
        return {"scenario": name,
                "error": f"relay exit {relay.returncode}: {relay.stdout[-1500:]}{relay.stderr[-1500:]}"}
    steady = [seq for seq, at in enumerate(producer.produced) if at >= first[0]]
    delivered = [seq for seq in steady if seq in arrived]
    waits = sorted(arrived[seq] - producer.produced[seq] for seq in delivered)
    span = max(arrived[seq] for seq in delivered) - producer.produced[steady[0]]
    return {"scenario": name, "offered_per_s": args.rate, "produced": len(producer.produced),
            "delivered": len(arrived), "not_delivered": len(producer.produced) - len(arrived),
            "steady_readings": len(steady), "steady_delivered": len(delivered),
            "sustained_per_s": round(len(delivered) / span, 1), "wait_median_s": round(percentile(waits, 0.5), 2),
            "wait_p99_s": round(percentile(waits, 0.99), 2), "wait_max_s": round(waits[-1], 2),
            "readings_per_message": round(sum(len(JSONL.decode(m["payload"])) for m in messages) / len(messages), 1),
            "relay_summary": [line for line in relay.stdout.splitlines() if line.startswith(("records", "Kafka:"))]}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay_kafka", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=400.0, help="offered readings/s (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured span (default %(default)s)")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--delay", type=float, default=2.0, help="--max-buffering-delay (default %(default)s)")
    parser.add_argument("--scenarios", default="embedded,cluster")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    devices = make_devices(args.devices, product_key="a1BenchKafka", prefix="b-")
    report = []
    with tempfile.TemporaryDirectory(prefix="relay-kafka-bench-") as workdir:
        credentials = os.path.join(workdir, "devices.json")
        with open(credentials, "w", encoding="utf-8") as out:
            json.dump(devices, out)
        with kafka_broker.KafkaBroker(os.path.join(workdir, "kafka")).start(partitions=2) as broker, \
                Emulator(devices, device_qps=10_000, account_qps=100_000) as emulator:
            for name in args.scenarios.split(","):
                if name == "embedded":
                    report.append(run_scenario(name, ["--flink_master=[local]"], broker, emulator, credentials,
                                               devices, args, workdir))
                elif name == "cluster":
                    cluster = FlinkCluster(flink_job_server.flink_release(), os.path.join(workdir, "flink"),
                                           free_port(), rpc_port=free_port())
                    with cluster.start(taskmanagers=2):
                        report.append(run_scenario(name, [f"--flink_master={cluster.master}",
                                                          "--environment_type=LOOPBACK"],
                                                   broker, emulator, credentials, devices, args, workdir))
                else:
                    parser.error(f"unknown scenario {name}")
                print(json.dumps(report[-1]), flush=True)
    print(f"\nrelay from Kafka, parallelism 2, {args.devices} devices, offered {args.rate:.0f} readings/s "
          f"(the baseline), delay {args.delay} s, {args.seconds:.0f} s measured")
    print(f"{'scenario':10} {'sustained/s':>12} {'of offered':>10} {'wait p50':>9} {'p99':>7} {'max':>7} "
          f"{'per msg':>8} {'lost':>5}")
    for row in report:
        if "error" in row:
            print(f"{row['scenario']:10} failed: {row['error'][:300]}")
            continue
        print(f"{row['scenario']:10} {row['sustained_per_s']:12,.1f} {row['sustained_per_s'] / args.rate:10.0%} "
              f"{row['wait_median_s']:8.2f}s {row['wait_p99_s']:6.2f}s {row['wait_max_s']:6.2f}s "
              f"{row['readings_per_message']:8.1f} {row['steady_readings'] - row['steady_delivered']:5}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=1)
    return 0 if report and all("error" not in row for row in report) else 1


if __name__ == "__main__":
    sys.exit(main())
