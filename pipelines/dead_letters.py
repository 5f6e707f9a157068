"""Failed records as Avro with one fixed schema, whatever the input was, so that any tool can read
them and `pipelines.replay` can send them again.

The original record is kept as connector.FailedRow keeps it (connector.beam.rows.original): JSON text
with sorted keys, its values as the JSON encoders write them (a timestamp as ISO-8601 text, a Decimal
with its digits), so that a replay publishes what the run would have; NaN and Infinity written as
JSON's common extension, so a record that failed for holding one comes back as it was; what JSON
cannot hold as its str(). A record that is bytes (a raw record, a Pub/Sub message that is not JSON;
bytearray and memoryview too) is kept exactly in record_bytes, and its str() in record.

Each dead letter also keeps how its run encoded (encoder, encoder_options: the name and options of
pipelines.options.encoder_spec), beside where it was going (product_key, device_name, topic), so that a
replay sends it where and as it was meant to go. Files written before those fields read as before,
with both null.
"""
import io
import json
import uuid

import apache_beam as beam
import fastavro
from apache_beam.io.filesystems import FileSystems

from connector.beam.rows import original, record_json

from .input_files import ReadInputFiles

SCHEMA = {
    "type": "record", "name": "FailedRecord", "namespace": "iot_platform_beam_connector.dead_letter",
    "doc": "A record WriteToIoTPlatform did not publish, and why.",
    "fields": [
        {"name": "record", "type": "string", "doc": "the original record as JSON text"},
        {"name": "product_key", "type": ["null", "string"], "default": None},
        {"name": "device_name", "type": ["null", "string"], "default": None},
        {"name": "topic", "type": ["null", "string"], "default": None},
        {"name": "reason", "type": "string", "doc": "a connector.Reason name, e.g. auth_failed"},
        {"name": "code", "type": ["null", "int"], "default": None, "doc": "the platform's code, if it answered"},
        {"name": "message", "type": "string"},
        {"name": "attempts", "type": "int", "doc": "publish requests sent with its payload (0: never sent)"},
        {"name": "record_bytes", "type": ["null", "bytes"], "default": None,
         "doc": "the original record, exactly, when it was bytes"},
        {"name": "encoder", "type": ["null", "string"], "default": None,
         "doc": "the run's encoder (--encoder), which replay encodes with; null before it was kept"},
        {"name": "encoder_options", "type": ["null", "string"], "default": None,
         "doc": "that encoder's options as JSON text (time_field, exclude, timestamps, schema, ...)"},
    ],
}
SUFFIX = ".avro"
_PARSED = fastavro.parse_schema(SCHEMA)


def stamp(encoder_spec):
    """The fields that say how a run encoded, from its (encoder name, options): what to_avro adds to each
    dead letter. None: unknown (a writer that was not told), written as nulls."""
    if encoder_spec is None:
        return _UNSTAMPED
    name, options = encoder_spec
    return {"encoder": name, "encoder_options": json.dumps(options, sort_keys=True, separators=(",", ":"))}


def encoder_spec_of(dead_letter):
    """(encoder name, options) a dead letter says its run encoded with; None for one written before
    dead letters kept it."""
    if dead_letter.get("encoder") is None:
        return None
    return dead_letter["encoder"], json.loads(dead_letter.get("encoder_options") or "{}")


_UNSTAMPED = {"encoder": None, "encoder_options": None}


def to_avro(failed, stamped=_UNSTAMPED):
    """A FailedRecord as a dict of the dead-letter schema; stamped: how the run encoded (stamp)."""
    text, raw = original(failed.record)
    return {"record": record_json(str(raw)) if text is None else text,
            "product_key": failed.product_key, "device_name": failed.device_name, "topic": failed.topic,
            "reason": failed.reason, "code": failed.code, "message": failed.message, "attempts": failed.attempts,
            "record_bytes": raw, **stamped}


def original_record(dead_letter):
    """The record as it was given to the sink (dead letters written before record_bytes have none)."""
    raw = dead_letter.get("record_bytes")
    return json.loads(dead_letter["record"]) if raw is None else raw


