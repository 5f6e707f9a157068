"""The per-process publishing engine: payloads in flight, per-device order and pace, retries.

Beam code hands it (device, topic, payload) and gets a Future of an Outcome. One Publisher serves
every DoFn instance and thread of a worker process (through apache_beam.utils.shared.Shared), so a
device authenticates once per process and HTTP connections are reused.
"""
import collections
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import NamedTuple

from connector.client.errors import InvalidRequest, IoTPlatformError, TransportError, UnknownDevice
from connector.client.http import IoTPlatformClient
from connector.client.tokens import TokenCache
from connector.protocol import codes
from connector.protocol.codes import Action
from connector.protocol.device import Device
from connector.protocol.limits import DEVICE_MESSAGES_PER_SECOND
from connector.protocol.signing import CLIENT_SIGN_METHOD

from .credentials import CredentialsProvider
from .results import Reason

_LOG = logging.getLogger(__name__)
UNREACHED_WARNING_SECONDS = 30.0  # while the platform cannot be reached, a warning this often


class RetryPolicy(NamedTuple):
    """How long to keep trying one payload. Backoff is exponential, each wait a random 50-100 % of its step.

    Attempts that never reached the platform (no connection, no TLS session) count toward max_seconds
    only, from when the platform was last reached: an outage shorter than max_seconds sends nothing to
    the dead letters, and once an outage is longer, every payload fails at its next attempt.
    """

    max_attempts: int = 10
    max_seconds: float = 600.0
    initial_backoff: float = 0.1
    max_backoff: float = 20.0
    throttled_backoff: float = 1.0  # first wait after a 40000

    def backoff(self, attempt: int, action: Action | None) -> float:
        base = self.throttled_backoff if action is Action.THROTTLED else self.initial_backoff
        return random.uniform(0.5, 1.0) * min(self.max_backoff, base * 2.0 ** (attempt - 1))


# Requests in flight hide the platform's round trip: 64 at 50 ms make about 1,280 requests a second.
DEFAULT_MAX_IN_FLIGHT = 64
# Payloads and the records behind them: full payloads of small readings take about 7 times their body
# in memory, so this holds some 150 of them, more than max_in_flight can send at once.
DEFAULT_MAX_BUFFERED_BYTES = 128 << 20


class PublisherConfig(NamedTuple):
    """Everything a worker needs to publish; pickled into the graph, so it holds no secret."""

    endpoint: str
    credentials: CredentialsProvider  # FileCredentials holds only a path
    ca_file: str | None = None
    insecure_skip_tls_verify: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    device_messages_per_second: float = DEVICE_MESSAGES_PER_SECOND
    retry: RetryPolicy = RetryPolicy()
    sign_method: str = CLIENT_SIGN_METHOD


class Outcome(NamedTuple):
    """How one payload ended, with the counts the DoFn turns into metrics."""

    message_id: int | None  # set when accepted
    error: IoTPlatformError | None  # the last error when not accepted
    reason: str | None  # Reason name when not accepted
    attempts: int  # requests that sent the payload and may have reached the platform (0: never sent)
    tries: int  # attempts of any kind: those that failed before the payload left (/auth, no connection) too
    throttled_seconds: float
    latency_seconds: float  # of the accepted request
    ambiguous_resends: int  # resends after a failure that may have hidden an acceptance


class MonotonicClock:
    """The scheduler's sense of time: monotonic seconds, and waiting on a condition for some of them.
    A test gives the Publisher another, to check pacing and backoff without waiting them out."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, condition: threading.Condition, seconds: float) -> bool:
        """condition.wait(seconds): until notified or the seconds have passed (the caller holds its lock)."""
        return condition.wait(seconds)


MONOTONIC = MonotonicClock()


def platform_client(config: PublisherConfig) -> IoTPlatformClient:
    """The IoTPlatformClient a publisher sends through, per its config."""
    return IoTPlatformClient(
        config.endpoint, ca_file=config.ca_file, insecure_skip_tls_verify=config.insecure_skip_tls_verify,
        connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
        pool_size=config.max_in_flight, sign_method=config.sign_method)


class _ByteBudget:
    """Bounds the bytes held for payloads submitted and not yet ended: the memory a publisher may hold."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._changed = threading.Condition()

    def take(self, size: int) -> None:
        """Wait for room; a payload is always admitted when nothing else is held."""
        with self._changed:
            self._changed.wait_for(lambda: self._used == 0 or self._used + size <= self._limit)
            self._used += size

    def give(self, size: int) -> None:
        with self._changed:
            self._used -= size
            self._changed.notify_all()


