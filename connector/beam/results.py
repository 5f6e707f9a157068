"""What WriteToIoTPlatform returns: receipts for accepted messages, failed entries for records.

Both are NamedTuples with coders of their own. A Receipt's is deterministic (receipts can be grouped and
deduplicated); a FailedRecord's holds any record whatever it is (nothing groups on it), and cannot fail.
Every FailedRecord the sink makes comes from `failure`. Neither ever holds a secret or a token.
"""
import pickle
from typing import Any, Generic, NamedTuple, Optional, TypeVar

from apache_beam import coders, pvalue

from .json_values import record_text

__all__ = ["FAILED", "FailedRecord", "FailedRecordCoder", "Reason", "Receipt", "ReceiptCoder", "RecordError",
           "RecordText", "WriteToIoTPlatformResult", "describe", "failure"]

# The tag of every step's failed output: each step's FailedRecords leave it tagged so, and
# WriteToIoTPlatform flattens them into `.failed`.
FAILED = "failed"


class Reason:
    """Stable names for why a record was not published (the `reason` of a FailedRecord)."""

    INVALID_RECORD = "invalid_record"  # not a record this transform can route (e.g. not a dict)
    UNROUTABLE = "unroutable"  # device fields missing or empty, or the router failed
    INVALID_TOPIC = "invalid_topic"  # the topic breaks the platform's topic rules
    UNKNOWN_DEVICE = "unknown_device"  # no secret for the device in the credentials
    UNENCODABLE = "unencodable"  # the encoder cannot encode the record
    TOO_LARGE = "too_large"  # the record alone does not fit in one payload
    UNORDERABLE = "unorderable"  # its order_by value cannot be ordered with the other records' values
    AUTH_FAILED = "auth_failed"  # the platform refused the device (20000): secret, existence, clock
    REJECTED = "rejected"  # the platform refused the payload as invalid (10001, or a client-side check)
    TLS_ERROR = "tls_error"  # the platform's certificate did not verify
    ENDPOINT_NOT_FOUND = "endpoint_not_found"  # HTTP 404: no platform at the endpoint's address
    THROTTLED = "throttled"  # still throttled (40000) when the retry budget ran out
    RETRIES_EXHAUSTED = "retries_exhausted"  # transient failures outlasted the retry budget

    ALL = (INVALID_RECORD, UNROUTABLE, INVALID_TOPIC, UNKNOWN_DEVICE, UNENCODABLE, TOO_LARGE, UNORDERABLE,
           AUTH_FAILED, REJECTED, TLS_ERROR, ENDPOINT_NOT_FOUND, THROTTLED, RETRIES_EXHAUSTED)


class Receipt(NamedTuple):
    """One message the platform accepted."""

    product_key: str
    device_name: str
    topic: str
    message_id: int  # exact: it exceeds 2**53, so give it as text where JSON leaves Python
    record_count: int
    payload_bytes: int

    def to_json_dict(self) -> dict[str, Any]:
        """A dict for JSON consumers in other languages: message_id as text, which they cannot mangle."""
        return dict(self._asdict(), message_id=str(self.message_id))


class FailedRecord(NamedTuple):
    """One input record that was not published, and why."""

    record: Any
    product_key: Optional[str]
    device_name: Optional[str]
    topic: Optional[str]
    reason: str  # one of Reason
    code: Optional[int]  # the platform's code, or None when the platform never answered
    message: str
    attempts: int  # publish requests that left with its payload (0: the platform never saw it)


class RecordError(ValueError):
    """An error that fails one record for a reason of its own (EncodeError, RoutingError,
    RecordTooLarge): `failure` reports its reason and its message as they are."""

    reason = Reason.INVALID_RECORD


