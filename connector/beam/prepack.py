"""Batch: route and encode before the shuffle, so the GroupByKey moves a few byte chunks per device
instead of every record.

Beam's per-element work around a GroupByKey (coding each record as a pickled dict, grouping it,
decoding it) cost more than reading and encoding it. _RouteAndEncodeFn routes and encodes each record
and keeps, per device, topic and window, its fragments until they reach CHUNK_BYTES or the bundle ends;
a chunk is one bytes value: the fragments, and the records the encoder cannot restore from them,
pickled. After the GroupByKey, _ChunkedPublishFn feeds the fragments of all of a device's chunks to one
packer, so fragments from different bundles share payloads (the fewest messages). A failed record is
its original: restored from its payload's body by the encoder (Encoder.restores says which records it
gives back exactly), or unpickled from the chunk. With order_by, records are sorted as before.
"""
import collections.abc
import functools
import pickle
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.transforms.window import BoundedWindow, GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from connector.protocol.device import Device

from .encoders import EncodeError, Encoder
from .hints import TIMESTAMP, WINDOW, not_type_hints
from .metrics import SinkMetrics
from .packing import Packer, Payload, RecordTooLarge
from .publish_fns import FAILED, Key, Output, Pair, _GroupedPublishFn
from .results import FailedRecord, Reason
from .routing import CallableRouter, FieldRouter, RoutingError
from .schemas import as_dict

# A chunk closes at this many bytes of fragments. A bundle sends all it holds when that is BUNDLE_BYTES
# of memory: each fragment with its object and list slot, and a record kept beside its fragment at
# KEPT_RECORD_FACTOR times the fragment's size (a 150-byte reading's dict takes about 6 times its JSON).
# Fewer, fuller chunks are what make many devices cheap: 16 MB gave 10,000 devices a first stage a
# quarter shorter than 8 MB, and holds less than 8 MB did when every record was kept.
CHUNK_BYTES = 256 << 10
BUNDLE_BYTES = 16 << 20
KEPT_RECORD_FACTOR = 6
_FRAGMENT_OVERHEAD = sys.getsizeof(b"") + 8
_GLOBAL_WINDOW = GlobalWindow()  # made once: making one costs more than routing a record
_SEGMENT_BYTES = sys.getsizeof((None, 0, 0))  # a (chunk originals, start, stop) triple


class _RouteFn(beam.DoFn):
    """Keys each record by (Device, topic), Beam's standard coder for ((productKey, deviceName), topic);
    what cannot be routed fails here."""

    def __init__(self, router: FieldRouter | CallableRouter) -> None:
        self._router = router

    def setup(self) -> None:
        self._metrics = SinkMetrics()

    @not_type_hints
    def process(self, record: Any) -> Iterator[tuple[tuple[Device, str], Any] | pvalue.TaggedOutput]:
        self._metrics.records_in.inc()
        if not isinstance(record, dict):
            record = self._entered(record)
            if isinstance(record, pvalue.TaggedOutput):
                yield record
                return
        try:
            key = self._router(record)  # (Device, topic): a Device is the (productKey, deviceName) pair
        except RoutingError as error:
            yield self._unroutable(record, error)
            return
        yield key, record

    def _entered(self, record: Any) -> Any:
        """A record that is not a dict as one (beam.Row, NamedTuple); a FailedRecord among the records (input
        a reader could not read, e.g. a CSV value that is not its column's type) as its failed output, counted."""
        if isinstance(record, FailedRecord):
            self._metrics.failed(record.reason)
            return pvalue.TaggedOutput(FAILED, record)
        return as_dict(record)

    def _unroutable(self, record: Any, error: RoutingError) -> pvalue.TaggedOutput:
        device = error.device
        return self._failure(record, device and device.product_key, device and device.device_name, error.topic,
                             error.reason, str(error))

    def _failure(self, record: Any, product_key: str | None, device_name: str | None, topic: str | None,
                 reason: str, message: str) -> pvalue.TaggedOutput:
        """The record's failed output, counted: failed before any attempt to publish it."""
        self._metrics.failed(reason)
        return pvalue.TaggedOutput(FAILED, FailedRecord(record, product_key, device_name, topic, reason, None,
                                                        message, 0))


