"""The DoFns that pack a device's records into payloads and publish them.

_PublishFn holds what both modes share: the per-process Publisher, payloads in flight, and turning
outcomes into receipts and failed records in the windows they came from. _GroupedPublishFn packs the
groups a GroupByKey gives (batch); _BufferedPublishFn buffers in state and flushes on size, at window
end and after a delay (streaming).
"""
import collections
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, cast

import apache_beam as beam
from apache_beam import coders, pvalue
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagRuntimeState, CombiningValueRuntimeState, RuntimeTimer
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils import shared
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from connector.protocol.device import Device

from .encoders import Encoder
from .hints import KEY, TIMESTAMP, WINDOW, not_type_hints, state, timer
from .memory import IN_FLIGHT_BYTES, PAIR_BYTES, RecordWeigher
from .metrics import SinkMetrics, report_sink
from .packing import Packer, Payload
from .publisher import Outcome, Publisher, PublisherConfig
from .results import Reason, Receipt, failure

FAILED = "failed"
# What the publish DoFns yield: receipts, and failed records tagged FAILED, in the windows they came from.
Output = WindowedValue | pvalue.TaggedOutput
# ((productKey, deviceName), topic), as the records are keyed.
Key = tuple[tuple[str, str], str]
# (record, fragment): a record and its encoding; failed outputs travel among them as TaggedOutputs.
Pair = tuple[Any, bytes]
# What a payload in flight came from: (device, topic, payload, window, timestamp).
_Context = tuple[Device, str, Payload, BoundedWindow, Timestamp]


