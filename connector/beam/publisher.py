"""The per-process publishing engine: payloads in flight, per-device order and pace, retries.

Beam code hands it (device, topic, payload) and gets a Future of an Outcome. One Publisher serves
every DoFn instance and thread of a worker process (through apache_beam.utils.shared.Shared), so a
device authenticates once per process and HTTP connections are reused.
"""
import collections
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple, Optional

from connector.client.errors import InvalidRequest, IoTPlatformError, UnknownDevice
from connector.client.http import IoTPlatformClient
from connector.client.tokens import TokenCache
from connector.protocol import codes
from connector.protocol.codes import Action
from connector.protocol.limits import DEVICE_MESSAGES_PER_SECOND

from .results import Reason


class RetryPolicy(NamedTuple):
    """How long to keep trying one payload. Backoff is exponential, each wait a random 50-100 % of its step."""

    max_attempts: int = 10
    max_seconds: float = 600.0
    initial_backoff: float = 0.1
    max_backoff: float = 20.0
    throttled_backoff: float = 1.0  # first wait after a 40000

    def backoff(self, attempt, action):
        base = self.throttled_backoff if action is Action.THROTTLED else self.initial_backoff
        return random.uniform(0.5, 1.0) * min(self.max_backoff, base * 2 ** (attempt - 1))


class PublisherConfig(NamedTuple):
    """Everything a worker needs to publish; pickled into the graph, so it holds no secret."""

    endpoint: str
    credentials: object  # a provider with secrets(); FileCredentials holds only a path
    ca_file: Optional[str] = None
    insecure_skip_tls_verify: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_in_flight: int = 16
    max_buffered_bytes: int = 32 << 20
    device_messages_per_second: float = DEVICE_MESSAGES_PER_SECOND
    retry: RetryPolicy = RetryPolicy()
    sign_method: str = "hmacsha256"


class Outcome(NamedTuple):
    """How one payload ended, with the counts the DoFn turns into metrics."""

    message_id: Optional[int]  # set when accepted
    error: Optional[IoTPlatformError]  # the last error when not accepted
    reason: Optional[str]  # Reason name when not accepted
    attempts: int
    auth_calls: int
    throttled_seconds: float
    latency_seconds: float  # of the accepted request
    ambiguous_resends: int  # resends after a failure that may have hidden an acceptance


class _ByteBudget:
    """Bounds the bytes of payloads submitted and not yet ended: the memory a publisher may hold."""

    def __init__(self, limit):
        self._limit = limit
        self._used = 0
        self._changed = threading.Condition()

    def take(self, size):
        """Wait for room; a payload is always admitted when nothing else is held."""
        with self._changed:
            self._changed.wait_for(lambda: self._used == 0 or self._used + size <= self._limit)
            self._used += size

    def give(self, size):
        with self._changed:
            self._used -= size
            self._changed.notify_all()