class _RouteAndEncodeFn(_RouteFn):
    """Routes and encodes each record of the global window; emits (key, chunk) pairs, a chunk per
    CHUNK_BYTES of fragments of one key, and the rest when the bundle ends or holds BUNDLE_BYTES.
    A record too large for any payload fails here, so that it does not cross the shuffle.

    Its process takes no window: Beam calls such a DoFn on a faster path, which matters per record.
    """

    def __init__(self, router: FieldRouter | CallableRouter, encoder: Encoder, max_payload_bytes: int) -> None:
        super().__init__(router)
        self._encoder = encoder
        self._max_payload_bytes = max_payload_bytes

    def setup(self) -> None:
        super().setup()
        self._restores = self._encoder.restores

    def start_bundle(self) -> None:
        self._open: dict[BoundedWindow, dict[tuple[Device, str], _OpenChunk]] = {}  # window -> {key: chunk}
        self._global: dict[tuple[Device, str], _OpenChunk] = {}
        self._open[_GLOBAL_WINDOW] = self._global
        self._held = 0
        self._records_in = 0  # counted per bundle: a counter's inc per record costs as much as routing

    @not_type_hints
    def process(  # type: ignore[override]  # it outputs chunks where _RouteFn outputs keyed records
            self, record: Any) -> Sequence[WindowedValue | pvalue.TaggedOutput] | None:
        return self._add(record, self._global, _GLOBAL_WINDOW)

    def _add(self, record: Any, chunks: dict[tuple[Device, str], "_OpenChunk"],
             window: BoundedWindow) -> Sequence[WindowedValue | pvalue.TaggedOutput] | None:
        """Route, encode and hold one record; returns the outputs this gives, if any."""
        self._records_in += 1
        if not isinstance(record, dict):
            record = self._entered(record)
            if isinstance(record, pvalue.TaggedOutput):
                return (record,)
        try:
            key = self._router(record)
        except RoutingError as error:
            return (self._unroutable(record, error),)
        chunk = chunks.get(key)
        if chunk is None:
            chunk = chunks[key] = _OpenChunk(self._encoder, key, self._max_payload_bytes)
        try:
            fragment = self._encoder.encode(record)
            if len(fragment) > chunk.max_fragment_bytes:
                raise chunk.too_large(fragment)
        except (EncodeError, RecordTooLarge) as error:
            reason = Reason.UNENCODABLE if isinstance(error, EncodeError) else Reason.TOO_LARGE
            (product_key, device_name), topic = key
            return (self._failure(record, product_key, device_name, topic, reason, str(error)),)
        size = len(fragment)
        held = size + _FRAGMENT_OVERHEAD
        if not self._restores(record):
            chunk.kept[len(chunk.fragments)] = record
            held += size * KEPT_RECORD_FACTOR
        chunk.fragments.append(fragment)
        chunk.size += size
        chunk.held += held
        self._held += held
        if self._held >= BUNDLE_BYTES:
            return self._close_all()
        if chunk.size >= CHUNK_BYTES:
            del chunks[key]
            self._held -= chunk.held
            return (chunk.closed(window),)
        return None

    def finish_bundle(self) -> list[WindowedValue]:
        self._metrics.records_in.inc(self._records_in)
        self._records_in = 0
        return self._close_all()

    def _close_all(self) -> list[WindowedValue]:
        closed = [chunk.closed(window) for window, chunks in self._open.items() for chunk in chunks.values()
                  if chunk.fragments]
        for chunks in self._open.values():
            chunks.clear()
        self._open = {_GLOBAL_WINDOW: self._global}
        self._held = 0
        return closed


