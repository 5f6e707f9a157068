"""python -m pipelines.replay: send dead letters again, once their cause is fixed.

Reads the Avro dead letters a backfill, replay or relay wrote (--input, globs on any Beam filesystem),
takes back each original record, and publishes it where and as its run meant to: to the device and
topic its dead letter names, encoded as the run encoded (the dead letters keep the encoder and its
options). An encoder option given here (--encoder, --time-field, --timestamps, --avro-schema) replaces
the dead letters' own; --topic routes every record afresh, as a backfill does. What it cannot resolve is
refused in one line before anything is sent: dead letters of runs that encoded differently, and records
bound for one encoder's topic that this replay would send in another format. Dead letters written before
they kept their encoder are encoded as this command says (its options, or their defaults), each still
to its own topic. What fails again goes to this run's own --dead-letter.
"""
import argparse
import concurrent.futures
import json
import sys
from typing import Any, NamedTuple

import fastavro
from apache_beam.io.filesystems import FileSystems

from connector import FailedRecord, Reason
from connector.beam.encoders import ENCODERS
from connector.beam.results import failure
from connector.protocol.device import Device

from . import batch, checks, dry_run, options
from .checks import UsageError
from .dead_letters import ReadDeadLetters, Replayed, encoder_spec_of, original_record

# The command-line options (argparse dests) each encoder option is made from.
_SOURCES = {"time_field": {"time_field"}, "require_time": {"time_field"}, "timestamps": {"timestamps"},
            "schema": {"avro_schema"},
            "exclude": {"product_key_field", "device_name_field", "device_map", "device_id_field"}}
_ENCODING_OPTIONS = {"encoder"}.union(*_SOURCES.values())
_NOT_GIVEN = object()  # what an option the command line leaves out holds until its default is set
_OPENING_THREADS = 16  # dead-letter files opened at once to read their first records


def make_parser():
    parser = argparse.ArgumentParser(prog="python -m pipelines.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--input", nargs="+", required=True, help="dead-letter files: globs or paths")
    options.add_sink_options(parser)
    dry_run.add_options(parser)
    return parser


class Plan(NamedTuple):
    """How this replay sends each dead letter; called on one, it gives what to send: the record as it
    was given to the sink (a Replayed one carrying its device and topic), or a FailedRecord saying why
    it must not be sent as this replay would send it."""

    encoder: str  # the encoder's name this replay sends with
    follows: tuple[str, dict[str, Any]] | None  # the dead letters' (encoder, options) it follows; None: the command's
    keep_topics: bool  # each record to its dead letter's device and topic (no --topic)

    def __call__(self, dead_letter: dict[str, Any]) -> Any:
        record = original_record(dead_letter)
        topic = dead_letter["topic"]
        names = dead_letter["product_key"], dead_letter["device_name"]
        device = Device(*names) if all(names) else None
        if self.follows is not None and encoder_spec_of(dead_letter) != self.follows:
            return failure(record, f"its run encoded as {described(encoder_spec_of(dead_letter))}, unlike the "
                           f"dead letters this replay follows ({described(self.follows)}): replay it apart",
                           Reason.INVALID_RECORD, device, topic)
        if not (self.keep_topics and topic and device and isinstance(record, dict)):
            return record  # routed afresh
        owner = topic_owner(topic, device)
        if owner is not None and owner != self.encoder:
            return failure(record, f"its topic {topic} takes {owner} payloads, and this replay would send "
                           f"{self.encoder} there: give --encoder {owner}, or --topic to send it elsewhere",
                           Reason.INVALID_TOPIC, device, topic)
        return Replayed(record, (device, topic))


def topic_owner(topic, device):
    """The encoder whose thing-model topic this is for the device (alink-history's history topic...), or None."""
    for name, cls in ENCODERS.items():
        if cls.topic and cls.topic.format(productKey=device.product_key, deviceName=device.device_name) == topic:
            return name
    return None


def described(spec):
    """An (encoder, options) pair in words, e.g. "alink-history (time_field=ts, timestamps=iso)"."""
    if spec is None:
        return "an encoder its dead letters did not keep"
    name, settings = spec
    words = [f"{key}={value}" for key, value in sorted(settings.items()) if key not in ("schema", "exclude")]
    words += ["its Avro schema"] if "schema" in settings else []
    return f"{name} ({', '.join(words)})" if words else name


