"""The batch path: route and encode before the shuffle, group a key's chunks, pack and publish them.

    records --_RouteAndEncodeFn--> (key, chunk) --GroupByKey--> (key, chunks) --_PublishChunksFn--> outputs

Records cross the GroupByKey as byte chunks, a few per key (connector.beam.chunks), not one by one:
Beam's per-element work around a shuffle (coding each record as a pickled dict, grouping it, decoding
it) costs more than reading and encoding it. The first stage routes and encodes each record and holds
per key and window its fragments until they reach CHUNK_BYTES, the bundle ends or the bundle holds
BUNDLE_BYTES of memory. A record that cannot be routed, encoded or fit in any payload fails there, so
it does not cross the shuffle. After it, each key's chunks are packed as they stream by from the
GroupByKey, so no key's records need to fit in memory, and fragments from different bundles share
payloads (the fewest messages). With order_by, each key's records are sorted a buffer at a time
(connector.beam.ordering) before packing.
"""
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam import pvalue, typehints
from apache_beam.pvalue import PCollection
from apache_beam.transforms.window import BoundedWindow, GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from connector.protocol.device import Device

from .chunks import ChunkPayload, OpenChunk, chunk_pairs, chunk_payloads, encode_chunk, picklable
from .encoders import EncodeError, Encoder
from .hints import TIMESTAMP, WINDOW, not_type_hints
from .memory import CHECKER_BYTES, FRAGMENT_BYTES, OPEN_CHUNK_BYTES, WINDOW_BYTES, RecordWeigher, deep_size
from .metrics import SinkMetrics
from .ordering import OrderBy
from .packing import Packer, Payload, packed
from .publisher import PublisherConfig
from .publishing import BundlePublisher, Output
from .results import FAILED, FailedRecord, Reason
from .routing import KEY_TYPE, CallableRouter, FieldRouter, Key, RecordRouting, failed_output

# A chunk closes at this many bytes of fragments. A bundle sends all it holds when that is BUNDLE_BYTES
# of memory (connector.beam.memory): each fragment with its object and list slot, a record kept beside
# its fragment (weighed), and each open chunk (with its key, when the router makes one per record), window
# and too-large check. Fewer, fuller chunks are what make many devices cheap.
CHUNK_BYTES = 256 << 10
BUNDLE_BYTES = 16 << 20
_GLOBAL_WINDOW = GlobalWindow()  # made once: making one costs more than routing a record


def grouped_chunks(records: PCollection[Any], router: FieldRouter | CallableRouter, encoder: Encoder,
                   max_payload_bytes: int) -> tuple[PCollection[Any], PCollection[FailedRecord]]:
    """The batch path up to the packing: records routed, encoded and chunked per key and window before
    the shuffle; the chunks grouped by key; and a FailedRecord for each record that failed on the way.
    WriteToIoTPlatform runs it, and so do the pipelines' dry run and the throughput benchmark's
    ceiling, so that they take the connector's own shape."""
    in_global_window = isinstance(records.windowing.windowfn, GlobalWindows)
    route_fn = (_RouteAndEncodeFn if in_global_window else _RouteAndEncodeInWindowsFn)(
        router, encoder, max_payload_bytes)
    routed = records | "RouteAndEncode" >> beam.ParDo(route_fn).with_output_types(
        typehints.KV[KEY_TYPE, bytes]).with_outputs(FAILED, main="chunks")
    grouped = routed.chunks | "GroupByDevice" >> beam.GroupByKey()
    return grouped, failed_output(routed)


