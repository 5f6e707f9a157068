"""Soak: a streaming WriteToIoTPlatform pipeline against a faulty emulator for several minutes.

A simulated fleet (pipelines.fleet, an unbounded splittable source on FnApiRunner) emits readings at a
steady rate; WriteToIoTPlatform(streaming=True) buffers and publishes them to an emulator that injects
faults all along (30001, 10000, 503, hang-ups before and after storing, latency spikes past the read
timeout, short-lived tokens) and throttles the account (40000). Every input record and every failed
record is written down as it passes, so at the end the accounting check can say what was delivered,
duplicated, failed and lost (must be 0).

Prints and writes (JSON) the faults injected, records, lost, duplicates, the 40000 share, the RSS of the
pipeline process and of the emulator at start and end, and throughput per minute. Only 127.0.0.1 is
contacted; the run is bounded by --minutes (plus a drain deadline).

    python benchmarks/soak.py [--minutes 3] [--devices 40] [--rate 150] [--out soak.json]
"""
import argparse
import base64
import collections
import json
import os
import pickle
import sys
import tempfile
import threading
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

import connector  # noqa: E402
from connector.beam.encoders import get_encoder  # noqa: E402
from connector.emulator import Emulator, make_devices  # noqa: E402
from connector.emulator.accounting import account  # noqa: E402
from pipelines import fleet  # noqa: E402
from pipelines.options import LOCAL_RUNNER  # noqa: E402
from pipelines.summary import sink_counters  # noqa: E402

FAULTS = {
    "error_rate": {"30001": 0.02, "10000": 0.01, "20003": 0.005},
    "http_status_rate": {"503": 0.01, "502": 0.005},
    "drop_rate": 0.005,
    "drop_after_store_rate": 0.005,
    "latency_spike": {"rate": 0.005, "ms": 1500},
}
READ_TIMEOUT = 1.0  # below the spikes: a spike on an accepted publish is an ambiguous failure


class _AppendLines(beam.DoFn):
    """Writes each element (pickled, base64) as a line of a local file: FnApiRunner runs in-process."""

    _locks = collections.defaultdict(threading.Lock)

    def __init__(self, path):
        self._path = path

    def process(self, value):
        line = base64.b64encode(pickle.dumps(value)).decode() + "\n"
        with self._locks[self._path], open(self._path, "a", encoding="ascii") as out:
            out.write(line)


def _read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="ascii") as handle:
        return [pickle.loads(base64.b64decode(line)) for line in handle if line.strip()]


def _rss_mb(pid=None):
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def run(args):
    work = tempfile.mkdtemp(prefix="iot-soak-")
    devices = make_devices(args.devices, product_key="pkSoak00001", prefix="soak-")
    credentials = os.path.join(work, "credentials.json")
    with open(credentials, "w", encoding="utf-8") as out:
        json.dump(devices, out)
    inputs, failed_path = os.path.join(work, "inputs"), os.path.join(work, "failed")
    seconds = args.minutes * 60
    with Emulator(devices, token_ttl=args.token_ttl, account_qps=args.account_qps) as emulator:
        emulator.set_faults(**FAULTS, seed=args.seed)
        pipeline = beam.Pipeline(options=PipelineOptions([f"--runner={LOCAL_RUNNER}", "--streaming"]))
        readings = pipeline | "Fleet" >> fleet.SimulatedFleet(
            [(d["productKey"], d["deviceName"]) for d in devices], args.rate, seconds)
        readings | "KeepInputs" >> beam.ParDo(_AppendLines(inputs))
        result = readings | "Publish" >> connector.WriteToIoTPlatform(
            emulator.endpoint, credentials, ca_file=emulator.ca_file, streaming=True,
            max_buffering_delay=args.max_buffering_delay, read_timeout=READ_TIMEOUT,
            retry=connector.RetryPolicy(max_attempts=30, max_seconds=300))
        result.failed | "KeepFailed" >> beam.ParDo(_AppendLines(failed_path))
        rss = {"pipeline_start_mb": _rss_mb(), "emulator_start_mb": _rss_mb(emulator.pid)}
        samples = []
        done = threading.Event()

        def sample():
            started = time.monotonic()
            while not done.wait(15):
                samples.append({"t": round(time.monotonic() - started), "pipeline_mb": _rss_mb(),
                                "emulator_mb": _rss_mb(emulator.pid)})
                if time.monotonic() - started > seconds + args.drain_seconds:
                    fleet.stop()  # bounded in time whatever happens: stop the source, let buffers drain
        sampler = threading.Thread(target=sample, daemon=True)
        started = time.time()
        sampler.start()
        outcome = pipeline.run()
        outcome.wait_until_finish()
        elapsed = time.time() - started
        done.set()
        sampler.join()
        rss.update(pipeline_end_mb=_rss_mb(), emulator_end_mb=_rss_mb(emulator.pid))
        counters = sink_counters(outcome)
        messages = emulator.messages()
        emulator_counters = emulator.counters()
    records, failed = _read_lines(inputs), _read_lines(failed_path)
    encoder = get_encoder("jsonl")
    accounting = account(records, messages, failed, encoder)
    per_minute = collections.Counter()
    for message in messages:
        per_minute[int((message["receivedAt"] / 1000 - started) // 60)] += len(encoder.decode(message["payload"]))
    topic = emulator_counters["requests"].get("topic", {})
    auth = emulator_counters["requests"].get("auth", {})
    topic_requests = sum(topic.values())
    report = {
        "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]),
        "minutes": args.minutes, "devices": args.devices, "rate_per_second": args.rate,
        "elapsed_seconds": round(elapsed, 1),
        "faults_configured": FAULTS, "read_timeout": READ_TIMEOUT, "token_ttl": args.token_ttl,
        "account_qps": args.account_qps,
        "faults_injected": emulator_counters["faults"],
        "topic_replies": topic, "auth_replies": auth,
        "records": len(records), "delivered": accounting.delivered, "lost": accounting.lost,
        "unexpected": accounting.unexpected, "duplicated_records": accounting.duplicated,
        "failed_by_reason": accounting.failed, "delivered_and_failed": accounting.delivered_and_failed,
        "messages_stored": len(messages),
        "share_40000": round(topic.get("40000", 0) / topic_requests, 4) if topic_requests else 0.0,
        "rss": rss, "rss_samples": samples,
        "records_per_minute": [per_minute[m] for m in sorted(per_minute)],
        "sink_counters": counters,
    }
    print(json.dumps(report, indent=2))
    print(accounting.summary(), file=sys.stderr)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
    return 0 if accounting.complete else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="how long the fleet emits (default 3)")
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--rate", type=float, default=150.0, help="readings per second, all devices together")
    parser.add_argument("--max-buffering-delay", type=float, default=2.0)
    parser.add_argument("--account-qps", type=float, default=40.0,
                        help="the emulator's account limit, low so that 40000 happens (default 40)")
    parser.add_argument("--token-ttl", type=float, default=20.0, help="tokens expire during the run")
    parser.add_argument("--drain-seconds", type=float, default=120.0, help="extra time allowed to drain")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="write the report as JSON here")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
