"""order_by (batch): a device's records sorted by a field before packing, a sort buffer at a time.

A buffer holds sort_buffer_bytes of memory (the records and their fragments, connector.beam.memory),
so a device whose history is larger is sorted buffer by buffer. A record goes out of order never: one
whose value cannot be ordered with the others' fails as unorderable, saying why.
"""
import collections
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from connector.protocol.device import Device

from .memory import PAIR_BYTES, SORT_BYTES, RecordWeigher
from .results import FailedRecord, Reason, failure

# (record, fragment): a record and its encoding.
Pair = tuple[Any, bytes]


class OrderBy:
    """Sorts (record, fragment) pairs by a record field, sort_buffer_bytes of them at a time (the
    pairs and what sorting them takes: a key for each and the sorted copy)."""

    def __init__(self, field: str, sort_buffer_bytes: int) -> None:
        self.field = field
        self.sort_buffer_bytes = sort_buffer_bytes

    def sorted_in_buffers(self, pairs: Iterable[Pair], device: Device,
                          topic: str) -> Iterator[Pair | FailedRecord]:
        """The pairs in order within each buffer, and a FailedRecord for each record that cannot be
        ordered with its buffer's others."""
        buffer: list[Pair] = []
        buffered_bytes = 0
        weigher = RecordWeigher()
        for pair in pairs:
            buffer.append(pair)
            record, fragment = pair
            buffered_bytes += len(fragment) + PAIR_BYTES + SORT_BYTES + weigher.weigh(record, len(fragment))
            if buffered_bytes >= self.sort_buffer_bytes:
                yield from self.sorted(buffer, device, topic)
                buffer, buffered_bytes = [], 0
        yield from self.sorted(buffer, device, topic)

    def sorted(self, pairs: list[Pair], device: Device, topic: str) -> Sequence[Pair | FailedRecord]:
        """The pairs in order (stable). When their values cannot all be compared, those of the most
        common kind are ordered and every other record fails, saying why."""
        field = self.field
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
        failed: list[Pair | FailedRecord] = [
            failure(pair[0], _unorderable(field, value, kind), Reason.UNORDERABLE, device, topic)
            for pair, value in zip(pairs, values) if id(pair) not in kept]
        return failed + orderable


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


def _unorderable(field: str, value: object, kind: str | None) -> str:
    """Why a record's order_by value kept it from being published (its type, never the value)."""
    if kind is None:
        return f"order_by field {field!r} holds {type(value).__name__} values, which have no order"
    return (f"order_by field {field!r} holds a {type(value).__name__}, which cannot be ordered with the "
            f"{kind} values of the device's other records")
