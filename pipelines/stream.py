"""python -m pipelines.stream: relay live readings to IoT Platform as they arrive.

Readings (JSON objects) come from Kafka (--kafka_bootstrap_servers, --kafka_topic; on Flink) or Pub/Sub
(--input_subscription; on Dataflow, and on the local runner and Prism). Without either, from a simulated fleet
(--devices, --rate) on this machine; with no --endpoint, the relay also starts an embedded emulator for
that fleet. Each device's readings are buffered and sent when a payload is full,
or --max-buffering-delay seconds after the first one came. Failed records go to Avro dead letters, one
file per bundle that had any (--dead-letter). Stops on Ctrl-C (buffers flush, the summary prints) or
after --duration seconds.
"""
import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.runners.runner import PipelineState

from connector import FileCredentials
from connector.beam.write import DEFAULT_MAX_BUFFERING_DELAY
from connector.emulator import Emulator, make_devices

from . import batch, checks, dead_letters, fleet, kafka_source, options, pubsub_source
from .checks import UsageError
from .json_messages import ParseJsonMessages
from .runners import kafka_expansion, prism
from .summary import Progress

DEMO_PRODUCT_KEY = "a1DemoRelay"
# A job that ends in these states may still have held readings in its buffers: the summary says how many.
STOPPED = (PipelineState.CANCELLED, PipelineState.STOPPED)
SOURCE_GRACE_SECONDS = 30.0
PORTABLE = ("FlinkRunner", "PrismRunner", "PortableRunner")
KAFKA_FINAL_COMMIT_MS = 10_000
KAFKA_CHECKPOINT_MS = 5_000  # reading Kafka on Flink, unless --checkpointing_interval is given
DATAFLOW = ("DataflowRunner", "TestDataflowRunner")
PUBSUB_RUNNERS = ("FnApiRunner", "PrismRunner", *DATAFLOW)


