"""Command-line options shared by the pipelines: ours through argparse, everything else to Beam.

`parse` splits the command line with parse_known_args, so standard Beam options (--runner,
--project, --region, --temp_location, --setup_file, --flink_master, ...) pass through untouched. Our
own options are ours in Beam's spelling too (--order_by as --order-by): Beam would take them silently.
"""
import json
import logging
import sys

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from connector import WriteToIoTPlatform, get_encoder
from connector.beam.json_values import ISO, TIMESTAMP_FORMATS
from connector.beam.publisher import DEFAULT_MAX_IN_FLIGHT, RetryPolicy
from connector.beam.routing import DEFAULT_TOPIC, default_topic, make_router
from connector.protocol.limits import MAX_PAYLOAD_BYTES
from connector.protocol.signing import CLIENT_SIGN_METHOD, SIGN_METHODS

from .checks import UsageError
from .dead_letters import DeadLetterRouter
from .device_map import DeviceMapRouter, load_device_map

ENCODERS = ("jsonl", "json-array", "alink-history", "alink-property", "avro")
DEFAULT_TIME_FIELD = "time"
# The DirectRunner first tries to download Prism, which fails offline; FnApiRunner runs in-process.
# Named by its module: Beam releases before 2.63 do not know the short name "FnApiRunner".
LOCAL_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


EXIT_USAGE = 2  # as argparse exits on a bad command line


