"""Packing encoded records into payloads of at most 128 KB, as full as the limit allows.

Greedy and in arrival order: a payload closes when the next fragment would push it past the limit, and
as soon as it is full (the encoder's record cap reached, or no byte left for another record), so that
a full payload never waits for a record that cannot join it. Sizes are counted from fragment lengths
and the encoder's envelope bound, so a record is encoded once and a body is built only when its
payload closes.
"""
import bisect
import itertools
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from connector.protocol.device import Device
from connector.protocol.limits import MAX_PAYLOAD_BYTES

from .encoders import Encoder
from .memory import deep_size
from .results import FailedRecord, Reason, RecordError, failure


class Payload(NamedTuple):
    body: bytes
    records: Sequence[Any]  # the original records, in order

    def held_bytes(self) -> int:
        """An estimate of the memory this payload holds until it ends: its body and its records' Python
        objects, sized on a few of them (one device's records are alike; memory.deep_size errs on the
        high side)."""
        records = self.records
        sample = records[::max(1, len(records) // _SAMPLED_RECORDS)]
        per_record = sum(map(deep_size, sample)) / len(sample) if sample else 0
        return len(self.body) + sys.getsizeof(records) + round(per_record * len(records))

    def restored(self) -> tuple[Sequence[Any], dict[int, str]]:
        """The records as they were given, for the payload's failed outputs, and what to add to the
        message of those that could not be given back exactly (by place; none here)."""
        return self.records, {}


_SAMPLED_RECORDS = 8


class RecordTooLarge(RecordError):
    """The record cannot fit in a payload even alone."""

    reason = Reason.TOO_LARGE


class Packer:
    """Packs one device's fragments into payloads; holds at most one open payload."""

    def __init__(self, encoder: Encoder, device: Device, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        if max_payload_bytes > MAX_PAYLOAD_BYTES:
            raise ValueError(f"max_payload_bytes {max_payload_bytes} is above the platform's limit of "
                             f"{MAX_PAYLOAD_BYTES} bytes per message")
        overhead = encoder.overhead(device)
        if max_payload_bytes <= overhead:
            raise ValueError(f"max_payload_bytes {max_payload_bytes} leaves no room for records: the "
                             f"{encoder.name} envelope alone takes up to {overhead} bytes")
        self.encoder = encoder
        self.device = device
        self.max_payload_bytes = max_payload_bytes
        self._overhead = overhead
        self._separator = len(encoder.separator)
        # Each fragment is counted with one separator; the last one's is never written, hence the +.
        self._room = max_payload_bytes - overhead + self._separator
        self.max_fragment_bytes = self._room - self._separator  # the longest fragment a payload holds
        self._max_records = sys.maxsize if encoder.max_records is None else encoder.max_records
        self._records: list[Any] = []
        self._fragments: list[bytes] = []
        self._used = 0

    def add(self, record: Any, fragment: bytes) -> list[Payload]:
        """Add a record and its fragment; returns the payloads this closed: the open one if the record
        does not fit in it, and the record's own if the record fills it.

        Raises RecordTooLarge, leaving the packer as it was, when the record cannot fit even alone.
        """
        size = self._size(fragment)
        closed = [self._close()] if self._closes(self._used, len(self._records), size) else []
        self._records.append(record)
        self._fragments.append(fragment)
        self._used += size
        if self._full(self._used, len(self._records)):
            closed.append(self._close())
        return closed

    def extend(self, records: Sequence[Any], fragments: Sequence[bytes]) -> list[Payload]:
        """Add records and their fragments (a chunk from the shuffle) at once: the payloads add() would
        close one by one, found by bisecting the running sum of sizes instead of a call per record.
        Raises RecordTooLarge, adding none, when any of them cannot fit even alone."""
        separator = self._separator
        sizes = [len(fragment) + separator for fragment in fragments]
        if sizes:
            self.check(max(fragments, key=len))
        ends = list(itertools.accumulate(sizes, initial=0))  # ends[i]: size of the first i fragments
        closed: list[Payload] = []
        start = 0
        while start < len(sizes):
            room = ends[start] + self._room - self._used
            stop = min(bisect.bisect_right(ends, room) - 1, start + self._max_records - len(self._records))
            if stop == start:  # the next fragment does not fit in the open payload
                closed.append(self._close())
                continue
            self._records.extend(records[start:stop])
            self._fragments.extend(fragments[start:stop])
            self._used += ends[stop] - ends[start]
            start = stop
            if self._full(self._used, len(self._records)):
                closed.append(self._close())
        return closed

    def would_close(self, held_records: int, held_fragment_bytes: int, fragment: bytes) -> bool:
        """Whether adding fragment to an open payload of held_records fragments (held_fragment_bytes in
        all) closes that payload first: add()'s rule, for a caller that keeps the open payload
        elsewhere (the streaming DoFn keeps it in Beam state). Raises RecordTooLarge as add() does."""
        used = held_fragment_bytes + self._separator * held_records
        return self._closes(used, held_records, self._size(fragment))

    def is_full(self, held_records: int, held_fragment_bytes: int) -> bool:
        """Whether an open payload of held_records fragments (held_fragment_bytes in all) is full, as
        add() closes it at once: for a caller that keeps the open payload elsewhere."""
        return self._full(held_fragment_bytes + self._separator * held_records, held_records)

    def _size(self, fragment: bytes) -> int:
        """The room a fragment takes, its separator included; RecordTooLarge when it can never fit."""
        self.check(fragment)
        return len(fragment) + self._separator

    def check(self, fragment: bytes) -> None:
        """The one too-large check, wherever a record is encoded (batch before the shuffle, streaming,
        packing, the dry run): RecordTooLarge when the fragment cannot fit in a payload even alone."""
        if len(fragment) > self.max_fragment_bytes:
            envelope = f", {self._overhead} of them for the {self.encoder.name} envelope" if self._overhead else ""
            raise RecordTooLarge(f"a record encodes to {len(fragment)} bytes, more than a payload holds "
                                 f"({self.max_payload_bytes} bytes at most{envelope})")

    def _closes(self, used: int, held_records: int, size: int) -> bool:
        return held_records > 0 and (used + size > self._room or held_records >= self._max_records)

    def _full(self, used: int, held_records: int) -> bool:
        """No record can join: the encoder's cap is reached, or not even a one-byte fragment fits."""
        return held_records >= self._max_records or used + 1 + self._separator > self._room

    def flush(self) -> Payload | None:
        """Close and return the open payload, if any."""
        return self._close() if self._records else None

    def _close(self) -> Payload:
        """Close the open payload, which holds records."""
        body = self.encoder.payload(self.device, self._fragments)
        if len(body) > self.max_payload_bytes:
            raise AssertionError(f"bug: the {self.encoder.name} encoder built a {len(body)}-byte body, above "
                                 f"the {self.max_payload_bytes} bytes its overhead() bound promised")
        payload = Payload(body, self._records)
        self._records, self._fragments, self._used = [], [], 0
        return payload


def packed(packer: Packer, topic: str, items: Iterable[tuple[Any, bytes] | FailedRecord]
           ) -> Iterator[Payload | FailedRecord]:
    """Packs (record, fragment) pairs with packer, yielding each Payload as it closes and the last
    when the pairs end; FailedRecords among the pairs pass through, and a record the packer refuses
    (too large for any payload) becomes one. For the publish steps, whose failed records travel with
    their payloads."""
    for item in items:
        if isinstance(item, FailedRecord):
            yield item
            continue
        record, fragment = item
        try:
            closed = packer.add(record, fragment)
        except Exception as error:
            yield failure(record, error, Reason.TOO_LARGE, packer.device, topic)
            continue
        yield from closed
    last = packer.flush()
    if last is not None:
        yield last


def pack(encoder: Encoder, device: Device, records_with_fragments: Iterable[tuple[Any, bytes]],
         max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> Iterator[Payload | tuple[Any, RecordTooLarge]]:
    """Packs (record, fragment) pairs, streaming: yields each Payload as it closes, and (record,
    RecordTooLarge) for a record that cannot fit. Payload is a tuple too: tell them apart with
    isinstance(item, Payload). A too-large record is yielded when met, before the payload that holds
    the records around it."""
    packer = Packer(encoder, device, max_payload_bytes)
    for record, fragment in records_with_fragments:
        try:
            yield from packer.add(record, fragment)
        except RecordTooLarge as error:
            yield record, error
    payload = packer.flush()
    if payload is not None:
        yield payload
