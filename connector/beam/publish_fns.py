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

import apache_beam as beam
from apache_beam import coders, pvalue
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils import shared
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from connector.protocol.device import Device

from .encoders import EncodeError
from .metrics import SinkMetrics, report_sink
from .packing import Packer, RecordTooLarge
from .publisher import Publisher
from .results import FailedRecord, Reason, Receipt

FAILED = "failed"


class _PublishFn(beam.DoFn):
    """Base: submits payloads to the process's Publisher and emits what became of them."""

    def __init__(self, config, encoder, max_payload_bytes):
        self._config = config
        self._encoder = encoder
        self._max_payload_bytes = max_payload_bytes
        # Its key, drawn here and pickled with the DoFn, names this sink's Publisher in every worker
        # process; nothing of the config (the credentials provider may hold secrets) is in it.
        self._shared_handle = shared.Shared()

    def setup(self):
        # One Publisher per process, whatever the number of DoFn instances: one /auth per device.
        self._publisher = self._shared_handle.acquire(lambda: Publisher(self._config))
        self._publisher.retain()
        self._metrics = SinkMetrics()
        self._bundle = None

    def start_bundle(self):
        # A bundle still unfinished when the next starts was given up on by the runner, which retries
        # it: this copy's last one, or one another copy left on this thread (a runner runs a bundle on
        # one thread; the direct runner retries with a fresh copy and no teardown).
        self._give_up(self._bundle)
        self._give_up(_THREAD_BUNDLES.unfinished.get(self._publisher))
        self._bundle = _THREAD_BUNDLES.unfinished[self._publisher] = _Bundle()
        report_sink(self._config.endpoint)

    def finish_bundle(self):
        bundle = self._bundle
        while bundle.outstanding:
            yield from self._emit(*bundle.finished.get())
        self._bundle = None

    def teardown(self):
        self._give_up(self._bundle)
        self._bundle = None
        self._publisher.release()

    def _give_up(self, bundle):
        """Cancel what a bundle has not sent yet (nothing, once it has finished)."""
        if bundle is not None:
            self._publisher.cancel(bundle.outstanding)

    def _encoded(self, records, device, topic, window, timestamp):
        """(record, fragment) pairs; a record the encoder refuses comes out as a failed output instead."""
        encode = self._encoder.encode
        for record in records:
            try:
                yield record, encode(record)
            except EncodeError as error:
                yield self._failed(record, device, topic, Reason.UNENCODABLE, str(error), window, timestamp)

    def _pack(self, packer, device, topic, pairs, window, timestamp):
        """Pack (record, fragment) pairs, publishing each payload as it closes; failed outputs among
        the pairs pass through, and a record too large for any payload fails."""
        for item in pairs:
            if isinstance(item, pvalue.TaggedOutput):
                yield item
                continue
            record, fragment = item
            try:
                payload = packer.add(record, fragment)
            except RecordTooLarge as error:
                yield self._failed(record, device, topic, Reason.TOO_LARGE, str(error), window, timestamp)
                continue
            if payload is not None:
                yield from self._submit(device, topic, payload, window, timestamp)
        payload = packer.flush()
        if payload is not None:
            yield from self._submit(device, topic, payload, window, timestamp)

    def _submit(self, device, topic, payload, window, timestamp):
        """Hand a payload to the Publisher; yields outputs of payloads that have ended meanwhile."""
        future = self._publisher.submit(device, topic, payload.body, payload.held_bytes())
        context = (device, topic, payload, window, timestamp)
        bundle = self._bundle  # this bundle's, even if the payload ends after the runner gave up on it
        bundle.outstanding.add(future)
        future.add_done_callback(lambda done: bundle.finished.put((done, context)))
        yield from self._ready()

    def _ready(self):
        """Outputs of every payload that has ended, without waiting."""
        while True:
            try:
                done, context = self._bundle.finished.get_nowait()
            except queue.Empty:
                return
            yield from self._emit(done, context)

    def _emit(self, done, context):
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
        error = outcome.error
        for record in payload.records:
            failed = FailedRecord(record, device.product_key, device.device_name, topic, outcome.reason,
                                  error.code, error.message, outcome.attempts)
            yield pvalue.TaggedOutput(FAILED, WindowedValue(failed, timestamp, (window,)))

    def _failed(self, record, device, topic, reason, message, window, timestamp):
        self._metrics.failed(reason)
        failed = FailedRecord(record, device.product_key, device.device_name, topic, reason, None, message, 0)
        return pvalue.TaggedOutput(FAILED, WindowedValue(failed, timestamp, (window,)))


