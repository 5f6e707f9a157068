"""Beam's real runners in the tests: whether each can run here, and the accounting of a relay run.

A runner test that cannot run (no java, mvn or go; nothing fetched) skips with one line naming what is
missing. With IOT_RUNNER_TESTS=required (set by .ci/run) it fails instead, so CI never passes by skipping.
"""
import collections
import os
import signal
import subprocess
import sys
import time

import pytest

from connector import FailedRecord, FileCredentials, get_encoder
from connector.emulator.accounting import account
from pipelines import dead_letters, fleet, stream
from pipelines.runners import flink_job_server, prism, sql_expansion, tools

REQUIRED = os.environ.get("IOT_RUNNER_TESTS") == "required"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSONL = get_encoder("jsonl")


def unavailable(why):
    """Skip the test, or fail it where runner tests are required."""
    if REQUIRED:
        pytest.fail(f"{why} (IOT_RUNNER_TESTS=required)", pytrace=False)
    pytest.skip(why)


def require_flink():
    if not os.path.exists(flink_job_server.jar_path()):
        if not flink_job_server.served():  # a skip even where runner tests are required: nothing to fetch
            pytest.skip(f"Flink: {flink_job_server.not_served()}")
        missing = tools.missing("java", "mvn")
        unavailable(f"Flink: {' and '.join(missing)} not on PATH" if missing else
                    "Flink: job server not fetched (python -m pipelines.runners fetch flink)")
    if tools.missing("java"):
        unavailable("Flink: java not on PATH")


def require_sql():
    """Beam SQL on embedded Flink: the Flink job server and Beam SQL's expansion service."""
    require_flink()
    if not os.path.exists(sql_expansion.jar_path()):
        unavailable("Beam SQL: expansion service not fetched (python -m pipelines.runners fetch sql)")


def require_prism():
    if not os.path.exists(prism.archive_path()):
        unavailable("Prism: go not on PATH" if tools.missing("go") else
                    "Prism: not fetched (python -m pipelines.runners fetch prism)")


def as_failed(row):
    """A dead-letter row as the FailedRecord it was written from."""
    return FailedRecord(dead_letters.original_record(row), row["product_key"], row["device_name"], row["topic"],
                        row["reason"], row["code"], row["message"], row["attempts"])


class RelayRun:
    """What `python -m pipelines.stream` did with a simulated fleet: its input rebuilt exactly, what the
    emulator stored, the dead letters, and the accounting of the three."""

    def __init__(self, status, emulator, credentials, dead_letter, devices, rate, seconds):
        self.status = status
        self.messages = emulator.messages()
        self.failed = [as_failed(row) for row in dead_letters.read_all(dead_letter)]
        names = [tuple(device) for device in sorted(FileCredentials(credentials).secrets())[:devices]]
        self.inputs = _fleet_readings(names, rate, seconds, self.messages, self.failed)
        self.accounting = account(self.inputs, self.messages, self.failed, JSONL)

    def unaccounted(self):
        """The seq of each input reading neither delivered nor failed (ranges, for a readable message)."""
        seen = {r["seq"] for m in self.messages for r in JSONL.decode(m["payload"])}
        seen |= {failed.record["seq"] for failed in self.failed}
        lost = sorted(r["seq"] for r in self.inputs if r["seq"] not in seen)
        ranges = []
        for seq in lost:
            if ranges and ranges[-1][1] == seq - 1:
                ranges[-1][1] = seq
            else:
                ranges.append([seq, seq])
        return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)

    def readings_per_message(self):
        return sum(len(JSONL.decode(m["payload"])) for m in self.messages) / max(1, len(self.messages))

    def waits(self):
        """Seconds from each reading's time to the arrival of the first message that carried it, sorted."""
        return waits(self.inputs, first_arrivals(self.messages))


def run_relay(emulator, credentials, dead_letter, runner_options, *, devices, rate, seconds, delay):
    """Run the relay's command line on a runner against the emulator, once; its RelayRun. A run whose
    readings never reached the sink is a failure like any other loss (the accounting says so)."""
    status = stream.run(["--endpoint", emulator.endpoint, "--ca-file", emulator.ca_file, "--credentials",
                         credentials, "--dead-letter", dead_letter, "--devices", str(devices), "--rate", str(rate),
                         "--duration", str(seconds), "--max-buffering-delay", str(delay), *runner_options])
    return RelayRun(status, emulator, credentials, dead_letter, devices, rate, seconds)


def relay_stopped_with_ctrl_c(argv, ready, settle, timeout=240):
    """`python -m pipelines.stream ARGV` as a user runs it, sent Ctrl-C (SIGINT to every process of the
    command, as a terminal sends it) `settle` seconds after ready() came true (or it ended, or `timeout`
    seconds passed); its CompletedProcess, output as text."""
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    relay = subprocess.Popen([sys.executable, "-m", "pipelines.stream", *argv], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline and relay.poll() is None:
            time.sleep(0.5)
        time.sleep(settle)
        os.killpg(relay.pid, signal.SIGINT)
        out, err = relay.communicate(timeout=180)
    finally:
        if relay.poll() is None:
            os.killpg(relay.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(relay.args, relay.returncode, out, err)


def copies_by_seq(messages):
    """How many times the platform stored each reading (by its seq), over JSON-lines messages."""
    return collections.Counter(r["seq"] for m in messages for r in JSONL.decode(m["payload"]))


def first_arrivals(messages):
    """When the platform first stored each reading (by its seq), in seconds."""
    arrived = {}
    for message in messages:
        at = message["receivedAt"] / 1000
        for reading in JSONL.decode(message["payload"]):
            arrived[reading["seq"]] = min(arrived.get(reading["seq"], at), at)
    return arrived


def waits(readings, arrived):
    """Seconds from each reading's time to its first arrival, sorted (readings that arrived)."""
    return sorted(arrived[r["seq"]] - r["ts"] / 1000 for r in readings if r["seq"] in arrived)


def resent_though_sent_before(messages, checkpoint_time):
    """The seqs stored more than once whose first copy arrived before `checkpoint_time` (seconds), sorted.

    A job restored from a checkpoint sends again only what it had not sent when the checkpoint was taken
    (held in the sink's state, or read again from the source's offsets), so after a restore this is empty,
    whenever those readings were produced: a reading produced long before can be read late."""
    copies = copies_by_seq(messages)
    first = first_arrivals(messages)
    return sorted(seq for seq, count in copies.items() if count > 1 and first[seq] < checkpoint_time)


def _fleet_readings(names, rate, seconds, messages, failed):
    """The readings the fleet emitted: reading n is a function of n and the start, which any copy of
    any reading gives (its ts less n's offset)."""
    count = max(1, int(rate * seconds))
    some = (next((r for m in messages for r in JSONL.decode(m["payload"])), None)
            or (failed[0].record if failed else None))
    assert some is not None, f"the relay lost all {count} readings: it delivered nothing and failed nothing"
    start_ms = some["ts"] - (fleet.due_ms(0, rate, some["seq"]))
    return [fleet.reading(names, start_ms, rate, n) for n in range(count)]