class _PublishFn(beam.DoFn):
    """Base: submits payloads to the process's Publisher and emits what became of them."""

    def __init__(self, config: PublisherConfig, encoder: Encoder, max_payload_bytes: int) -> None:
        self._config = config
        self._encoder = encoder
        self._max_payload_bytes = max_payload_bytes
        # Its key, drawn here and pickled with the DoFn, names this sink's Publisher in every worker
        # process; nothing of the config (the credentials provider may hold secrets) is in it.
        self._shared_handle = shared.Shared()

    def setup(self) -> None:
        # One Publisher per process, whatever the number of DoFn instances: one /auth per device.
        self._publisher: Publisher = self._shared_handle.acquire(lambda: Publisher(self._config))
        self._publisher.retain()
        self._metrics = SinkMetrics()
        self._bundle: _Bundle | None = None

    def start_bundle(self) -> None:
        # A bundle still unfinished when the next starts was given up on by the runner, which retries
        # it: this copy's last one, or one another copy left on this thread (a runner runs a bundle on
        # one thread; the direct runner retries with a fresh copy and no teardown).
        self._give_up(self._bundle)
        self._give_up(_THREAD_BUNDLES.unfinished.get(self._publisher))
        self._bundle = _THREAD_BUNDLES.unfinished[self._publisher] = _Bundle()
        report_sink(self._config.endpoint)

    def finish_bundle(self) -> Iterator[Output]:
        bundle = self._bundle
        assert bundle is not None  # started by start_bundle
        while bundle.outstanding:
            yield from self._emit(*bundle.finished.get())
        self._bundle = None

    def teardown(self) -> None:
        self._give_up(self._bundle)
        self._bundle = None
        self._publisher.release()

    def _give_up(self, bundle: "_Bundle | None") -> None:
        """Cancel what a bundle has not sent yet (nothing, once it has finished)."""
        if bundle is not None:
            self._publisher.cancel(bundle.outstanding)

    def _encoded(self, records: Iterable[Any], device: Device, topic: str, window: BoundedWindow,
                 timestamp: Timestamp) -> Iterator[Pair | pvalue.TaggedOutput]:
        """(record, fragment) pairs; a record the encoder refuses comes out as a failed output instead."""
        encode = self._encoder.encode
        for record in records:
            try:
                yield record, encode(record)
            except Exception as error:
                yield self._failed(record, error, Reason.UNENCODABLE, device, topic, window, timestamp)

    def _pack(self, packer: Packer, device: Device, topic: str, pairs: Iterable[Pair | pvalue.TaggedOutput],
              window: BoundedWindow, timestamp: Timestamp) -> Iterator[Output]:
        """Pack (record, fragment) pairs, publishing each payload as it closes; failed outputs among
        the pairs pass through, and a record too large for any payload fails."""
        for item in pairs:
            if isinstance(item, pvalue.TaggedOutput):
                yield item
                continue
            record, fragment = item
            try:
                closed = packer.add(record, fragment)
            except Exception as error:
                yield self._failed(record, error, Reason.TOO_LARGE, device, topic, window, timestamp)
                continue
            for payload in closed:
                yield from self._submit(device, topic, payload, window, timestamp)
        last = packer.flush()
        if last is not None:
            yield from self._submit(device, topic, last, window, timestamp)

    def _submit(self, device: Device, topic: str, payload: Payload, window: BoundedWindow,
                timestamp: Timestamp) -> Iterator[Output]:
        """Hand a payload to the Publisher; yields outputs of payloads that have ended meanwhile."""
        future = self._publisher.submit(device, topic, payload.body, payload.held_bytes() + IN_FLIGHT_BYTES)
        context = (device, topic, payload, window, timestamp)
        bundle = self._bundle  # this bundle's, even if the payload ends after the runner gave up on it
        assert bundle is not None  # started by start_bundle
        bundle.outstanding.add(future)
        future.add_done_callback(lambda done: bundle.finished.put((done, context)))
        yield from self._ready()

    def _ready(self) -> Iterator[Output]:
        """Outputs of every payload that has ended, without waiting."""
        assert self._bundle is not None  # started by start_bundle
        while True:
            try:
                done, context = self._bundle.finished.get_nowait()
            except queue.Empty:
                return
            yield from self._emit(done, context)

    def _emit(self, done: Future[Outcome], context: _Context) -> Iterator[Output]:
        assert self._bundle is not None  # started by start_bundle
        self._bundle.outstanding.discard(done)
        device, topic, payload, window, timestamp = context
        outcome = done.result()
        self._metrics.outcome(outcome, len(payload.body), len(payload.records))
        auth_calls = self._publisher.tokens.take_auth_calls()  # whichever payload's attempt sent them
        if auth_calls:
            self._metrics.auth_calls.inc(auth_calls)
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

    def _failed(self, record: Any, why: BaseException | str, reason: str, device: Device, topic: str,
                window: BoundedWindow, timestamp: Timestamp) -> pvalue.TaggedOutput:
        """The failed output of a record a step could not take, counted (results.failure says why)."""
        failed = failure(record, why, reason, device, topic)
        self._metrics.failed(failed.reason)
        return pvalue.TaggedOutput(FAILED, WindowedValue(failed, timestamp, (window,)))


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


def _order_value(pair: Pair, field: str) -> Any:
    return pair[0].get(field) if isinstance(pair[0], dict) else None


def _sort_key(field: str) -> Callable[[Pair], tuple[bool, Any]]:
    """Records without the field first, then by its value."""
    def key(pair: Pair) -> tuple[bool, Any]:
        value = _order_value(pair, field)
        return value is not None, value
    return key


def _kind(value: object) -> str:
    """What a value can be ordered with: numbers with numbers, else values of its own type."""
    return "number" if isinstance(value, (int, float)) else type(value).__name__