class _Job:
    """One payload on its way, with what its attempts have cost so far."""

    __slots__ = ("topic", "payload", "held_bytes", "future", "started", "tries", "sent", "unreached", "throttled",
                 "ambiguous_resends")

    def __init__(self, topic: str, payload: bytes, held_bytes: int, future: Future[Outcome]) -> None:
        self.topic, self.payload, self.held_bytes, self.future = topic, payload, held_bytes, future
        self.started: float | None = None  # monotonic time of the first attempt
        # tries: attempts of any kind; sent: those whose publish request left with the payload; unreached:
        # those that found no platform.
        self.tries = self.sent = self.unreached = self.ambiguous_resends = 0
        self.throttled = 0.0

    def outcome(self, message_id: int | None = None, error: IoTPlatformError | None = None,
                latency: float = 0.0) -> Outcome:
        return Outcome(message_id, error, None if error is None else failure_reason(error), self.sent, self.tries,
                       self.throttled, latency, self.ambiguous_resends)


class _Lane:
    """A device's payloads, sent one after another. It lives while it holds payloads, and after the last
    one until its pace would allow the next send, so a payload submitted meanwhile still waits its turn."""

    __slots__ = ("jobs", "next_send")

    def __init__(self) -> None:
        self.jobs: collections.deque[_Job] = collections.deque()
        self.next_send = 0.0  # monotonic time before which the device must not send again


