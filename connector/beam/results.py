"""What WriteToIoTPlatform returns: receipts for accepted messages, failed entries for records.

Both are NamedTuples with deterministic coders, so they can be grouped, deduplicated, and written to
Avro or BigQuery. Neither ever holds a secret or a token.
"""
from typing import Any, Generic, NamedTuple, Optional, TypeVar

from apache_beam import coders, pvalue

__all__ = ["FailedRecord", "FailedRecordCoder", "Reason", "Receipt", "ReceiptCoder", "WriteToIoTPlatformResult"]


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
    attempts: int  # publish attempts made (0 when nothing was sent)


_Tuple = TypeVar("_Tuple", Receipt, FailedRecord)


class _NamedTupleCoder(coders.Coder, Generic[_Tuple]):
    """Encodes a NamedTuple field by field with a deterministic tuple coder."""

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
        record = coders.FastPrimitivesCoder().as_deterministic_coder("FailedRecord.record")
        super().__init__(FailedRecord, [record, text, text, text, coders.StrUtf8Coder(),
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
