"""The DoFns that pack a device's records into payloads and publish them.

_PublishFn holds what both modes share: the per-process Publisher, payloads in flight, and turning
outcomes into receipts and failed records in the windows they came from. _GroupedPublishFn packs the
groups a GroupByKey gives (batch); _BufferedPublishFn buffers in state and flushes on size, at window
end and after a delay (streaming).
"""
import queue

import apache_beam as beam
from apache_beam import coders, pvalue
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils import shared
from apache_beam.utils.timestamp import Duration, Timestamp
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
        self._shared_handle = shared.Shared()

    def setup(self):
        # One Publisher per process, whatever the number of DoFn instances: one /auth per device.
        self._publisher = self._shared_handle.acquire(lambda: Publisher(self._config), tag=repr(self._config))
        self._metrics = SinkMetrics()

    def start_bundle(self):
        report_sink(self._config.endpoint)
        self._finished = queue.SimpleQueue()  # (future, context) as payloads end, from publishing threads
        self._outstanding = 0

    def finish_bundle(self):
        while self._outstanding:
            yield from self._emit(*self._finished.get())

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
        future = self._publisher.submit(device, topic, payload.body)
        context = (device, topic, payload, window, timestamp)
        self._outstanding += 1
        future.add_done_callback(lambda done: self._finished.put((done, context)))
        yield from self._ready()

    def _ready(self):
        """Outputs of every payload that has ended, without waiting."""
        while True:
            try:
                done, context = self._finished.get_nowait()
            except queue.Empty:
                return
            yield from self._emit(done, context)

    def _emit(self, done, context):
        self._outstanding -= 1
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


def _sort_key(field):
    def key(pair):
        value = pair[0].get(field) if isinstance(pair[0], dict) else None
        return value is not None, value
    return key


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
        pairs = self._encoded(records, device, topic, window, timestamp)
        if self._order_by is not None:
            pairs = self._sorted_in_buffers(pairs)
        packer = Packer(self._encoder, device, self._max_payload_bytes)
        yield from self._pack(packer, device, topic, pairs, window, timestamp)

    def _sorted_in_buffers(self, items):
        key = _sort_key(self._order_by)
        buffer, buffered_bytes = [], 0
        for item in items:
            if isinstance(item, pvalue.TaggedOutput):
                yield item
                continue
            buffer.append(item)
            buffered_bytes += len(item[1])
            if buffered_bytes >= self._sort_buffer_bytes:
                yield from _stable_sorted(buffer, key)
                buffer, buffered_bytes = [], 0
        yield from _stable_sorted(buffer, key)


def _stable_sorted(pairs, key):
    """Sorted by key; in arrival order when the values cannot be compared (mixed types)."""
    try:
        return sorted(pairs, key=key)
    except TypeError:
        return pairs


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


class _MaxInts(_SumInts):
    def add_input(self, largest, value):
        return max(largest, value)

    def merge_accumulators(self, values):
        return max(values, default=0)


class _BufferedPublishFn(_PublishFn):
    """Streaming: buffers a device+topic's records in state; flushes when the next record would not
    fit in the payload, at the window's end, and max_buffering_delay after the first record came."""

    BUFFER = userstate.BagStateSpec("buffer", coders.TupleCoder([coders.FastPrimitivesCoder(),
                                                                  coders.BytesCoder()]))
    COUNT = userstate.CombiningValueStateSpec("count", coders.VarIntCoder(), _SumInts())
    BYTES = userstate.CombiningValueStateSpec("bytes", coders.VarIntCoder(), _SumInts())
    LATEST = userstate.CombiningValueStateSpec("latest_micros", coders.VarIntCoder(), _MaxInts())
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
