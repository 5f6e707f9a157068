"""Batch: route and encode before the shuffle, so the GroupByKey moves a few byte chunks per device
instead of every record.

Beam's per-element work around a GroupByKey (coding each record as a pickled dict, grouping it,
decoding it) cost more than reading and encoding it. _RouteAndEncodeFn routes and encodes each record
and keeps, per device, topic and window, its fragments until they reach CHUNK_BYTES or the bundle ends;
a chunk is one bytes value: the fragments, and the records the encoder cannot restore from them,
pickled. After the GroupByKey, _ChunkedPublishFn feeds the fragments of all of a device's chunks to one
packer, so fragments from different bundles share payloads (the fewest messages). A failed record is
its original: restored from its payload's body by the encoder (Encoder.restores says which records it
gives back exactly; a restore is verified by encoding the records again), or unpickled from the
chunk. With order_by, records are sorted as before.
"""
import collections.abc
import logging
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
from .memory import CHECKER_BYTES, FRAGMENT_BYTES, OPEN_CHUNK_BYTES, WINDOW_BYTES, RecordWeigher
from .metrics import SinkMetrics
from .packing import Packer, Payload
from .publish_fns import FAILED, Key, Output, Pair, _GroupedPublishFn
from .results import FailedRecord, Reason, describe, failure
from .routing import CallableRouter, FieldRouter
from .schemas import as_dict

_LOG = logging.getLogger(__name__)

# A chunk closes at this many bytes of fragments. A bundle sends all it holds when that is BUNDLE_BYTES
# of memory (connector.beam.memory): each fragment with its object and list slot, a record kept beside
# its fragment (weighed), and each open chunk, window and device's too-large check. Fewer, fuller
# chunks are what make many devices cheap: 16 MB gave 10,000 devices a first stage a quarter shorter
# than 8 MB.
CHUNK_BYTES = 256 << 10
BUNDLE_BYTES = 16 << 20
_GLOBAL_WINDOW = GlobalWindow()  # made once: making one costs more than routing a record


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
        yield self._routed(record)

    def _routed(self, record: Any) -> tuple[tuple[Device, str], Any] | pvalue.TaggedOutput:
        """(key, record): the record's (Device, topic) and the record as a dict (a beam.Row or NamedTuple
        as one); or its failed output: a FailedRecord among the records (input a reader could not read,
        e.g. a CSV value that is not its column's type) as it is, counted, and a record the router
        refuses, or raises anything on, as unroutable (or the RoutingError's own reason)."""
        try:
            if not isinstance(record, dict):
                if isinstance(record, FailedRecord):
                    self._metrics.failed(record.reason)
                    return pvalue.TaggedOutput(FAILED, record)
                record = as_dict(record)
            return self._router(record), record  # (Device, topic): a Device is the (productKey, deviceName) pair
        except Exception as error:
            return self._failure(record, error, Reason.UNROUTABLE)

    def _failure(self, record: Any, why: BaseException | str, reason: str,
                 key: tuple[Device, str] | None = None) -> pvalue.TaggedOutput:
        """The record's failed output, counted: failed before any attempt to publish it."""
        failed = failure(record, why, reason, *(key or ()))
        self._metrics.failed(failed.reason)
        return pvalue.TaggedOutput(FAILED, failed)


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
        self._checks: dict[int, Callable[[bytes], None]] = {}  # envelope bytes -> the too-large check
        self._weigher = RecordWeigher()
        self._held = 0
        self._records_in = 0  # counted per bundle: a counter's inc per record costs as much as routing

    @not_type_hints
    def process(  # type: ignore[override]  # it outputs chunks where _RouteFn outputs keyed records
            self, record: Any) -> Iterable[WindowedValue | pvalue.TaggedOutput] | None:
        return self._add(record, self._global, _GLOBAL_WINDOW)

    def _add(self, record: Any, chunks: dict[tuple[Device, str], "_OpenChunk"],
             window: BoundedWindow) -> Iterable[WindowedValue | pvalue.TaggedOutput] | None:
        """Route, encode and hold one record; returns the outputs this gives, if any."""
        self._records_in += 1
        if type(record) is dict:  # the common case, without a call
            try:
                key = self._router(record)
            except Exception as error:
                return (self._failure(record, error, Reason.UNROUTABLE),)
        else:
            routed = self._routed(record)
            if isinstance(routed, pvalue.TaggedOutput):
                return (routed,)
            key, record = routed
        chunk = chunks.get(key)
        if chunk is None:
            chunk = chunks[key] = _OpenChunk(key, self._check(key[0]))
            self._held += OPEN_CHUNK_BYTES
        try:
            fragment = self._encoder.encode(record)
            chunk.check(fragment)
            restores = self._restores(record)
        except Exception as error:
            return (self._failure(record, error, Reason.UNENCODABLE, key),)
        size = len(fragment)
        held = size + FRAGMENT_BYTES
        if not restores:
            chunk.kept[len(chunk.fragments)] = record
            held += self._weigher.weigh(record, size)
        chunk.fragments.append(fragment)
        chunk.size += size
        chunk.held += held
        self._held += held
        if self._held >= BUNDLE_BYTES:
            return self._close_all()
        if chunk.size >= CHUNK_BYTES:
            del chunks[key]
            self._held -= chunk.held
            return self._closed(chunk, window)
        return None

    def _check(self, device: Device) -> Callable[[bytes], None]:
        """The device's too-large check (Packer.check). It depends on the device only through the
        encoder's envelope, so one Packer serves every device whose envelope is as long."""
        overhead = self._encoder.overhead(device)
        check = self._checks.get(overhead)
        if check is None:
            check = self._checks[overhead] = Packer(self._encoder, device, self._max_payload_bytes).check
            self._held += CHECKER_BYTES
        return check

    def finish_bundle(self) -> Iterator[WindowedValue | pvalue.TaggedOutput]:
        self._metrics.records_in.inc(self._records_in)
        self._records_in = 0
        return self._close_all()

    def _close_all(self) -> Iterator[WindowedValue | pvalue.TaggedOutput]:
        """Every open chunk's output, made as the runner takes them (it sends each on before it asks
        for the next): a chunk lets go of its fragments as its output is made, so the outputs do not
        come on top of all that was held. The bundle starts holding anew at once."""
        held = self._open
        self._global = {}
        self._open = {_GLOBAL_WINDOW: self._global}
        self._checks = {}
        self._held = 0
        return self._outputs(held)

    def _outputs(self, held: dict[BoundedWindow, dict[tuple[Device, str], "_OpenChunk"]]
                 ) -> Iterator[WindowedValue | pvalue.TaggedOutput]:
        for window, chunks in held.items():
            while chunks:
                chunk = chunks.popitem()[1]
                if chunk.fragments:
                    yield from self._closed(chunk, window)

    def _closed(self, chunk: "_OpenChunk", window: BoundedWindow) -> list[WindowedValue | pvalue.TaggedOutput]:
        """A chunk's output; and the failed output of each record kept beside its fragment that cannot be
        pickled (a lock in it, say), which the chunk then goes without. In the global window at the
        earliest time, as Beam's own batch outputs are (a chunk at the end of time moved Prism 2.62's
        watermarks ahead of a later stage's side input); in other windows at their end, where the
        GroupByKey puts its output anyway."""
        timestamp = MIN_TIMESTAMP if isinstance(window, GlobalWindow) else window.max_timestamp()
        failed: list[WindowedValue | pvalue.TaggedOutput] = []
        try:
            encoded = encode_chunk(chunk.fragments, chunk.kept)
        except Exception:
            unpicklable = [place for place, record in chunk.kept.items() if not _picklable(record)]
            for place in unpicklable:
                error = EncodeError("the record cannot be pickled to cross the shuffle beside its fragment")
                tagged = self._failure(chunk.kept[place], error, Reason.UNENCODABLE, chunk.key)
                # Windowed: finish_bundle's outputs must say their window.
                failed.append(pvalue.TaggedOutput(FAILED, WindowedValue(tagged.value, timestamp, (window,))))
            encoded = encode_chunk(*chunk.without(unpicklable))
            if not encoded:
                return failed
        return [*failed, WindowedValue((chunk.key, encoded), timestamp, (window,))]


