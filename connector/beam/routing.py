"""Which device and topic a record goes to: the first step of both paths.

A router is any callable record -> (Device, topic). It raises RoutingError to send the record to
`failed` with a reason; anything else it raises is reported as unroutable too, and anything a topic
callable or template raises as invalid_topic.

Records are keyed by ((productKey, deviceName), topic) (`Key`): nested pairs, so that every runner
groups them with Beam's standard KV and string coders (Prism cannot group on Python's coder for a
3-tuple). KeyByDeviceAndTopic keys them for the streaming path; the batch path routes with the same
RecordRouting as it encodes (connector.beam.batch), so both route and fail records alike.
"""
import string
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam import pvalue, typehints
from apache_beam.pvalue import PCollection

from connector.protocol.device import Device
from connector.protocol.topics import device_owns_topic, topic_problem

from .encoders import ENCODERS, Encoder
from .hints import not_type_hints
from .metrics import SinkMetrics
from .results import FAILED, FailedRecord, Reason, RecordError, describe, failure
from .schemas import as_dict

DEFAULT_TOPIC = "/{productKey}/{deviceName}/user/update"
# ((productKey, deviceName), topic): what records are keyed and grouped by.
Key = tuple[tuple[str, str], str]
KEY_TYPE = typehints.Tuple[typehints.Tuple[str, str], str]  # Key, for Beam to pick its coder by
_DEVICE_FIELDS = {"productKey", "deviceName"}
# A topic template ("/{productKey}/{deviceName}/user/{kind}") or a callable(record, device) giving the topic.
Topic = str | Callable[[dict[str, Any], Device], str]
# A callable(record) giving (Device or (productKey, deviceName), topic).
Router = Callable[[dict[str, Any]], tuple[tuple[str, str], str]]


