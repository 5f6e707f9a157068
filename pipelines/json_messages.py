"""Messages of JSON text (Pub/Sub's bytes) to readings, for the relay.

A message that is not a JSON object becomes a FailedRecord (invalid_record, its bytes kept as they came)
among the readings: the sink passes it to `.failed`, counted with the rest. In a streaming job an
exception would fail the bundle, and the runner would retry it for ever; and one stream into the sink
needs no Flatten of two stages' failed records, which Prism 2.62 loses.
"""
import json

import apache_beam as beam

from connector import FailedRecord, Reason


def _parsed(message):
    try:
        reading = json.loads(message)
        problem = None if isinstance(reading, dict) else f"a JSON {type(reading).__name__}, not an object"
    except (ValueError, TypeError) as error:  # UnicodeDecodeError is a ValueError
        problem = f"not JSON: {error}"
    if problem is None:
        return reading
    return FailedRecord(message, None, None, None, Reason.INVALID_RECORD, None, f"message is {problem}", 0)


class ParseJsonMessages(beam.PTransform):
    """messages -> readings: a dict for each message that is a JSON object, a FailedRecord for the others."""

    def expand(self, messages):
        return messages | beam.Map(_parsed)