class _RouteAndEncodeInWindowsFn(_RouteAndEncodeFn):
    """The same for records in windows other than the global one, each window's chunks apart."""

    @not_type_hints
    def process(self, record: Any,  # type: ignore[override]  # it adds the window to its base's process
                window: BoundedWindow = WINDOW,
                ) -> Iterable[WindowedValue | pvalue.TaggedOutput] | None:
        chunks = self._open.get(window)
        if chunks is None:
            chunks = self._open[window] = {}
            self._held += WINDOW_BYTES
        return self._add(record, chunks, window)


class _OpenChunk:
    """One key's fragments in a bundle, and the records among them the encoder cannot restore, until
    they close as a chunk."""

    __slots__ = ("key", "fragments", "kept", "size", "held", "check")

    def __init__(self, key: tuple[Device, str], check: Callable[[bytes], None]) -> None:
        self.key = key
        self.fragments: list[bytes] = []
        self.kept: dict[int, Any] = {}  # place among the fragments -> record, for those not restored
        self.size = 0  # bytes of fragments
        self.held = OPEN_CHUNK_BYTES  # memory held, as BUNDLE_BYTES counts it
        self.check = check  # the one too-large check: Packer.check

    def without(self, places: list[int]) -> tuple[list[bytes], dict[int, Any]]:
        """(fragments, kept records) with the records at these places left out."""
        gone = set(places)
        fragments = [fragment for place, fragment in enumerate(self.fragments) if place not in gone]
        renumbered = {old: new for new, old in enumerate(p for p in range(len(self.fragments)) if p not in gone)}
        return fragments, {renumbered[place]: record for place, record in self.kept.items() if place not in gone}


def _picklable(record: Any) -> bool:
    try:
        pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
        return True
    except Exception:
        return False