class _Bundle:
    """The payloads a bundle has submitted and not yet emitted, and the queue their ends come to (from
    publishing threads) as (future, context)."""

    def __init__(self):
        self.outstanding = set()
        self.finished = queue.SimpleQueue()


class _ThreadBundles(threading.local):
    """Per thread: Publisher -> the bundle last started there for it."""

    def __init__(self):
        self.unfinished = weakref.WeakKeyDictionary()  # the Publisher may go once its sink is done


_THREAD_BUNDLES = _ThreadBundles()


def _order_value(pair, field):
    return pair[0].get(field) if isinstance(pair[0], dict) else None


def _sort_key(field):
    """Records without the field first, then by its value."""
    def key(pair):
        value = _order_value(pair, field)
        return value is not None, value
    return key


def _kind(value):
    """What a value can be ordered with: numbers with numbers, else values of its own type."""
    return "number" if isinstance(value, (int, float)) else type(value).__name__


class _GroupedPublishFn(_PublishFn):
    """Batch: packs one device+topic group as it streams by, so no group needs to fit in memory.

    With order_by, records are sorted by that field within each sort buffer (sort_buffer_bytes of
    encoded records): a device whose history is larger is sorted buffer by buffer.
    """

    def __init__(self, config, encoder, max_payload_bytes, order_by=None, sort_buffer_bytes=64 << 20):
        super().__init__(config, encoder, max_payload_bytes)
        self._order_by = order_by
        self._sort_buffer_bytes = sort_buffer_bytes

    def process(self, element, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        ((product_key, device_name), topic), records = element
        device = Device(product_key, device_name)
        pairs = self._pairs(records, device, topic, window, timestamp)
        if self._order_by is not None:
            pairs = self._sorted_in_buffers(pairs, device, topic, window, timestamp)
        packer = Packer(self._encoder, device, self._max_payload_bytes)
        yield from self._pack(packer, device, topic, pairs, window, timestamp)

    def _pairs(self, records, device, topic, window, timestamp):
        """The group's (record, fragment) pairs and failed outputs."""
        return self._encoded(records, device, topic, window, timestamp)

    def _sorted_in_buffers(self, items, device, topic, window, timestamp):
        buffer, buffered_bytes = [], 0
        for item in items:
            if isinstance(item, pvalue.TaggedOutput):
                yield item
                continue
            buffer.append(item)
            buffered_bytes += len(item[1])
            if buffered_bytes >= self._sort_buffer_bytes:
                yield from self._sorted(buffer, device, topic, window, timestamp)
                buffer, buffered_bytes = [], 0
        yield from self._sorted(buffer, device, topic, window, timestamp)

    def _sorted(self, pairs, device, topic, window, timestamp):
        """The pairs in order_by order (stable). When their values cannot all be compared, those of the
        most common kind are ordered and every other record fails, saying why: none goes out of order."""
        field, key = self._order_by, _sort_key(self._order_by)
        try:
            return sorted(pairs, key=key)
        except TypeError:
            pass
        values = [_order_value(pair, field) for pair in pairs]
        kind = collections.Counter(_kind(v) for v in values if v is not None).most_common(1)[0][0]
        orderable = [pair for pair, value in zip(pairs, values) if value is None or _kind(value) == kind]
        try:
            orderable.sort(key=key)
        except TypeError:  # values of one kind with no order among them (dicts, say): none can be ordered
            kind = None
            orderable = [pair for pair, value in zip(pairs, values) if value is None]
        kept = {id(pair) for pair in orderable}
        failed = [self._failed(pair[0], device, topic, Reason.UNORDERABLE, _unorderable(field, value, kind),
                               window, timestamp)
                  for pair, value in zip(pairs, values) if id(pair) not in kept]
        return failed + orderable


def _unorderable(field, value, kind):
    """Why a record's order_by value kept it from being published (its type, never the value)."""
    if kind is None:
        return f"order_by field {field!r} holds {type(value).__name__} values, which have no order"
    return (f"order_by field {field!r} holds a {type(value).__name__}, which cannot be ordered with the "
            f"{kind} values of the device's other records")


class _SumInts(beam.CombineFn):
    """Sum with an int accumulator, as CombiningValueState's coder expects on every runner."""

    def create_accumulator(self):
        return 0

    def add_input(self, total, value):
        return total + value

    def merge_accumulators(self, totals):
        return sum(totals)

    def extract_output(self, total):
        return total


class _LatestMicros(_SumInts):
    """The latest timestamp in microseconds; before any, Beam's earliest (0 would clamp times before 1970)."""

    def create_accumulator(self):
        return MIN_TIMESTAMP.micros

    def add_input(self, latest, value):
        return max(latest, value)

    def merge_accumulators(self, values):
        return max(values, default=MIN_TIMESTAMP.micros)


class _BufferedPublishFn(_PublishFn):
    """Streaming: buffers a device+topic's records in state; flushes when the next record would not
    fit in the payload, at the window's end, and max_buffering_delay after the first record came."""

    BUFFER = userstate.BagStateSpec("buffer", coders.TupleCoder([coders.FastPrimitivesCoder(),
                                                                  coders.BytesCoder()]))
    COUNT = userstate.CombiningValueStateSpec("count", coders.VarIntCoder(), _SumInts())
    BYTES = userstate.CombiningValueStateSpec("bytes", coders.VarIntCoder(), _SumInts())
    LATEST = userstate.CombiningValueStateSpec("latest_micros", coders.VarIntCoder(), _LatestMicros())
    WINDOW_END = userstate.TimerSpec("window_end", TimeDomain.WATERMARK)
    DELAY = userstate.TimerSpec("delay", TimeDomain.REAL_TIME)

    def __init__(self, config, encoder, max_payload_bytes, max_buffering_delay=None, clock=None):
        super().__init__(config, encoder, max_payload_bytes)
        self._max_buffering_delay = max_buffering_delay
        self._clock = clock

    def process(self, element, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam,
                buffer=beam.DoFn.StateParam(BUFFER), count=beam.DoFn.StateParam(COUNT),
                size=beam.DoFn.StateParam(BYTES), latest=beam.DoFn.StateParam(LATEST),
                window_end=beam.DoFn.TimerParam(WINDOW_END), delay=beam.DoFn.TimerParam(DELAY)):
        ((product_key, device_name), topic), record = element
        device = Device(product_key, device_name)
        encoder = self._encoder
        try:
            fragment = encoder.encode(record)
        except EncodeError as error:
            yield self._failed(record, device, topic, Reason.UNENCODABLE, str(error), window, timestamp)
            return
        held = count.read()
        try:  # the packer's own rules, so batch and streaming pack and refuse records alike
            closes = Packer(encoder, device, self._max_payload_bytes).would_close(held, size.read(), fragment)
        except RecordTooLarge as error:
            yield self._failed(record, device, topic, Reason.TOO_LARGE, str(error), window, timestamp)
            return
        if closes:
            yield from self._flush(device, topic, window, buffer, count, size, latest)
            held = 0
        buffer.add((record, fragment))
        count.add(1)
        size.add(len(fragment))
        latest.add(timestamp.micros)
        window_end.set(window.max_timestamp())
        if held == 0 and self._max_buffering_delay is not None:
            now = Timestamp.of(self._clock()) if self._clock else Timestamp.now()
            delay.set(now + Duration.of(self._max_buffering_delay))

    @userstate.on_timer(WINDOW_END)
    def on_window_end(self, key=beam.DoFn.KeyParam, window=beam.DoFn.WindowParam,
                      buffer=beam.DoFn.StateParam(BUFFER), count=beam.DoFn.StateParam(COUNT),
                      size=beam.DoFn.StateParam(BYTES), latest=beam.DoFn.StateParam(LATEST),
                      delay=beam.DoFn.TimerParam(DELAY)):
        # A processing-time timer holds the watermark at its record's time until it fires, and Flink
        # fires none once the input has ended: left set, it would keep the job from ever finishing.
        delay.clear()
        yield from self._flush(Device(*key[0]), key[1], window, buffer, count, size, latest)

    @userstate.on_timer(DELAY)
    def on_delay(self, key=beam.DoFn.KeyParam, window=beam.DoFn.WindowParam,
                 buffer=beam.DoFn.StateParam(BUFFER), count=beam.DoFn.StateParam(COUNT),
                 size=beam.DoFn.StateParam(BYTES), latest=beam.DoFn.StateParam(LATEST)):
        yield from self._flush(Device(*key[0]), key[1], window, buffer, count, size, latest)

    def _flush(self, device, topic, window, buffer, count, size, latest):
        """Publish what is buffered (stamped with the latest record's time) and clear the state."""
        items = list(buffer.read())
        timestamp = Timestamp(micros=latest.read())
        for state in (buffer, count, size, latest):
            state.clear()
        if not items:
            return
        packer = Packer(self._encoder, device, self._max_payload_bytes)
        yield from self._pack(packer, device, topic, items, window, timestamp)
