"""WriteToIoTPlatform: the PTransform users apply. It chooses the path a record takes:

batch (batch.py):     records --route, encode--> chunks per key --group--> pack --publish--> receipts
streaming (streaming.py): records --route--> (key, record) --state--> encode, pack --publish--> receipts
   |                                    |                                                 |
   +-- unroutable, bad topic, unencodable, too large (batch) ---> failed <----------------+ too large, failed codes

A key is ((productKey, deviceName), topic) (routing.py); publishing.py is what both paths' publish steps
share, and publisher.py the per-process Publisher they hand payloads to.
"""
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.pvalue import PCollection
from apache_beam.transforms.display import DisplayDataItem

from connector.protocol.limits import DEVICE_MESSAGES_PER_SECOND, MAX_PAYLOAD_BYTES
from connector.protocol.signing import CLIENT_SIGN_METHOD, digest_for

from .batch import _PublishChunksFn, grouped_chunks
from .credentials import CredentialsProvider, as_credentials
from .encoders import AvroEncoder, Encoder, get_encoder
from .hints import not_type_hints, same
from .publisher import DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_IN_FLIGHT, PublisherConfig, RetryPolicy
from .results import FAILED, FailedRecord, Receipt, WriteToIoTPlatformResult
from .routing import FieldRouter, KeyByDeviceAndTopic, Router, Topic, default_topic, failed_output, make_router
from .schemas import avro_schema_of
from .streaming import _BufferedPublishFn

__all__ = ["DEFAULT_MAX_BUFFERING_DELAY", "KeyByDeviceAndTopic", "Router", "Topic", "WriteToIoTPlatform"]

_Element = TypeVar("_Element")
# Streaming: how long a record may wait for its payload to fill before it is sent anyway.
DEFAULT_MAX_BUFFERING_DELAY = 5.0