def make_parser():
    parser = argparse.ArgumentParser(prog="python -m pipelines.stream", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("source")
    source.add_argument("--input_subscription", help="projects/P/subscriptions/S: JSON readings from Pub/Sub")
    source.add_argument("--kafka-bootstrap-servers", help="HOST:PORT[,...]: JSON readings from Kafka (Flink)")
    source.add_argument("--kafka-topic", help="the Kafka topic to read")
    source.add_argument("--kafka-group", help="consumer group whose offsets the relay commits as checkpoints "
                        f"complete (default: --job_name, else {kafka_source.DEFAULT_GROUP})")
    source.add_argument("--kafka-start-offset", choices=["earliest", "latest"], default="earliest",
                        help="where a group with no committed offset starts (default %(default)s)")
    source.add_argument("--kafka-consumer-config", action="append", default=[], metavar="KEY=VALUE",
                        help="a KafkaConsumer setting (security.protocol, sasl.*, ssl.*...); repeat for more")
    source.add_argument("--timestamp-field", help="a reading's event time: this field, in epoch milliseconds "
                        "(default: Kafka's record time, Pub/Sub's publish time)")
    source.add_argument("--devices", type=int, default=20, help="simulated fleet size")
    source.add_argument("--rate", type=float, default=50.0, help="simulated readings per second, in all")
    source.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    options.add_sink_options(parser)
    parser.add_argument("--max-buffering-delay", type=float, default=DEFAULT_MAX_BUFFERING_DELAY,
                        help="seconds a device's first buffered reading may wait (default %(default)s, the "
                        "transform's: a device sends at most one message per delay unless a payload fills, so a "
                        "longer one means fewer messages against the platform's per-device and per-account "
                        "limits, and fresher data a shorter one)")
    return parser


def build(pipeline, source, args, json_messages=False):
    """The relay: source (a PTransform giving readings) -> WriteToIoTPlatform(streaming) -> dead letters.

    json_messages: the source gives JSON text (Pub/Sub's and Kafka's message bytes), parsed here; a
    message that is not a JSON object goes to the dead letters. Tests pass a TestStream as the source.
    """
    result = readings(pipeline, source, args, json_messages) | "Publish" >> options.write_transform(
        args, streaming=True, max_buffering_delay=args.max_buffering_delay)
    result.failed | "DeadLetters" >> dead_letters.write_per_bundle(args.dead_letter, options.encoder_spec(args))
    return result


def readings(pipeline, source, args, json_messages=False):
    """The readings the relay publishes, each at its event time: --timestamp_field's value where a
    reading has one, else the time its source gave it (see build)."""
    found = pipeline | "Source" >> source
    if json_messages:
        found = found | "Parse" >> ParseJsonMessages()
    if getattr(args, "timestamp_field", None):
        found = found | "EventTime" >> beam.Map(_at_event_time, args.timestamp_field)
    return found


@contextlib.contextmanager
def _stop_on_sigint(stop):
    """The first Ctrl-C stops the source (`stop()`: a clean end); a second one interrupts as usual.

    Yields `starting`, a context manager to start the job in: the processes a runner starts meanwhile
    (Flink's job server, which runs embedded Flink; Prism) ignore Ctrl-C. A terminal sends it to every
    process of the command, and they died at once, taking the job with them, its buffers unsent. A
    process that starts with SIGINT ignored keeps ignoring it (Java and Go both honour that); the relay
    stops them itself when the run ends. Ctrl-C does nothing while the job starts."""
    def handler(signum, frame):
        print("\nstopping: reading no more, flushing buffers (Ctrl-C again to abort)", file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stop()

    @contextlib.contextmanager
    def starting():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, handler)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield starting
    finally:
        signal.signal(signal.SIGINT, previous)


def _demo_fleet(args, stack):
    """Devices, their credentials file, and an embedded emulator, for a relay given no --endpoint."""
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="iot-relay-demo-"))
    devices = make_devices(args.devices, product_key=DEMO_PRODUCT_KEY, prefix="sensor-")
    args.credentials = os.path.join(directory, "credentials.json")
    with open(args.credentials, "w", encoding="utf-8") as out:
        json.dump(devices, out)
    emulator = stack.enter_context(Emulator(devices))
    args.endpoint, args.ca_file = emulator.endpoint, emulator.ca_file
    args.dead_letter = args.dead_letter or os.path.join(directory, "dead-letter", "failed")
    print(f"relay: embedded emulator at {emulator.endpoint} for {args.devices} simulated devices", file=sys.stderr)
    return devices, lambda: f"{emulator.counters()['messages']:,} messages at the emulator"


def run(argv):
    parser = make_parser()
    args, pipeline_options = options.parse(parser, argv)
    runner = options.runner_name(pipeline_options)
    if args.kafka_bootstrap_servers:
        _check_kafka(parser, args, runner)
    if args.input_subscription and runner not in PUBSUB_RUNNERS:
        raise UsageError(f"the relay reads Pub/Sub on Dataflow, the local runner (no --runner) or Prism, not {runner}: "
                         "the relay's own reader (which --duration and Ctrl-C stop) was run on those alone")
    added = _beam_options(argv, runner, args.duration, kafka=bool(args.kafka_bootstrap_servers))
    if runner == "PrismRunner":
        more, note = prism.for_stateful_streaming(argv)
        print(f"relay: {note}", file=sys.stderr)
        added += more
    if added:
        args, pipeline_options = options.parse(parser, [*argv, *added])
    checks.check(args)
    job_only = options.builds_the_job_only(pipeline_options)  # Dataflow's --dry_run=True
    with contextlib.ExitStack() as stack, contextlib.ExitStack() as building:
        poll = check = None
        stop = fleet.stop
        if args.kafka_bootstrap_servers:
            source, check, stop = _kafka(args, pipeline_options, building, stack)
        elif args.input_subscription:
            source, check, stop = _pubsub(args, runner, stack)
        else:
            if args.endpoint:
                options.require(parser, args, "credentials")
                names = sorted(FileCredentials(args.credentials).secrets())[:args.devices]  # names only
            else:
                devices, poll = _demo_fleet(args, stack)
                names = [(d["productKey"], d["deviceName"]) for d in devices]
            source = fleet.SimulatedFleet(names, args.rate, args.duration)
            check = lambda result, stopped: fleet.check(result, source.count, stopped)  # noqa: E731
        options.require(parser, args, "endpoint", "credentials", "dead_letter")
        pipeline = beam.Pipeline(options=pipeline_options)
        build(pipeline, source, args, json_messages=bool(args.input_subscription or args.kafka_bootstrap_servers))
        building.close()  # the pipeline is built: Kafka's expansion service has done its part
        started = time.monotonic()
        with _stop_on_sigint(stop) as starting, Progress("relay", poll):
            # The runners that start processes of their own return from run() once the job is submitted.
            with starting() if runner in PORTABLE else contextlib.nullcontext():
                result = pipeline.run()
            state = result.wait_until_finish()
        if job_only:
            options.say_the_job_was_only_built("relay", runner)
            return batch.EXIT_OK
        stopped = state in STOPPED or fleet.stopped()
        status = batch.summarize(result, time.monotonic() - started, args, runner, stopped=state in STOPPED)
        return _checked(status, check(result, stopped) if check else None)


