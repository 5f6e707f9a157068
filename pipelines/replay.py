"""python -m pipelines.replay: send dead letters again, once their cause is fixed.

Reads the Avro dead letters a backfill, replay or relay wrote (--input, globs on any Beam filesystem),
takes back each original record, and publishes it with the same options a backfill takes. What fails
again goes to this run's own --dead-letter.
"""
import argparse
import sys

from . import batch, dry_run, options
from .dead_letters import ReadDeadLetters


def make_parser():
    parser = argparse.ArgumentParser(prog="python -m pipelines.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--input", nargs="+", required=True, help="dead-letter files: globs or paths")
    options.add_sink_options(parser)
    dry_run.add_options(parser)
    return parser


def run(argv, poll=None):
    parser = make_parser()
    args, pipeline_options = options.parse(parser, argv)
    return batch.run(parser, args, pipeline_options, lambda: ReadDeadLetters(args.input), poll, label="replay")


def main(argv=None):
    return options.main(run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
