"""Messages of JSON text (Pub/Sub's bytes, the lines of a JSON-lines file) to readings.

A message that is not a JSON object becomes a FailedRecord (invalid_record, its bytes or text kept as
they came) among the readings: the sink passes it to `.failed`, counted with the rest. So does one
nested deeper than Python's JSON reader goes (about a thousand levels: it raises RecursionError). In a
streaming job an exception would fail the bundle, and the runner would retry it for ever; and one stream
into the sink needs no Flatten of two stages' failed records, which Prism 2.62 loses.
"""
import json

import apache_beam as beam

from connector import Reason
from connector.beam.results import failure


def _parsed(message, what="message"):
    """The JSON object a message holds, or its FailedRecord saying why there is none (what: the noun
    the message gives, "message" or "line")."""
    try:
        reading = json.loads(message)
        problem = None if isinstance(reading, dict) else f"a JSON {type(reading).__name__}, not an object"
    except RecursionError:
        problem = "nested deeper than Python's JSON reader goes"
    except (ValueError, TypeError) as error:  # UnicodeDecodeError is a ValueError
        problem = f"not JSON: {error}"
    if problem is None:
        return reading
    return failure(message, f"{what} is {problem}", Reason.INVALID_RECORD)


class ParseJsonMessages(beam.PTransform):
    """messages -> readings: a dict for each message that is a JSON object, a FailedRecord for the others."""

    def expand(self, messages):
        return messages | beam.Map(_parsed)
