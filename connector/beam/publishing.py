"""The publish steps' side of the Publisher: what the batch and streaming publish DoFns share.

A publish DoFn holds a BundlePublisher and calls it from its own setup, start_bundle, finish_bundle
and teardown. The BundlePublisher hands payloads to the worker process's one Publisher and turns what
became of each into outputs in the window and at the time the payload's records came with: a Receipt
for an accepted payload, and for a failed one a FailedRecord per record, restored as the payload says
(Payload.restored). A bundle's outputs are all emitted by the end of the bundle, and a bundle the
runner gave up on sends nothing more: the runner retries it, and its payloads would arrive twice.
"""
import queue
import threading
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import Future

from apache_beam import pvalue
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils import shared
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from connector.protocol.device import Device

from .memory import IN_FLIGHT_BYTES
from .metrics import SinkMetrics, report_sink
from .packing import Payload
from .publisher import Outcome, Publisher, PublisherConfig
from .results import FAILED, FailedRecord, Receipt, failure

# What the publish DoFns yield: receipts, and failed records tagged FAILED, in the windows they came from.
Output = WindowedValue | pvalue.TaggedOutput
# What a payload in flight came from: (device, topic, payload, window, timestamp).
_Context = tuple[Device, str, Payload, BoundedWindow, Timestamp]


class BundlePublisher:
    """Submits a DoFn's payloads to its process's Publisher, bundle by bundle, and emits what became of
    them. Pickled with its DoFn: it holds the config and the key of the process's Publisher, and makes
    the rest in setup."""

    def __init__(self, config: PublisherConfig) -> None:
        self._config = config
        # Its key, drawn here and pickled with the DoFn, names this sink's Publisher in every worker
        # process; nothing of the config (the credentials provider may hold secrets) is in it.
        self._shared_handle = shared.Shared()

    def setup(self) -> None:
        # One Publisher per process, whatever the number of DoFn instances: one /auth per device.
        self.publisher: Publisher = self._shared_handle.acquire(lambda: Publisher(self._config))
        self.publisher.retain()
        self.metrics = SinkMetrics()
        self.bundle: _Bundle | None = None

    def start_bundle(self) -> None:
        # A bundle still unfinished when the next starts was given up on by the runner, which retries
        # it: this copy's last one, or one another copy left on this thread (a runner runs a bundle on
        # one thread; the direct runner retries with a fresh copy and no teardown).
        self._give_up(self.bundle)
        self._give_up(_THREAD_BUNDLES.unfinished.get(self.publisher))
        self.bundle = _THREAD_BUNDLES.unfinished[self.publisher] = _Bundle()
        report_sink(self._config.endpoint)

    def finish_bundle(self) -> Iterator[Output]:
        """The outputs of every payload the bundle submitted, as they end."""
        bundle = self.bundle
        assert bundle is not None  # started by start_bundle
        while bundle.outstanding:
            yield from self._emit(*bundle.finished.get())
        self.bundle = None

    def teardown(self) -> None:
        self._give_up(self.bundle)
        self.bundle = None
        self.publisher.release()

    def _give_up(self, bundle: "_Bundle | None") -> None:
        """Cancel what a bundle has not sent yet (nothing, once it has finished)."""
        if bundle is not None:
            self.publisher.cancel(bundle.outstanding)

    def publish(self, items: Iterable[Payload | FailedRecord], device: Device, topic: str, window: BoundedWindow,
                timestamp: Timestamp) -> Iterator[Output]:
        """Submit each payload and emit each FailedRecord (counted) among items; yields the outputs of
        payloads that have ended meanwhile."""
        for item in items:
            if isinstance(item, FailedRecord):
                yield self.failed(item, window, timestamp)
            else:
                yield from self.submit(device, topic, item, window, timestamp)

    def submit(self, device: Device, topic: str, payload: Payload, window: BoundedWindow,
               timestamp: Timestamp) -> Iterator[Output]:
        """Hand a payload to the Publisher; yields outputs of payloads that have ended meanwhile."""
        future = self.publisher.submit(device, topic, payload.body, payload.held_bytes() + IN_FLIGHT_BYTES)
        context = (device, topic, payload, window, timestamp)
        bundle = self.bundle  # this bundle's, even if the payload ends after the runner gave up on it
        assert bundle is not None  # started by start_bundle
        bundle.outstanding.add(future)
        future.add_done_callback(lambda done: bundle.finished.put((done, context)))
        yield from self._ready()

    def failed(self, failed: FailedRecord, window: BoundedWindow, timestamp: Timestamp) -> pvalue.TaggedOutput:
        """The failed output of a record a step could not take, counted."""
        self.metrics.failed(failed.reason)
        return pvalue.TaggedOutput(FAILED, WindowedValue(failed, timestamp, (window,)))

    def _ready(self) -> Iterator[Output]:
        """Outputs of every payload that has ended, without waiting."""
        assert self.bundle is not None  # started by start_bundle
        while True:
            try:
                done, context = self.bundle.finished.get_nowait()
            except queue.Empty:
                return
            yield from self._emit(done, context)

    def _emit(self, done: Future[Outcome], context: _Context) -> Iterator[Output]:
        assert self.bundle is not None  # started by start_bundle
        self.bundle.outstanding.discard(done)
        device, topic, payload, window, timestamp = context
        outcome = done.result()
        self.metrics.outcome(outcome, len(payload.body), len(payload.records))
        auth_calls = self.publisher.tokens.take_auth_calls()  # whichever payload's attempt sent them
        if auth_calls:
            self.metrics.auth_calls.inc(auth_calls)
        if outcome.message_id is not None:
            receipt = Receipt(device.product_key, device.device_name, topic, outcome.message_id,
                              len(payload.records), len(payload.body))
            yield WindowedValue(receipt, timestamp, (window,))
            return
        error, reason = outcome.error, outcome.reason
        assert error is not None and reason is not None  # a payload not accepted always has both
        records, notes = payload.restored()
        for place, record in enumerate(records):
            failed = failure(record, error.message + notes.get(place, ""), reason, device, topic, code=error.code,
                             attempts=outcome.attempts)
            yield pvalue.TaggedOutput(FAILED, WindowedValue(failed, timestamp, (window,)))


class _Bundle:
    """The payloads a bundle has submitted and not yet emitted, and the queue their ends come to (from
    publishing threads) as (future, context)."""

    def __init__(self) -> None:
        self.outstanding: set[Future[Outcome]] = set()
        self.finished: queue.SimpleQueue[tuple[Future[Outcome], _Context]] = queue.SimpleQueue()


class _ThreadBundles(threading.local):
    """Per thread: Publisher -> the bundle last started there for it."""

    def __init__(self) -> None:
        # the Publisher may go once its sink is done
        self.unfinished: weakref.WeakKeyDictionary[Publisher, _Bundle] = weakref.WeakKeyDictionary()


_THREAD_BUNDLES = _ThreadBundles()