def encode_chunk(fragments: list[bytes], kept: dict[int, Any]) -> bytes:
    """One bytes value holding fragments, in order, and the records kept beside them by place (b"" for
    no fragment). The records are pickled, as Beam's coder pickles what it has no coder for, apart: they
    stay bytes until a failure needs them."""
    if not fragments:
        return b""
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


# A (chunk originals, start, stop) triple, and the originals' object (shared by a chunk's payloads).
_SEGMENT_BYTES = sys.getsizeof((None, 0, 0)) + sys.getsizeof(_Originals(b"", 0))


def records_behind(count: int, kept: dict[int, Any], encoder: Encoder, device: Device,
                   body: bytes) -> tuple[list[Any], dict[int, str]]:
    """The `count` records of a payload's body: those kept (by place) as they are, the others as the
    encoder's decode gives them back (Encoder.restores promised it exactly), and notes: place -> what
    the record's failed output adds to its message.

    A restore is used only when it is verified: the records encoded again give the body. An encoder
    whose restores() promises more than its decode gives back fails that (the restored records are
    then used, noted, when there are `count` of them; else each is the body it was in), and says so in
    a warning: decoded records are never passed off as the originals."""
    if len(kept) == count:
        return [kept[place] for place in range(count)], {}
    try:
        records = list(encoder.decode(body))
        problem = f"its decode gave {len(records)} records for {count}"
    except Exception as error:
        records, problem = [], f"its decode failed: {describe(error)}"
    if len(records) == count:
        for place, record in kept.items():
            records[place] = record
        try:
            if encoder.payload(device, [encoder.encode(record) for record in records]) == body:
                return records, {}
        except Exception:
            pass
        problem = "the records its decode gave do not encode to the payload's bytes again"
        note = f" (record restored from its payload unverified: {problem})"
    else:
        records = [kept.get(place, body) for place in range(count)]
        note = f" (record not restored: {problem}; the record is the payload it was in)"
    _LOG.warning("the %s encoder restores records it cannot give back exactly (Encoder.restores): %s",
                 encoder.name, problem)
    return records, {place: note for place in range(count) if place not in kept}


class _LazyRecords(collections.abc.Sequence[Any]):
    """A payload's records as (chunk originals, start, stop) segments, made when they are read: no
    object per record is held, for the memory and the garbage collector to go through."""

    __slots__ = ("_body", "_encoder", "_device", "_segments")

    def __init__(self, body: bytes, packer: Packer, segments: list[tuple[_Originals, int, int]]) -> None:
        self._body = body
        self._encoder, self._device = packer.encoder, packer.device
        self._segments = segments

    def __len__(self) -> int:
        return sum(stop - start for _, start, stop in self._segments)

    def __getitem__(self, index: Any) -> Any:  # an int or a slice, as a Sequence's
        return self.restored()[0][index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.restored()[0])

    def restored(self) -> tuple[list[Any], dict[int, str]]:
        """records_behind the payload: the records, and notes on those it could not restore exactly."""
        kept: dict[int, Any] = {}
        place = 0  # of the segment's first record in the payload
        for chunk_originals, start, stop in self._segments:
            kept.update((place + index - start, record) for index, record in chunk_originals.kept().items()
                        if start <= index < stop)
            place += stop - start
        return records_behind(place, kept, self._encoder, self._device, self._body)

    def held_bytes(self) -> int:
        return sys.getsizeof(self) + sys.getsizeof(self._segments) + sum(
            _SEGMENT_BYTES + chunk_originals.record_bytes * (stop - start)
            for chunk_originals, start, stop in self._segments)


class _ChunkPayload(Payload):
    """A payload whose records are _LazyRecords."""

    records: _LazyRecords

    def held_bytes(self) -> int:
        return len(self.body) + self.records.held_bytes()

    def restored(self) -> tuple[Sequence[Any], dict[int, str]]:
        return self.records.restored()


def _located(payload: Payload, reach: list[tuple[int, _Originals]], packer: Packer) -> _ChunkPayload:
    """The payload with its records (places in the group) as segments of the chunks in reach; the
    chunks it ends leave reach, as the payloads after it start later."""
    first, end = payload.records[0], payload.records[-1] + 1
    segments = [(originals, max(first, at) - at, min(end, at + len(originals)) - at)
                for at, originals in reach if at < end and at + len(originals) > first]
    reach[:] = [(at, originals) for at, originals in reach if at + len(originals) > end]
    return _ChunkPayload(payload.body, _LazyRecords(payload.body, packer, segments))


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
                yield _located(payload, reach, packer)
        last = packer.flush()
        if last is not None:
            yield _located(last, reach, packer)

    def _pairs(self, chunks: Iterable[bytes], device: Device, topic: str, window: BoundedWindow,
               timestamp: Timestamp) -> Iterator[Pair]:
        for chunk in chunks:
            chunk_originals, fragments = decode_chunk(chunk)
            body = self._encoder.payload(device, fragments)
            records, _ = records_behind(len(fragments), chunk_originals.kept(), self._encoder, device, body)
            yield from zip(records, fragments)