class Publisher:
    """Publishes payloads concurrently, keeping each device's payloads in order and under its rate.

    Three bounds: max_in_flight HTTP requests at once; LANES_PER_REQUEST_SLOT times as many devices
    draining their lanes at once (a lane mostly waits on its device's pace, so many devices can
    progress while few requests are open); and max_buffered_bytes of payloads held, past which
    submit() blocks: that is what lets a bundle move on to the next device while one device's
    payloads are still being paced out.
    """

    LANES_PER_REQUEST_SLOT = 4

    def __init__(self, config, secrets=None):
        self.config = config
        self.client = IoTPlatformClient(
            config.endpoint, ca_file=config.ca_file, insecure_skip_tls_verify=config.insecure_skip_tls_verify,
            connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
            pool_size=config.max_in_flight, sign_method=config.sign_method)
        secrets = config.credentials.secrets() if secrets is None else secrets
        self.tokens = TokenCache(self.client, secrets)
        self._requests = threading.BoundedSemaphore(config.max_in_flight)
        self._budget = _ByteBudget(config.max_buffered_bytes)
        self._executor = ThreadPoolExecutor(config.max_in_flight * self.LANES_PER_REQUEST_SLOT,
                                            thread_name_prefix="iot-publish")
        self._lock = threading.Lock()
        self._lanes = {}  # device -> deque of waiting jobs; present while a thread drains it
        self._next_send = collections.defaultdict(float)  # device -> earliest monotonic time to send
        self._interval = 1.0 / config.device_messages_per_second if config.device_messages_per_second else 0.0

    def __repr__(self):
        return f"Publisher({self.config.endpoint!r})"

    def submit(self, device, topic, payload):
        """Queue a payload; blocks while max_buffered_bytes of payloads are queued or in flight."""
        self._budget.take(len(payload))
        future = Future()
        job = (topic, payload, future)
        with self._lock:
            lane = self._lanes.get(device)
            if lane is not None:
                lane.append(job)
                return future
            self._lanes[device] = collections.deque([job])
        self._executor.submit(self._drain, device)
        return future

    def _drain(self, device):
        """Send a device's payloads one after another until its lane is empty."""
        while True:
            with self._lock:
                lane = self._lanes[device]
                if not lane:
                    del self._lanes[device]
                    return
                topic, payload, future = lane.popleft()
            try:
                future.set_result(self._send(device, topic, payload))
            except BaseException as error:  # a bug: the DoFn must see it rather than wait forever
                future.set_exception(error)
            finally:
                self._budget.give(len(payload))

    def _send(self, device, topic, payload):
        """One payload, with retries, re-authentication and throttling per the retry policy."""
        policy = self.config.retry
        started = time.monotonic()
        attempts = auth_calls = ambiguous_resends = 0
        throttled = 0.0
        while True:
            attempts += 1
            token = None
            self._pace(device)
            try:
                with self._requests:
                    token, authenticated = self.tokens.fetch(device)
                    auth_calls += authenticated
                    sent = time.monotonic()
                    message_id = self.client.publish(token, topic, payload)
                return Outcome(message_id, None, None, attempts, auth_calls, throttled,
                               time.monotonic() - sent, ambiguous_resends)
            except IoTPlatformError as error:
                action = error.action
                if action is Action.REAUTHENTICATE and token is not None:
                    self.tokens.invalidate(device, token)
                delay = 0.0 if action is Action.REAUTHENTICATE and attempts == 1 else policy.backoff(attempts, action)
                out_of_budget = (attempts >= policy.max_attempts
                                 or time.monotonic() + delay - started > policy.max_seconds)
                if action is Action.PERMANENT or out_of_budget:
                    return Outcome(None, error, failure_reason(error), attempts, auth_calls, throttled,
                                   0.0, ambiguous_resends)
                if action is Action.THROTTLED:
                    throttled += delay
                if error.ambiguous:
                    ambiguous_resends += 1
                time.sleep(delay)

    def _pace(self, device):
        """Keep a device under its messages-per-second limit (sends spaced evenly, no bursts)."""
        if not self._interval:
            return
        now = time.monotonic()
        wait = self._next_send[device] - now
        if wait > 0:
            time.sleep(wait)
            now += wait
        self._next_send[device] = now + self._interval


def failure_reason(error):
    """The Reason name for an error that ends a payload's attempts."""
    if isinstance(error, UnknownDevice):
        return Reason.UNKNOWN_DEVICE
    if isinstance(error, InvalidRequest) or error.code == codes.PARAM_ERROR:
        return Reason.REJECTED
    if error.code == codes.AUTH_CHECK_ERROR:
        return Reason.AUTH_FAILED
    if getattr(error, "kind", None) == "tls" and error.action is Action.PERMANENT:
        return Reason.TLS_ERROR
    if error.action is Action.THROTTLED:
        return Reason.THROTTLED
    return Reason.RETRIES_EXHAUSTED
