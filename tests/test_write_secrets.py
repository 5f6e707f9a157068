"""Secrets stay secret: not in the pipeline graph, logs, failed records, metrics or display data."""
import base64
import bz2
import logging
import re
import zlib

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.transforms.display import DisplayData

import connector
from connector.emulator import Emulator
from test_write_batch import readings
from write_support import FN_API, run_write, write_credentials


def pickled_functions(pipeline):
    """Every pickled DoFn of the pipeline proto, unpacked to the bytes the pickler wrote."""
    unpacked = b""
    for transform in pipeline.to_runner_api().components.transforms.values():
        if transform.spec.urn != "beam:transform:pardo:v1":
            continue
        packed = base64.b64decode(beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn.payload)
        unpacked += zlib.decompress(packed) if packed[:1] == b"x" else bz2.decompress(packed)
    return unpacked


def test_the_pipeline_graph_holds_the_credentials_path_but_no_secret(emulator, devices, tmp_path):
    credentials = write_credentials(tmp_path / "credentials.json", devices)
    pipeline = beam.Pipeline(options=PipelineOptions(FN_API))
    write = connector.WriteToIoTPlatform(emulator.endpoint, credentials, ca_file=emulator.ca_file)
    _ = pipeline | beam.Create([{"productKey": "p", "deviceName": "d"}]) | write
    graph = pickled_functions(pipeline)
    assert credentials.encode() in graph  # the search can find what is there
    for device in devices:
        assert device["deviceSecret"].encode() not in graph
    shown = str(DisplayData.create_from(write).items)
    assert emulator.endpoint in shown and not any(d["deviceSecret"] in shown for d in devices)


def test_inline_secrets_are_refused(emulator):
    try:
        connector.WriteToIoTPlatform(emulator.endpoint, {("pk", "dn"): "secret"})
    except TypeError as error:
        assert "pickled" in str(error)
    else:
        raise AssertionError("a dict of secrets was accepted")


def test_no_secret_or_token_in_logs_failed_records_or_metrics(devices, tmp_path, caplog):
    wrong = [dict(d) for d in devices]
    wrong[0]["deviceSecret"] = "wrong-secret-0123456789"
    credentials = write_credentials(tmp_path / "credentials.json", wrong)
    records = readings(devices, 50)
    with Emulator(devices, token_ttl=1) as emulator:
        client = connector.IoTPlatformClient(emulator.endpoint, ca_file=emulator.ca_file)
        token = client.authenticate(connector.Device(devices[1]["productKey"], devices[1]["deviceName"]),
                                    devices[1]["deviceSecret"])
        emulator.set_faults(drop_rate=0.05, error_rate={"30001": 0.1}, seed=5)
        caplog.set_level(logging.DEBUG)
        run = run_write(records, emulator, credentials, tmp_path, max_payload_bytes=2048,
                        device_messages_per_second=0,
                        retry=connector.RetryPolicy(initial_backoff=0.01, max_attempts=20))
    assert run.failed_reasons() == {"auth_failed": 50}
    text = caplog.text + repr(run.failed) + repr(run.receipts) + repr(run.counters)
    for secret in [d["deviceSecret"] for d in wrong + devices]:
        assert secret not in text
    # Tokens are 32 hex characters: none may appear in our logs, the HTTP layer's, or the outputs.
    # (Beam's own loggers are left out: they print uuid-named temp paths of the same shape.)
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    ours = "".join(r.getMessage() for r in caplog.records if not r.name.startswith("apache_beam"))
    assert "opened a connection to" in ours and "POST /auth: HTTP 200" in ours
    token_shape = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
    assert not token_shape.search(ours + repr(run.failed) + repr(run.receipts) + repr(run.counters))