class WriteToIoTPlatform(beam.PTransform[PCollection[Any], WriteToIoTPlatformResult]):
    """A PTransform that publishes records to Alibaba Cloud IoT Platform over its HTTPS device channel.

    Each record is routed to a device (its productKey and deviceName fields, or a router) and a topic;
    the records of one device and topic are encoded and packed into as few payloads of at most
    `max_payload_bytes` as they fit in, and each payload is published with the device's own token.
    Every record ends either in an accepted message or in `.failed` with the reason: nothing is dropped.

    Records are dicts, or schema'd records (`beam.Row`, NamedTuples with `RowCoder`), which become dicts
    of their fields as they enter: routers, topics, `order_by`, encoders and `.failed` see the dict. A
    `FailedRecord` among them (input a reader could not read) goes to `.failed` as it is, counted.

    In batch, records are grouped per device (GroupByKey). In streaming (unbounded input or
    `--streaming`), each device's records are buffered in Beam state and flushed when the next record
    would not fit, as soon as a payload is full, at the window's end, and `max_buffering_delay` seconds
    after the first was buffered; outputs are stamped where the watermark is held for them, so windowed
    steps after `.published` and `.failed` count every one.

    Each worker process keeps one token per device, at most `max_in_flight` requests open and
    `max_buffered_bytes` held, and publishes each device's payloads in order at the platform's pace.

    Example::

        result = (records
                  | WriteToIoTPlatform("https://iot-as-http.cn-shanghai.aliyuncs.com",
                                       "gs://my-bucket/credentials.csv", order_by="ts"))
        result.published | beam.Map(lambda receipt: receipt.message_id) | ...
        result.failed | ToRows() | beam.io.WriteToBigQuery("project:dataset.failed", ...)

    Returns a `WriteToIoTPlatformResult`: `.published`, one `Receipt` per accepted message, and
    `.failed`, one `FailedRecord` per record not published (`ToRows()` gives both Beam schemas).
    """

    def __init__(self, endpoint: str, credentials: str | CredentialsProvider, *, topic: Topic | None = None,
                 encoder: str | Encoder = "jsonl", ca_file: str | None = None,
                 max_payload_bytes: int = MAX_PAYLOAD_BYTES, encoder_options: dict[str, Any] | None = None,
                 product_key_field: str = "productKey", device_name_field: str = "deviceName",
                 router: Router | None = None, order_by: str | None = None, sort_buffer_bytes: int = 64 << 20,
                 streaming: bool | None = None, max_buffering_delay: float | None = DEFAULT_MAX_BUFFERING_DELAY,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
                 device_messages_per_second: float = DEVICE_MESSAGES_PER_SECOND, retry: RetryPolicy = RetryPolicy(),
                 connect_timeout: float = 5.0, read_timeout: float = 30.0, insecure_skip_tls_verify: bool = False,
                 sign_method: str = CLIENT_SIGN_METHOD, processing_clock: Callable[[], float] | None = None) -> None:
        """Configures the sink; nothing is read or sent until the pipeline runs.

        Args:
            endpoint: The platform's HTTPS endpoint, "https://iot-as-http.cn-shanghai.aliyuncs.com",
                or an emulator's.
            credentials: The path of a JSON or CSV file of productKey, deviceName, deviceSecret (any
                Beam filesystem), read on the workers; or an object with a `secrets()` method giving
                {Device: secret}. Never the secrets themselves: they would be pickled into the graph.
            topic: A template over productKey, deviceName and the record's fields
                ("/{productKey}/{deviceName}/user/{kind}"), or a callable(record, device) giving the
                topic. None: the encoder's thing-model topic for the Alink encoders, else
                /{productKey}/{deviceName}/user/update.
            encoder: "jsonl", "json-array", "avro", "raw", "alink-property", "alink-history", or an
                Encoder.
            ca_file: A PEM file of CAs to trust instead of the system's (an emulator's `ca_file`).
            max_payload_bytes: The largest payload, 1 to 131072 (the platform's limit).
            encoder_options: Keyword arguments for the encoder (e.g. `schema` for avro; without one,
                avro takes the input's Beam schema).
            product_key_field: The record field holding the productKey.
            device_name_field: The record field holding the deviceName.
            router: A callable(record) -> (Device or (productKey, deviceName), topic), instead of the
                fields and `topic`; it may raise RoutingError to fail the record with a reason.
            order_by: (Batch) a field to order each device's records by before packing, within
                `sort_buffer_bytes` of records at a time; a record whose value cannot be
                ordered with the others fails as "unorderable".
            sort_buffer_bytes: How much memory of a device's records (and their encodings) `order_by`
                sorts at a time.
            streaming: True or False to choose; None follows the pipeline.
            max_buffering_delay: (Streaming) seconds a record may wait for its payload to fill; None:
                flush only on size and at the window's end.
            max_in_flight: HTTP requests open at once per worker process.
            max_buffered_bytes: Memory a worker process holds for payloads waiting for their device's
                pace or a request slot, the records behind them counted.
            device_messages_per_second: The pace kept per device (the platform allows 30).
            retry: How long to keep trying one payload (`RetryPolicy`).
            connect_timeout: Seconds to open a connection.
            read_timeout: Seconds for a whole reply; an attempt that runs out is retried as ambiguous.
            insecure_skip_tls_verify: Turns certificate checks off. Never the default.
            sign_method: How /auth is signed: "hmacsha1" (the default, documented by the spec),
                "hmacmd5" or "hmacsha256".
            processing_clock: (Streaming, for tests) a callable giving the processing time in epoch
                seconds that the buffering delay counts from; None: the wall clock. TestStream on the
                BundleBasedDirectRunner keeps a processing clock of its own that starts at 0, which a
                DoFn cannot read: pass `lambda: 0.0` there, and advance_processing_time past the delay
                flushes what was buffered.

        Raises:
            ValueError: `max_payload_bytes` out of range, an unknown `sign_method` or encoder, or an
                endpoint holding a user name or password.
            TypeError: `credentials` is neither a path nor a provider, or `topic` neither a template
                nor a callable.
        """
        super().__init__()
        if not 0 < max_payload_bytes <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"max_payload_bytes must be 1 to {MAX_PAYLOAD_BYTES} (the platform's limit)")
        digest_for(sign_method)  # an unknown method fails here, not on every worker
        if "@" in urlsplit(endpoint).netloc:  # it would show in display data, lineage and the pickled graph
            raise ValueError("endpoint must not hold a user name or password: devices sign /auth with their "
                             "secrets, and the URL would show in the pipeline's graph")
        encoder_options = encoder_options or {}
        # avro without a schema takes the input's Beam schema, known only in expand.
        infer_schema = encoder == AvroEncoder.name and "schema" not in encoder_options
        self._encoder = None if infer_schema else get_encoder(encoder, **encoder_options)
        self._router = make_router(router, product_key_field=product_key_field, device_name_field=device_name_field,
                                   topic=default_topic(self._encoder or encoder) if topic is None else topic)
        self._max_payload_bytes = max_payload_bytes
        self._order_by = order_by
        self._sort_buffer_bytes = sort_buffer_bytes
        self._streaming = streaming
        self._max_buffering_delay = max_buffering_delay
        self._processing_clock = processing_clock
        self._config = PublisherConfig(
            endpoint=endpoint, credentials=as_credentials(credentials), ca_file=ca_file,
            insecure_skip_tls_verify=insecure_skip_tls_verify, connect_timeout=connect_timeout,
            read_timeout=read_timeout, max_in_flight=max_in_flight, max_buffered_bytes=max_buffered_bytes,
            device_messages_per_second=device_messages_per_second, retry=retry, sign_method=sign_method)

    def display_data(self) -> dict[str, DisplayDataItem]:
        """What Beam shows of the sink (the Dataflow UI, the pipeline graph): its options, no credentials."""
        config = self._config
        topic = self._router.topic if isinstance(self._router, FieldRouter) else "by the router"
        items = {
            "endpoint": (config.endpoint, "Endpoint"),
            "topic": (_described(topic), "Topic"),
            "encoder": (self._encoder.name if self._encoder else AvroEncoder.name, "Encoder"),
            "max_payload_bytes": (self._max_payload_bytes, "Payload limit (bytes)"),
            "device_messages_per_second": (config.device_messages_per_second, "Messages per second per device"),
            "max_in_flight": (config.max_in_flight, "Requests in flight per worker"),
            "max_buffered_bytes": (config.max_buffered_bytes, "Payload bytes held per worker"),
            "retry": (_described(config.retry), "Retry policy"),
            "streaming": ("follows the pipeline" if self._streaming is None else self._streaming, "Streaming"),
            "max_buffering_delay": (_described(self._max_buffering_delay), "Max buffering delay (s, streaming)"),
            "order_by": (_described(self._order_by), "Order by field (batch)"),
            "sign_method": (config.sign_method, "Sign method"),
            "tls_verification": (not config.insecure_skip_tls_verify, "TLS verification"),
        }
        return {key: DisplayDataItem(value, label=label) for key, (value, label) in items.items()}

    @not_type_hints  # a result annotation makes Beam warn at every run
    def expand(self, records: PCollection[Any]) -> WriteToIoTPlatformResult:
        encoder = self._encoder or AvroEncoder(avro_schema_of(records.element_type))
        publish_fn: beam.DoFn
        if self._is_streaming(records):
            keyed, unpublished = records | "Route" >> KeyByDeviceAndTopic(self._router)
            publish_fn = _BufferedPublishFn(self._config, encoder, self._max_payload_bytes,
                                            self._max_buffering_delay, self._processing_clock)
        else:
            keyed, unpublished = grouped_chunks(records, self._router, encoder, self._max_payload_bytes)
            publish_fn = _PublishChunksFn(self._config, encoder, self._max_payload_bytes,
                                          self._order_by, self._sort_buffer_bytes)
        published = keyed | "PackAndPublish" >> beam.ParDo(publish_fn).with_outputs(FAILED, main="published")
        failed = (unpublished, failed_output(published)) | "Failed" >> beam.Flatten()
        return WriteToIoTPlatformResult(_reemitted(published.published, Receipt, "Published"),
                                        _reemitted(failed, FailedRecord, "FailedRecords"))

    def _is_streaming(self, records: PCollection[Any]) -> bool:
        if self._streaming is not None:
            return self._streaming
        options = records.pipeline.options
        return (options is not None and options.view_as(StandardOptions).streaming) or not records.is_bounded


def _described(value: object) -> str | int | float | bool:
    """Display data holds strings, numbers and booleans: anything else (None, callables, policies) as text."""
    if isinstance(value, (str, int, float, bool)):
        return value
    return getattr(value, "__qualname__", None) or repr(value)


def _reemitted(pcoll: PCollection[_Element], element_type: type[_Element], label: str) -> PCollection[_Element]:
    """An output through one element-wise step, typed, so that a batched DoFn after it (WriteToParquet's,
    with no schema given) gets every element: in Beam 2.62 such a consumer drops what the DoFn before it
    outputs in finish_bundle, which is where the publish step emits what ends last."""
    reemitted: PCollection[_Element] = pcoll | label >> beam.Map(same).with_output_types(element_type)
    return reemitted
