"""Everything the emulated platform holds: devices and tokens, products' topic categories, messages,
limits, faults, counters."""
import collections
import math

from connector.protocol.limits import (
    ACCOUNT_REQUESTS_PER_SECOND,
    DEVICE_MESSAGES_PER_SECOND,
    TOKEN_LIFETIME_SECONDS,
)

from .faults import Faults
from .products import Products
from .ratelimit import RateLimiter
from .registry import Registry
from .store import MessageStore
from .traffic import TrafficHistory

LIMIT_NAMES = ("device_qps", "account_qps", "token_ttl")


class EmulatorState:
    def __init__(self, devices=None, *, products=None, token_ttl=None, device_qps=None, account_qps=None,
                 latency_ms=0, db=None, clock_offset=0.0):
        self.registry = Registry(devices, TOKEN_LIFETIME_SECONDS if token_ttl is None else token_ttl)
        self.products = Products(products)
        self.store = MessageStore(db)
        self.limiter = RateLimiter(DEVICE_MESSAGES_PER_SECOND if device_qps is None else device_qps,
                                   ACCOUNT_REQUESTS_PER_SECOND if account_qps is None else account_qps)
        self.faults = Faults(latency_ms)
        self.requests = collections.Counter()  # (endpoint, outcome) -> count
        self.traffic = TrafficHistory(self.requests)
        self.sign_methods = collections.Counter()  # signmethod of accepted /auth requests -> count
        self.clock_offset = clock_offset  # seconds the server's clock is ahead (negative: behind)
        self._initial_limits = self.limits()

    def limits(self):
        return {"device_qps": self.limiter.device_qps, "account_qps": self.limiter.account_qps,
                "token_ttl": self.registry.token_ttl}

    def set_limits(self, changes):
        """Change some limits at once; ValueError on unknown names or values that are not positive
        finite numbers."""
        unknown = set(changes) - set(LIMIT_NAMES)
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}; known: {list(LIMIT_NAMES)}")
        limits = self.limits()
        for name, value in changes.items():
            limits[name] = _positive_number(value, name)
        self.limiter.configure(limits["device_qps"], limits["account_qps"])
        self.registry.token_ttl = limits["token_ttl"]

    def counters(self):
        by_endpoint = collections.defaultdict(dict)
        for (endpoint, outcome), count in sorted(self.requests.items()):
            by_endpoint[endpoint][outcome] = count
        return {"requests": by_endpoint, "faults": dict(sorted(self.faults.injected.items())),
                "sign_methods": dict(sorted(self.sign_methods.items())), "messages": len(self.store)}

    def reset(self, products=False):
        """Back to the state at start, except devices and tokens: no messages, counts, traffic history
        or faults, limits as at start; products' topic categories too if asked."""
        self.store.clear()
        self.requests.clear()
        self.traffic.clear()
        self.sign_methods.clear()
        self.faults.reset()
        self.set_limits(self._initial_limits)
        if products:
            self.products.reset()


def _positive_number(value, name):
    """value when it is a number above 0 that a float holds finitely (a bool is no number here)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            if math.isfinite(float(value)) and value > 0:
                return value
        except OverflowError:  # an integer too large for a float
            pass
    raise ValueError(f"{name} must be a positive number")
