"""What the sink's buffers hold in memory, as their bounds count it.

Three bounds hold a worker's memory: the batch first stage sends its chunks when it holds BUNDLE_BYTES
(batch), order_by sorts sort_buffer_bytes at a time (ordering), and the Publisher holds at most
max_buffered_bytes in payloads. Each counts what it keeps alive, not only the bytes it sends: the
records behind the bytes (their Python objects, weighed on samples) and the objects around each
piece (a chunk per device and window, a payload's future and its place in its device's lane). For
small records those objects are most of the memory: with one window per record, or a reading per
payload, fragment bytes are a tenth of what is held or less.

The sizes below are CPython's (sys.getsizeof) or tracemalloc's on CPython 3.11, which give the bytes
an object asks for; the allocator hands them out in ALIGNMENT steps, which a worker's RSS holds: 9 %
more for a reading's dozen small objects (an order_by buffer of readings counted without the steps grew
RSS 1.06 times its bound). tests/test_memory.py checks that what each bound counts is what it holds.
"""
import sys
from typing import Any

# pymalloc's blocks (objects up to 512 bytes) and glibc malloc's chunks (larger ones) come in 16-byte steps.
ALIGNMENT = 16


def allocated(size: int) -> int:
    """The memory an object of `size` bytes takes: its size rounded up to the allocator's step."""
    return -(-size // ALIGNMENT) * ALIGNMENT


# A fragment in a list: its bytes object beyond its content, rounded to the step (half a step on
# average: a fragment's length varies), and the list's slot.
FRAGMENT_BYTES = sys.getsizeof(b"") + ALIGNMENT // 2 + 8
# A (record, fragment) pair in a list (order_by's sort buffer) beyond the record and the fragment's
# content: the tuple, the fragment's object and the list's slot.
PAIR_BYTES = allocated(sys.getsizeof((None, None))) + FRAGMENT_BYTES
# What sorting a buffer of pairs adds for each: its sort key (a (bool, value) tuple), the key's slot in
# the sort's array of keys, the pair's slot in the sorted copy, and the merge's scratch space (up to
# half a slot each for keys and pairs).
SORT_BYTES = allocated(sys.getsizeof((False, None))) + 8 + 8 + 8
# An open chunk of the batch first stage beyond its fragments and its key (weighed apart when the router
# makes a key per record): its object, list and dict, its sizes and its place in its window's dict;
# about 310 bytes traced by the allocator's step, and RSS grew 300 a chunk (a reading per chunk).
OPEN_CHUNK_BYTES = 320
# A window the first stage holds chunks in: the window and its two Timestamps, its dict of chunks and
# its place among the windows: about 570 bytes traced by the allocator's step, and 130 more for the
# allocator's pools that so many small objects, made and let go each bundle, keep partly used (with
# one window per record, RSS grew 650 to 700 bytes a window beyond its record's fragment and chunk,
# the most after 10 bundles of 16 MB; tracemalloc counts the objects, RSS holds the pools).
WINDOW_BYTES = 700
# A device's Packer, kept by the first stage for the too-large check of its records.
CHECKER_BYTES = 550
# A payload submitted and not yet ended beyond its body and records: the payload's objects, its
# Future and callback, the Publisher's job and its place in the device's lane, the bundle's context
# and in it the payload's device, topic and window (a group's own, as GroupByKey hands them over);
# about 3,000 bytes of objects, and 600 more for the allocator's pools that so many small objects
# keep partly used (tracemalloc counts the objects; a worker's RSS holds the pools).
IN_FLIGHT_BYTES = 3600


def deep_size(value: object) -> int:
    """The memory a value and what it contains (dicts, lists, tuples, sets) take, each object by the
    allocator's step. Objects that values share (dict keys, say) are counted in each: it errs on the
    high side."""
    size = allocated(sys.getsizeof(value))
    if isinstance(value, dict):
        size += sum(deep_size(key) + deep_size(item) for key, item in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        size += sum(map(deep_size, value))
    return size


class RecordWeigher:
    """Weighs records held beside their fragments: a record's Python objects (deep_size) on the first
    and every SAMPLE_EVERY-th record, the others at that sample's bytes per fragment byte. One
    device's records are alike, and weighing each would cost more than encoding it."""

    SAMPLE_EVERY = 64
    __slots__ = ("_per_fragment_byte", "_count")

    def __init__(self) -> None:
        self._per_fragment_byte = 0.0
        self._count = 0

    def weigh(self, record: Any, fragment_bytes: int) -> int:
        """The memory a record holds, whose fragment is fragment_bytes long."""
        if self._count % self.SAMPLE_EVERY == 0:
            size = deep_size(record)
            self._per_fragment_byte = size / max(1, fragment_bytes)
        else:
            size = round(self._per_fragment_byte * fragment_bytes)
        self._count += 1
        return size