class _GroupedPublishFn(_PublishFn):
    """Batch: packs one device+topic group as it streams by, so no group needs to fit in memory.

    With order_by, records are sorted by that field within each sort buffer (sort_buffer_bytes of
    memory: the records and their fragments, connector.beam.memory): a device whose history is larger
    is sorted buffer by buffer.
    """

    def __init__(self, config: PublisherConfig, encoder: Encoder, max_payload_bytes: int, order_by: str | None = None,
                 sort_buffer_bytes: int = 64 << 20) -> None:
        super().__init__(config, encoder, max_payload_bytes)
        self._order_by = order_by
        self._sort_buffer_bytes = sort_buffer_bytes

    @not_type_hints
    def process(self, element: tuple[Key, Iterable[Any]],
                window: BoundedWindow = WINDOW,
                timestamp: Timestamp = TIMESTAMP,
                ) -> Iterator[Output]:
        ((product_key, device_name), topic), records = element
        device = Device(product_key, device_name)
        pairs: Iterable[Pair | pvalue.TaggedOutput] = self._pairs(records, device, topic, window, timestamp)
        if self._order_by is not None:
            pairs = self._sorted_in_buffers(pairs, device, topic, window, timestamp)
        packer = Packer(self._encoder, device, self._max_payload_bytes)
        yield from self._pack(packer, device, topic, pairs, window, timestamp)

    def _pairs(self, records: Iterable[Any], device: Device, topic: str, window: BoundedWindow,
               timestamp: Timestamp) -> Iterator[Pair | pvalue.TaggedOutput]:
        """The group's (record, fragment) pairs and failed outputs."""
        return self._encoded(records, device, topic, window, timestamp)

    def _sorted_in_buffers(self, items: Iterable[Pair | pvalue.TaggedOutput], device: Device, topic: str,
                           window: BoundedWindow, timestamp: Timestamp) -> Iterator[Pair | pvalue.TaggedOutput]:
        buffer: list[Pair] = []
        buffered_bytes = 0
        weigher = RecordWeigher()
        for item in items:
            if isinstance(item, pvalue.TaggedOutput):
                yield item
                continue
            buffer.append(item)
            record, fragment = item
            buffered_bytes += len(fragment) + PAIR_BYTES + weigher.weigh(record, len(fragment))
            if buffered_bytes >= self._sort_buffer_bytes:
                yield from self._sorted(buffer, device, topic, window, timestamp)
                buffer, buffered_bytes = [], 0
        yield from self._sorted(buffer, device, topic, window, timestamp)

    def _sorted(self, pairs: list[Pair], device: Device, topic: str, window: BoundedWindow,
                timestamp: Timestamp) -> Sequence[Pair | pvalue.TaggedOutput]:
        """The pairs in order_by order (stable). When their values cannot all be compared, those of the
        most common kind are ordered and every other record fails, saying why: none goes out of order."""
        field = self._order_by
        assert field is not None  # sorting is for order_by only
        key = _sort_key(field)
        try:
            return sorted(pairs, key=key)
        except Exception:  # TypeError, or whatever a value's __lt__ raises (a numpy array's ValueError)
            pass
        values = [_order_value(pair, field) for pair in pairs]
        kind: str | None = collections.Counter(_kind(v) for v in values if v is not None).most_common(1)[0][0]
        orderable = [pair for pair, value in zip(pairs, values) if value is None or _kind(value) == kind]
        try:
            orderable.sort(key=key)
        except Exception:  # values of one kind with no order among them (dicts, say): none can be ordered
            kind = None
            orderable = [pair for pair, value in zip(pairs, values) if value is None]
        kept = {id(pair) for pair in orderable}
        failed = [self._failed(pair[0], _unorderable(field, value, kind), Reason.UNORDERABLE, device, topic,
                               window, timestamp)
                  for pair, value in zip(pairs, values) if id(pair) not in kept]
        return failed + orderable


def _unorderable(field: str, value: object, kind: str | None) -> str:
    """Why a record's order_by value kept it from being published (its type, never the value)."""
    if kind is None:
        return f"order_by field {field!r} holds {type(value).__name__} values, which have no order"
    return (f"order_by field {field!r} holds a {type(value).__name__}, which cannot be ordered with the "
            f"{kind} values of the device's other records")


