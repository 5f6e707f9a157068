"""How record values become JSON: the one mapping of the JSON-family encoders (jsonl, json-array,
alink-property, alink-history), in batch and streaming alike, and of the text the dead letters keep of
a failed record. The README's "Values in JSON" table lists it and says why each representation.

`json_value` maps one value JSON has no type for (a timestamp, a Decimal, bytes, a numpy scalar, a
dataclass...) to JSON's own types; `json_ready` walks a whole record with it, text keys for the others,
refusing what JSON cannot hold (NaN, nesting deeper than MAX_DEPTH) with the field it is in. orjson
writes the result, and calls `json_value` itself for what it does not know, so a record of JSON's own
types costs no walk at all.
"""
import base64
import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid
from collections.abc import Callable
from typing import Any

import numpy
import orjson
from apache_beam.pvalue import Row
from apache_beam.utils.timestamp import Timestamp as BeamTimestamp

__all__ = ["EPOCH_MS", "ISO", "MAX_DEPTH", "TIMESTAMP_FORMATS", "Unmappable", "epoch_ms", "json_ready", "json_value",
           "Number", "record_text", "write_json"]

ISO = "iso"  # timestamps as ISO-8601 text in UTC: 2024-01-01T00:00:00.000Z
EPOCH_MS = "epoch-ms"  # timestamps as integer epoch milliseconds
TIMESTAMP_FORMATS = (ISO, EPOCH_MS)
# Containers nested deeper than this are refused: the most orjson writes (the walk takes one Python frame
# a level, far from the recursion limit).
MAX_DEPTH = 254

_NAIVE_EPOCH = datetime.datetime(1970, 1, 1)
_OUTSIDE = "a timestamp outside years 1 to 9999 cannot be written as ISO-8601 text"
_ONE_MS = datetime.timedelta(milliseconds=1)
_INT_RANGE = range(-2**63, 2**64)  # what orjson writes as a number itself
_MISSING_NAMES = frozenset(("NaTType", "NAType"))  # pandas' missing time and missing value
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


class Unmappable(ValueError):
    """A value JSON cannot hold. `path` is the field it is in, outermost first; the message gives its
    type and never its value."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []

    def __str__(self) -> str:
        path = self.path if len(self.path) <= 8 else [*self.path[:4], f"({len(self.path) - 6} more)", *self.path[-2:]]
        return self.problem + (f" (field {'.'.join(path)})" if path else "")


def json_value(value: Any, timestamps: str = ISO) -> Any:
    """The JSON form of one value JSON has no type of its own for, as the README's table gives it: JSON's
    types, a Number (a number written with its exact digits), or values to map in turn (a
    tuple's items, a dataclass's fields). Raises Unmappable for what has none."""
    if isinstance(value, enum.Enum):  # before str and int: a str or int enum is its value
        return value.value
    if isinstance(value, str):
        return str.__str__(value)  # a subclass as the plain text it holds
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, datetime.datetime):
        return _timestamp(value, timestamps)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return _seconds(_timedelta_ns(value))
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise Unmappable(f"Decimal {value} cannot be encoded as JSON")
        return Number(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, BeamTimestamp):
        return _from_micros(value.micros, 0, timestamps)
    if isinstance(value, numpy.generic | numpy.ndarray):
        return _numpy(value, timestamps)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, Row):
        return value.as_dict()
    if isinstance(value, tuple):
        return dict(zip(value._fields, value)) if hasattr(value, "_fields") else list(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, (set, frozenset)):  # sorted: the same set gives the same text in every process
        try:
            return sorted(value)
        except Exception:  # items of several types, or with no order: by type, then by their text
            return sorted(value, key=lambda item: (type(item).__name__, record_text(item, timestamps)))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if type(value).__name__ in _MISSING_NAMES:
        return None
    raise Unmappable(f"values of type {type(value).__name__} cannot be encoded as JSON")


def _timestamp(value: datetime.datetime, timestamps: str) -> Any:
    """A datetime (a pandas Timestamp, with its nanoseconds) in UTC; a naive one is taken as UTC."""
    exact = type(value) is datetime.datetime
    if not exact and type(value).__name__ == "NaTType":
        return None
    nanos = 0 if exact else getattr(value, "nanosecond", 0)
    offset = value.utcoffset()
    if offset:
        try:
            value = value - offset  # the fields of the same instant in UTC
        except OverflowError:
            raise Unmappable(_OUTSIDE) from None
    if timestamps == EPOCH_MS:
        return (value.replace(tzinfo=None) - _NAIVE_EPOCH) // _ONE_MS
    return _iso(value, nanos)


def _from_micros(micros: int, nanos: int, timestamps: str) -> Any:
    if timestamps == EPOCH_MS:
        return micros // 1000
    try:
        moment = _NAIVE_EPOCH + datetime.timedelta(microseconds=micros)
    except OverflowError:
        raise Unmappable(_OUTSIDE) from None
    return _iso(moment, nanos)


def _iso(moment: datetime.datetime, nanos: int) -> str:
    """ISO-8601 text of a moment's fields (UTC), with milliseconds always (as JavaScript's toISOString
    writes them) and finer digits only when it has them."""
    fraction = moment.microsecond * 1000 + nanos
    if fraction % 1_000_000 == 0:
        digits = f"{fraction // 1_000_000:03d}"
    elif fraction % 1000 == 0:
        digits = f"{fraction // 1000:06d}"
    else:
        digits = f"{fraction:09d}"
    return f"{moment.isoformat()[:19]}.{digits}Z"  # its first 19 characters: date and time to the second


def _timedelta_ns(value: datetime.timedelta) -> int:
    return (((value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds) * 1000
            + getattr(value, "nanoseconds", 0))


def _seconds(nanoseconds: int) -> "Number":
    """Seconds as a JSON number with exactly the digits they have (no binary float on the way)."""
    sign = "-" if nanoseconds < 0 else ""
    whole, fraction = divmod(abs(nanoseconds), 1_000_000_000)
    digits = f"{fraction:09d}".rstrip("0")
    return Number(f"{sign}{whole}{'.' + digits if digits else ''}")


def _numpy(value: Any, timestamps: str) -> Any:
    """A numpy scalar as the Python value it holds; an array as a list."""
    if isinstance(value, numpy.ndarray):
        return list(value) if value.dtype.kind in "mM" else value.tolist()  # times stay numpy scalars
    if isinstance(value, numpy.datetime64 | numpy.timedelta64):
        if numpy.isnat(value):
            return None
        unit, _ = numpy.datetime_data(value.dtype)
        fine = unit in ("ns", "ps", "fs", "as")
        count = int(value.astype(f"{value.dtype.str[1]}8[{'ns' if fine else 'us'}]").astype(numpy.int64))
        nanoseconds = count if fine else count * 1000
        if isinstance(value, numpy.timedelta64):
            return _seconds(nanoseconds)
        micros, nanos = divmod(nanoseconds, 1000)
        return _from_micros(micros, nanos, timestamps)
    return value.item()


def epoch_ms(value: Any) -> int | None:
    """value as epoch milliseconds, if it is an instant: an int (not a bool), or any timestamp the
    mapping takes (naive ones are UTC); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numpy.integer):
        return int(value)
    if isinstance(value, datetime.datetime | BeamTimestamp | numpy.datetime64):
        try:
            mapped = json_value(value, EPOCH_MS)
        except Unmappable:
            return None
        return mapped if isinstance(mapped, int) else None
    return None


