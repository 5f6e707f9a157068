"""Payload encoders: how records become the bytes of one message on the HTTP channel.

An encoder turns each record into a fragment once (so a record that cannot be encoded fails alone, and
the packer can count bytes without re-encoding), then wraps fragments into one payload body. The packer
relies on ``overhead(device)`` being an upper bound of what ``payload`` adds around the fragments.

Encoders are pickled into the pipeline: they hold only their options; anything costly is built lazily.
"""
import datetime
import hashlib
import io
import itertools
import json
import os
import random
from collections.abc import Iterable, Sequence
from typing import Any

import fastavro
from fastavro.validation import ValidationError, validate

from connector.protocol.device import Device

from .json_values import ISO, TIMESTAMP_FORMATS, Unmappable, epoch_ms, write_json
from .results import Reason, RecordError, describe

__all__ = ["ENCODERS", "AlinkHistoryEncoder", "AlinkPropertyEncoder", "AvroEncoder", "EncodeError", "Encoder",
           "JsonArrayEncoder", "JsonLinesEncoder", "RawEncoder", "get_encoder"]


class EncodeError(RecordError):
    """A record this encoder cannot encode; message says why (never includes secrets)."""

    reason = Reason.UNENCODABLE


class Encoder:
    """Turns records into fragments, and fragments into one payload body.

    A custom encoder subclasses this, sets `name`, and implements `encode` and `decode` (and `overhead`
    and `payload` when its payload is more than the fragments joined by `separator`).
    """

    name: str | None = None
    topic: str | None = None  # the topic template its payloads are made for, when the format has one
    max_records: int | None = None  # records per payload at most; None = as many as fit
    separator: bytes = b""  # written between fragments in a payload

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass that changes how records are written or read back restores none unless it says so
        # again: its parent's restores() spoke of the parent's format (a subclass whose encode adds a
        # field would otherwise have failed records restored with that field).
        if "restores" not in vars(cls) and {"encode", "decode", "payload", "separator"} & vars(cls).keys():
            cls.restores = Encoder.restores  # type: ignore[method-assign]

    def encode(self, record: Any) -> bytes:
        """One record's fragment.

        Args:
            record: One input record (a dict for the built-in encoders but raw).

        Returns:
            The record's bytes as they go into a payload.

        Raises:
            EncodeError: The record cannot be encoded; the message says why, never a secret.
        """
        raise NotImplementedError

    def overhead(self, device: Device) -> int:
        """Upper bound of the bytes a payload adds besides fragments and separators."""
        return 0

    def payload(self, device: Device, fragments: Sequence[bytes]) -> bytes:
        """The body of one message holding these fragments."""
        return self.separator.join(fragments)

    def decode(self, payload: bytes) -> list[Any]:
        """The records back from a payload (for tests, accounting and dead letters)."""
        raise NotImplementedError

    def restores(self, record: Any) -> bool:
        """Whether decode() gives this record back exactly (equal, of the same types) from a payload
        holding its fragment. Batch chunks then cross the shuffle without the record: if it fails, it
        is restored from its payload. The default, False, keeps every record beside its fragment."""
        return False


# --- JSON -------------------------------------------------------------------------------------------

def _to_json(value: Any, timestamps: str) -> bytes:
    """Compact UTF-8 JSON of value under the value mapping (json_values); EncodeError naming the field
    and the type JSON cannot hold, never the value.

    orjson writes it ten times faster than the json module did (0.6 against 5.9 µs for a 200-byte
    reading: the largest cost of a backfill).
    """
    try:
        return write_json(value, timestamps)
    except Unmappable as error:
        raise EncodeError(str(error)) from None


def _timestamps_option(timestamps: str) -> str:
    if timestamps not in TIMESTAMP_FORMATS:
        raise ValueError(f"timestamps must be one of {', '.join(TIMESTAMP_FORMATS)}, got {timestamps!r}")
    return timestamps


def _require_dict(record: Any, encoder_name: str | None) -> None:
    if not isinstance(record, dict):
        raise EncodeError(f"{encoder_name} records must be dicts, got {type(record).__name__}")


# What JSON gives back as it was: a flat record of these under string keys is restored exactly.
_JSON_EXACT_VALUES = frozenset((str, int, float, bool, type(None)))
_JSON_EXACT_KEYS = frozenset((str,))


