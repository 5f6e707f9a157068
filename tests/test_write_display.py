"""What Beam shows of the sink: labelled display data without secrets, and the endpoint in Beam's lineage."""
import apache_beam as beam
import pytest
from apache_beam.metrics.metric import Lineage
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.display import DisplayData
from apache_beam.typehints.decorators import IOTypeHints

import connector
from connector.beam.batch import _PublishChunksFn, _RouteAndEncodeFn, _RouteAndEncodeInWindowsFn
from connector.beam.credentials import as_credentials
from connector.beam.encoders import JsonLinesEncoder
from connector.beam.hints import same
from connector.beam.publisher import PublisherConfig
from connector.beam.routing import FieldRouter, KeyByDeviceAndTopic, _KeyFn
from connector.beam.rows import FailedRow, ToRows
from connector.beam.streaming import _BufferedPublishFn
from connector.beam.yaml_provider import _error_row, _raise, write_to_iot_platform
from test_write_batch import credentials, readings  # noqa: F401  (credentials is a fixture)
from write_support import FN_API

SHOWN = {"endpoint", "topic", "encoder", "max_payload_bytes", "device_messages_per_second", "max_in_flight",
         "max_buffered_bytes", "retry", "streaming", "max_buffering_delay", "order_by", "sign_method",
         "tls_verification"}


def test_display_data_labels_every_option_and_holds_no_secret(emulator, devices, credentials):
    transform = connector.WriteToIoTPlatform(
        emulator.endpoint, credentials, topic="/{productKey}/{deviceName}/user/{kind}", encoder="json-array",
        max_payload_bytes=4096, order_by="time", max_in_flight=8, retry=connector.RetryPolicy(max_attempts=3))
    items = {item.key: item for item in DisplayData.create_from(transform).items}
    assert set(items) == SHOWN
    assert all(item.label for item in items.values())
    assert items["endpoint"].value == emulator.endpoint
    assert items["topic"].value == "/{productKey}/{deviceName}/user/{kind}"
    assert (items["encoder"].value, items["max_payload_bytes"].value, items["max_in_flight"].value) == (
        "json-array", 4096, 8)
    assert "max_attempts=3" in items["retry"].value and items["order_by"].value == "time"
    assert items["tls_verification"].value is True
    shown = " ".join(str(item.value) for item in items.values())
    secrets = [secret for secret in as_credentials(credentials).secrets().values()]
    assert secrets and not any(secret in shown for secret in secrets)
    assert credentials not in shown  # where the secrets are is not shown either


def test_display_data_names_a_topic_callable_and_a_router(emulator, credentials):
    def topic_of(record, device):
        return f"/{device.product_key}/{device.device_name}/user/update"

    items = {item.key: item.value for item in DisplayData.create_from(
        connector.WriteToIoTPlatform(emulator.endpoint, credentials, topic=topic_of)).items}
    assert items["topic"].endswith("topic_of")
    items = {item.key: item.value for item in DisplayData.create_from(
        connector.WriteToIoTPlatform(emulator.endpoint, credentials, router=lambda record: None)).items}
    assert items["topic"] == "by the router"


def test_the_endpoint_is_reported_as_the_pipelines_sink_in_lineage(clean_emulator, devices, credentials):
    pipeline = beam.Pipeline(options=PipelineOptions(FN_API))
    _ = (pipeline | beam.Create(readings(devices[:1], 5))
         | connector.WriteToIoTPlatform(clean_emulator.endpoint, credentials, ca_file=clean_emulator.ca_file))
    result = pipeline.run()
    result.wait_until_finish()
    assert Lineage.query(result.metrics(), Lineage.SINK) == {f"iotplatform:`127.0.0.1:{clean_emulator.port}`"}


def test_an_endpoint_with_a_user_or_password_is_refused_without_showing_it(credentials):
    with pytest.raises(ValueError, match="user name or password") as raised:
        connector.WriteToIoTPlatform("https://meter:s3cretValue@127.0.0.1:8443", credentials)
    assert "s3cretValue" not in str(raised.value)


def test_applying_the_transform_warns_of_nothing(credentials, caplog):
    # Beam reads expand's annotations as type hints: a result annotation made it warn at every run.
    with caplog.at_level("WARNING"):
        pipeline = beam.Pipeline(options=PipelineOptions(FN_API))
        _ = pipeline | beam.Create([{"productKey": "a1", "deviceName": "d1"}]) | connector.WriteToIoTPlatform(
            "https://127.0.0.1:1", credentials)
    assert not [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]


def test_beam_takes_none_of_the_sinks_annotations_for_type_hints(credentials):
    # process, expand and the functions given to Map are annotated for mypy: Beam would check them when
    # the pipeline is built and choose coders by them, so hints.not_type_hints hides them from Beam.
    config = PublisherConfig("https://127.0.0.1:1", as_credentials(credentials))
    encoder, router = JsonLinesEncoder(), FieldRouter()
    dofns = [_KeyFn(router), _RouteAndEncodeFn(router, encoder, 4096),
             _RouteAndEncodeInWindowsFn(router, encoder, 4096), _PublishChunksFn(config, encoder, 4096),
             _BufferedPublishFn(config, encoder, 4096)]
    transforms = [KeyByDeviceAndTopic(router), connector.WriteToIoTPlatform("https://127.0.0.1:1", credentials),
                  ToRows(), write_to_iot_platform("https://127.0.0.1:1", credentials)]
    for hinted in dofns + transforms:
        hints = hinted.get_type_hints()
        assert (hints.input_types, hints.output_types) == (None, None), type(hinted).__name__
    for function in (same, FailedRow.of, _raise, _error_row):
        assert IOTypeHints.from_callable(function) is None, function.__qualname__
