"""Real files through the backfill's command line, as a user runs it: Parquet, Avro, JSON lines and CSV
holding the types sensor history really has (real_data_support). Every run ends in the accounting check
and a comparison of every stored value with the README's value table; on FnApiRunner, embedded Flink
and Prism."""
import collections
import io
import json

import fastavro
import pytest

from connector import Reason, get_encoder
from pipelines import backfill, dead_letters, dry_run
from real_data_support import AVRO_SCHEMA, RealFiles, check_backfill, seq_of
from runner_support import require_flink, require_prism
from test_pipelines import LOCAL, emulator, platform, sample, sink_args  # noqa: F401

JSONL = get_encoder("jsonl")
RUNNERS = {"FlinkRunner": (require_flink, ["--runner=FlinkRunner", "--flink_master=[local]", "--parallelism=2"]),
           "PrismRunner": (require_prism, ["--runner=PrismRunner"])}


@pytest.fixture
def files(tmp_path, sample):
    with open(sample.devices_file) as handle:
        good = [(d["productKey"], d["deviceName"]) for d in json.load(handle)[:3]]
    return RealFiles(tmp_path, good)


def _backfill(files, sample, emulator, dead_letter, *more):
    return backfill.run(["--input", *files.inputs, "--csv-types", files.csv_types,
                         *sink_args(sample, emulator, dead_letter), *more])


def test_a_backfill_of_real_files_stores_every_value_as_the_readme_says(files, sample, emulator, tmp_path, capsys):
    dead_letter = tmp_path / "dead" / "failed"
    assert _backfill(files, sample, emulator, dead_letter, *LOCAL) == 0
    failed = check_backfill(files, emulator.messages(), dead_letters.read_all(str(dead_letter)), JSONL)
    # Each dead letter says why, naming the field where there is one.
    messages = {seq: row["message"] for seq, row in failed.items()}
    assert messages[103] == "NaN/Infinity cannot be encoded as JSON (field temperature)"
    assert messages[403].startswith("nested deeper than 254 levels (or circular) (field deep.0.0.0.(")
    assert messages[404] == "line is nested deeper than Python's JSON reader goes"
    assert messages[406] == "line is a JSON list, not an object"
    assert "line 5: column 'at': 'yesterday' is not timestamp" in messages[303]
    assert "column 'kwh': 'a lot' is not decimal" in messages[304]
    assert f"records read{files.records():>26,}" in capsys.readouterr().out


def test_the_dry_run_fails_what_the_run_fails(files, sample, emulator, tmp_path):
    plan = tmp_path / "plan.json"
    assert backfill.run(["--input", *files.inputs, "--csv-types", files.csv_types, "--credentials",
                         sample.credentials_file, "--plan", "--plan-output", str(plan), *LOCAL]) == 0
    total = dry_run.totals(dry_run.read_plan(str(plan)))
    assert total["records"] == files.records()
    assert total["failed"] == dict(collections.Counter(files.failures.values()))
    assert emulator.counters()["messages"] == 0


def test_avro_logical_types_pass_through_the_avro_encoder(files, sample, emulator, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(AVRO_SCHEMA))
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(files.avro), "--encoder", "avro", "--avro-schema", str(schema),
                         *sink_args(sample, emulator, dead_letter), *LOCAL]) == 0
    stored = [record for message in emulator.messages() for record in fastavro.reader(io.BytesIO(message["payload"]))]
    assert sorted(stored, key=seq_of) == files.avro_records  # timestamps compare as instants
    assert dead_letters.read_all(str(dead_letter)) == []


def test_timestamps_as_epoch_milliseconds_and_a_timestamp_as_the_alink_time(files, sample, emulator, tmp_path):
    dead_letter = tmp_path / "failed"
    assert backfill.run(["--input", str(files.csv), "--csv-types", files.csv_types, "--encoder", "alink-history",
                         "--time-field", "at", "--timestamps", "epoch-ms", *sink_args(sample, emulator, dead_letter),
                         *LOCAL]) == 0
    encoder = get_encoder("alink-history")
    stored = {properties["seq"]["value"]: properties for message in emulator.messages()
              for properties in encoder.decode(message["payload"])}
    assert {seq: properties["seq"]["time"] for seq, properties in stored.items()} == {
        300: 1704067200000, 301: 1704067201500, 302: 1704067202000}
    assert stored[300]["kwh"] == {"value": 12.34, "time": 1704067200000}
    assert sorted(row["reason"] for row in dead_letters.read_all(str(dead_letter))) == [Reason.INVALID_RECORD] * 2


@pytest.mark.runners
@pytest.mark.parametrize("runner", list(RUNNERS))
def test_a_backfill_of_real_files_on_a_runner(runner, files, sample, emulator, tmp_path):
    """The same files on embedded Flink and Prism (LOOPBACK workers): exit 0, and the same values stored."""
    require, options = RUNNERS[runner]
    require()
    dead_letter = tmp_path / "dead" / "failed"
    assert _backfill(files, sample, emulator, dead_letter, *options, "--environment_type=LOOPBACK") == 0
    check_backfill(files, emulator.messages(), dead_letters.read_all(str(dead_letter)), JSONL)
