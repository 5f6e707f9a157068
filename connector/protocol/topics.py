"""Topic rules for publishing over HTTP: shape, size, and which topics a device owns.

The spec limits a topic's bytes, not its levels: the thing-model history report
/sys/{pk}/{dn}/thing/event/property/history/post has 8.
"""
from .limits import MAX_TOPIC_BYTES

__all__ = [
    "InvalidTopic", "custom_topic_levels", "device_owns_system_topic", "device_owns_topic", "topic_problem",
    "validate_topic",
]


class InvalidTopic(ValueError):
    """A topic the platform would refuse; the message says which rule it breaks."""


def topic_problem(topic: object) -> str | None:
    """Why the topic cannot be published to, or None when its shape is valid."""
    if not isinstance(topic, str) or not topic:
        return "topic must be a non-empty string"
    if not topic.startswith("/"):
        return "topic must start with '/'"
    if "?" in topic:
        return "topic must not carry a query string"
    if "+" in topic or "#" in topic:
        return "topic must not contain the MQTT wildcards '+' or '#'"
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, e.g. from bytes decoded with surrogateescape
        return "topic must be valid Unicode text (it holds a lone surrogate, not UTF-8 encodable)"
    if size > MAX_TOPIC_BYTES:
        return f"topic is longer than {MAX_TOPIC_BYTES} bytes"
    if "" in topic[1:].split("/"):
        return "topic must not have empty levels"
    return None


def validate_topic(topic: object) -> None:
    """Check a topic's shape.

    Raises:
        InvalidTopic: the topic breaks a rule; the message says which.
    """
    problem = topic_problem(topic)
    if problem:
        raise InvalidTopic(f"{problem}: {topic!r}")


def device_owns_topic(topic: str, product_key: str, device_name: str) -> bool:
    """Whether a directly connected device may publish to this topic over HTTP, as far as a client
    can tell: its system topics, and any of its custom topics (/pk/dn/...). Which custom topics work
    depends on the topic categories defined for its product, which only the platform knows."""
    return (device_owns_system_topic(topic, product_key, device_name)
            or custom_topic_levels(topic, product_key, device_name) is not None)


def device_owns_system_topic(topic: str, product_key: str, device_name: str) -> bool:
    """Its thing-model topics (/sys/pk/dn/thing/...) and the system topics the platform's SDKs
    publish to right after /auth."""
    levels = topic[1:].split("/")
    own = [product_key, device_name]
    if levels[:1] == ["sys"] and levels[1:3] == own and len(levels) > 4 and levels[3] == "thing":
        return True
    system_topics = (
        ["ota", "device", "inform"] + own,
        ["ota", "device", "progress"] + own,
        ["shadow", "update"] + own,
    )
    return levels in system_topics


def custom_topic_levels(topic: str, product_key: str, device_name: str) -> tuple[str, ...] | None:
    """The levels after /pk/dn of one of the device's custom topics, as a tuple; None for any other topic."""
    levels = topic[1:].split("/")
    if levels[:2] == [product_key, device_name] and len(levels) > 2:
        return tuple(levels[2:])
    return None