class Publisher:
    """Publishes payloads concurrently, keeping each device's payloads in order and under its rate.

    Up to max_in_flight sender threads take turns: each takes the next device that is due (its pace
    allows a send, or a retry's backoff has passed, and none of its payloads is in flight), makes one
    attempt, and gives the device back with the time of its next turn. No thread sleeps through a
    pace or a backoff, so few threads keep many devices moving. submit() blocks while
    max_buffered_bytes are held (payloads and the records behind them): that is what lets a bundle move
    on to the next device while one device's payloads are paced out.

    client_factory: config -> the client to send through (platform_client by default). clock: its sense
    of time (MonotonicClock by default). Tests replace both to check the scheduler alone.
    """

    IDLE_SENDER_SECONDS = 5.0  # a sender with nothing to do for this long ends; submit() starts another
    _numbers = itertools.count(1)

    def __init__(self, config: PublisherConfig, secrets: dict[Device, str] | None = None, *,
                 client_factory: Callable[[PublisherConfig], IoTPlatformClient] = platform_client,
                 clock: MonotonicClock = MONOTONIC) -> None:
        self.config = config
        self.client = client_factory(config)
        self._time = clock
        secrets = config.credentials.secrets() if secrets is None else secrets
        self.tokens = TokenCache(self.client, secrets, clock=clock.now)
        self._budget = _ByteBudget(config.max_buffered_bytes)
        self._interval = 1.0 / config.device_messages_per_second if config.device_messages_per_second else 0.0
        lock = threading.Lock()
        self._changed = threading.Condition(lock)  # what waiting senders wait on
        self._clock = threading.Condition(lock)  # what the timekeeper waits on
        self._lanes: dict[Device, _Lane] = {}
        self._due: collections.deque[Device] = collections.deque()  # devices whose turn has come
        # heap of (time, sequence, device): devices whose turn comes at that time
        self._timed: list[tuple[float, int, Device]] = []
        self._sequence = itertools.count()
        # monotonic time of the first attempt that found no platform
        self._unreachable_since: float | None = None
        self._unreached_warned: float | None = None  # monotonic time of the last warning that it cannot be reached
        self._senders = 0  # sender threads alive
        self._waiting = 0  # senders waiting for a device to become due
        self._timekeeper = False  # whether a sender is waiting for the earliest timed turn
        self._users = 0  # DoFn instances set up and not torn down
        self.thread_name = f"iot-publish-{next(self._numbers)}"  # its senders' name, to tell publishers apart

    def __repr__(self) -> str:
        return f"Publisher({self.config.endpoint!r})"

    def retain(self) -> None:
        """A DoFn instance starts using this publisher."""
        with self._changed:
            self._users += 1

    def release(self) -> None:
        """A DoFn instance is done with it; the last one closes the idle connections (a later one
        opens new ones)."""
        with self._changed:
            self._users -= 1
            last = self._users == 0
        if last:
            self.client.close()

    def cancel(self, futures: Iterable[Future[Outcome]]) -> None:
        """Drop the payloads of these futures that no attempt has sent yet: those of a bundle the runner
        gave up on, whose retry sends them again and which must not go ahead of the retry's. A payload
        already being sent, or waiting to be sent again, ends as usual."""
        with self._changed:
            cancelled = {future for future in futures if future.cancel()}
            if not cancelled:  # a bundle that ended: every bundle start asks, so no walk over the lanes
                return
            freed = 0
            for lane in self._lanes.values():
                dropped = [job for job in lane.jobs if job.future in cancelled]
                if dropped:
                    lane.jobs = collections.deque(job for job in lane.jobs if job.future not in cancelled)
                    freed += sum(job.held_bytes for job in dropped)  # an emptied lane goes when its turn comes
        if freed:
            self._budget.give(freed)

    def submit(self, device: Device, topic: str, payload: bytes, held_bytes: int | None = None) -> Future[Outcome]:
        """Queue a payload; a Future of its Outcome. Blocks while max_buffered_bytes are held.

        held_bytes: the memory the payload keeps held until it ends, when more than its bytes (the
        records behind it, say)."""
        held_bytes = len(payload) if held_bytes is None else held_bytes
        self._budget.take(held_bytes)
        future: Future[Outcome] = Future()
        job = _Job(topic, payload, held_bytes, future)
        try:
            with self._changed:
                lane = self._lanes.get(device)
                if lane is not None:  # its turn is coming, or a sender has it
                    lane.jobs.append(job)
                    return future
                lane = self._lanes[device] = _Lane()
                lane.jobs.append(job)
                self._due.append(device)
                try:
                    self._wake()
                except RuntimeError:  # no sender could start and none is left: the payload is not taken
                    self._due.pop()
                    del self._lanes[device]
                    raise
        except BaseException:
            self._budget.give(held_bytes)
            raise
        return future

    def _wake(self) -> None:
        """Devices are due or the timekeeper's place is empty: wake a waiting sender (or the timekeeper),
        and start one more sender while more devices are due than senders wait, or nobody keeps time."""
        if self._waiting:
            self._changed.notify()
        elif self._timekeeper:
            self._clock.notify()
        more_due = len(self._due) > self._waiting + self._timekeeper
        untimed = self._timed and not self._timekeeper and not self._waiting
        if (more_due or untimed) and self._senders < self.config.max_in_flight:
            self._senders += 1
            try:
                threading.Thread(target=self._sender, name=self.thread_name, daemon=True).start()
            except RuntimeError:  # out of threads: the senders there are take the due devices in turn
                self._senders -= 1
                if not self._senders:
                    raise
                _LOG.warning("could not start another publishing thread; %d carry on", self._senders)

    def _sender(self) -> None:
        while True:
            turn = self._next_turn()
            if turn is None:
                return
            device, lane, job = turn
            result: Outcome | float | None
            try:
                result = self._attempt(device, job)
            except BaseException as error:  # a bug: the DoFn must see it rather than wait forever
                job.future.set_exception(error)
                result = None
            if isinstance(result, Outcome):  # before the lane moves on: outcomes come out in order
                job.future.set_result(result)
            retry_after = None if result is None or isinstance(result, Outcome) else result  # None: it ended
            with self._changed:
                if retry_after is None:
                    lane.jobs.popleft()
                    when = lane.next_send
                else:  # a retry after `retry_after` seconds, at the head of the lane
                    when = max(lane.next_send, self._time.now() + retry_after)
                if when > self._time.now():
                    heapq.heappush(self._timed, (when, next(self._sequence), device))
                    if self._timekeeper and self._timed[0][2] == device:
                        self._clock.notify()  # the earliest turn is now sooner than it waits for
                elif lane.jobs:
                    self._due.append(device)  # this sender takes it, or the next due one, next
                else:
                    del self._lanes[device]
            if retry_after is None:
                self._budget.give(job.held_bytes)

    def _next_turn(self) -> tuple[Device, _Lane, _Job] | None:
        """(device, lane, job) whose turn has come, waiting for one; None when idle long enough to end.

        One waiting sender, the timekeeper, waits for the earliest timed turn; the others wait to be
        woken, so a paced device does not wake every idle sender at each of its turns."""
        with self._changed:
            idle_since = self._time.now()
            while True:
                now = self._time.now()
                while self._timed and self._timed[0][0] <= now:
                    self._due.append(heapq.heappop(self._timed)[2])
                while self._due:
                    device = self._due.popleft()
                    lane = self._lanes[device]
                    if not lane.jobs:  # its pace has run out with nothing more to send
                        del self._lanes[device]
                        continue
                    lane.next_send = now + self._interval  # the pace counts from this send
                    if lane.jobs[0].started is None:
                        lane.jobs[0].future.set_running_or_notify_cancel()  # cancel() leaves it alone now
                    if self._due or (self._timed and not self._timekeeper):
                        self._wake()  # more to do than this sender: another takes the next turn
                    return device, lane, lane.jobs[0]
                if self._timed and not self._timekeeper:
                    self._timekeeper = True
                    self._time.wait(self._clock, self._timed[0][0] - now)
                    self._timekeeper = False
                    idle_since = self._time.now()
                    continue
                if now - idle_since >= self.IDLE_SENDER_SECONDS:
                    self._senders -= 1
                    return None
                self._waiting += 1
                self._time.wait(self._changed, self.IDLE_SENDER_SECONDS - (now - idle_since))
                self._waiting -= 1

    def _attempt(self, device: Device, job: _Job) -> Outcome | float:
        """One attempt at a payload: its Outcome when it has ended, else the seconds to wait before the
        next attempt. Re-authenticates and backs off per the retry policy."""
        policy = self.config.retry
        now = self._time.now()
        if job.started is None:
            job.started = now
        job.tries += 1
        token = None
        try:
            token = self.tokens.get(device)
            sent = self._time.now()
            message_id = self.client.publish(token, job.topic, job.payload)
            job.sent += 1
            self._unreachable_since = None
            return job.outcome(message_id, latency=self._time.now() - sent)
        except IoTPlatformError as error:
            action = error.action
            unreached = isinstance(error, TransportError) and error.unreached
            if token is not None and not unreached and not isinstance(error, InvalidRequest):
                job.sent += 1  # the publish request left: the platform answered it, or may have taken it
            if unreached:
                if self._unreachable_since is None:
                    self._unreachable_since = now
                self._warn_unreached(error, now)
            elif error.code is not None or isinstance(error, TransportError):  # an answer came back
                self._unreachable_since = None
            if action is Action.REAUTHENTICATE and token is not None:
                self.tokens.invalidate(device, token)
            delay = 0.0 if action is Action.REAUTHENTICATE and job.tries == 1 else policy.backoff(job.tries, action)
            job.unreached += unreached
            then = self._time.now() + delay
            out_of_budget = (job.tries - job.unreached >= policy.max_attempts
                             or then - job.started > policy.max_seconds
                             or unreached and then - (self._unreachable_since or now) > policy.max_seconds)
            if action is Action.PERMANENT or out_of_budget:
                return job.outcome(error=error)
            if action is Action.THROTTLED:
                job.throttled += delay
            if error.ambiguous:
                job.ambiguous_resends += 1
            return delay

    def _warn_unreached(self, error: IoTPlatformError, now: float) -> None:
        """Says why nothing gets through while retries go on, at most every UNREACHED_WARNING_SECONDS."""
        if self._unreached_warned is None or now - self._unreached_warned >= UNREACHED_WARNING_SECONDS:
            self._unreached_warned = now
            _LOG.warning("cannot reach the platform, retrying for up to %.0f s: %s",
                         self.config.retry.max_seconds, error.message)


def failure_reason(error: IoTPlatformError) -> str:
    """The Reason name for an error that ends a payload's attempts."""
    if isinstance(error, UnknownDevice):
        return Reason.UNKNOWN_DEVICE
    if isinstance(error, InvalidRequest) or error.code == codes.PARAM_ERROR:
        return Reason.REJECTED
    if error.code == codes.AUTH_CHECK_ERROR:
        return Reason.AUTH_FAILED
    if getattr(error, "kind", None) == "tls" and error.action is Action.PERMANENT:
        return Reason.TLS_ERROR
    if getattr(error, "http_status", None) == 404:
        return Reason.ENDPOINT_NOT_FOUND
    if error.action is Action.THROTTLED:
        return Reason.THROTTLED
    return Reason.RETRIES_EXHAUSTED
