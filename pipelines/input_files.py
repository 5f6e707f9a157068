"""Reading input files of several formats (Avro, Parquet, CSV, JSON lines), from several globs or paths,
as one PCollection of dicts, with Beam's file IOs.

The format is guessed from each pattern's extension unless given. Avro and Parquet values come as
their readers give them (timestamps, dates, Decimals, bytes, nested records; Parquet maps as dicts).
CSV values are text unless the column is declared (--csv-types) or the value is written as a JSON
number; an empty or missing value is null. Bad input fails as invalid_record in the sink, and the rest
goes on: a JSON line that is not a JSON object becomes a FailedRecord, its text kept; so does a CSV row
with a value that is not its column's type, its values kept (those that did not parse as their text),
and a row with more values than the header has columns, its extra values kept under "_extra_values".
"""
import csv
import datetime
import decimal
import io
import os
import re

import apache_beam as beam
import pyarrow
from apache_beam.io import fileio

from connector import Reason
from connector.beam.results import failure
from connector.beam.routing import RoutingError

from .json_messages import _parsed

FORMATS = ("avro", "parquet", "csv", "jsonl")
EXTENSIONS = {".avro": "avro", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
              ".ndjson": "jsonl", ".json": "jsonl"}
DEFAULT_FORMAT = "avro"  # for an extension not above, as before other formats were read
EXTRA_VALUES = "_extra_values"  # a failed CSV row's values past its header's columns, under this key
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _bool(text):
    try:
        return _BOOLS[text.lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not one of {', '.join(_BOOLS)}") from None


def _timestamp(text):
    """ISO-8601 text as a datetime in UTC: 2024-01-01T08:00:00+08:00, 2024-01-01 00:00:00.5Z; without a
    zone, UTC. Digits finer than microseconds are refused rather than dropped."""
    fraction = _FRACTION.search(text)
    if fraction and fraction.group(1)[6:].strip("0"):
        raise ValueError(f"{text!r} is finer than microseconds")
    moment = datetime.datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def _decimal(text):
    """Decimal text as a Decimal, its digits exact (12.50 stays 12.50, not the float 12.5)."""
    try:
        return decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        raise ValueError(f"{text!r} is not a decimal number") from None


CSV_TYPES = {"int": int, "float": float, "str": str, "bool": _bool, "timestamp": _timestamp, "decimal": _decimal}
_FRACTION = re.compile(r"[T ]\d\d:\d\d:\d\d[.,](\d+)")
_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def format_of(pattern):
    return EXTENSIONS.get(os.path.splitext(pattern)[1].lower(), DEFAULT_FORMAT)


def parse_csv_types(text):
    """{column: type name} from "ts=int,temperature=float"; ValueError naming what is wrong."""
    types = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        column, _, name = item.partition("=")
        if not column.strip() or name.strip() not in CSV_TYPES:
            raise ValueError(f"{item!r} is not COLUMN=TYPE with TYPE one of {', '.join(CSV_TYPES)}")
        types[column.strip()] = name.strip()
    return types


def _csv_value(text, type_name):
    if text is None or text == "":  # None: the row has fewer fields than the header
        return None
    if type_name is not None:
        return CSV_TYPES[type_name](text)
    if _JSON_NUMBER.fullmatch(text):  # as JSON would read it: "007" and "1." stay text
        return float(text) if any(c in text for c in ".eE") else int(text)
    return text


def _csv_records(readable_file, types, router=None):
    """The rows of one CSV file (with a header line) as dicts of typed values; a row with a value that
    is not its column's type, or with more values than the header has columns, as a FailedRecord
    (invalid_record) saying so, with the device the row names when the router finds one in it."""
    with readable_file.open() as handle:
        rows = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8-sig", newline=""))
        for row in rows:
            record, not_their_type = {}, []
            extra = row.pop(None, None)  # the values past the header's columns, if the row has more
            for column, text in row.items():
                try:
                    record[column] = _csv_value(text, types.get(column))
                except (ValueError, ArithmeticError):
                    record[column] = text
                    not_their_type.append(f"column {column!r}: {text!r} is not {types[column]}")
            if extra is None and not not_their_type:
                yield record
                continue
            problems = []
            if extra is not None:
                record[EXTRA_VALUES] = extra
                problems.append(f"{len(extra)} values more than the header's {len(rows.fieldnames)} columns")
            if not_their_type:
                problems.append("; ".join(not_their_type) + " (see --csv-types)")
            yield failure(record, f"{readable_file.metadata.path} line {rows.line_num}: {'; '.join(problems)}",
                          Reason.INVALID_RECORD, _device_named(record, router))


def _device_named(record, router):
    """The (productKey, deviceName) a record names by the run's router, or None: what a failed row's dead
    letter says of where it was going, as those of the sink's own failures do."""
    if router is None:
        return None
    try:
        device, _ = router(record)
    except RoutingError as error:  # a topic the template cannot make still has its device
        device = error.device
    except Exception:  # whatever a user's router raises: the row fails for its values all the same
        device = None
    return tuple(device) if device is not None else None


def _json_line(line):
    return _parsed(line, "line")


class _ParquetRows(beam.DoFn):
    """The rows of a Parquet row group (a pyarrow Table) as dicts, as Beam's ReadFromParquet gives them,
    except that a map is a dict (pyarrow gives a list of (key, value) pairs; one whose keys repeat stays
    that list, which loses nothing)."""

    def process(self, table):
        columns = {name: [_maps_as_dicts(value, column.type) for value in column.to_pylist()]
                   if _has_map(column.type) else column.to_pylist()
                   for name, column in zip(table.column_names, table.columns)}
        for row in zip(*columns.values()):
            yield dict(zip(columns, row))


def _has_map(arrow_type):
    if pyarrow.types.is_map(arrow_type):
        return True
    if pyarrow.types.is_struct(arrow_type):
        return any(_has_map(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
    if pyarrow.types.is_list(arrow_type) or pyarrow.types.is_large_list(arrow_type) or \
            pyarrow.types.is_fixed_size_list(arrow_type):
        return _has_map(arrow_type.value_type)
    return False


def _maps_as_dicts(value, arrow_type):
    """A value pyarrow gave for arrow_type, with its maps (at any depth) as dicts."""
    if value is None or not _has_map(arrow_type):
        return value
    if pyarrow.types.is_map(arrow_type):
        pairs = [(key, _maps_as_dicts(item, arrow_type.item_type)) for key, item in value]
        as_dict = dict(pairs)
        return as_dict if len(as_dict) == len(pairs) else pairs
    if pyarrow.types.is_struct(arrow_type):
        types = {arrow_type.field(i).name: arrow_type.field(i).type for i in range(arrow_type.num_fields)}
        return {name: _maps_as_dicts(item, types[name]) for name, item in value.items()}
    return [_maps_as_dicts(item, arrow_type.value_type) for item in value]


def _read(pattern, input_format, csv_types, router):
    if input_format == "avro":
        return beam.io.ReadFromAvro(pattern)
    if input_format == "parquet":
        return beam.io.ReadFromParquetBatched(pattern) | "Rows" >> beam.ParDo(_ParquetRows())
    if input_format == "jsonl":
        return (beam.io.ReadFromText(pattern) | "NonBlank" >> beam.Filter(str.strip)
                | "Json" >> beam.Map(_json_line))
    return (fileio.MatchFiles(pattern) | fileio.ReadMatches()
            | "Csv" >> beam.FlatMap(_csv_records, csv_types, router))


class ReadInputFiles(beam.PTransform):
    """One read per glob or path (Beam's IO splits the files across workers), flattened, then reshuffled.

    The reshuffle is for Flink: it runs each consumer of a Flatten once per input, under one step name,
    and keeps the metrics of only one of those copies (Beam 2.62, batch), so the sink's own counts (records
    read, failed before publishing) would miss the other inputs' records and the run's accounting would
    not add up. After a reshuffle the records have one consumer on every runner.

    input_format: one of FORMATS, or None to guess each pattern's from its extension.
    csv_types: {column: type name} for CSV columns (see parse_csv_types).
    router: the run's router (connector.beam.routing.make_router), which names the device of a CSV row
        that fails for its values.
    """

    def __init__(self, patterns, input_format=None, csv_types=None, router=None):
        super().__init__()
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        self.input_format = input_format
        self.csv_types = csv_types or {}
        self.router = router

    def expand(self, pbegin):
        reads = [pbegin | f"Read{i}" >> _read(pattern, self.input_format or format_of(pattern), self.csv_types,
                                              self.router)
                 for i, pattern in enumerate(self.patterns)]
        if len(reads) == 1:
            return reads[0]
        return tuple(reads) | beam.Flatten() | "OneConsumer" >> beam.Reshuffle()