class _RouteAndEncodeInWindowsFn(_RouteAndEncodeFn):
    """The same for records in windows other than the global one, each window's chunks apart."""

    @not_type_hints
    def process(self, record: Any,  # type: ignore[override]  # it adds the window to its base's process
                window: BoundedWindow = WINDOW,
                ) -> Sequence[WindowedValue | pvalue.TaggedOutput] | None:
        chunks = self._open.get(window)
        if chunks is None:
            chunks = self._open[window] = {}
        return self._add(record, chunks, window)


class _OpenChunk:
    """One key's fragments in a bundle, and the records among them the encoder cannot restore, until
    they close as a chunk."""

    __slots__ = ("key", "fragments", "kept", "size", "held", "max_fragment_bytes", "too_large")

    def __init__(self, encoder: Encoder, key: tuple[Device, str], max_payload_bytes: int) -> None:
        self.key = key
        self.fragments: list[bytes] = []
        self.kept: dict[int, Any] = {}  # place among the fragments -> record, for those not restored
        self.size = 0  # bytes of fragments
        self.held = 0  # memory held, as BUNDLE_BYTES counts it
        packer = Packer(encoder, key[0], max_payload_bytes)
        self.max_fragment_bytes, self.too_large = packer.max_fragment_bytes, packer.too_large

    def closed(self, window: BoundedWindow) -> WindowedValue:
        # In the global window at the earliest time, as Beam's own batch outputs are (a chunk at the end
        # of time moved Prism 2.62's watermarks ahead of a later stage's side input); in other windows
        # at their end, where the GroupByKey puts its output anyway.
        timestamp = MIN_TIMESTAMP if isinstance(window, GlobalWindow) else window.max_timestamp()
        return WindowedValue((self.key, encode_chunk(self.fragments, self.kept)), timestamp, (window,))


def encode_chunk(fragments: list[bytes], kept: dict[int, Any]) -> bytes:
    """One bytes value holding fragments, in order, and the records kept beside them by place. The
    records are pickled, as Beam's coder pickles what it has no coder for, apart: they stay bytes until
    a failure needs them."""
    pickled = pickle.dumps(kept, pickle.HIGHEST_PROTOCOL) if kept else b""
    return pickle.dumps((fragments, pickled), pickle.HIGHEST_PROTOCOL)


def decode_chunk(chunk: bytes) -> tuple["_Originals", list[bytes]]:
    """(kept records, fragments) of a chunk, as encode_chunk took them; the kept records are an
    _Originals, which unpickles them only when asked."""
    fragments, pickled = pickle.loads(chunk)
    return _Originals(pickled, len(fragments)), fragments


class _Originals:
    """What a chunk holds of its records besides their fragments: the records kept beside them (by
    place), as the bytes that crossed the shuffle until a failure needs them."""

    __slots__ = ("_pickled", "_kept", "_count", "record_bytes")

    def __init__(self, pickled: bytes, count: int) -> None:
        self._pickled = pickled
        self._kept: dict[int, Any] | None = None if pickled else {}
        self._count = count
        self.record_bytes = len(pickled) // max(count, 1)  # each record's share of the memory held

    def __len__(self) -> int:
        return self._count

    def kept(self) -> dict[int, Any]:
        """The records kept beside their fragments, by place in the chunk."""
        if self._kept is None:  # unpickled once
            self._kept, self._pickled = pickle.loads(self._pickled), b""
        return self._kept


def records_behind(count: int, kept: dict[int, Any], restore: Callable[[], list[Any]]) -> list[Any]:
    """`count` records: those kept (by place) as they are, the others as restore() gives them back (the
    encoder's decode of their payload, exact for them as Encoder.restores promised); restore is called
    only when some record was not kept."""
    if len(kept) == count:
        return [kept[place] for place in range(count)]
    records = restore()
    if len(records) != count:
        raise AssertionError(f"bug: the encoder's decode gave {len(records)} records from a payload of {count}")
    for place, record in kept.items():
        records[place] = record
    return records


def _restored(encoder: Encoder, device: Device, fragments: list[bytes]) -> list[Any]:
    """The records the encoder's decode gives back from a payload of these fragments."""
    return encoder.decode(encoder.payload(device, fragments))


