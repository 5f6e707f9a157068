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


# 17, 19: checked before submitting, one line each.

def test_an_http_endpoint_fails_at_launch_in_one_line(sample, tmp_path):
    done = command("backfill", "--input", sample.input_pattern, "--endpoint", "http://127.0.0.1:1",
                   "--credentials", sample.credentials_file, "--dead-letter", str(tmp_path / "f"), *LOCAL)
    assert_one_line_error(done, "--endpoint", "https://")


def test_a_missing_credentials_file_is_named_in_one_line(sample, emulator, tmp_path):
    missing = str(tmp_path / "no-such-credentials.json")
    done = command("backfill", "--input", sample.input_pattern,
                   *sink_args(sample, emulator, tmp_path / "f", credentials=missing), *LOCAL)
    assert_one_line_error(done, "--credentials", missing)
    assert emulator.counters()["messages"] == 0


def test_a_credentials_csv_without_its_header_says_so_without_the_secret(sample, emulator, tmp_path):
    headless = tmp_path / "credentials.csv"
    headless.write_text(f"{DEVICE[0]},{DEVICE[1]},s3cretValue\n")
    done = command("backfill", "--input", sample.input_pattern,
                   *sink_args(sample, emulator, tmp_path / "f", credentials=str(headless)), *LOCAL)
    assert_one_line_error(done, str(headless), "header", "productKey,deviceName,deviceSecret")
    assert "s3cretValue" not in done.stderr


def test_whitespace_around_credentials_fields_is_trimmed(sample, emulator, tmp_path):
    secrets = {(d["productKey"], d["deviceName"]): d["deviceSecret"] for d in json.load(open(sample.devices_file))}
    spaced = tmp_path / "credentials.csv"
    spaced.write_text("productKey, deviceName, deviceSecret\n"
                      f" {DEVICE[0]} , {DEVICE[1]},  {secrets[DEVICE]} \n")
    write_avro(tmp_path / "in.avro", readings())
    dead_letter = tmp_path / "failed"
    done = command("backfill", "--input", str(tmp_path / "in.avro"),
                   *sink_args(sample, emulator, dead_letter, credentials=str(spaced)), *LOCAL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert published(emulator) == readings()
    assert dead_letters.read_all(str(dead_letter)) == []


def test_an_input_glob_matching_nothing_is_one_line(sample, emulator, tmp_path):
    pattern = str(tmp_path / "nothing-*.avro")
    done = command("backfill", "--input", sample.input_pattern, pattern, *sink_args(sample, emulator, tmp_path / "f"),
                   *LOCAL)
    assert_one_line_error(done, pattern, "no file")


def test_verbose_shows_the_traceback(sample, emulator, tmp_path):
    done = command("backfill", "--input", str(tmp_path / "nothing-*.avro"),
                   *sink_args(sample, emulator, tmp_path / "f"), "--verbose", *LOCAL)
    assert done.returncode == 2 and "Traceback" in done.stderr


def test_relative_paths_work_on_a_portable_runner(sample, emulator, tmp_path, worker_pool, monkeypatch):
    for path in sorted(os.listdir(os.path.dirname(sample.input_pattern))):
        if path.startswith("readings-"):
            shutil.copy(os.path.join(os.path.dirname(sample.input_pattern), path), tmp_path)
    monkeypatch.chdir(tmp_path)
    status = backfill.run(["--input", "readings-*.avro", "--dead-letter", "dead/failed", "--endpoint",
                           emulator.endpoint, "--ca-file", emulator.ca_file, "--credentials",
                           sample.credentials_file, "--strict", *worker_pool.options])
    assert status == 3  # the sample's bad records failed: they were read
    failed = dead_letters.read_all(str(tmp_path / "dead" / "failed"))
    assert len(failed) == sum(sample.expected_failures.values())
    assert len(published(emulator)) + len(failed) == sample.records


# 18: a run that read nothing.

def test_a_run_that_read_no_record_exits_non_zero_and_says_why(sample, emulator, tmp_path):
    empty = tmp_path / "empty.avro"
    write_avro(empty, [])
    done = command("backfill", "--input", str(empty), *sink_args(sample, emulator, tmp_path / "f"), *LOCAL)
    assert done.returncode == 4, done.stderr[-3000:]
    assert "read 0 records" in done.stderr and str(empty) in done.stderr


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


# 23: input formats.

def test_csv_input_with_typed_columns(sample, emulator, tmp_path):
    path = tmp_path / "readings.csv"
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, ["productKey", "deviceName", "ts", "temperature", "label"])
        writer.writeheader()
        writer.writerows(readings())
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(path), *sink_args(sample, emulator, dead_letter), "--order-by", "ts",
                         *LOCAL]) == 0
    assert published(emulator) == readings()  # numbers as numbers, "000" stays text
    emulator.reset()
    assert backfill.run(["--input", str(path), *sink_args(sample, emulator, dead_letter), "--order-by", "ts",
                         "--csv-types", "label=int,temperature=str", *LOCAL]) == 0
    assert published(emulator) == [dict(r, label=int(r["label"]), temperature=str(r["temperature"]))
                                   for r in readings()]


def test_jsonl_and_parquet_input(sample, emulator, tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in readings(2)))
    parquet = tmp_path / "b.parquet"
    later = [dict(r, ts=r["ts"] + 10) for r in readings(2)]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(later), str(parquet))
    assert backfill.run(["--input", str(jsonl), str(parquet), *sink_args(sample, emulator, tmp_path / "f"),
                         "--order-by", "ts", *LOCAL]) == 0
    assert published(emulator) == readings(2) + later


def test_an_explicit_input_format_wins_over_the_extension(sample, emulator, tmp_path):
    path = tmp_path / "readings.txt"
    path.write_text("".join(json.dumps(r) + "\n" for r in readings(2)))
    assert backfill.run(["--input", str(path), "--input-format", "jsonl", *sink_args(sample, emulator, tmp_path / "f"),
                         *LOCAL]) == 0
    assert published(emulator) == readings(2)


# 24: Beam-style spellings of our own options.

def test_underscore_spellings_of_our_options_are_ours(sample, emulator, tmp_path):
    write_avro(tmp_path / "in.avro", list(reversed(readings())))
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(tmp_path / "in.avro"), "--endpoint", emulator.endpoint, "--ca_file",
                         emulator.ca_file, "--credentials", sample.credentials_file, f"--dead_letter={dead_letter}",
                         "--order_by", "ts", *LOCAL]) == 0
    assert published(emulator) == readings()
    assert dead_letters.read_all(str(dead_letter)) == []

