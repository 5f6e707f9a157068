"""Accepted messages, in memory and optionally journaled to SQLite.

Memory serves every query. With a database, a message is committed before it is acknowledged; the
commits of requests that arrive together are grouped into one transaction so persistence stays cheap.
On start the journal is loaded back and messageIds continue above the largest one ever issued.
"""
import asyncio
import bisect
import collections
import operator
import sqlite3
import time
from typing import NamedTuple

from connector.protocol.device import Device

# Real messageIds are 64-bit integers above 2**53 that never repeat. A recorded one,
# 1207967842654323713, reads as a snowflake id: milliseconds since 2010-11-04 shifted left by 22 bits
# (it decodes to 2019-12-20), a sequence in the low bits. Each run starts its ids at its start time in
# that layout, so they are above 2**53 (clients that turn them into floats fail here as against the
# platform) and above every id an earlier run issued, with or without a database, unless this run
# issues more than 4 million per millisecond or the clock goes back.
SNOWFLAKE_EPOCH_MS = 1288834974657
SEQUENCE_BITS = 22


def first_message_id(now=None):
    """The first messageId of a run starting now (epoch seconds)."""
    now_ms = int((time.time() if now is None else now) * 1000)
    return (now_ms - SNOWFLAKE_EPOCH_MS) << SEQUENCE_BITS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id INTEGER PRIMARY KEY, product_key TEXT NOT NULL, device_name TEXT NOT NULL,
    topic TEXT NOT NULL, payload BLOB NOT NULL, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Message(NamedTuple):
    message_id: int
    device: Device
    topic: str
    payload: bytes
    received_at: float  # epoch seconds


class _Sequence(list):
    """Messages in messageId order, paged from a messageId on."""

    __slots__ = ()

    def page(self, after, topic, limit):
        start = 0 if after is None else bisect.bisect_right(self, after, key=_message_id)
        return self._collect(range(start, len(self)), topic, limit)

    def page_newest(self, before, topic, limit):
        """Messages newest first from below a messageId on, and the `before` of the following page.

        Starts by bisection and walks back only as far as the page needs, so the newest pages of a
        million messages cost what a page costs.
        """
        end = len(self) if before is None else bisect.bisect_left(self, before, key=_message_id)
        return self._collect(range(end - 1, -1, -1), topic, limit)

    def _collect(self, indexes, topic, limit):
        """Up to limit messages on the topic at these indexes, in their order, and the last one's
        messageId when more follow (else None)."""
        found = []
        for index in indexes:
            message = self[index]
            if topic is None or message.topic == topic:
                if len(found) == limit:
                    return found, found[-1].message_id
                found.append(message)
        return found, None


class DeviceTotals(NamedTuple):
    messages: int
    bytes: int
    last_at: float  # epoch seconds of its newest message


_message_id = operator.attrgetter("message_id")


class MessageStore:
    def __init__(self, db_path=None):
        self._all = _Sequence()
        self._by_device = {}
        self._bytes_by_device = collections.Counter()
        self._last_id = first_message_id() - 1
        self._pending = []  # (Message, future) waiting for the next group commit
        self._db = None
        if db_path:
            self._open(db_path)

    def __len__(self):
        return len(self._all)

    def __repr__(self):
        return f"MessageStore({len(self)} messages, {'sqlite' if self._db else 'memory'})"

    def _open(self, path):
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        rows = self._db.execute(
            "SELECT message_id, product_key, device_name, topic, payload, received_at FROM messages"
            " ORDER BY message_id")
        for message_id, product_key, device_name, topic, payload, received_at in rows:
            self._index(Message(message_id, Device(product_key, device_name), topic, payload, received_at))
        (issued,) = self._db.execute(
            "SELECT COALESCE(MAX(value), 0) FROM meta WHERE name = 'last_message_id'").fetchone()
        self._last_id = max(self._last_id, issued, self._all[-1].message_id if self._all else 0)

    def next_id(self):
        """A fresh messageId, also for replies that carry one without storing a message."""
        self._last_id += 1
        return self._last_id

    async def add(self, device, topic, payload):
        """Store a message and return its messageId once it is durable (committed, with a database)."""
        message = Message(self.next_id(), device, topic, payload, time.time())
        if self._db is None:
            self._index(message)
            return message.message_id
        future = asyncio.get_running_loop().create_future()
        self._pending.append((message, future))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._commit_pending)
        await future
        return message.message_id

    def _commit_pending(self):
        batch, self._pending = self._pending, []
        try:
            with _transaction(self._db):
                self._db.executemany(
                    "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                    [(m.message_id, *m.device, m.topic, m.payload, m.received_at) for m, _ in batch])
                self._remember_last_id()
        except sqlite3.Error as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for message, future in batch:
            self._index(message)
            if not future.done():  # its request may have been cancelled by a client hanging up
                future.set_result(None)

    def _remember_last_id(self):
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_message_id', ?)", (self._last_id,))

    def _index(self, message):
        self._all.append(message)
        sequence = self._by_device.get(message.device)
        if sequence is None:
            sequence = self._by_device[message.device] = _Sequence()
        sequence.append(message)
        self._bytes_by_device[message.device] += len(message.payload)

    def totals(self, device):
        """The device's DeviceTotals, or None when it has no stored message."""
        sequence = self._by_device.get(device)
        if not sequence:
            return None
        return DeviceTotals(len(sequence), self._bytes_by_device[device], sequence[-1].received_at)

    def page(self, device=None, topic=None, after=None, limit=1000):
        """(messages, next) in messageId order; next is the `after` of the following page, or None."""
        sequence = self._all if device is None else self._by_device.get(device, _Sequence())
        return sequence.page(after, topic, limit)

    def page_newest(self, device=None, topic=None, before=None, limit=100):
        """(messages, next) newest first; next is the `before` of the following page, or None."""
        sequence = self._all if device is None else self._by_device.get(device, _Sequence())
        return sequence.page_newest(before, topic, limit)

    def clear(self):
        """Forget all messages; messageIds keep increasing."""
        self._all = _Sequence()
        self._by_device = {}
        self._bytes_by_device.clear()
        if self._db is not None:
            with _transaction(self._db):
                self._db.execute("DELETE FROM messages")
                self._remember_last_id()

    def close(self):
        if self._db is not None:
            self._db.close()
            self._db = None


class _transaction:
    """BEGIN ... COMMIT on an autocommit connection, ROLLBACK on error."""

    def __init__(self, db):
        self._db = db

    def __enter__(self):
        self._db.execute("BEGIN")

    def __exit__(self, exc_type, *_):
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