class _LazyRecords(collections.abc.Sequence[Any]):
    """A payload's records as (chunk originals, start, stop) segments, made when they are read: no
    object per record is held, for the memory and the garbage collector to go through."""

    def __init__(self, body: bytes, decode: Callable[[bytes], list[Any]],
                 segments: list[tuple[_Originals, int, int]]) -> None:
        self._body = body
        self._decode = decode
        self._segments = segments

    def __len__(self) -> int:
        return sum(stop - start for _, start, stop in self._segments)

    def __getitem__(self, index: Any) -> Any:  # an int or a slice, as a Sequence's
        return self._records()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._records())

    def _records(self) -> list[Any]:
        kept: dict[int, Any] = {}
        place = 0  # of the segment's first record in the payload
        for chunk_originals, start, stop in self._segments:
            kept.update((place + index - start, record) for index, record in chunk_originals.kept().items()
                        if start <= index < stop)
            place += stop - start
        return records_behind(place, kept, functools.partial(self._decode, self._body))

    def held_bytes(self) -> int:
        return sum(_SEGMENT_BYTES + chunk_originals.record_bytes * (stop - start)
                   for chunk_originals, start, stop in self._segments)


class _ChunkPayload(Payload):
    """A payload whose records are _LazyRecords."""

    records: _LazyRecords

    def held_bytes(self) -> int:
        return len(self.body) + self.records.held_bytes()


def _located(payload: Payload, reach: list[tuple[int, _Originals]], decode: Callable[[bytes], list[Any]],
             ) -> _ChunkPayload:
    """The payload with its records (places in the group) as segments of the chunks in reach; the
    chunks it ends leave reach, as the payloads after it start later."""
    first, end = payload.records[0], payload.records[-1] + 1
    segments = [(originals, max(first, at) - at, min(end, at + len(originals)) - at)
                for at, originals in reach if at < end and at + len(originals) > first]
    reach[:] = [(at, originals) for at, originals in reach if at + len(originals) > end]
    return _ChunkPayload(payload.body, _LazyRecords(payload.body, decode, segments))


class _ChunkedPublishFn(_GroupedPublishFn):
    """Packs and publishes one device+topic's chunks as they stream by from the GroupByKey, a chunk
    at a time (record by record when order_by sorts them)."""

    @not_type_hints
    def process(self, element: tuple[Key, Iterable[bytes]],
                window: BoundedWindow = WINDOW,
                timestamp: Timestamp = TIMESTAMP,
                ) -> Iterator[Output]:
        if self._order_by is not None:
            yield from super().process(element, window, timestamp)
            return
        ((product_key, device_name), topic), chunks = element
        device = Device(product_key, device_name)
        for payload in self._payloads(Packer(self._encoder, device, self._max_payload_bytes), chunks):
            yield from self._submit(device, topic, payload, window, timestamp)

    @staticmethod
    def _payloads(packer: Packer, chunks: Iterable[bytes]) -> Iterator[_ChunkPayload]:
        """The chunks' fragments packed as full as the packer makes them, whatever the chunks, as
        _ChunkPayloads. The packer holds each record as its place in the group."""
        # the chunks the open payload may reach back to: (place of the first, originals)
        reach: list[tuple[int, _Originals]] = []
        place = 0
        for chunk in chunks:
            originals, fragments = decode_chunk(chunk)
            reach.append((place, originals))
            closed = packer.extend(range(place, place + len(fragments)), fragments)
            place += len(fragments)
            for payload in closed:
                yield _located(payload, reach, packer.encoder.decode)
        last = packer.flush()
        if last is not None:
            yield _located(last, reach, packer.encoder.decode)

    def _pairs(self, chunks: Iterable[bytes], device: Device, topic: str, window: BoundedWindow,
               timestamp: Timestamp) -> Iterator[Pair]:
        for chunk in chunks:
            chunk_originals, fragments = decode_chunk(chunk)
            records = records_behind(len(fragments), chunk_originals.kept(),
                                     functools.partial(_restored, self._encoder, device, fragments))
            yield from zip(records, fragments)
