"""Reading input files of several formats (Avro, Parquet, CSV, JSON lines), from several globs or paths,
as one PCollection of dicts, with Beam's file IOs.

The format is guessed from each pattern's extension unless given. CSV values are text unless the column
is declared (--csv-types) or the value is written as a JSON number; a JSON line that is not valid JSON
stays a string, which the sink fails as invalid_record: nothing is lost.
"""
import csv
import io
import json
import os
import re

import apache_beam as beam
from apache_beam.io import fileio

FORMATS = ("avro", "parquet", "csv", "jsonl")
EXTENSIONS = {".avro": "avro", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
              ".ndjson": "jsonl", ".json": "jsonl"}
DEFAULT_FORMAT = "avro"  # for an extension not above, as before other formats were read
CSV_TYPES = {"int": int, "float": float, "str": str, "bool": lambda text: text.lower() in ("true", "1", "yes")}
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
    if type_name is not None:
        return CSV_TYPES[type_name](text)
    if text == "":
        return None
    if _JSON_NUMBER.fullmatch(text):  # as JSON would read it: "007" and "1." stay text
        return float(text) if any(c in text for c in ".eE") else int(text)
    return text


def _csv_records(readable_file, types):
    """The rows of one CSV file (with a header line) as dicts of typed values."""
    with readable_file.open() as handle:
        rows = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8-sig", newline=""))
        for number, row in enumerate(rows, 2):
            try:
                yield {column: _csv_value(text, types.get(column)) for column, text in row.items()}
            except ValueError as error:
                raise ValueError(f"{readable_file.metadata.path} line {number}: {error} (see --csv-types)") from None


def _json_or_text(line):
    try:
        return json.loads(line)
    except ValueError:
        return line


def _read(pattern, input_format, csv_types):
    if input_format == "avro":
        return beam.io.ReadFromAvro(pattern)
    if input_format == "parquet":
        return beam.io.ReadFromParquet(pattern)
    if input_format == "jsonl":
        return (beam.io.ReadFromText(pattern) | "NonBlank" >> beam.Filter(str.strip)
                | "Json" >> beam.Map(_json_or_text))
    return (fileio.MatchFiles(pattern) | fileio.ReadMatches()
            | "Csv" >> beam.FlatMap(_csv_records, csv_types))


class ReadInputFiles(beam.PTransform):
    """One read per glob or path (Beam's IO splits the files across workers), flattened.

    input_format: one of FORMATS, or None to guess each pattern's from its extension.
    csv_types: {column: type name} for CSV columns (see parse_csv_types).
    """

    def __init__(self, patterns, input_format=None, csv_types=None):
        super().__init__()
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        self.input_format = input_format
        self.csv_types = csv_types or {}

    def expand(self, pbegin):
        reads = [pbegin | f"Read{i}" >> _read(pattern, self.input_format or format_of(pattern), self.csv_types)
                 for i, pattern in enumerate(self.patterns)]
        return reads[0] if len(reads) == 1 else tuple(reads) | beam.Flatten()
