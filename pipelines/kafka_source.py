"""The relay's Kafka source: each record's value (JSON text, parsed by the relay as Pub/Sub's messages
are) at Kafka's record time, read with Beam's KafkaIO through the expansion service that
`python -m pipelines.runners fetch kafka` assembles (pipelines.runners.kafka_expansion).

Offsets are committed to the consumer group when a checkpoint completes (commit_offset_in_finalize),
so a relay stopped and started again on the same group resumes where the last checkpoint was; a new
group starts at the earliest offset unless told otherwise, so nothing produced before the first start
is skipped. With a stop time, every partition's reader stops then, and the job ends with its buffers
flushed.
"""
import apache_beam as beam

from .runners import kafka_expansion

DEFAULT_GROUP = "iot-platform-relay"


def consumer_config(group, start_offset, extra=()):
    """KafkaConsumer settings: the group, where a new group starts, the user's own (KEY=VALUE) last."""
    config = {"group.id": group, "auto.offset.reset": start_offset,
              "enable.auto.commit": "false"}  # offsets are committed as checkpoints complete, not on a timer
    for setting in extra:
        key, _, value = setting.partition("=")
        config[key.strip()] = value.strip()
    return config


class ReadKafkaValues(beam.PTransform):
    """Values (bytes) of a topic's records, each at its record time; an expansion service address builds it."""

    def __init__(self, expansion_service, bootstrap_servers, topic, config, stop_reading_at_millis=None):
        super().__init__()
        self._read = kafka_expansion.read(expansion_service, bootstrap_servers, topic, config, stop_reading_at_millis)

    def expand(self, pbegin):
        return pbegin | "ReadFromKafka" >> self._read
