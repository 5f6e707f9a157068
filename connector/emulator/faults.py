"""Fault injection: the failures a client must survive, on demand and reproducibly (seeded).

Faults decided before a request is handled (drop, HTTP status, error code) never store a message.
`drop_after_store_rate` and `latency_spike` act after a /topic message is stored, so a client sees a
failure or a timeout for a message the platform did accept: the ambiguous case it must not lose or
double-count. An error code is injected only on the endpoint that can answer it (20004 on /auth,
30001 on /topic, 10000 on both).
"""
import collections
import random

from connector.protocol.codes import AUTH_CODES, TOPIC_CODES

_CODES = {"auth": AUTH_CODES, "topic": TOPIC_CODES}
_KNOBS = ("error_rate", "http_status_rate", "drop_rate", "drop_after_store_rate", "latency_ms",
          "latency_spike", "seed")
MAX_LATENCY_MS = 600_000  # ten minutes: longer than any client waits, short of stalling the emulator for good


def _probability(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability between 0 and 1")
    return float(value)


def _milliseconds(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_LATENCY_MS:
        raise ValueError(f"{name} must be a number of milliseconds from 0 to {MAX_LATENCY_MS}")
    return float(value)


def _seed(value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError("seed must be an integer or null")
    return value


def _rates(spec, name, valid):
    if not isinstance(spec, dict):
        raise ValueError(f"{name} must be an object of code -> probability")
    rates = {}
    for key, value in spec.items():
        if not (str(key).isascii() and str(key).isdecimal() and len(str(key)) < 6) or int(key) not in valid:
            raise ValueError(f"{name}: {key!r} is not one of {sorted(valid)}")
        rates[int(key)] = _probability(value, f"{name}[{key}]")
    if sum(rates.values()) > 1:
        raise ValueError(f"{name}: probabilities add up to more than 1")
    return rates


class Faults:
    """The current fault configuration, the random source that applies it, and what it injected."""

    def __init__(self, latency_ms=0):
        self._initial = {"latency_ms": latency_ms} if latency_ms else {}
        self.injected = collections.Counter()
        self.configure(self._initial)

    def configure(self, spec):
        """Replace the whole configuration; knobs left out are off. Raises ValueError on bad input,
        leaving the configuration as it was."""
        unknown = set(spec) - set(_KNOBS)
        if unknown:
            raise ValueError(f"unknown fault knobs {sorted(unknown)}; known: {list(_KNOBS)}")
        spike = spec.get("latency_spike") or {}
        if not isinstance(spike, dict) or set(spike) - {"rate", "ms"}:
            raise ValueError("latency_spike must be {\"rate\": p, \"ms\": n}")
        errors = _rates(spec.get("error_rate", {}), "error_rate", AUTH_CODES | TOPIC_CODES)
        statuses = _rates(spec.get("http_status_rate", {}), "http_status_rate", range(400, 600))
        drop = _probability(spec.get("drop_rate", 0), "drop_rate")
        drop_after_store = _probability(spec.get("drop_after_store_rate", 0), "drop_after_store_rate")
        latency_ms = _milliseconds(spec.get("latency_ms", 0), "latency_ms")
        spike_rate_ms = (_probability(spike.get("rate", 0), "latency_spike.rate"),
                         _milliseconds(spike.get("ms", 0), "latency_spike.ms"))
        seed = _seed(spec.get("seed"))
        self._errors = errors
        self._errors_on = {endpoint: {code: p for code, p in errors.items() if code in eligible}
                           for endpoint, eligible in _CODES.items()}
        self._statuses, self._drop, self._drop_after_store = statuses, drop, drop_after_store
        self.latency_ms, self._spike, self._seed = latency_ms, spike_rate_ms, seed
        self._random = random.Random(seed)
        self.active = bool(errors or statuses or drop or drop_after_store or spike_rate_ms[0])

    def reset(self):
        """Back to the configuration given at start, with nothing counted."""
        self.configure(self._initial)
        self.injected.clear()

    def as_dict(self):
        return {
            "error_rate": {str(code): p for code, p in self._errors.items()},
            "http_status_rate": {str(status): p for status, p in self._statuses.items()},
            "drop_rate": self._drop,
            "drop_after_store_rate": self._drop_after_store,
            "latency_ms": self.latency_ms,
            "latency_spike": {"rate": self._spike[0], "ms": self._spike[1]},
            "seed": self._seed,
        }

    def _roll(self, p, kind):
        """True with probability p, counting the fault when it happens."""
        if p > 0 and self._random.random() < p:
            self.injected[kind] += 1
            return True
        return False

    def _pick(self, rates, kind):
        """One key of rates with its probability, counted, or None."""
        roll, total = self._random.random(), 0.0
        for key, p in rates.items():
            total += p
            if roll < total:
                self.injected[f"{kind}_{key}"] += 1
                return key
        return None

    def drop_before(self):
        """Whether to close the connection without a reply, before handling the request."""
        return self._roll(self._drop, "drop")

    def http_status(self):
        """An HTTP error status to answer instead of handling the request, or None."""
        return self._pick(self._statuses, "http") if self._statuses else None

    def error_code(self, endpoint):
        """A platform error code to answer instead of handling the request on this endpoint, or None."""
        rates = self._errors_on[endpoint]
        return self._pick(rates, "error") if rates else None

    def drop_after_store(self):
        """Whether to close the connection without a reply although the message was stored."""
        return self._roll(self._drop_after_store, "drop_after_store")

    def spike_ms(self):
        """Extra delay for this reply (0 mostly)."""
        return self._spike[1] if self._roll(self._spike[0], "latency_spike") else 0
