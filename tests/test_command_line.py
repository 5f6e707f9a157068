"""The pipelines' command line as a user meets it: mistakes caught before the run starts, each in one
line; input formats; the retry options; what a run that read nothing or cannot reach the platform says.

Runs the real command lines (`python -m pipelines.backfill ...`) against the emulator over TLS.
"""
import csv
import json
import os
import shutil
import subprocess
import sys

import fastavro
import pyarrow
import pyarrow.parquet
import pytest

from connector import Reason, get_encoder
from connector.emulator import Emulator
from pipelines import backfill, dead_letters, options, sample_data
from pipelines.runners.tools import free_port
from pipelines.summary import HINTS, summary_table

from conftest import reset_around

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = [f"--runner={options.LOCAL_RUNNER}"]
JSONL = get_encoder("jsonl")
DEVICE = sample_data.PRODUCT_KEY, "meter-00000"
NOT_FOUND = "endpoint_not_found"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return sample_data.generate(str(tmp_path_factory.mktemp("sample")), devices=3, days=1, interval_minutes=240)


@pytest.fixture(scope="module")
def platform(sample):
    with Emulator(sample.devices_file) as running:
        yield running


@pytest.fixture
def emulator(platform):
    yield from reset_around(platform)


def command(program, *argv, cwd=REPO):
    """Runs `python -m pipelines.<program> argv` as a user would; the finished process."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", f"pipelines.{program}", *argv], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def sink_args(sample, emulator, dead_letter, credentials=None, endpoint=None):
    return ["--endpoint", endpoint or emulator.endpoint, "--ca-file", emulator.ca_file,
            "--credentials", credentials or sample.credentials_file, "--dead-letter", str(dead_letter)]


def assert_one_line_error(done, *words):
    """Exit 2 and a single line on stderr naming the problem: no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]


def readings(count=3, device=DEVICE):
    return [{"productKey": device[0], "deviceName": device[1], "ts": 1_700_000_000_000 + i,
             "temperature": 20.5 + i, "label": f"00{i}"} for i in range(count)]


def write_avro(path, records):
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "productKey", "type": "string"}, {"name": "deviceName", "type": "string"},
        {"name": "ts", "type": "long"}, {"name": "temperature", "type": "double"}, {"name": "label", "type": "string"}]}
    with open(path, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), records)


def published(emulator):
    return [record for message in emulator.messages() for record in JSONL.decode(message["payload"])]


# 20: HTTP 404 is permanent.

def test_http_404_fails_at_once_with_a_reason_and_a_hint(sample, emulator, tmp_path):
    write_avro(tmp_path / "in.avro", readings())
    dead_letter = tmp_path / "failed"
    done = command("backfill", "--input", str(tmp_path / "in.avro"),
                   *sink_args(sample, emulator, dead_letter, endpoint=emulator.endpoint + "/no/such/path"), *LOCAL)
    assert done.returncode == 0, done.stderr[-3000:]
    failed = dead_letters.read_all(str(dead_letter))
    assert [(row["reason"], row["attempts"]) for row in failed] == [(NOT_FOUND, 1)] * 3
    assert "404" in failed[0]["message"]
    assert f"  {NOT_FOUND}: {HINTS[NOT_FOUND]}" in done.stdout


# 21: an unreachable endpoint, and the retry options.

def test_an_unreachable_endpoint_is_reported_while_retrying(sample, emulator, tmp_path):
    write_avro(tmp_path / "in.avro", readings())
    dead_letter = tmp_path / "failed"
    closed = f"https://127.0.0.1:{free_port()}"
    done = command("backfill", "--input", str(tmp_path / "in.avro"),
                   *sink_args(sample, emulator, dead_letter, endpoint=closed), "--retry-max-seconds", "3", *LOCAL)
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "cannot reach" in line]
    assert len(warnings) == 1 and closed in warnings[0] and "refused" in warnings[0], done.stderr[-3000:]
    assert [row["reason"] for row in dead_letters.read_all(str(dead_letter))] == [Reason.RETRIES_EXHAUSTED] * 3


def test_max_attempts_bounds_the_attempts(sample, emulator, tmp_path):
    emulator.set_faults(http_status_rate={"503": 1})
    write_avro(tmp_path / "in.avro", readings(1))
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(tmp_path / "in.avro"), *sink_args(sample, emulator, dead_letter),
                         "--max-attempts", "2", *LOCAL]) == 0
    assert [row["attempts"] for row in dead_letters.read_all(str(dead_letter))] == [2]


# 22: a hint for every reason.

def test_every_reason_has_a_hint_in_the_summary():
    counters = {f"failed_{reason}": 1 for reason in Reason.ALL}
    lines = summary_table(counters, 1.0)
    for reason in Reason.ALL:
        assert HINTS.get(reason), reason
        assert f"  {reason}: {HINTS[reason]}" in lines