def failure(record: Any, why: BaseException | str, reason: str, device: tuple[str, str] | None = None,
            topic: str | None = None, *, code: int | None = None, attempts: int = 0) -> FailedRecord:
    """The FailedRecord of a record a step could not take: every step of the sink makes its failed
    records here, from whatever Exception it caught.

    why: the exception, or the message. reason: the step's reason, for an exception that has none of
    its own (a RecordError's own reason, device and topic win). device: (productKey, deviceName).
    """
    if isinstance(why, RecordError):
        reason = why.reason
        device = getattr(why, "device", None) or device
        topic = getattr(why, "topic", None) or topic
    message = describe(why) if isinstance(why, BaseException) else why
    product_key, device_name = device if device is not None else (None, None)
    return FailedRecord(record, _unicode(product_key), _unicode(device_name), _unicode(topic), reason, code,
                        _unicode(message) or "", attempts)


def describe(error: BaseException) -> str:
    """What went wrong, in words: a RecordError's message, any other exception's type and message (which
    may itself fail to be made)."""
    try:
        text = str(error)
    except Exception:
        text = "(its message could not be made)"
    return text if isinstance(error, RecordError) else f"{type(error).__name__}: {text}"


def _unicode(text: str | None) -> str | None:
    """text as valid Unicode, which every coder and writer of text takes: a lone surrogate (text from
    a record, in a device name or a message) escaped."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class RecordText(str):
    """What `.failed`'s coder keeps of a record it cannot pickle (a lock in it, a memoryview): the
    record's JSON text, as the dead letters write it (json_values.record_text)."""


class _AnyRecordCoder(coders.Coder):
    """A failed record, whatever it holds: pickled, or its text (a RecordText) when it cannot be.

    Not deterministic: nothing groups on a failed record. Not Beam's FastPrimitivesCoder either: it
    crashes the process (a segmentation fault) on a record nested some thousands of levels deep, where
    pickle raises RecursionError.
    """

    def encode(self, record: Any) -> bytes:
        try:
            return b"P" + pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
        except Exception:
            return b"T" + record_text(record).encode("utf-8", "surrogatepass")

    def decode(self, encoded: bytes) -> Any:
        if encoded[:1] == b"P":
            return pickle.loads(encoded[1:])
        return RecordText(encoded[1:].decode("utf-8", "surrogatepass"))

    def is_deterministic(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


_Tuple = TypeVar("_Tuple", Receipt, FailedRecord)


class _NamedTupleCoder(coders.Coder, Generic[_Tuple]):
    """Encodes a NamedTuple field by field with a tuple coder of its fields' coders."""

    def __init__(self, cls: type[_Tuple], field_coders: list[coders.Coder]) -> None:
        self._cls: type[_Tuple] = cls
        self._tuple_coder = coders.TupleCoder(field_coders)

    def encode(self, value: _Tuple) -> bytes:
        encoded: bytes = self._tuple_coder.encode(tuple(value))
        return encoded

    def decode(self, encoded: bytes) -> _Tuple:
        return self._cls(*self._tuple_coder.decode(encoded))

    def is_deterministic(self) -> bool:
        return self._tuple_coder.is_deterministic()

    def to_type_hint(self) -> type[_Tuple]:
        return self._cls

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._cls is getattr(other, "_cls", None)

    def __hash__(self) -> int:
        return hash(self._cls)


class ReceiptCoder(_NamedTupleCoder[Receipt]):
    def __init__(self) -> None:
        text, number = coders.StrUtf8Coder(), coders.VarIntCoder()
        super().__init__(Receipt, [text, text, text, number, number, number])


class FailedRecordCoder(_NamedTupleCoder[FailedRecord]):
    def __init__(self) -> None:
        text = coders.NullableCoder(coders.StrUtf8Coder())
        super().__init__(FailedRecord, [_AnyRecordCoder(), text, text, text, coders.StrUtf8Coder(),
                                        coders.NullableCoder(coders.VarIntCoder()),
                                        coders.StrUtf8Coder(), coders.VarIntCoder()])


coders.registry.register_coder(Receipt, ReceiptCoder)  # type: ignore[attr-defined]
coders.registry.register_coder(FailedRecord, FailedRecordCoder)  # type: ignore[attr-defined]


class WriteToIoTPlatformResult(NamedTuple):
    """The outputs of WriteToIoTPlatform, always both, in the input's windows.

    A NamedTuple so that Beam names the transform's outputs `published` and `failed` in the graph.
    """

    published: pvalue.PCollection[Receipt]
    failed: pvalue.PCollection[FailedRecord]