class _SumInts(beam.CombineFn):
    """Sum with an int accumulator, as CombiningValueState's coder expects on every runner."""

    def create_accumulator(self) -> int:
        return 0

    def add_input(self, total: int, value: int) -> int:
        return total + value

    def merge_accumulators(self, totals: Iterable[int]) -> int:
        return sum(totals)

    def extract_output(self, total: int) -> int:
        return total


class _LatestMicros(_SumInts):
    """The latest timestamp in microseconds; before any, Beam's earliest (0 would clamp times before 1970)."""

    def create_accumulator(self) -> int:
        return MIN_TIMESTAMP.micros

    def add_input(self, latest: int, value: int) -> int:
        return max(latest, value)

    def merge_accumulators(self, values: Iterable[int]) -> int:
        return max(values, default=MIN_TIMESTAMP.micros)


class _BufferedPublishFn(_PublishFn):
    """Streaming: buffers a device+topic's records in state; flushes when the next record would not
    fit in the payload, as soon as the payload is full, at the window's end, and max_buffering_delay
    after the first record came.

    Receipts and failed records are stamped at the time the watermark is held for them, as
    GroupIntoBatches stamps its batches with its timer's time, so that a windowed step after
    .published or .failed finds none of them late: a flush in process at its record's time (the
    watermark has not passed it); the window's end flush at the window's end (its timer holds the
    watermark there); the delay's flush at the time of the record that set the delay's timer (a
    processing-time timer holds the watermark at the time of the record that set it, until it fires).
    A record's own time would not do: the watermark passes it while the record waits in the buffer.

    The delay's deadline is kept in state as well as set as a processing-time timer, and a record that
    comes after it flushes the buffer first: a runner may fire the timer late while the key keeps
    getting records. Prism (2.77) does: it builds the next bundle of a key's records before the bundle
    of its due timers and defers a timer whose key is in a bundle, so under a steady flow of records
    a device's timer waited until its records stopped (87 readings a message where 15 were due).
    """

    BUFFER = userstate.BagStateSpec("buffer", coders.TupleCoder([coders.FastPrimitivesCoder(),
                                                                  coders.BytesCoder()]))
    # Beam's CombineFn.__init__ is untyped, so mypy takes a CombineFn's construction for an untyped call.
    COUNT = userstate.CombiningValueStateSpec("count", coders.VarIntCoder(), _SumInts())  # type: ignore[no-untyped-call]
    BYTES = userstate.CombiningValueStateSpec("bytes", coders.VarIntCoder(), _SumInts())  # type: ignore[no-untyped-call]
    WINDOW_END = userstate.TimerSpec("window_end", TimeDomain.WATERMARK)
    DELAY = userstate.TimerSpec("delay", TimeDomain.REAL_TIME)
    # When the delay's timer is due (processing time), and the time of the record that set it, where
    # the timer holds the watermark (microseconds); both read only while records are held.
    DEADLINE = userstate.CombiningValueStateSpec(
        "delay_deadline_micros", coders.VarIntCoder(), _LatestMicros())  # type: ignore[no-untyped-call]
    HOLD = userstate.CombiningValueStateSpec(
        "delay_hold_micros", coders.VarIntCoder(), _LatestMicros())  # type: ignore[no-untyped-call]

    def __init__(self, config: PublisherConfig, encoder: Encoder, max_payload_bytes: int,
                 max_buffering_delay: float | None = None, clock: Callable[[], float] | None = None) -> None:
        super().__init__(config, encoder, max_payload_bytes)
        self._max_buffering_delay = max_buffering_delay
        self._clock = clock

    @not_type_hints
    def process(self, element: tuple[Key, Any],
                window: BoundedWindow = WINDOW,
                timestamp: Timestamp = TIMESTAMP,
                buffer: BagRuntimeState = state(BUFFER),
                count: CombiningValueRuntimeState = state(COUNT),
                size: CombiningValueRuntimeState = state(BYTES),
                window_end: RuntimeTimer = timer(WINDOW_END),
                delay: RuntimeTimer = timer(DELAY),
                deadline: CombiningValueRuntimeState = state(DEADLINE),
                hold: CombiningValueRuntimeState = state(HOLD),
                ) -> Iterator[Output]:
        ((product_key, device_name), topic), record = element
        device = Device(product_key, device_name)
        encoder = self._encoder
        # A CombiningValueState reads as its combined value, which Beam types as the Iterable of a bag's.
        held, held_bytes = cast(int, count.read()), cast(int, size.read())
        timed = held > 0 and self._max_buffering_delay is not None  # the delay's timer is set
        try:  # the packer's own rules, so batch and streaming pack and refuse records alike
            fragment = encoder.encode(record)
            packer = Packer(encoder, device, self._max_payload_bytes)
            closes = packer.would_close(held, held_bytes, fragment)
        except Exception as error:
            yield self._failed(record, error, Reason.UNENCODABLE, device, topic, window, timestamp)
            return
        if closes or (timed and self._now() >= Timestamp(micros=cast(int, deadline.read()))):
            yield from self._flush(device, topic, window, timestamp, buffer, count, size)
            held = held_bytes = 0
        buffer.add((record, fragment))
        count.add(1)
        size.add(len(fragment))
        window_end.set(window.max_timestamp())
        if packer.is_full(held + 1, held_bytes + len(fragment)):  # nothing more can join: it goes now
            if timed:  # nothing is left for the delay's timer to send, or to hold the watermark for
                delay.clear()
            yield from self._flush(device, topic, window, timestamp, buffer, count, size)
        elif held == 0 and self._max_buffering_delay is not None:
            due = self._now() + Duration.of(self._max_buffering_delay)
            for kept, value in ((deadline, due.micros), (hold, timestamp.micros)):
                kept.clear()
                kept.add(value)
            delay.set(due)

    def _now(self) -> Timestamp:
        """Processing time: the wall clock, or the clock a test gives."""
        return Timestamp.of(self._clock()) if self._clock else Timestamp.now()

    @userstate.on_timer(WINDOW_END)
    def on_window_end(self, key: Key = KEY, window: BoundedWindow = WINDOW, buffer: BagRuntimeState = state(BUFFER),
                      count: CombiningValueRuntimeState = state(COUNT), size: CombiningValueRuntimeState = state(BYTES),
                      delay: RuntimeTimer = timer(DELAY)) -> Iterator[Output]:
        # A processing-time timer holds the watermark at its record's time until it fires, and Flink
        # fires none once the input has ended: left set, it would keep the job from ever finishing.
        delay.clear()
        yield from self._flush(Device(*key[0]), key[1], window, window.max_timestamp(), buffer, count, size)

    @userstate.on_timer(DELAY)
    def on_delay(self, key: Key = KEY, window: BoundedWindow = WINDOW, buffer: BagRuntimeState = state(BUFFER),
                 count: CombiningValueRuntimeState = state(COUNT), size: CombiningValueRuntimeState = state(BYTES),
                 hold: CombiningValueRuntimeState = state(HOLD)) -> Iterator[Output]:
        yield from self._flush(Device(*key[0]), key[1], window, Timestamp(micros=cast(int, hold.read())), buffer,
                               count, size)

    def _flush(self, device: Device, topic: str, window: BoundedWindow, timestamp: Timestamp,
               buffer: BagRuntimeState, count: CombiningValueRuntimeState,
               size: CombiningValueRuntimeState) -> Iterator[Output]:
        """Publish what is buffered, its outputs stamped with timestamp, and clear the buffer."""
        items = list(buffer.read())
        for kept in (buffer, count, size):
            kept.clear()
        if not items:
            return
        packer = Packer(self._encoder, device, self._max_payload_bytes)
        yield from self._pack(packer, device, topic, items, window, timestamp)