class RoutingError(RecordError):
    """A record that cannot be routed; reason is a results.Reason name."""

    def __init__(self, reason: str, message: str, device: Device | None = None, topic: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.device = device
        self.topic = topic


class FieldRouter:
    """Route by two record fields and a topic template (or a callable record, device -> topic).

    The template is formatted with productKey, deviceName and the record's own fields. Topics that
    depend only on the device are computed once per device.
    """

    def __init__(self, product_key_field: str = "productKey", device_name_field: str = "deviceName",
                 topic: Topic = DEFAULT_TOPIC) -> None:
        self.product_key_field = product_key_field
        self.device_name_field = device_name_field
        self.topic = topic
        # Whether the topic depends on the device alone: then a device's key is made once and its records
        # share it (the batch first stage's bound does not count it per chunk).
        if isinstance(topic, str):
            names = {name for _, name, _, _ in string.Formatter().parse(topic) if name}
            self.shares_keys = names <= _DEVICE_FIELDS
        elif callable(topic):
            self.shares_keys = False
        else:
            raise TypeError("topic must be a template string or a callable (record, device) -> topic")
        # device -> (device, topic), when the topic depends on the device alone
        self._routes: dict[tuple[str, str], tuple[Device, str]] = {}

    def __call__(self, record: Any) -> tuple[Device, str]:
        if not isinstance(record, dict):
            raise RoutingError(Reason.INVALID_RECORD,
                               f"a record must be a dict, beam.Row or NamedTuple to be routed by fields, "
                               f"got {type(record).__name__}")
        product_key = record.get(self.product_key_field)
        device_name = record.get(self.device_name_field)
        if not (isinstance(product_key, str) and product_key and isinstance(device_name, str) and device_name):
            raise RoutingError(Reason.UNROUTABLE,
                               f"fields {self.product_key_field!r} and {self.device_name_field!r} must be "
                               f"non-empty strings, got {product_key!r} and {device_name!r}")
        if self.shares_keys:
            # A Device is the (productKey, deviceName) pair: the plain pair finds it, one lookup a record.
            route = self._routes.get((product_key, device_name))
            if route is None:
                device = Device(product_key, device_name)
                route = self._routes[device] = device, self._topic_for(record, device)
            return route
        device = Device(product_key, device_name)
        return device, self._topic_for(record, device)

    def _topic_for(self, record: dict[str, Any], device: Device) -> str:
        try:
            if callable(self.topic):
                topic = self.topic(record, device)
            else:
                topic = self.topic.format_map(dict(record, productKey=device.product_key,
                                                   deviceName=device.device_name))
        except Exception as error:  # whatever a user's callable or a value's __format__ raises
            raise RoutingError(Reason.INVALID_TOPIC, f"topic could not be made for {device}: "
                               f"{describe(error)}", device) from None
        return checked_topic(topic, device)


class CallableRouter:
    """Wraps a user's callable record -> (device, topic), checking what it returns."""

    shares_keys = False  # a key (a Device, a topic) made per record

    def __init__(self, route: Router) -> None:
        self.route = route

    def __call__(self, record: Any) -> tuple[Device, str]:
        try:
            device, topic = self.route(record)
            device = Device(*device)
        except RoutingError:
            raise
        except Exception as error:
            raise RoutingError(Reason.UNROUTABLE, f"router failed: {type(error).__name__}: {error}") from None
        if not (isinstance(device.product_key, str) and device.product_key
                and isinstance(device.device_name, str) and device.device_name):
            raise RoutingError(Reason.UNROUTABLE, f"router gave an invalid device {device!r}")
        return device, checked_topic(topic, device)


def checked_topic(topic: Any, device: Device) -> str:
    """The topic, or RoutingError(invalid_topic) when it breaks the platform's topic rules or is not
    the device's own (the platform answers 30001 for those, which no retry can mend)."""
    problem = topic_problem(topic)
    if problem is None and not device_owns_topic(topic, *device):
        problem = f"{device} may publish only to its own topics (/{device.product_key}/"\
                  f"{device.device_name}/..., /sys/{device.product_key}/{device.device_name}/thing/...)"
    if problem:
        raise RoutingError(Reason.INVALID_TOPIC, f"{problem}: {topic!r}", device,
                           topic if isinstance(topic, str) else None)
    valid: str = topic  # topic_problem refuses anything but a str
    return valid


def default_topic(encoder: str | Encoder) -> str:
    """The topic template when none is given: the encoder's own (the Alink encoders report on their
    thing-model topic), else the platform's default publish topic. encoder: an Encoder or its name."""
    found = ENCODERS.get(encoder) if isinstance(encoder, str) else encoder
    topic: str | None = getattr(found, "topic", None)
    return topic or DEFAULT_TOPIC


def make_router(router: Router | None = None, *, product_key_field: str = "productKey",
                device_name_field: str = "deviceName", topic: Topic = DEFAULT_TOPIC) -> FieldRouter | CallableRouter:
    """The router WriteToIoTPlatform uses: the user's callable, or one over fields and a template.

    A FieldRouter (or a subclass) checks the device and topic it gives, so it is used as it is.
    """
    if isinstance(router, FieldRouter):
        return router
    if router is not None:
        return CallableRouter(router)
    return FieldRouter(product_key_field, device_name_field, topic)


class RecordRouting:
    """A DoFn's routing: each record's (Device, topic) and the record as a dict, or the record's failed
    output, counted in the sink's metrics. Made in the DoFn's setup (it holds its metrics)."""

    def __init__(self, router: FieldRouter | CallableRouter, metrics: SinkMetrics) -> None:
        self.router = router
        self.metrics = metrics

    def route(self, record: Any) -> tuple[tuple[Device, str], Any] | pvalue.TaggedOutput:
        """(key, record): the record's (Device, topic) and the record as a dict (a beam.Row or NamedTuple
        as one); or its failed output: a FailedRecord among the records (input a reader could not read,
        e.g. a CSV value that is not its column's type) as it is, counted, and a record the router
        refuses, or raises anything on, as unroutable (or the RoutingError's own reason)."""
        try:
            if not isinstance(record, dict):
                if isinstance(record, FailedRecord):
                    self.metrics.failed(record.reason)
                    return pvalue.TaggedOutput(FAILED, record)
                record = as_dict(record)
            return self.router(record), record  # (Device, topic): a Device is the (productKey, deviceName) pair
        except Exception as error:
            return self.failed(record, error, Reason.UNROUTABLE)

    def failed(self, record: Any, why: BaseException | str, reason: str,
               key: tuple[Device, str] | None = None) -> pvalue.TaggedOutput:
        """The record's failed output, counted: failed before any attempt to publish it."""
        failed = failure(record, why, reason, *(key or ()))
        self.metrics.failed(failed.reason)
        return pvalue.TaggedOutput(FAILED, failed)


class _KeyFn(beam.DoFn):
    """Keys each record by (Device, topic); what cannot be routed fails here."""

    def __init__(self, router: FieldRouter | CallableRouter) -> None:
        self._router = router

    def setup(self) -> None:
        self._routing = RecordRouting(self._router, SinkMetrics())

    @not_type_hints
    def process(self, record: Any) -> Iterator[tuple[tuple[Device, str], Any] | pvalue.TaggedOutput]:
        self._routing.metrics.records_in.inc()
        yield self._routing.route(record)


class KeyByDeviceAndTopic(beam.PTransform[PCollection[Any], tuple[PCollection[Any], PCollection[FailedRecord]]]):
    """records -> (keyed, failed): (((productKey, deviceName), topic), record) pairs with Beam's
    deterministic key coder, and a FailedRecord for each record that cannot be routed. The streaming
    path keys with it before its stateful step."""

    def __init__(self, router: FieldRouter | CallableRouter) -> None:
        super().__init__()
        self._router = router

    @not_type_hints
    def expand(self, records: PCollection[Any]) -> tuple[PCollection[Any], PCollection[FailedRecord]]:
        keyed = records | beam.ParDo(_KeyFn(self._router)).with_output_types(
            typehints.KV[KEY_TYPE, typehints.Any]).with_outputs(FAILED, main="keyed")
        return keyed.keyed, failed_output(keyed)


def failed_output(outputs: pvalue.DoOutputsTuple) -> PCollection[FailedRecord]:
    """A step's FAILED output, typed FailedRecord so that Beam codes it with FailedRecordCoder. Declared
    on the PCollection: Beam 2.62 types every tagged output Any, and with_output_types types only the
    main output."""
    failed: PCollection[FailedRecord] = outputs[FAILED]
    failed.element_type = FailedRecord
    return failed