def configure_logging():
    """Warnings and errors of every logger, to stderr, for the pipelines' command lines."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main(run, argv):
    """Runs a pipeline's command line: its exit status. A user's mistake (UsageError) is one line on
    stderr, the traceback too with --verbose."""
    configure_logging()
    try:
        return run(argv)
    except UsageError as error:
        if "--verbose" in argv:
            logging.exception("traceback")
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_USAGE


def add_sink_options(parser):
    """Where and how to publish: the options of WriteToIoTPlatform, and the dead-letter output."""
    sink = parser.add_argument_group("publishing")
    sink.add_argument("--endpoint", help="https://iot-as-http.<region>.aliyuncs.com, or an emulator's")
    sink.add_argument("--credentials", help="JSON or CSV file of productKey, deviceName, deviceSecret "
                      "(any Beam filesystem: gs://... on Dataflow); read on the workers")
    sink.add_argument("--ca-file", help="CA certificate to trust (the emulator's); default: system CAs")
    sink.add_argument("--sign-method", choices=sorted(SIGN_METHODS), default=CLIENT_SIGN_METHOD,
                      help="how /auth is signed (default %(default)s)")
    sink.add_argument("--topic", help="topic template over productKey, deviceName and record fields (default: "
                      f"the alink encoders' thing-model topic, else {DEFAULT_TOPIC})")
    sink.add_argument("--encoder", choices=ENCODERS, default="jsonl", help="payload format (default %(default)s)")
    sink.add_argument("--avro-schema", help="schema file (JSON) for --encoder avro")
    sink.add_argument("--time-field", help="the alink encoders' time field: epoch ms or a timestamp (default time; "
                      "alink-history needs it in every record, and so does alink-property when it is given: a "
                      "record without it fails as unencodable rather than going out stamped with its arrival)")
    sink.add_argument("--timestamps", choices=TIMESTAMP_FORMATS, default=ISO,
                      help="how the JSON encoders write timestamp values: ISO-8601 text in UTC, or epoch "
                      "milliseconds (default %(default)s)")
    sink.add_argument("--order-by", help="field to order each device's records by before packing")
    sink.add_argument("--max-payload-bytes", type=int, default=MAX_PAYLOAD_BYTES)
    sink.add_argument("--max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT,
                      help="HTTP requests open at once per worker process (default %(default)s, the transform's: "
                      "they hide the platform's round trip; against a local emulator fewer use less CPU)")
    sink.add_argument("--max-attempts", type=int, default=RetryPolicy().max_attempts,
                      help="attempts per message that reached the platform (default %(default)s)")
    sink.add_argument("--retry-max-seconds", type=float, default=RetryPolicy().max_seconds,
                      help="seconds to keep retrying a message, or to wait for an unreachable endpoint "
                      "(default %(default)s)")
    sink.add_argument("--dead-letter", help="path prefix of the Avro files of failed records")
    sink.add_argument("--strict", action="store_true", help="exit 3 when any record failed")
    sink.add_argument("--verbose", action="store_true", help="tracebacks with the errors")
    route = parser.add_argument_group("routing records to devices")
    route.add_argument("--product-key-field", default="productKey")
    route.add_argument("--device-name-field", default="deviceName")
    route.add_argument("--device-map", help="JSON or CSV file mapping --device-id-field values to "
                       "productKey and deviceName (instead of the two fields)")
    route.add_argument("--device-id-field", default="sensor_id", help="the source id the device map is keyed by")
    # Set by replay: the encoder the dead letters name, and routing to each dead letter's own topic.
    parser.set_defaults(encoder_spec=None, dead_letter_routes=False)


def parse(parser, argv, namespace=None):
    """(our args, Beam's PipelineOptions): unknown options are Beam's; the runner defaults to local.
    namespace: values the parsed options start from (argparse leaves those not given as they are)."""
    args, beam_args = parser.parse_known_args(_our_spelling(parser, argv), namespace)
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in beam_args):
        beam_args = [f"--runner={LOCAL_RUNNER}"] + beam_args
    return args, PipelineOptions(beam_args)


def runner_name(pipeline_options):
    """The runner's class name ("FlinkRunner", "PrismRunner", "FnApiRunner", ...), as users name it."""
    name = (pipeline_options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1]
    return name if name.lower().endswith("runner") else name + "Runner"


def builds_the_job_only(pipeline_options):
    """Whether Beam's --dry_run=True asks DataflowRunner to build the job and submit nothing. Every other
    runner ignores it and runs the job, publishing for real: a UsageError there."""
    if not pipeline_options.view_as(TestOptions).dry_run:
        return False
    runner = runner_name(pipeline_options)
    if runner != "DataflowRunner":
        raise UsageError(f"--dry_run=True is Dataflow's (DataflowRunner builds the job and submits nothing); "
                         f"{runner} ignores it and would publish: to publish nothing on any runner, the backfill "
                         "and replay take --plan")
    return True


def say_the_job_was_only_built(label, runner):
    """The line a --dry_run=True run ends with (builds_the_job_only): no record was read or published."""
    print(f"{label}: --dry_run: {runner} built the job and did not submit it", flush=True)


def _our_spelling(parser, argv):
    """argv with --our_option written --our-option: Beam's spelling of our options is ours."""
    ours = {name for action in parser._actions for name in action.option_strings}
    spelled = []
    for arg in argv:
        name, equals, value = arg.partition("=")
        dashed = name.replace("_", "-")
        spelled.append(dashed + equals + value if name.startswith("--") and name not in ours and dashed in ours
                       else arg)
    return spelled


def require(parser, args, *names):
    missing = [f"--{name.replace('_', '-')}" for name in names if not getattr(args, name)]
    if missing:
        parser.error(f"{', '.join(missing)} required")


def routing(args):
    """Keyword arguments for make_router and WriteToIoTPlatform: fields, or a device map, and the topic;
    for replay, a router that sends each record where its dead letter says, and the others by those."""
    router = None
    topic = args.topic or default_topic(encoder_spec(args)[0])
    if args.device_map:
        router = DeviceMapRouter(load_device_map(args.device_map, args.device_id_field),
                                 args.device_id_field, topic)
    if args.dead_letter_routes:
        router = DeadLetterRouter(make_router(router, product_key_field=args.product_key_field,
                                              device_name_field=args.device_name_field, topic=topic))
    return {"router": router, "product_key_field": args.product_key_field,
            "device_name_field": args.device_name_field, "topic": topic}


def router(args):
    """The run's router, as WriteToIoTPlatform makes it from the options."""
    return make_router(**routing(args))


def encoder_spec(args):
    """(name, options) of the encoder the options name, the options as JSON values: what the dead letters
    keep, so that a replay encodes as the run did (replay sets args.encoder_spec to theirs). The alink
    encoders skip the routing fields and, for alink-property, require the time field when it is given."""
    if args.encoder_spec is not None:
        return args.encoder_spec
    if args.encoder == "avro":
        if not args.avro_schema:
            raise UsageError("--encoder avro needs --avro-schema FILE")
        with FileSystems.open(args.avro_schema) as handle:
            return "avro", {"schema": json.load(handle)}
    if args.encoder.startswith("alink"):
        routing_fields = [args.device_id_field] if args.device_map else [args.product_key_field,
                                                                         args.device_name_field]
        spec = {"time_field": args.time_field or DEFAULT_TIME_FIELD, "exclude": routing_fields,
                "timestamps": args.timestamps}
        if args.time_field and args.encoder == "alink-property":
            spec["require_time"] = True
        return args.encoder, spec
    return args.encoder, {"timestamps": args.timestamps}


def encoder(args):
    """The Encoder the options name, with its options (encoder_spec)."""
    name, spec = encoder_spec(args)
    return get_encoder(name, **spec)


def write_transform(args, **streaming):
    """WriteToIoTPlatform configured from the options."""
    return WriteToIoTPlatform(
        args.endpoint, args.credentials, encoder=encoder(args), ca_file=args.ca_file,
        max_payload_bytes=args.max_payload_bytes, max_in_flight=args.max_in_flight,
        retry=RetryPolicy(max_attempts=args.max_attempts, max_seconds=args.retry_max_seconds),
        order_by=args.order_by, sign_method=args.sign_method, **routing(args), **streaming)