def _checked(status, source_check):
    """The exit status once the source's check (summary.SourceCheck) has said its part: the sink's own
    findings (lost, held) first, then the source's, then --strict's."""
    if source_check is None:
        return status
    for line, loud in source_check.lines():
        print(f"\n{line}", flush=True)
        if loud:
            print(line, file=sys.stderr, flush=True)
    found = source_check.status()
    if found is not None and status in (batch.EXIT_OK, batch.EXIT_RECORDS_FAILED):
        return found
    return status


def _beam_options(argv, runner, duration, kafka=False):
    """The Beam options the relay sets itself, unless given: it is a streaming pipeline on every runner.

    On Flink, also:
    - --finish_bundle_before_checkpointing. Without it, a checkpoint that comes while a stage's bundle
      is open finishes that bundle inside the snapshot, holds back its outputs until the checkpoint is
      done, and yet sends the stage's new watermark on at once (Beam 2.62's DoFnOperator). When that
      bundle held the impulse, the fleet's stage saw Flink's final watermark before its one element and
      passed it on: the sink's stage then dropped every reading as behind the end of the global window
      (all 3,000 of a run, exit 0, in half the runs with checkpoints every 5 s; every run with 0.5 s).
      Finished before the barrier, a bundle's outputs go out ahead of its watermark.
    - --shutdown_sources_after_idle_ms, with --duration or reading Kafka (which Ctrl-C stops): Flink keeps
      a streaming job's sources alive for checkpoints, so the job would never end (_idle_ms).
    - --flink_job_server_jar, reading Kafka: the job server with KafkaIO in it (kafka_expansion).
    - --checkpointing_interval, reading Kafka: offsets are committed as checkpoints complete, so without
      checkpoints never, and a relay started again would read everything again.
    """
    given = {arg.split("=", 1)[0] for arg in argv}
    added = [] if "--streaming" in given else ["--streaming"]
    if runner == "FlinkRunner":
        if "--finish_bundle_before_checkpointing" not in given:
            added.append("--finish_bundle_before_checkpointing")
        if kafka and "--checkpointing_interval" not in given:
            added.append(f"--checkpointing_interval={KAFKA_CHECKPOINT_MS}")
        if (duration is not None or kafka) and "--shutdown_sources_after_idle_ms" not in given:
            added.append(f"--shutdown_sources_after_idle_ms={_idle_ms([*argv, *added], duration, kafka)}")
        if kafka and "--flink_job_server_jar" not in given:
            added.append(f"--flink_job_server_jar={kafka_expansion.jar_path()}")
    return added


