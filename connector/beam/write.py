"""WriteToIoTPlatform: the PTransform users apply.

batch:     records --route, encode--> chunks per ((productKey, deviceName), topic) --group--> pack --publish--> receipts
streaming: records --route--> (((productKey, deviceName), topic), record) --state--> encode, pack --publish--> receipts
   |                                    |                                                 |
   +-- unroutable, bad topic, unencodable, too large (batch) ---> failed <----------------+ too large, failed codes
"""
import apache_beam as beam
from apache_beam import typehints
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.window import GlobalWindows

from connector.protocol.limits import DEVICE_MESSAGES_PER_SECOND, MAX_PAYLOAD_BYTES
from connector.protocol.signing import CLIENT_SIGN_METHOD, digest_for

from .credentials import as_credentials
from .encoders import get_encoder
from .metrics import SinkMetrics
from .prepack import _ChunkedPublishFn, _RouteAndEncodeFn, _RouteAndEncodeInWindowsFn, _RouteFn
from .publish_fns import FAILED, _BufferedPublishFn
from .publisher import DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_IN_FLIGHT, PublisherConfig, RetryPolicy
from .results import FailedRecord, Receipt, WriteToIoTPlatformResult
from .routing import default_topic, make_router

# ((productKey, deviceName), topic): nested pairs, so every runner sees Beam's standard KV and string
# coders (Prism cannot group on Python's coder for a 3-tuple).
_Key = typehints.Tuple[typehints.Tuple[str, str], str]
# Streaming: how long a record may wait for its payload to fill before it is sent anyway.
DEFAULT_MAX_BUFFERING_DELAY = 5.0


class KeyByDevice(beam.PTransform):
    """records -> (keyed, failed): (((productKey, deviceName), topic), record) pairs with Beam's
    deterministic key coder, and a FailedRecord for each record that cannot be routed.

    WriteToIoTPlatform, the pipelines' dry run and the throughput benchmark's ceiling all key with it,
    so they route and group alike.
    """

    def __init__(self, router):
        super().__init__()
        self._router = router

    def expand(self, records):
        routed = records | beam.ParDo(_RouteFn(self._router)).with_outputs(FAILED, main="routed")
        return _typed(routed.routed, typehints.KV[_Key, typehints.Any]), _typed(routed[FAILED], FailedRecord)


