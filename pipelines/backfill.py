"""python -m pipelines.backfill: publish historical readings from files to IoT Platform.

Reads --input (globs or paths on any Beam filesystem: Avro, Parquet, CSV or JSON lines, told by the
extension or --input-format) with Beam's file IOs, routes each reading to its
device, packs each device's readings into messages of at most 128 KB and publishes them with
WriteToIoTPlatform. Records that fail go to Avro dead letters (--dead-letter), to fix and replay with
`python -m pipelines.replay`. --plan shows what a run would send. With no arguments: a demo against
a local emulator, as without --input, --endpoint and --credentials (so `--runner=FlinkRunner` alone
runs the demo on Flink). Other options (--runner, --project, --region, ...) go to Beam.
"""
import argparse
import sys

from . import batch, demo, dry_run, options
from .checks import UsageError
from .input_files import FORMATS, ReadInputFiles, parse_csv_types


def make_parser():
    parser = argparse.ArgumentParser(prog="python -m pipelines.backfill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--input", nargs="+", help="files: globs or paths (gs://, s3://, local)")
    parser.add_argument("--input-format", choices=FORMATS,
                        help="default: from each file's extension (.parquet, .csv, .jsonl/.json; else avro)")
    parser.add_argument("--csv-types", help="CSV column types, e.g. ts=int,temperature=float,id=str,"
                        "at=timestamp,kwh=decimal (int, float, str, bool, timestamp: ISO-8601, decimal: exact); "
                        "others: numbers as numbers, the rest text, empty null")
    options.add_sink_options(parser)
    dry_run.add_options(parser)
    group = parser.add_argument_group("demo (the default without --input, --endpoint and --credentials)")
    group.add_argument("--demo", action="store_true", help="run the demo against a local emulator")
    group.add_argument("--demo-devices", type=int, default=300)
    group.add_argument("--demo-days", type=int, default=3)
    return parser


def run(argv, poll=None):
    """The backfill for a command line (without the program name); returns the exit status."""
    argv = dry_run.spelled(argv)  # --plan, or Beam's --dry_run=True: never one taken for the other
    parser = make_parser()
    args, pipeline_options = options.parse(parser, argv)
    if args.demo or not (args.input or args.endpoint or args.credentials):
        return demo.run(args.demo_devices, args.demo_days, run, _without_demo_options(argv))
    options.require(parser, args, "input")
    try:
        csv_types = parse_csv_types(args.csv_types)
    except ValueError as error:
        raise UsageError(f"--csv-types: {error}") from None
    return batch.run(parser, args, pipeline_options,
                     lambda: ReadInputFiles(args.input, args.input_format, csv_types, options.router(args)),
                     poll, label="backfill")


def _without_demo_options(argv):
    """The command line minus --demo and its options: what the demo passes on (--plan, --encoder...)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--demo-devices", "--demo-days"):
            skip = True
        elif arg != "--demo" and not arg.startswith(("--demo-devices=", "--demo-days=")):
            kept.append(arg)
    return kept


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return options.main(run, argv or ["--demo"])


if __name__ == "__main__":
    sys.exit(main())