class JsonLinesEncoder(Encoder):
    """One compact JSON object per line, its values as the value mapping writes them (json_values).
    decode returns the records as JSON gives them back (tuples come back as lists, non-string keys as
    strings, timestamps as their text)."""

    name = "jsonl"
    separator = b"\n"  # never inside a fragment: JSON escapes newlines in strings

    def __init__(self, timestamps: str = ISO) -> None:
        """timestamps: "iso" (ISO-8601 text in UTC) or "epoch-ms" (integer epoch milliseconds)."""
        self.timestamps = _timestamps_option(timestamps)

    def encode(self, record: Any) -> bytes:
        _require_dict(record, self.name)
        return _to_json(record, self.timestamps)

    def restores(self, record: Any) -> bool:
        # Nested values are not looked into (a tuple in them would come back a list): such records are kept.
        return (type(record) is dict and {*map(type, record.values())} <= _JSON_EXACT_VALUES
                and {*map(type, record)} <= _JSON_EXACT_KEYS)

    def decode(self, payload: bytes) -> list[Any]:
        return [json.loads(line) for line in payload.split(self.separator)] if payload else []


class JsonArrayEncoder(JsonLinesEncoder):
    """One JSON array of objects."""

    name = "json-array"
    separator = b","

    def overhead(self, device: Device) -> int:
        return 2

    def payload(self, device: Device, fragments: Sequence[bytes]) -> bytes:
        return b"[" + self.separator.join(fragments) + b"]"

    def decode(self, payload: bytes) -> list[Any]:
        records: list[Any] = json.loads(payload)
        return records

    restores = JsonLinesEncoder.restores  # the same fragments, read back as one array


# --- Alink JSON (thing model) -----------------------------------------------------------------------

ALINK_ID_LIMIT = 2**32  # ids are strings holding 0..4294967295
DEVICE_FIELDS = ("productKey", "deviceName")
_MISSING = object()
_ids: "itertools.count[int]"  # this process's Alink id counter, set by _restart_ids


def _restart_ids() -> None:
    """Start this process's id counter at a random point (again in a forked child, so that it does not
    repeat its parent's ids)."""
    global _ids
    _ids = itertools.count(random.SystemRandom().randrange(ALINK_ID_LIMIT))


_restart_ids()
os.register_at_fork(after_in_child=_restart_ids)


def next_message_id() -> str:
    """The next Alink message id, as the string the platform wants.

    Ids come from one counter per process that starts at a random point and wraps at 2**32, so a process
    never repeats an id within 2**32 messages. Processes (workers, forks) draw independent starting
    points: two of them publishing for the same device collide only if their ranges overlap, which for
    n messages each has a chance of about 2n / 2**32. Treat the id as a dedupe hint, not a key.
    """
    return str(next(_ids) % ALINK_ID_LIMIT)


def _epoch_ms(value: object, field: str) -> int:
    """value as epoch milliseconds: a non-negative int (a bool is an int to Python, not here), or a
    timestamp not before 1970: a datetime, or ISO-8601 text with a date and a time, as JSON carries one
    (the dead letters keep timestamps so); naive ones are UTC."""
    ms = epoch_ms(_instant(value) if isinstance(value, str) else value)
    if ms is not None and ms >= 0:
        return ms
    problem = f"is a {type(value).__name__}" if ms is None else "is before 1970"
    if isinstance(value, str) and ms is None:
        problem = "is text that is not an ISO-8601 date and time"
    raise EncodeError(f"time field {field!r} must be epoch milliseconds (a non-negative int) or a timestamp; "
                      f"it {problem}")


def _instant(text: str) -> datetime.datetime | None:
    """ISO-8601 text with a date and a time ("2024-01-01T00:00:00.000Z") as a datetime, else None."""
    if len(text) < 16 or text[10] not in "T ":
        return None
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