# --- the walk ---------------------------------------------------------------------------------------

def json_ready(value: Any, timestamps: str = ISO) -> Any:
    """value as JSON's own types (and Numbers, written with their exact digits), every value mapped and every
    key made text; Unmappable, with the field, for NaN, Infinity, nesting deeper than MAX_DEPTH, two
    keys that write as the same text, and values with no JSON form."""
    return _ready(value, 0, timestamps, None)


def write_json(value: Any, timestamps: str = ISO) -> bytes:
    """Compact UTF-8 JSON of value under the mapping; Unmappable naming the field it cannot write.

    orjson writes what it knows itself and calls json_value for the rest. When the text holds `null`,
    which is also how orjson writes NaN, the record's own floats are checked (json_value's are as it
    maps them). The walk runs only when orjson refuses (integers beyond 64 bits, keys that are not
    text, a NaN): it writes those, or finds the field it cannot.
    """
    try:
        encoded = orjson.dumps(value, default=_DEFAULTS[timestamps], option=_PASSTHROUGH)
        if b"null" not in encoded or _finite(value):
            # A copy of its own size: orjson's bytes keep a 4 KB allocation, and fragments wait in
            # state and in open payloads (27 times the memory for a 150-byte reading).
            return memoryview(encoded).tobytes()
    except orjson.JSONEncodeError:
        pass
    return _write_walked(_ready(value, 0, timestamps, None))


