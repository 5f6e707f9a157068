"""WriteToIoTPlatform in a Beam YAML pipeline run by apache_beam.yaml.main, against the emulator."""
import glob
import json
import os
import subprocess
import sys
import types

import fastavro
import pytest

from connector.beam.encoders import get_encoder
from connector.emulator.accounting import account
from test_write_batch import credentials, readings  # noqa: F401  (credentials is a fixture)
from write_support import FN_API

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = {"type": "record", "name": "Reading", "fields": [
    {"name": name, "type": kind} for name, kind in [
        ("productKey", "string"), ("deviceName", "string"), ("seq", "long"), ("time", "long"),
        ("temperature", "double"), ("note", "string")]]}

PIPELINE = """
pipeline:
  transforms:
    - type: ReadFromAvro
      config:
        path: {input}
    - type: WriteToIoTPlatform
      input: ReadFromAvro
      config:
        endpoint: {endpoint}
        credentials: {credentials}
        ca_file: {ca_file}
        error_handling:
          output: failed
    - type: WriteToJson
      name: WriteDeadLetters
      input: WriteToIoTPlatform.failed
      config:
        path: {out}/failed
    - type: WriteToJson
      name: WriteReceipts
      input: WriteToIoTPlatform.published
      config:
        path: {out}/published

providers:
  - type: python
    config: {{}}
    transforms:
      WriteToIoTPlatform: connector.beam.yaml_provider.write_to_iot_platform
"""


def run_yaml(pipeline, tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(pipeline)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "apache_beam.yaml.main", f"--yaml_pipeline_file={path}", *FN_API],
                          env=env, capture_output=True, text=True, timeout=300)


def read_lines(prefix):
    return [json.loads(line) for name in sorted(glob.glob(f"{prefix}*"))
            for line in open(name, encoding="utf-8") if line.strip()]


def test_yaml_pipeline_publishes_avro_rows_and_sends_failures_to_its_error_output(
        clean_emulator, devices, credentials, tmp_path):
    good = readings(devices, 60, pad=20)
    bad = [dict(good[0], deviceName="noSuchDevice"), dict(good[1], deviceName="")]
    with open(tmp_path / "readings.avro", "wb") as handle:
        fastavro.writer(handle, SCHEMA, good + bad)
    out = tmp_path / "out"
    done = run_yaml(PIPELINE.format(input=tmp_path / "readings.avro", endpoint=clean_emulator.endpoint,
                                    credentials=credentials, ca_file=clean_emulator.ca_file, out=out), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    failed = [types.SimpleNamespace(record=row["element"], reason=row["reason"]) for row in read_lines(out / "failed")]
    result = account(good + bad, clean_emulator.messages(), failed, get_encoder("jsonl"))
    assert result.complete and result.duplicated == 0 and result.delivered_and_failed == 0, result.summary()
    assert result.delivered == len(good) and result.failed == {"unknown_device": 1, "unroutable": 1}
    assert all(row["msg"].startswith(row["reason"] + ": ") for row in read_lines(out / "failed"))
    receipts = read_lines(out / "published")
    assert sorted(r["message_id"] for r in receipts) == sorted(m["messageId"] for m in clean_emulator.messages())


def test_yaml_pipeline_without_error_handling_fails_on_a_failed_record(clean_emulator, devices, credentials, tmp_path):
    records = readings(devices[:1], 3, pad=20) + [dict(readings(devices[:1], 1)[0], deviceName="noSuchDevice")]
    with open(tmp_path / "readings.avro", "wb") as handle:
        fastavro.writer(handle, SCHEMA, records)
    pipeline = PIPELINE.format(input=tmp_path / "readings.avro", endpoint=clean_emulator.endpoint,
                               credentials=credentials, ca_file=clean_emulator.ca_file, out=tmp_path / "out")
    pipeline = pipeline.replace("        error_handling:\n          output: failed\n", "")
    pipeline = pipeline.replace("input: WriteToIoTPlatform.failed", "input: WriteToIoTPlatform.published")
    done = run_yaml(pipeline, tmp_path)
    assert done.returncode != 0
    assert "a record was not published (pkTest00001/noSuchDevice): unknown_device" in done.stderr


def test_the_user_guides_yaml_example_names_the_shipped_transform_and_its_options():
    import inspect
    import re

    import yaml

    from connector.beam.yaml_provider import write_to_iot_platform

    with open(os.path.join(ROOT, "docs", "user-guide.md"), encoding="utf-8") as handle:
        example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", handle.read(), re.S).group(1))
    assert example["providers"] == yaml.safe_load(PIPELINE.format(
        input="", endpoint="", credentials="", ca_file="", out=""))["providers"]
    write = next(t for t in example["pipeline"]["transforms"] if t["type"] == "WriteToIoTPlatform")
    assert set(write["config"]) <= set(inspect.signature(write_to_iot_platform).parameters)


def test_every_option_of_the_transform_is_a_yaml_config_field_with_its_default():
    import inspect

    from apache_beam.yaml.yaml_provider import InlineProvider

    from connector import WriteToIoTPlatform
    from connector.beam.yaml_provider import OPTIONS, write_to_iot_platform

    transform = {name: p for name, p in inspect.signature(WriteToIoTPlatform.__init__).parameters.items()
                 if name != "self"}
    assert list(OPTIONS) == list(transform)
    fields = {field.name: field for field in InlineProvider.config_schema_from_callable(write_to_iot_platform).fields}
    assert set(fields) == set(transform) | {"error_handling"}
    assert all(fields[name].description for name in transform)  # Beam YAML shows the transform's own words
    yaml_defaults = inspect.signature(write_to_iot_platform).parameters
    for name, parameter in transform.items():
        if isinstance(parameter.default, (str, int, float, bool, type(None))):
            assert yaml_defaults[name].default == parameter.default, name


def route_to_yaml_topic(record):
    """A router the YAML test below names by its dotted name."""
    return (record["productKey"], record["deviceName"]), f"/{record['productKey']}/{record['deviceName']}/user/yaml"


def test_yaml_config_gives_retry_encoder_options_streaming_and_a_router_to_the_transform():
    from connector import RetryPolicy
    from connector.beam.yaml_provider import write_to_iot_platform

    yaml_write = write_to_iot_platform(
        endpoint="https://127.0.0.1:1", credentials="credentials.json", encoder="alink-property",
        encoder_options={"properties": ["temperature"]}, streaming=True, max_buffering_delay=None,
        retry={"max_attempts": 2}, router="test_yaml.route_to_yaml_topic", order_by="time",
        error_handling={"output": "failed"})
    write = yaml_write._write
    assert write._config.retry == RetryPolicy(max_attempts=2)
    assert write._encoder.name == "alink-property" and write._streaming is True
    assert write._max_buffering_delay is None and write._order_by == "time"
    assert write._router.route is route_to_yaml_topic and yaml_write._error_output == "failed"
    with pytest.raises(TypeError, match="no option 'retries'"):
        write_to_iot_platform(endpoint="https://127.0.0.1:1", credentials="credentials.json", retries=3)