class _AlinkEncoder(Encoder):
    """Shared by the thing-model encoders: a fragment is one record's properties object,
    {"name": {"value": v, "time": ms}, ...}; the payload wraps fragments in the Alink envelope."""

    method: str  # the Alink method its envelope names: each encoder sets its own
    time_required = False

    def __init__(self, time_field: str = "time", properties: Iterable[str] | None = None,
                 exclude: Iterable[str] = DEVICE_FIELDS, timestamps: str = ISO, require_time: bool = False) -> None:
        """properties: the fields to report (missing ones are skipped); default every field except
        those in exclude and the time field. time_field: epoch milliseconds or a timestamp.
        timestamps: how timestamp values of properties are written, "iso" or "epoch-ms".
        require_time: fail a record without the time field (unencodable) rather than report it without
        a time, which the platform stamps with its arrival (alink-history always requires it)."""
        self.timestamps = _timestamps_option(timestamps)
        self.time_required = self.time_required or require_time
        self.time_field = time_field
        self.properties = None if properties is None else tuple(properties)
        self.exclude = frozenset(exclude) | {time_field}

    def properties_of(self, record: Any) -> dict[str, dict[str, Any]]:
        """The properties object of one record, as a dict."""
        _require_dict(record, self.name)
        time = record.get(self.time_field, _MISSING)
        if time is not _MISSING:
            stamp = {"time": _epoch_ms(time, self.time_field)}
        elif self.time_required:
            raise EncodeError(f"{self.name} records need their time field {self.time_field!r} (epoch ms or a "
                              "timestamp); this one has no such field")
        else:
            stamp = {}
        if self.properties is None:
            names = [name for name in record if name not in self.exclude]
        else:
            names = [name for name in self.properties if name in record]
        if not names:
            raise EncodeError(f"record has no properties to report ({self.name})")
        return {name: {"value": record[name], **stamp} for name in names}

    def encode(self, record: Any) -> bytes:
        return _to_json(self.properties_of(record), self.timestamps)

    def overhead(self, device: Device) -> int:
        head, tail = self._envelope(device, str(ALINK_ID_LIMIT - 1))  # the widest id
        return len(head) + len(tail)

    def payload(self, device: Device, fragments: Sequence[bytes]) -> bytes:
        head, tail = self._envelope(device, next_message_id())
        return head + self.separator.join(fragments) + tail

    def _envelope(self, device: Device, message_id: str) -> tuple[bytes, bytes]:
        """The bytes before and after the fragments."""
        raise NotImplementedError


class AlinkPropertyEncoder(_AlinkEncoder):
    """A live property report (thing.event.property.post): one record per message.
    decode returns [the properties object]."""

    name = "alink-property"
    method = "thing.event.property.post"
    topic = "/sys/{productKey}/{deviceName}/thing/event/property/post"
    max_records = 1

    def _envelope(self, device: Device, message_id: str) -> tuple[bytes, bytes]:
        head = b'{"id":"%s","version":"1.0","params":' % message_id.encode()
        return head, b',"method":"%s"}' % self.method.encode()

    def decode(self, payload: bytes) -> list[Any]:
        return [json.loads(payload)["params"]]


class AlinkHistoryEncoder(_AlinkEncoder):
    """A historical data report (thing.event.property.history.post), made for backfill: many records
    per message, each with its own time, which is therefore required. decode returns the list of
    properties objects."""

    name = "alink-history"
    method = "thing.event.property.history.post"
    topic = "/sys/{productKey}/{deviceName}/thing/event/property/history/post"
    separator = b","
    time_required = True

    def _envelope(self, device: Device, message_id: str) -> tuple[bytes, bytes]:
        identity = _to_json({"productKey": device.product_key, "deviceName": device.device_name}, ISO)
        head = b'{"id":"%s","version":"1.0","method":"%s","params":[{"identity":%s,"properties":[' % (
            message_id.encode(), self.method.encode(), identity)
        return head, b'],"events":[]}]}'

    def decode(self, payload: bytes) -> list[Any]:
        properties: list[Any] = json.loads(payload)["params"][0]["properties"]
        return properties


# --- Avro -------------------------------------------------------------------------------------------

_MAX_LONG_BYTES = 10  # a zigzag varint of a 64-bit long
_SYNC_BYTES = 16