class WriteToIoTPlatform(beam.PTransform):
    """Publish records to IoT Platform over its HTTPS device channel.

    Records of one device and topic are packed into payloads of at most `max_payload_bytes` and sent
    with the device's own token. Returns a WriteToIoTPlatformResult: `.published` (one Receipt per
    accepted message) and `.failed` (one FailedRecord per record not published, with the reason).

    endpoint: "https://iot-as-http.cn-shanghai.aliyuncs.com", or an emulator's endpoint.
    credentials: path of a JSON/CSV file of productKey, deviceName, deviceSecret (any Beam
        filesystem), read on the workers; or an object with a secrets() method.
    topic: template over productKey, deviceName and the record's fields, or callable(record, device);
        None: the encoder's thing-model topic for the Alink encoders, else /{productKey}/{deviceName}/user/update.
    encoder: "jsonl", "json-array", "avro", "raw", "alink-property", "alink-history", or an Encoder;
        encoder_options go to it (e.g. schema= for avro).
    router: callable(record) -> ((productKey, deviceName), topic), instead of the fields and topic.
    order_by: (batch) a record field to order each device's records by before packing, within
        sort_buffer_bytes of encoded records at a time; a record whose value cannot be ordered with
        the others fails as "unorderable".
    streaming: None follows the pipeline (unbounded input or --streaming); streaming buffers per
        device in state and flushes on size, at window end and max_buffering_delay seconds after the
        first record was buffered (None: only on size and at window end, which in the global window
        means when the pipeline drains).
    processing_clock: (streaming, for tests) callable giving the processing time in epoch seconds that
        the buffering delay counts from; None: the wall clock. TestStream on the BundleBasedDirectRunner
        keeps a processing clock of its own that starts at 0, which a DoFn cannot read: pass
        `lambda: 0.0` there, and advance_processing_time past the delay flushes what was buffered.
    max_in_flight: HTTP requests open at once per worker process (a device's payloads stay in order).
    max_buffered_bytes: memory a worker process holds for payloads waiting for their device's pace
        or a request slot, the records behind them counted; a bundle moves on to the next device
        until this much is held.
    device_messages_per_second: the pace kept per device (the platform allows 30).
    retry: a RetryPolicy. insecure_skip_tls_verify: turn certificate checks off (never the default).
    sign_method: how /auth is signed: "hmacsha1" (the default, documented by the spec), "hmacmd5" or
        "hmacsha256".
    """

    def __init__(self, endpoint, credentials, *, topic=None, encoder="jsonl", ca_file=None,
                 max_payload_bytes=MAX_PAYLOAD_BYTES, encoder_options=None, product_key_field="productKey",
                 device_name_field="deviceName", router=None, order_by=None, sort_buffer_bytes=64 << 20,
                 streaming=None, max_buffering_delay=DEFAULT_MAX_BUFFERING_DELAY, max_in_flight=DEFAULT_MAX_IN_FLIGHT,
                 max_buffered_bytes=DEFAULT_MAX_BUFFERED_BYTES, device_messages_per_second=DEVICE_MESSAGES_PER_SECOND,
                 retry=RetryPolicy(),
                 connect_timeout=5.0, read_timeout=30.0, insecure_skip_tls_verify=False,
                 sign_method=CLIENT_SIGN_METHOD, processing_clock=None):
        super().__init__()
        if not 0 < max_payload_bytes <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"max_payload_bytes must be 1 to {MAX_PAYLOAD_BYTES} (the platform's limit)")
        digest_for(sign_method)  # an unknown method fails here, not on every worker
        self._encoder = get_encoder(encoder, **(encoder_options or {}))
        self._router = make_router(router, product_key_field=product_key_field, device_name_field=device_name_field,
                                   topic=default_topic(self._encoder) if topic is None else topic)
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

    def display_data(self):
        return {"endpoint": self._config.endpoint, "encoder": self._encoder.name,
                "max_payload_bytes": self._max_payload_bytes, "max_in_flight": self._config.max_in_flight}

    def expand(self, records):
        if self._is_streaming(records):
            keyed, unpublished = records | "Route" >> KeyByDevice(self._router)
            publish_fn = _BufferedPublishFn(self._config, self._encoder, self._max_payload_bytes,
                                            self._max_buffering_delay, self._processing_clock)
        else:
            # Records are encoded before the shuffle and cross it as byte chunks, a few per device.
            in_global_window = isinstance(records.windowing.windowfn, GlobalWindows)
            route_fn = (_RouteAndEncodeFn if in_global_window else _RouteAndEncodeInWindowsFn)(
                self._router, self._encoder, self._max_payload_bytes)
            routed = records | "RouteAndEncode" >> beam.ParDo(route_fn).with_outputs(FAILED, main="chunks")
            keyed = (_typed(routed.chunks, typehints.KV[_Key, bytes])
                     | "GroupByDevice" >> beam.GroupByKey())
            unpublished = _typed(routed[FAILED], FailedRecord)
            publish_fn = _ChunkedPublishFn(self._config, self._encoder, self._max_payload_bytes,
                                           self._order_by, self._sort_buffer_bytes)
        published = keyed | "PackAndPublish" >> beam.ParDo(publish_fn).with_outputs(FAILED, main="published")
        failed = ((unpublished, _typed(published[FAILED], FailedRecord))
                  | "Failed" >> beam.Flatten())
        return WriteToIoTPlatformResult(_typed(published.published, Receipt), _typed(failed, FailedRecord))

    def _is_streaming(self, records):
        if self._streaming is not None:
            return self._streaming
        options = records.pipeline.options
        return (options is not None and options.view_as(StandardOptions).streaming) or not records.is_bounded


def _typed(pcoll, element_type):
    """Declare a PCollection's element type, so Beam picks the deterministic coders for it."""
    pcoll.element_type = element_type
    return pcoll