class ChunkBuilder:
    """The first stage's bundle: routes, encodes and holds records as open chunks per window and key,
    and closes them into (key, chunk) outputs. Both first-stage DoFns hold one, made in setup."""

    def __init__(self, routing: RecordRouting, encoder: Encoder, max_payload_bytes: int) -> None:
        self._routing = routing
        self._router = routing.router
        self._encoder = encoder
        self._max_payload_bytes = max_payload_bytes
        self._restores = encoder.restores
        self._shares_keys = self._router.shares_keys

    def start_bundle(self) -> None:
        self.open: dict[BoundedWindow, dict[tuple[Device, str], OpenChunk]] = {}  # window -> {key: chunk}
        self.in_global_window: dict[tuple[Device, str], OpenChunk] = {}
        self.open[_GLOBAL_WINDOW] = self.in_global_window
        self._checks: dict[int, Callable[[bytes], None]] = {}  # envelope bytes -> the too-large check
        self._weigher = RecordWeigher()
        self.held = 0  # memory held, as BUNDLE_BYTES counts it
        self.records_in = 0  # counted per bundle: a counter's inc per record costs as much as routing

    def in_window(self, window: BoundedWindow) -> dict[tuple[Device, str], OpenChunk]:
        """The open chunks of a window, by key."""
        chunks = self.open.get(window)
        if chunks is None:
            chunks = self.open[window] = {}
            self.held += WINDOW_BYTES
        return chunks

    def add(self, record: Any, chunks: dict[tuple[Device, str], OpenChunk],
            window: BoundedWindow) -> Iterable[Output] | None:
        """Route, encode and hold one record; returns the outputs this gives, if any."""
        self.records_in += 1
        if type(record) is dict:  # the common case, without a call
            try:
                key = self._router(record)
            except Exception as error:
                return (self._routing.failed(record, error, Reason.UNROUTABLE),)
        else:
            routed = self._routing.route(record)
            if isinstance(routed, pvalue.TaggedOutput):
                return (routed,)
            key, record = routed
        chunk = chunks.get(key)
        if chunk is None:
            chunk = chunks[key] = OpenChunk(key, self._check(key[0]), self._opened_bytes(key))
            self.held += chunk.held
        try:
            fragment = self._encoder.encode(record)
            chunk.check(fragment)
            restores = self._restores(record)
        except Exception as error:
            return (self._routing.failed(record, error, Reason.UNENCODABLE, key),)
        size = len(fragment)
        held = size + FRAGMENT_BYTES
        if not restores:
            chunk.kept[len(chunk.fragments)] = record
            held += self._weigher.weigh(record, size)
        chunk.fragments.append(fragment)
        chunk.size += size
        chunk.held += held
        self.held += held
        if self.held >= BUNDLE_BYTES:
            return self.close_all()
        if chunk.size >= CHUNK_BYTES:
            del chunks[key]
            self.held -= chunk.held
            return self._closed(chunk, window)
        return None

    def _opened_bytes(self, key: tuple[Device, str]) -> int:
        """The memory a chunk holds as it opens: its own objects, and its key unless the router shares
        one key among a device's records."""
        return OPEN_CHUNK_BYTES if self._shares_keys else OPEN_CHUNK_BYTES + deep_size(key)

    def _check(self, device: Device) -> Callable[[bytes], None]:
        """The device's too-large check (Packer.check). It depends on the device only through the
        encoder's envelope, so one Packer serves every device whose envelope is as long."""
        overhead = self._encoder.overhead(device)
        check = self._checks.get(overhead)
        if check is None:
            check = self._checks[overhead] = Packer(self._encoder, device, self._max_payload_bytes).check
            self.held += CHECKER_BYTES
        return check

    def finish_bundle(self) -> Iterator[Output]:
        self._routing.metrics.records_in.inc(self.records_in)
        self.records_in = 0
        return self.close_all()

    def close_all(self) -> Iterator[Output]:
        """Every open chunk's output, made as the runner takes them (it sends each on before it asks
        for the next): a chunk lets go of its fragments as its output is made, so the outputs do not
        come on top of all that was held. The bundle starts holding anew at once."""
        held = self.open
        self.in_global_window = {}
        self.open = {_GLOBAL_WINDOW: self.in_global_window}
        self._checks = {}
        self.held = 0
        return self._outputs(held)

    def _outputs(self, held: dict[BoundedWindow, dict[tuple[Device, str], OpenChunk]]) -> Iterator[Output]:
        for window, chunks in held.items():
            while chunks:
                chunk = chunks.popitem()[1]
                if chunk.fragments:
                    yield from self._closed(chunk, window)

    def _closed(self, chunk: OpenChunk, window: BoundedWindow) -> list[Output]:
        """A chunk's output; and the failed output of each record kept beside its fragment that cannot be
        pickled (a lock in it, say), which the chunk then goes without. In the global window at the
        earliest time, as Beam's own batch outputs are (a chunk at the end of time moves Prism 2.62's
        watermarks ahead of a later stage's side input); in other windows at their end, where the
        GroupByKey puts its output anyway."""
        timestamp = MIN_TIMESTAMP if isinstance(window, GlobalWindow) else window.max_timestamp()
        failed: list[Output] = []
        try:
            encoded = encode_chunk(chunk.fragments, chunk.kept)
        except Exception:
            unpicklable = [place for place, record in chunk.kept.items() if not picklable(record)]
            for place in unpicklable:
                error = EncodeError("the record cannot be pickled to cross the shuffle beside its fragment")
                tagged = self._routing.failed(chunk.kept[place], error, Reason.UNENCODABLE, chunk.key)
                # Windowed: finish_bundle's outputs must say their window.
                failed.append(pvalue.TaggedOutput(FAILED, WindowedValue(tagged.value, timestamp, (window,))))
            encoded = encode_chunk(*chunk.without(unpicklable))
            if not encoded:
                return failed
        return [*failed, WindowedValue((chunk.key, encoded), timestamp, (window,))]


