"""Products' custom topic categories: which custom topics the devices of a product may publish to.

On the platform a custom topic works once its category is defined for the product with publish
permission. Every product has the default categories /user/update and /user/update/error; older
products also defined categories without /user/ (the legacy C SDK publishes to /{pk}/{dn}/data).
A product that declares no categories here is lenient: any /{pk}/{dn}/user/... is accepted.
"""
import re

from connector.protocol.topics import custom_topic_levels, device_owns_system_topic

OPERATIONS = {"PUB": True, "SUB": False, "ALL": True}  # operation -> devices may publish
DEFAULT_CATEGORIES = frozenset({("user", "update"), ("user", "update", "error")})
_LEVEL = re.compile(r"[A-Za-z0-9_]+")  # the platform's rule for a category's own levels
_SUBSCRIBE_WILDCARDS = ("+", "#")


def parse_products(items):
    """{productKey: frozenset of the level tuples (after /pk/dn) devices may publish to}.

    items: a list of {"productKey", "topicCategories": [{"topic", "operation"}]}, a topic written as
    the console shows it: "/${productKey}/${deviceName}/user/get" (or the product's own key first).
    ValueError names the first bad entry.
    """
    if not isinstance(items, list):
        raise ValueError("products must be a JSON list of {productKey, topicCategories}")
    parsed = {}
    for index, item in enumerate(items):
        if not (isinstance(item, dict) and isinstance(item.get("productKey"), str) and item["productKey"]
                and isinstance(item.get("topicCategories"), list)):
            raise ValueError(f"product #{index} needs a non-empty productKey and a list topicCategories")
        product_key = item["productKey"]
        publishable = set()
        for number, category in enumerate(item["topicCategories"]):
            levels, publish = _parse_category(product_key, category, f"product {product_key} category #{number}")
            if publish:
                publishable.add(levels)
        parsed[product_key] = frozenset(publishable)
    return parsed


def _parse_category(product_key, category, where):
    """(levels after /pk/dn, whether devices may publish) of one category; ValueError says what is wrong."""
    if not isinstance(category, dict) or category.get("operation") not in OPERATIONS:
        raise ValueError(f"{where} needs a topic and an operation, one of {', '.join(OPERATIONS)}")
    topic = category.get("topic")
    levels = topic.split("/") if isinstance(topic, str) else []
    if levels[:3] not in (["", "${productKey}", "${deviceName}"], ["", product_key, "${deviceName}"]) \
            or len(levels) < 4:
        raise ValueError(f"{where}: topic must be /${{productKey}}/${{deviceName}}/... with a level after "
                         f"them, got {topic!r}")
    publish = OPERATIONS[category["operation"]]
    for level in levels[3:]:
        if not (_LEVEL.fullmatch(level) or (not publish and level in _SUBSCRIBE_WILDCARDS)):
            raise ValueError(f"{where}: each level holds letters, digits and '_' only (and '+' or '#' "
                             f"only when devices just subscribe), got {topic!r}")
    return tuple(levels[3:]), publish


class Products:
    """The topic categories declared per product, and the check a publish goes through."""

    def __init__(self, products=None):
        self._initial = dict(products or {})  # as the devices file declared them
        self._publishable = dict(self._initial)  # productKey -> frozenset of level tuples

    def __repr__(self):
        return f"Products({len(self._publishable)} with topic categories)"

    def add(self, products):
        """Declare products' categories, replacing what a product declared before."""
        self._publishable.update(products)

    def reset(self):
        """Back to the categories declared at start: those declared since are forgotten."""
        self._publishable = dict(self._initial)

    def as_list(self):
        """The declared categories with publish permission, as the admin API shows them."""
        return [{"productKey": product_key,
                 "publishTopics": sorted("/".join(("", product_key, "${deviceName}") + levels)
                                         for levels in publishable)}
                for product_key, publishable in sorted(self._publishable.items())]

    def may_publish(self, device, topic):
        """Whether the device may publish to the topic: its system topics, and its custom topics whose
        category its product defines with publish permission (any /user/... when it declares none)."""
        if device_owns_system_topic(topic, *device):
            return True
        levels = custom_topic_levels(topic, *device)
        if levels is None:
            return False
        publishable = self._publishable.get(device.product_key)
        if publishable is None:
            return levels[0] == "user" and len(levels) > 1
        return levels in DEFAULT_CATEGORIES or levels in publishable