def _write_walked(ready: Any) -> bytes:
    """The JSON of a walked value (json_ready's)."""
    try:
        return orjson.dumps(ready, default=_number, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
    except orjson.JSONEncodeError:
        _check_text(ready)
        raise


def _finite(value: Any) -> bool:
    """Whether no float in value's dicts, lists and tuples is NaN or Infinity (other values are
    json_value's to check)."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return all(map(_finite, value.values()))
    if kind is list or kind is tuple:
        return all(map(_finite, value))
    return True


def record_text(record: Any, timestamps: str = ISO) -> str:
    """A record as compact JSON text with sorted keys; never raises. The mapping's JSON, except that
    NaN and Infinity are written as JSON's common extension (they read back as they were), a value the
    mapping refuses as its str() (its type's name if even that fails), nesting deeper than MAX_DEPTH
    as a note, and a dict whose keys collide as a list of [key, value] pairs."""
    try:
        ready = _ready(record, 0, timestamps, _lenient)
        try:
            return orjson.dumps(ready, default=_number,
                                option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS).decode()
        except orjson.JSONEncodeError:  # text that is not valid Unicode: the json module escapes it
            return json.dumps(_without_fragments(ready), sort_keys=True, separators=(",", ":"), allow_nan=True)
    except Exception:  # not expected (the walk refuses nothing here), but a failed record needs a text
        return json.dumps(f"<a {type(record).__name__} that could not be written as text>")


class Number(str):
    """A JSON number as the exact text to write (a Decimal's digits, an integer beyond 64 bits)."""


def _number(value: Any) -> orjson.Fragment:
    """orjson's default for a walked value, which holds no other type orjson does not write itself."""
    if type(value) is Number:
        return orjson.Fragment(value.encode())
    raise TypeError(f"not a walked value: {type(value).__name__}")


def _fast_default(timestamps: str) -> Callable[[Any], Any]:
    """orjson's default for a record as it is: the mapping, its exact numbers as fragments; a NaN it
    gives (a numpy float's, say), which orjson would write as null, refused."""
    def default(value: Any) -> Any:
        mapped = json_value(value, timestamps)
        if type(mapped) is Number:
            return orjson.Fragment(mapped.encode())
        if not _finite(mapped):
            raise Unmappable("NaN/Infinity cannot be encoded as JSON")
        return mapped
    return default


# Subclasses, datetimes and dataclasses go to json_value, so that the mapping, not orjson, decides them.
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_DEFAULTS = {timestamps: _fast_default(timestamps) for timestamps in TIMESTAMP_FORMATS}
_Lenient = Callable[[Any, Unmappable], Any]


def _lenient(value: Any, problem: Unmappable) -> Any:
    """What record_text writes for a value the mapping refuses."""
    if isinstance(value, float):
        return Number(_NON_FINITE[repr(value)])
    if "deeper than" in problem.problem:
        return f"<{problem.problem}>"
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _refused(value: Any, problem: Unmappable, lenient: _Lenient | None) -> Any:
    if lenient is None:
        raise problem
    return lenient(value, problem)


def _ready(value: Any, depth: int, timestamps: str, lenient: _Lenient | None) -> Any:
    """The walk: one Python frame per level of nesting, so that MAX_DEPTH levels stay far from the
    recursion limit."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if value in _INT_RANGE else Number(value)
    if kind is float:
        if math.isfinite(value):
            return value
        return _refused(value, Unmappable("NaN/Infinity cannot be encoded as JSON"), lenient)
    if kind is Number:
        return value
    if kind is dict or kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            return _refused(value, Unmappable(f"nested deeper than {MAX_DEPTH} levels (or circular)"), lenient)
        if kind is not dict:
            items = []
            for index, item in enumerate(value):
                try:
                    items.append(_ready(item, depth + 1, timestamps, lenient))
                except Unmappable as error:
                    error.path.insert(0, str(index))
                    raise
            return items
        out: dict[str, Any] = {}
        for key, item in value.items():
            text = key if type(key) is str else _key_text(key, depth, timestamps, lenient)
            if text in out:
                if lenient is None:
                    raise Unmappable(f"two keys are written as the same text {text!r} (one of them a "
                                     f"{type(key).__name__})")
                return [[_key_text(k, depth, timestamps, lenient), _ready(v, depth + 1, timestamps, lenient)]
                        for k, v in value.items()]
            try:
                out[text] = _ready(item, depth + 1, timestamps, lenient)
            except Unmappable as error:
                error.path.insert(0, text)
                raise
        return out
    try:
        mapped = json_value(value, timestamps)
    except Exception as error:
        problem = error if isinstance(error, Unmappable) else Unmappable(
            f"values of type {kind.__name__} cannot be encoded as JSON ({type(error).__name__})")
        return _refused(value, problem, lenient)
    return _ready(mapped, depth, timestamps, lenient)  # json_value gives simpler values: no loop


def _key_text(key: Any, depth: int, timestamps: str, lenient: _Lenient | None) -> str:
    """A dict key as text: text as it is; null, booleans and numbers as JSON writes them (as the json
    module makes keys of them); anything else as its mapped value, or the JSON text of that."""
    if isinstance(key, str) and not isinstance(key, enum.Enum):
        return str.__str__(key)
    if key is None or isinstance(key, bool):
        return "null" if key is None else ("true" if key else "false")
    if type(key) is float:
        if not math.isfinite(key):
            _refused(key, Unmappable("NaN/Infinity cannot be a JSON key"), lenient)
            return repr(key)
        return float.__repr__(key)
    ready = _ready(key, depth + 1, timestamps, lenient)
    if isinstance(ready, str):
        return str.__str__(ready)
    return orjson.dumps(ready, default=_number, option=orjson.OPT_PASSTHROUGH_SUBCLASS).decode()


def _check_text(value: Any) -> None:
    """Unmappable naming the field of text that is not valid Unicode (orjson refuses lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Unmappable("text that is not valid Unicode (a lone surrogate) cannot be encoded as JSON") from None
        return
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        try:
            _check_text(key)
            _check_text(item)
        except Unmappable as error:
            error.path.insert(0, str(key))
            raise


def _without_fragments(value: Any) -> Any:
    """A walked value for the json module, which would write a Number as text: exact numbers as floats
    (record_text's rare path only)."""
    if type(value) is Number:
        return float(value)
    if isinstance(value, dict):
        return {key: _without_fragments(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_fragments(item) for item in value]
    return value