class _RouteAndEncodeFn(beam.DoFn):
    """The first stage for records of the global window: (key, chunk) outputs, a chunk per CHUNK_BYTES
    of one key's fragments, and the rest when the bundle ends or holds BUNDLE_BYTES.

    Its process takes no window: Beam calls such a DoFn on a faster path, which matters per record.
    """

    def __init__(self, router: FieldRouter | CallableRouter, encoder: Encoder, max_payload_bytes: int) -> None:
        self._router = router
        self._encoder = encoder
        self._max_payload_bytes = max_payload_bytes

    def setup(self) -> None:
        routing = RecordRouting(self._router, SinkMetrics())
        self._chunks = ChunkBuilder(routing, self._encoder, self._max_payload_bytes)

    def start_bundle(self) -> None:
        self._chunks.start_bundle()

    @not_type_hints
    def process(self, record: Any) -> Iterable[Output] | None:
        chunks = self._chunks
        return chunks.add(record, chunks.in_global_window, _GLOBAL_WINDOW)

    def finish_bundle(self) -> Iterator[Output]:
        return self._chunks.finish_bundle()


class _RouteAndEncodeInWindowsFn(_RouteAndEncodeFn):
    """The same for records in windows other than the global one, each window's chunks apart."""

    @not_type_hints
    def process(self, record: Any, window: BoundedWindow = WINDOW) -> Iterable[Output] | None:
        chunks = self._chunks
        return chunks.add(record, chunks.in_window(window), window)


class ChunkPacking:
    """A key's chunks as payloads, packed as they stream by (record by record, sorted, with order_by),
    and the records that fail on the way (unorderable, or too large). Nothing of Beam or of publishing:
    the publish step and the pipelines' dry run both hold one."""

    def __init__(self, encoder: Encoder, max_payload_bytes: int, order_by: str | None = None,
                 sort_buffer_bytes: int = 64 << 20) -> None:
        self.encoder = encoder
        self.max_payload_bytes = max_payload_bytes
        self._order_by = None if order_by is None else OrderBy(order_by, sort_buffer_bytes)

    def payloads(self, device: Device, topic: str, chunks: Iterable[bytes]
                 ) -> Iterator[ChunkPayload | Payload | FailedRecord]:
        packer = Packer(self.encoder, device, self.max_payload_bytes)
        if self._order_by is None:
            return chunk_payloads(packer, chunks)
        pairs = (pair for chunk in chunks for pair in chunk_pairs(chunk, self.encoder, device))
        return packed(packer, topic, self._order_by.sorted_in_buffers(pairs, device, topic))


class _PublishChunksFn(beam.DoFn):
    """Packs and publishes one key's chunks as they stream by from the GroupByKey."""

    def __init__(self, config: PublisherConfig, encoder: Encoder, max_payload_bytes: int, order_by: str | None = None,
                 sort_buffer_bytes: int = 64 << 20) -> None:
        self._packing = ChunkPacking(encoder, max_payload_bytes, order_by, sort_buffer_bytes)
        self._publishing = BundlePublisher(config)

    def setup(self) -> None:
        self._publishing.setup()

    def start_bundle(self) -> None:
        self._publishing.start_bundle()

    @not_type_hints
    def process(self, element: tuple[Key, Iterable[bytes]],
                window: BoundedWindow = WINDOW,
                timestamp: Timestamp = TIMESTAMP,
                ) -> Iterator[Output]:
        ((product_key, device_name), topic), chunks = element
        device = Device(product_key, device_name)
        yield from self._publishing.publish(self._packing.payloads(device, topic, chunks), device, topic, window,
                                            timestamp)

    def finish_bundle(self) -> Iterator[Output]:
        return self._publishing.finish_bundle()

    def teardown(self) -> None:
        self._publishing.teardown()