class Replayed(dict):
    """A dead letter's record (a dict, as it was given to the sink) carrying where it was going: route,
    (Device, topic), which DeadLetterRouter sends it to. Encoders see the dict."""

    def __init__(self, record, route):
        super().__init__(record)
        self.route = route


class DeadLetterRouter:
    """Routes a Replayed record to its dead letter's device and topic, and any other record by the
    run's own router (fallback): a record that failed before it was routed, or replayed with --topic."""

    def __init__(self, fallback):
        self.fallback = fallback

    def __call__(self, record):
        route = record.route if isinstance(record, Replayed) else None
        return self.fallback(record) if route is None else route


class WriteDeadLetters(beam.PTransform):
    """Batch: FailedRecords to Avro files <prefix>-SSSSS-of-NNNNN.avro with WriteToAvro.

    encoder_spec: (name, options) of the run's encoder, kept in each dead letter for replay."""

    def __init__(self, prefix, encoder_spec=None):
        super().__init__()
        self.prefix = prefix
        self.stamped = stamp(encoder_spec)

    def expand(self, failed):
        return (failed | "ToAvro" >> beam.Map(to_avro, self.stamped)
                | "Write" >> beam.io.WriteToAvro(self.prefix, SCHEMA, file_name_suffix=SUFFIX))


class _WritePerBundleFn(beam.DoFn):
    """Writes each bundle's failed records to a file of its own when the bundle ends.

    Works in streaming on any runner and filesystem, without windows or triggers. A bundle the runner
    retries writes its file again under another name: dead letters are at least once.

    Beam's own file sinks lose or stall here (measured with Beam 2.62). In fixed windows of event time
    (fileio.WriteToFiles), the write's GroupByKey dropped the records the sink's timers flush (2 of the
    4 dead letters of the relay's TestStream test): the sink stamps them where its timers hold the
    watermark, which Prism and Flink honour, but the BundleBasedDirectRunner keeps no hold for a timer,
    so there they still come late (tests/test_write_output_times.py). Allowed lateness short of for
    ever drops them too, and Prism refuses allowed lateness. In the global window with a
    processing-time trigger (a triggering frequency), the BundleBasedDirectRunner never ends a
    TestStream run, and Prism refuses the trigger.
    """

    def __init__(self, prefix, stamped):
        self._prefix = prefix
        self._stamped = stamped

    def start_bundle(self):
        self._rows = []

    def process(self, failed):
        self._rows.append(to_avro(failed, self._stamped))

    def finish_bundle(self):
        if not self._rows:
            return
        out = io.BytesIO()
        fastavro.writer(out, _PARSED, self._rows)
        with FileSystems.create(f"{self._prefix}-{uuid.uuid4().hex}{SUFFIX}") as handle:
            handle.write(out.getvalue())
        self._rows = []


def write_per_bundle(prefix, encoder_spec=None):
    """Streaming: FailedRecords to Avro files <prefix>-<random>.avro, one per bundle that had any;
    encoder_spec as for WriteDeadLetters."""
    return beam.ParDo(_WritePerBundleFn(prefix, stamp(encoder_spec)))


class ReadDeadLetters(beam.PTransform):
    """The original records back from dead-letter files (globs or paths on any Beam filesystem).

    replayed: a function dead letter -> what to send instead of its original record (replay's: the
    record carrying its route, or a FailedRecord when it must not be sent as this replay would)."""

    def __init__(self, patterns, replayed=original_record):
        super().__init__()
        self.patterns = patterns
        self.replayed = replayed

    def expand(self, pbegin):
        return pbegin | "Read" >> ReadInputFiles(self.patterns, "avro") | "Original" >> beam.Map(self.replayed)


def read_all(prefix):
    """Every dead letter under a prefix, as dicts (for tests and small local runs)."""
    rows = []
    for match in FileSystems.match([f"{prefix}*{SUFFIX}"])[0].metadata_list:
        with FileSystems.open(match.path) as handle:
            rows.extend(fastavro.reader(io.BytesIO(handle.read())))
    return rows
