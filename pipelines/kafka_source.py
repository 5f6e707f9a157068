"""The relay's Kafka source: each record's value (JSON text, parsed by the relay as Pub/Sub's messages
are) at Kafka's record time, read with Beam's KafkaIO through the expansion service that
`python -m pipelines.runners fetch kafka` assembles (pipelines.runners.kafka_expansion).

Offsets are committed to the consumer group when a checkpoint completes (commit_offset_in_finalize),
so a relay stopped and started again on the same group resumes where the last checkpoint was; a new
group starts at the earliest offset unless told otherwise, so nothing produced before the first start
is skipped. With a time to read for, every partition's reader stops that long after the job started,
or once a stop file exists (the relay's Ctrl-C), and the job ends with its buffers flushed and a last
checkpoint's offsets committed.

When the relay stops, `check` compares the records the read handed over with those the sink took in,
and says where the group stands: the records it left in Kafka for the next run.
"""
import apache_beam as beam

from . import summary
from .batch import EXIT_NOTHING_READ
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
    """Values (bytes) of a topic's records, each at its record time; an expansion service address builds it.
    read_for_seconds: stop reading that long after the runner started the job (None: never); stop_file:
    stop reading once this file exists."""

    def __init__(self, expansion_service, bootstrap_servers, topic, config, read_for_seconds=None, stop_file=None):
        super().__init__()
        read_for_millis = None if read_for_seconds is None else read_for_seconds * 1000
        self._read = kafka_expansion.read(expansion_service, bootstrap_servers, topic, config, read_for_millis,
                                          stop_file)

    def expand(self, pbegin):
        return pbegin | "ReadFromKafka" >> self._read


def check(result, bootstrap_servers, topic, config):
    """The Kafka read against the relay's sink (summary.SourceCheck), and a note of where the group
    stands: the records beyond its committed offsets, which the next run on the group reads (those
    read after the last completed checkpoint, read again). A relay that read nothing while records
    waited for it fails loudly: its source is not doing its work."""
    handed_over = summary.sink_counters(result, kafka_expansion.METRICS_NAMESPACE).get(
        kafka_expansion.RECORDS_HANDED_OVER, 0)
    findings = _where_the_group_stands(bootstrap_servers, topic, config, handed_over)
    return summary.SourceCheck(f"Kafka topic {topic}", handed_over,
                               summary.sink_counters(result).get("records_in", 0), findings)


def _where_the_group_stands(bootstrap_servers, topic, config, handed_over):
    group = config["group.id"]
    try:
        marks = kafka_expansion.offsets(bootstrap_servers, topic, config)
    except kafka_expansion.OffsetsError as error:
        return [(f"Kafka: could not ask where group {group} stands on {topic}: {error}", None)]
    committed = {p: m["committed"] for p, m in marks.items() if m["committed"] is not None}
    if not committed and config.get("auto.offset.reset") == "latest":
        return [(f"Kafka: group {group} has committed no offset on {topic} yet", None)]
    starts = {p: committed.get(p, m["beginning"]) for p, m in marks.items()}
    waiting = sum(max(0, m["end"] - starts[p]) for p, m in marks.items())
    if not waiting:
        where = ", ".join(f"{p}: {m['end']:,}" for p, m in sorted(marks.items()))
        note = f"Kafka: group {group} has committed the end of {topic} (offsets by partition: {where})"
    else:
        where = ", ".join(f"{p}: {committed[p]:,}/{m['end']:,}" if p in committed else f"{p}: -/{m['end']:,}"
                          for p, m in sorted(marks.items()))
        note = (f"Kafka: group {group}'s committed/end offsets on {topic}, by partition: {where}. The next run on "
                f"the group reads the {waiting:,} records beyond them (those read since the last checkpoint, again)")
    if waiting and not handed_over:
        return [(f"NOTHING READ: the relay read none of the {waiting:,} records waiting in Kafka topic {topic} "
                 f"for group {group}", EXIT_NOTHING_READ), (note, None)]
    return [(note, None)]

