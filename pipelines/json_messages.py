"""Messages of JSON text (Pub/Sub's bytes) to readings, for the relay.

A message that is not a JSON object fails here as invalid_record, its bytes kept as they came: in a
streaming job an exception would fail the bundle, and the runner would retry it for ever.
"""
import json

import apache_beam as beam

from connector import FailedRecord, Reason
from connector.beam.metrics import SinkMetrics

MALFORMED = "malformed"


class _ParseFn(beam.DoFn):
    def setup(self):
        self._metrics = SinkMetrics()  # counted with the sink's, so the summary shows them

    def process(self, message):
        try:
            reading = json.loads(message)
            problem = None if isinstance(reading, dict) else f"a JSON {type(reading).__name__}, not an object"
        except (ValueError, TypeError) as error:  # UnicodeDecodeError is a ValueError
            problem = f"not JSON: {error}"
        if problem is None:
            yield reading
            return
        self._metrics.records_in.inc()
        self._metrics.failed(Reason.INVALID_RECORD)
        yield beam.pvalue.TaggedOutput(MALFORMED, FailedRecord(
            message, None, None, None, Reason.INVALID_RECORD, None, f"message is {problem}", 0))


class ParseJsonMessages(beam.PTransform):
    """messages -> (readings, malformed): dicts, and a FailedRecord for each message that is not one."""

    def expand(self, messages):
        parsed = messages | beam.ParDo(_ParseFn()).with_outputs(MALFORMED, main="readings")
        malformed = parsed[MALFORMED]
        malformed.element_type = FailedRecord
        return parsed.readings, malformed