def _avro_long(n: int) -> bytes:
    """Avro's zigzag varint encoding of a long."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _schema_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "one of " + ", ".join(map(_schema_name, schema))
    if isinstance(schema, dict):
        return schema.get("name") or _schema_name(schema.get("type"))
    return str(schema)


class AvroEncoder(Encoder):
    """An Avro object container file (null codec) holding every record of the payload in one block.

    A fragment is the record's schemaless Avro encoding, so a payload is the file header, the block's
    count and size, the fragments, and the sync marker. The marker is derived from the schema, so the
    same records always give the same bytes. Logical types go through the schema as fastavro writes
    them (a datetime for timestamp-millis, a Decimal of the schema's scale, a UUID...). decode returns
    the records as fastavro reads them.
    """

    name = "avro"

    def __init__(self, schema: str | dict[str, Any] | list[Any]) -> None:
        self.schema = json.loads(schema) if isinstance(schema, str) else schema
        self._state: tuple[Any, bytes, bytes] | None = None
        self._parsed()  # fail at pipeline construction, not on the workers

    def __getstate__(self) -> dict[str, Any]:
        return {"schema": self.schema, "_state": None}  # parsed schema and header rebuild lazily

    def _parsed(self) -> tuple[Any, bytes, bytes]:
        """(parsed schema, container header, sync marker), built once per process."""
        if self._state is None:
            try:
                parsed = fastavro.parse_schema(self.schema)
            except Exception as error:
                raise ValueError(f"invalid Avro schema: {error}") from None
            sync = hashlib.md5(json.dumps(self.schema, sort_keys=True).encode()).digest()
            header = io.BytesIO()
            fastavro.writer(header, parsed, [], codec="null", sync_marker=sync)
            self._state = parsed, header.getvalue(), sync
        return self._state

    def encode(self, record: Any) -> bytes:
        parsed = self._parsed()[0]
        try:
            validate(record, parsed, raise_errors=True)
        except ValidationError as error:
            problems = "; ".join(
                f"{e.field or 'record'}: expected {_schema_name(e.schema)}, got {type(e.datum).__name__}"
                for e in error.errors)
            raise EncodeError(f"record does not match the Avro schema: {problems}") from None
        out = io.BytesIO()
        try:  # what validation leaves to the writer (a Decimal of another scale than the schema's, say)
            fastavro.schemaless_writer(out, parsed, record)
        except Exception as error:
            raise EncodeError(f"record cannot be written with the Avro schema: {describe(error)}") from None
        return out.getvalue()

    def overhead(self, device: Device) -> int:
        return len(self._parsed()[1]) + 2 * _MAX_LONG_BYTES + _SYNC_BYTES

    def payload(self, device: Device, fragments: Sequence[bytes]) -> bytes:
        _, header, sync = self._parsed()
        data = b"".join(fragments)
        return b"".join((header, _avro_long(len(fragments)), _avro_long(len(data)), data, sync))

    def decode(self, payload: bytes) -> list[Any]:
        return list(fastavro.reader(io.BytesIO(payload)))


# --- Raw bytes --------------------------------------------------------------------------------------

class RawEncoder(Encoder):
    """Bytes records sent as they are: one per message, or several joined by a separator the records
    must not contain. decode returns bytes."""

    name = "raw"

    def __init__(self, separator: bytes | None = None) -> None:
        if separator is not None and not (isinstance(separator, bytes) and separator):
            raise ValueError("raw separator must be non-empty bytes, or None for one record per message")
        self.separator = separator or b""
        self.max_records = None if separator else 1

    def encode(self, record: Any) -> bytes:
        if not isinstance(record, (bytes, bytearray, memoryview)):
            raise EncodeError(f"raw records must be bytes, got {type(record).__name__}")
        fragment = bytes(record)
        separator = self.separator
        if separator and (separator in fragment or len(separator) > 1 and any(
                fragment.endswith(separator[:n]) or fragment.startswith(separator[-n:])
                for n in range(1, len(separator)))):
            # Beside the separator a record ending with its first bytes, or starting with its last, would
            # make one more separator in the payload: a reader splitting it would read other records.
            raise EncodeError("raw record contains the separator, or begins or ends with part of it, so it "
                              "could not be split back out of a payload")
        return fragment

    def decode(self, payload: bytes) -> list[Any]:
        return payload.split(self.separator) if self.separator else [payload]

    def restores(self, record: Any) -> bool:
        return type(record) is bytes


ENCODERS = {
    cls.name: cls
    for cls in (JsonLinesEncoder, JsonArrayEncoder, AvroEncoder, RawEncoder, AlinkPropertyEncoder,
                AlinkHistoryEncoder)
}


def get_encoder(spec: "str | Encoder", **options: Any) -> Encoder:
    """An Encoder instance as it is, or a new encoder by name with options.

    Args:
        spec: An Encoder, or the name of a built-in one (a key of ENCODERS).
        **options: The named encoder's options (e.g. `schema` for avro).

    Returns:
        The encoder.

    Raises:
        ValueError: An unknown name, or options given with an instance.
    """
    if isinstance(spec, Encoder):
        if options:
            raise ValueError(f"options {sorted(options)} given with an encoder instance would be ignored")
        return spec
    try:
        cls = ENCODERS[spec]
    except (KeyError, TypeError):
        raise ValueError(f"unknown encoder {spec!r}; use one of {sorted(ENCODERS)}") from None
    return cls(**options)