def _idle_ms(argv, duration, kafka):
    """How long Flink keeps a finished source's task up. The fleet's impulse counts from the job's start,
    so: past the fleet's end, not sooner (Flink then drops the fleet's last deferred readings), with a
    grace for the job's start-up. Kafka's reader counts from when it stopped reading, so: long enough for two
    checkpoints to complete, which commit the offsets of the last readings."""
    if not kafka:
        return int((duration + SOURCE_GRACE_SECONDS) * 1000)
    interval = next((int(arg.split("=", 1)[1]) for arg in argv if arg.startswith("--checkpointing_interval=")), 0)
    return max(KAFKA_FINAL_COMMIT_MS, 2 * interval + 5000)


def _check_kafka(parser, args, runner):
    options.require(parser, args, "kafka_topic", "endpoint", "credentials", "dead_letter")
    if args.input_subscription:
        raise UsageError("--kafka_bootstrap_servers and --input_subscription: choose one source")
    if runner != "FlinkRunner":
        raise UsageError(f"the relay reads Kafka on Flink (--runner=FlinkRunner), not {runner}: Beam's Kafka "
                         "read runs in the runner's Java processes")
    if not os.path.exists(kafka_expansion.jar_path()):
        raise UsageError("Kafka's expansion service is not fetched: run python -m pipelines.runners fetch kafka")
    bad = [setting for setting in args.kafka_consumer_config if "=" not in setting]
    if bad:
        raise UsageError(f"--kafka_consumer_config takes KEY=VALUE: {bad[0]}")


def _kafka(args, pipeline_options, building, stack):
    """The Kafka source, its check, and how to stop it: its readers stop once a file exists (in a
    directory of the run's, `stack` an ExitStack; Flink's JVMs on this machine see it). Its expansion
    service runs in `building` (an ExitStack) until the pipeline is built."""
    group = args.kafka_group or pipeline_options.get_all_options().get("job_name") or kafka_source.DEFAULT_GROUP
    config = kafka_source.consumer_config(group, args.kafka_start_offset, args.kafka_consumer_config)
    stop_file, stop = _stop_file(stack)
    address = building.enter_context(kafka_expansion.expansion_service())
    print(f"relay: reading Kafka topic {args.kafka_topic} at {args.kafka_bootstrap_servers} as group {group}",
          file=sys.stderr)
    source = kafka_source.ReadKafkaValues(address, args.kafka_bootstrap_servers, args.kafka_topic, config,
                                          args.duration, stop_file)
    check = lambda result, stopped: kafka_source.check(result, args.kafka_bootstrap_servers,  # noqa: E731
                                                        args.kafka_topic, config)
    return source, check, stop


def _pubsub(args, runner, stack):
    """The Pub/Sub source, its check, and how to stop it. Dataflow runs Beam's own read (its source, its
    acknowledgements, its drain); elsewhere the relay's reader (pubsub_source), stopped by a stop file."""
    if runner in DATAFLOW:
        return beam.io.ReadFromPubSub(subscription=args.input_subscription), None, fleet.stop
    problem = pubsub_source.not_there(args.input_subscription)
    if problem:
        raise UsageError(problem)
    stop_file, stop = _stop_file(stack)
    print(f"relay: reading Pub/Sub subscription {args.input_subscription}", file=sys.stderr)
    source = pubsub_source.ReadPubSubMessages(args.input_subscription, stop_file, args.duration)
    return source, lambda result, stopped: pubsub_source.check(result, args.input_subscription), stop


def _stop_file(stack):
    """(path, stop): a file whose existence stops a source's readers, in a directory of the run's
    (`stack` an ExitStack), which the runner's processes on this machine see; stop() creates it."""
    path = os.path.join(stack.enter_context(tempfile.TemporaryDirectory(prefix="iot-relay-")), "stop")
    return path, lambda: open(path, "w").close()


def _at_event_time(reading, field):
    """The reading at the time its field gives (epoch ms); one without it keeps the source's time."""
    value = reading.get(field) if isinstance(reading, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return beam.window.TimestampedValue(reading, value / 1000)
    return reading


def main(argv=None):
    return options.main(run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
