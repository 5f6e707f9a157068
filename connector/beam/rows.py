"""Schema'd outputs: `.published` and `.failed` as Beam rows, for WriteToBigQuery, WriteToParquet, SQL and YAML.

Receipts already have a Beam schema (WriteToParquet takes `.published` as it is); ToRows gives them
RowCoder, which cross-language transforms (Beam SQL) need. A FailedRecord holds the input record as
any Python object, which no schema can type: ToRows turns it into a FailedRow, the record as JSON text
(or as bytes, for the raw encoder's records). FailedRecord itself stays as it was. The pipelines' dead
letters keep the record by the same rule (`original`).
"""
from typing import Any, NamedTuple, Optional

import apache_beam as beam
from apache_beam import coders
from apache_beam.pvalue import PCollection
from apache_beam.typehints.row_type import RowTypeConstraint

from .hints import not_type_hints, same
from .json_values import record_text
from .results import FailedRecord, Receipt, RecordText


class FailedRow(NamedTuple):
    """A FailedRecord with a Beam schema: the record as JSON text, or as bytes when it was bytes."""

    record_json: Optional[str]  # see record_json
    record_bytes: Optional[bytes]
    product_key: Optional[str]
    device_name: Optional[str]
    topic: Optional[str]
    reason: str
    code: Optional[int]
    message: str
    attempts: int

    @classmethod
    @not_type_hints  # ToRows maps FailedRecords with it
    def of(cls, failed: FailedRecord) -> "FailedRow":
        return cls(*original(failed.record), failed.product_key, failed.device_name, failed.topic, failed.reason,
                   failed.code, failed.message, failed.attempts)


coders.registry.register_coder(FailedRow, coders.RowCoder)  # type: ignore[attr-defined]


def original(record: Any) -> tuple[str | None, bytes | None]:
    """A failed record as (JSON text, None), or as (None, its bytes) when it is bytes, bytearray or
    memoryview: kept so that it can be published again as it was."""
    if isinstance(record, (bytes, bytearray, memoryview)):
        return None, bytes(record)
    return record_json(record), None


def record_json(record: Any) -> str:
    """A record as compact JSON text with sorted keys, its values as the JSON encoders write them (the
    value mapping: timestamps as ISO-8601 UTC text, Decimals with their digits, bytes as base64...), so
    that the text reads back to what a JSON encoder sends; the same text whichever runner the record went
    through. Never raises: NaN and Infinity as JSON's common extension, so they read back as they were;
    a value the mapping refuses as its str(), text a user can fix and replay (json_values.record_text).
    A record `.failed`'s coder could not pickle is already its text (a RecordText), kept as it is."""
    if isinstance(record, RecordText):
        return str.__str__(record)
    return record_text(record)


class ToRows(beam.PTransform[PCollection[Any], PCollection[Any]]):
    """`.published` or `.failed` -> the same with Beam's RowCoder: Receipt rows, or FailedRows."""

    @not_type_hints
    def expand(self, pcoll: PCollection[Any]) -> PCollection[Any]:
        if pcoll.element_type is Receipt:
            receipts: PCollection[Any] = pcoll | "ReceiptRows" >> beam.Map(same).with_output_types(
                RowTypeConstraint.from_user_type(Receipt))
            return receipts
        if pcoll.element_type is FailedRecord:
            failed: PCollection[Any] = pcoll | "FailedRows" >> beam.Map(FailedRow.of).with_output_types(FailedRow)
            return failed
        raise TypeError(f"ToRows takes WriteToIoTPlatform's .published or .failed, not elements of type "
                        f"{pcoll.element_type}")
