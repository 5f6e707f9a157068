"""The streaming path: each key's records buffered in Beam state, packed and published on a flush.

    records --KeyByDeviceAndTopic--> (key, record) --_BufferedPublishFn--> outputs

A key's buffer is one open payload, kept in state: it flushes when the next record would not fit, as
soon as it is full, at the window's end, and max_buffering_delay after its first record came. The
packer's own rules decide (Packer.would_close, is_full), so batch and streaming pack and refuse
records alike.
"""
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagRuntimeState, CombiningValueRuntimeState, RuntimeTimer
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from connector.protocol.device import Device

from .encoders import Encoder
from .hints import KEY, TIMESTAMP, WINDOW, not_type_hints, state, timer
from .packing import Packer, packed
from .publisher import PublisherConfig
from .publishing import BundlePublisher, Output
from .results import Reason, failure
from .routing import Key


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


class _BufferedPublishFn(beam.DoFn):
    """Buffers a device+topic's records in state; flushes when the next record would not
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
    getting records. Prism does: it builds the next bundle of a key's records before the bundle of
    its due timers and defers a timer whose key is in a bundle, so under a steady flow of records a
    device's timer would wait until its records stop.
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
        self._encoder = encoder
        self._max_payload_bytes = max_payload_bytes
        self._publishing = BundlePublisher(config)
        self._max_buffering_delay = max_buffering_delay
        self._clock = clock

    def setup(self) -> None:
        self._publishing.setup()

    def start_bundle(self) -> None:
        self._publishing.start_bundle()

    def finish_bundle(self) -> Iterator[Output]:
        return self._publishing.finish_bundle()

    def teardown(self) -> None:
        self._publishing.teardown()

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
            yield self._publishing.failed(failure(record, error, Reason.UNENCODABLE, device, topic), window, timestamp)
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
        yield from self._publishing.publish(packed(packer, topic, items), device, topic, window, timestamp)
