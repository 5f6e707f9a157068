"""Which device and topic a record goes to.

A router is any callable record -> (Device, topic). It raises RoutingError to send the record to
`failed` with a reason; anything else it raises is reported as unroutable too, and anything a topic
callable or template raises as invalid_topic.
"""
import string
from collections.abc import Callable
from typing import Any

from connector.protocol.device import Device
from connector.protocol.topics import device_owns_topic, topic_problem

from .encoders import ENCODERS, Encoder
from .results import Reason, RecordError, describe

DEFAULT_TOPIC = "/{productKey}/{deviceName}/user/update"
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
        if isinstance(topic, str):
            names = {name for _, name, _, _ in string.Formatter().parse(topic) if name}
            self._device_only_topic = names <= _DEVICE_FIELDS
        elif callable(topic):
            self._device_only_topic = False
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
        if self._device_only_topic:
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
