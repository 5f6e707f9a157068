"""Chunks: what the batch path sends across the shuffle, and how a failed record comes back exactly.

A chunk is one bytes value: the fragments (encoded records) of one key, in order, and beside them
only the records the encoder cannot give back exactly from their fragments (Encoder.restores says
which), pickled. After the shuffle, chunk_payloads feeds the fragments of all of a key's chunks to
one packer, so that fragments from different bundles share payloads.

The exact-restore invariant: a record in `.failed` is the record as it was given, never an
approximation of it. A payload holds no record objects: when it fails, its records are rebuilt then
(lazily: a payload that is accepted never rebuilds any), each either the record kept beside its
fragment or the encoder's decode of the payload's body. A decode is used only when it is verified:
the decoded records, encoded again, give the body byte for byte. An encoder whose restores() promised
more than its decode gives back fails that check, and its records are then reported with a note
saying so (and a warning is logged): decoded records are never passed off as the originals.
"""
import collections.abc
import logging
import pickle
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from connector.protocol.device import Device

from .encoders import Encoder
from .packing import Packer, Payload
from .results import describe

_LOG = logging.getLogger(__name__)


class OpenChunk:
    """One key's fragments in a bundle of the first stage, and the records among them the encoder
    cannot restore, until they close as a chunk."""

    __slots__ = ("key", "fragments", "kept", "size", "held", "check")

    def __init__(self, key: tuple[Device, str], check: Callable[[bytes], None], held: int) -> None:
        self.key = key
        self.fragments: list[bytes] = []
        self.kept: dict[int, Any] = {}  # place among the fragments -> record, for those not restored
        self.size = 0  # bytes of fragments
        self.held = held  # memory held, as the first stage's bound counts it
        self.check = check  # the one too-large check: Packer.check

    def without(self, places: list[int]) -> tuple[list[bytes], dict[int, Any]]:
        """(fragments, kept records) with the records at these places left out."""
        gone = set(places)
        fragments = [fragment for place, fragment in enumerate(self.fragments) if place not in gone]
        renumbered = {old: new for new, old in enumerate(p for p in range(len(self.fragments)) if p not in gone)}
        return fragments, {renumbered[place]: record for place, record in self.kept.items() if place not in gone}


def picklable(record: Any) -> bool:
    """Whether a record can cross the shuffle beside its fragment."""
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


def decode_chunk(chunk: bytes) -> tuple["KeptRecords", list[bytes]]:
    """(kept records, fragments) of a chunk, as encode_chunk took them."""
    fragments, pickled = pickle.loads(chunk)
    return KeptRecords(pickled, len(fragments)), fragments


class KeptRecords:
    """A chunk's records kept beside their fragments (by place), as the bytes that crossed the shuffle
    until a failure needs them; and how many records the chunk holds in all."""

    __slots__ = ("_pickled", "_kept", "_count", "record_bytes")

    def __init__(self, pickled: bytes, count: int) -> None:
        self._pickled = pickled
        self._kept: dict[int, Any] | None = None if pickled else {}
        self._count = count
        self.record_bytes = len(pickled) // max(count, 1)  # each record's share of the memory held

    def __len__(self) -> int:
        return self._count

    def kept(self) -> dict[int, Any]:
        """The records kept beside their fragments, by place in the chunk (unpickled once)."""
        if self._kept is None:
            self._kept, self._pickled = pickle.loads(self._pickled), b""
        return self._kept


# A (kept records, start, stop) segment, and the KeptRecords object (shared by a chunk's payloads).
_SEGMENT_BYTES = sys.getsizeof((None, 0, 0)) + sys.getsizeof(KeptRecords(b"", 0))


def restore_records(count: int, kept: dict[int, Any], encoder: Encoder, device: Device,
                    body: bytes) -> tuple[list[Any], dict[int, str]]:
    """The `count` records of a payload's body, by the invariant above: those kept (by place) as they
    are, the others as the encoder's verified decode gives them back; and notes: place -> what the
    record's failed output adds to its message when the decode could not be verified (the decoded
    record then, when there are `count` of them; else the body the record was in)."""
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


def chunk_pairs(chunk: bytes, encoder: Encoder, device: Device) -> Iterator[tuple[Any, bytes]]:
    """A chunk's (record, fragment) pairs, each record restored (for order_by, which sorts records)."""
    kept_records, fragments = decode_chunk(chunk)
    body = encoder.payload(device, fragments)
    records, _ = restore_records(len(fragments), kept_records.kept(), encoder, device, body)
    return zip(records, fragments)


class _RestoredOnRead(collections.abc.Sequence[Any]):
    """A payload's records as (kept records, start, stop) segments of its chunks, restored when they
    are read: no object per record is held, for the memory and the garbage collector to go through."""

    __slots__ = ("_body", "_encoder", "_device", "_segments")

    def __init__(self, body: bytes, packer: Packer, segments: list[tuple[KeptRecords, int, int]]) -> None:
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
        """restore_records of the payload: the records, and notes on those not restored exactly."""
        kept: dict[int, Any] = {}
        place = 0  # of the segment's first record in the payload
        for kept_records, start, stop in self._segments:
            kept.update((place + index - start, record) for index, record in kept_records.kept().items()
                        if start <= index < stop)
            place += stop - start
        return restore_records(place, kept, self._encoder, self._device, self._body)

    def held_bytes(self) -> int:
        return sys.getsizeof(self) + sys.getsizeof(self._segments) + sum(
            _SEGMENT_BYTES + kept_records.record_bytes * (stop - start)
            for kept_records, start, stop in self._segments)


class ChunkPayload(Payload):
    """A payload packed from chunks: its records are restored only when it fails."""

    records: _RestoredOnRead

    def held_bytes(self) -> int:
        return len(self.body) + self.records.held_bytes()

    def restored(self) -> tuple[Sequence[Any], dict[int, str]]:
        return self.records.restored()


def chunk_payloads(packer: Packer, chunks: Iterable[bytes]) -> Iterator[ChunkPayload]:
    """The chunks' fragments packed as full as the packer makes them, whatever the chunks. The packer
    holds each record as its place in the group; each payload gets its records as segments of the
    chunks it was packed from."""
    # The chunks whose records are not all in closed payloads yet: (place of the first, kept records).
    unpacked: list[tuple[int, KeptRecords]] = []
    place = 0
    for chunk in chunks:
        kept_records, fragments = decode_chunk(chunk)
        unpacked.append((place, kept_records))
        closed = packer.extend(range(place, place + len(fragments)), fragments)
        place += len(fragments)
        for payload in closed:
            yield _with_segments(payload, unpacked, packer)
    last = packer.flush()
    if last is not None:
        yield _with_segments(last, unpacked, packer)


def _with_segments(payload: Payload, unpacked: list[tuple[int, KeptRecords]], packer: Packer) -> ChunkPayload:
    """The payload (its records: places in the group) with its records as segments of the unpacked
    chunks; the chunks it ends leave `unpacked`, as the payloads after it start later."""
    first, end = payload.records[0], payload.records[-1] + 1
    segments = [(kept_records, max(first, at) - at, min(end, at + len(kept_records)) - at)
                for at, kept_records in unpacked if at < end and at + len(kept_records) > first]
    unpacked[:] = [(at, kept_records) for at, kept_records in unpacked if at + len(kept_records) > end]
    return ChunkPayload(payload.body, _RestoredOnRead(payload.body, packer, segments))
