"""Schema'd records in: beam.Row and NamedTuples (RowCoder) become the dicts the sink routes and encodes,
and a schema'd PCollection gives the Avro encoder its schema.

A record becomes a dict once, when it enters WriteToIoTPlatform, so the router, the topic template,
order_by and every encoder read dicts only, and the dict path pays a single isinstance.
"""
from typing import Any

from apache_beam.io.avroio import beam_schema_to_avro_schema
from apache_beam.pvalue import Row
from apache_beam.typehints.schemas import schema_from_element_type


def _is_schema_row(value: object) -> bool:
    """A beam.Row, or a NamedTuple (what RowCoder decodes rows into)."""
    return isinstance(value, Row) or (isinstance(value, tuple) and hasattr(value, "_fields"))


def as_dict(record: Any) -> Any:
    """A beam.Row or NamedTuple as a dict (nested rows too); anything else as it is."""
    if not _is_schema_row(record):
        return record
    fields = record.as_dict().items() if isinstance(record, Row) else zip(record._fields, record)
    return {name: _plain(value) for name, value in fields}


def _plain(value: Any) -> Any:
    if _is_schema_row(value):
        return as_dict(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def avro_schema_of(element_type: Any) -> dict[str, Any]:
    """The Avro schema of a schema'd PCollection's element type; ValueError when it has none.

    Beam names records by random ids; they are named after their fields here, so the same element type
    always gives the same schema (and the same payload bytes).
    """
    try:
        beam_schema = schema_from_element_type(element_type)
    except (TypeError, ValueError):
        raise ValueError(
            f"the avro encoder needs encoder_options={{'schema': ...}}, or input with a Beam schema "
            f"(beam.Row, or a NamedTuple registered with RowCoder); got elements of type {element_type}") from None
    avro_schema: dict[str, Any] = _named(beam_schema_to_avro_schema(beam_schema), "Record")
    return avro_schema


def _named(avro_type: Any, name: str) -> Any:
    """avro_type with each record named by its path from the top record."""
    if isinstance(avro_type, list):
        return [_named(branch, name) for branch in avro_type]
    if not isinstance(avro_type, dict):
        return avro_type
    if avro_type.get("type") == "record":
        fields = [dict(field, type=_named(field["type"], f"{name}_{field['name']}")) for field in avro_type["fields"]]
        return dict(avro_type, name=name, fields=fields)
    named = dict(avro_type)
    for key in ("type", "items", "values"):
        if key in named:
            named[key] = _named(named[key], name)
    return named