def run(argv, poll=None):
    argv = dry_run.spelled(argv)  # --plan, or Beam's --dry_run=True: never one taken for the other
    parser = make_parser()
    unset = argparse.Namespace(**dict.fromkeys(_ENCODING_OPTIONS, _NOT_GIVEN))
    args, pipeline_options = options.parse(parser, argv, unset)
    given = {name for name in _ENCODING_OPTIONS if getattr(args, name) is not _NOT_GIVEN}
    for name in _ENCODING_OPTIONS - given:
        setattr(args, name, parser.get_default(name))
    checks.make_paths_absolute(args)
    checks.check_inputs(args.input)
    plan = resolve(args, given, first_dead_letters(args.input))
    return batch.run(parser, args, pipeline_options, lambda: ReadDeadLetters(args.input, plan), poll, label="replay")


def first_dead_letters(patterns):
    """{path: its first dead letter} of every file the patterns match (files holding none left out): each
    file is written by one run, so its first dead letter says how that run encoded."""
    paths = sorted({match.path for pattern in patterns for match in FileSystems.match([pattern])[0].metadata_list})
    with concurrent.futures.ThreadPoolExecutor(_OPENING_THREADS) as pool:
        firsts = dict(zip(paths, pool.map(_first_dead_letter, paths)))
    return {path: row for path, row in firsts.items() if row is not None}


def _first_dead_letter(path):
    with FileSystems.open(path) as handle:
        return next(iter(fastavro.reader(handle)), None)


def resolve(args, given, firsts):
    """Sets args to encode and route as the dead letters say, or as the command says where it gives an
    encoder option; the Plan. Says what it chose on stderr; UsageError for what it cannot resolve."""
    specs = {path: encoder_spec_of(row) for path, row in firsts.items()}
    kinds = {json.dumps(spec, sort_keys=True): spec for spec in specs.values()}
    stored = next(iter(kinds.values())) if len(kinds) == 1 else None
    follows = None
    if stored is not None and ("encoder" not in given or args.encoder == stored[0]):
        args.encoder_spec = _merged(stored, args, given)
        follows = stored
    elif len(kinds) > 1 and "encoder" not in given:
        examples = "; ".join(f"{described(spec)} in {next(p for p, s in specs.items() if s == spec)}"
                             for spec in list(kinds.values())[:3])
        raise UsageError(f"--input holds dead letters of runs that encoded differently ({examples}): replay each "
                         "run's apart, or give --encoder and its options to send them all alike")
    spec = options.encoder_spec(args)
    args.encoder = spec[0]
    plan = Plan(spec[0], follows, keep_topics=not args.topic)
    args.dead_letter_routes = plan.keep_topics
    for path, row in firsts.items():
        sent = plan(row)
        if isinstance(sent, FailedRecord):
            raise UsageError(f"{path}: {sent.message}")
    _say(spec, follows, given, plan, [path for path, spec in specs.items() if spec is None])
    return plan


def _merged(stored, args, given):
    """The dead letters' (encoder, options), with the options the command gives instead."""
    name, kept = stored
    touched = {key for key, sources in _SOURCES.items() if sources & given}
    if not touched or name == "avro" and "schema" not in touched:  # avro takes its schema and nothing else
        return stored
    args.encoder = name
    command = options.encoder_spec(args)[1]
    merged = {key: value for key, value in kept.items() if key not in touched}
    merged.update((key, value) for key, value in command.items() if key in touched)
    return name, merged


def _say(spec, follows, given, plan, unkept):
    """One line on stderr: how this replay encodes and routes."""
    if follows is not None:
        how = f"as the dead letters say: {described(spec)}"
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(given - {"encoder"}))
        how += f" (with {flags} from the command)" if spec != follows else ""
    elif unkept:
        how = (f"with {described(spec)} as this command says: {len(unkept)} of the files ({unkept[0]}, ...) were "
               "written before dead letters kept their encoder")
    else:
        how = f"with {described(spec)} as this command says"
    where = "each record to its dead letter's topic" if plan.keep_topics else "records routed by --topic"
    print(f"replay: encoding {how}; {where}", file=sys.stderr, flush=True)


def main(argv=None):
    return options.main(run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
