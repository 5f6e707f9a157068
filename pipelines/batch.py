"""Running a batch publishing pipeline (backfill, replay): build it, run it with progress lines, print
the summary, and turn the outcome into an exit status."""
import logging
import sys
import time

import apache_beam as beam
from apache_beam.runners.runner import PipelineState

from . import checks, dry_run, options
from .dead_letters import WriteDeadLetters
from .summary import Accounting, Progress, sink_counters, summary_table

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_RECORDS_FAILED = 3  # with --strict
EXIT_NOTHING_READ = 4
# 5 and 6 (summary.EXIT_UNACCOUNTED, EXIT_STOPPED_HOLDING): the run did not account for every record read.


def run(parser, args, pipeline_options, read, poll=None, label="run"):
    """Publish the records `read` (a PTransform from the pipeline's start) or plan them (--plan); with
    Beam's --dry_run=True, only build the job (DataflowRunner).

    poll: optional callable giving a progress note (e.g. the embedded emulator's message count).
    read: a callable giving that PTransform, called once the options are checked (paths made absolute).
    Returns the exit status: failed records are not a failed run unless --strict; a run that read no
    record has failed (its input is not what was meant).
    """
    if not args.plan:
        options.require(parser, args, "endpoint", "credentials", "dead_letter")
    checks.check(args)
    job_only = options.builds_the_job_only(pipeline_options)
    pipeline = beam.Pipeline(options=pipeline_options)
    records = pipeline | "Read" >> read()
    if args.plan:
        plan_path = dry_run.plan_output(args)
        records | "Plan" >> dry_run.Plan(args, plan_path)
    else:
        result = records | "Publish" >> options.write_transform(args)
        result.failed | "DeadLetters" >> WriteDeadLetters(args.dead_letter, options.encoder_spec(args))
    runner = options.runner_name(pipeline_options)  # before the run: Beam's portable runners clear it
    started = time.monotonic()
    try:
        with Progress(label, poll):
            pipeline_result = pipeline.run()
            state = pipeline_result.wait_until_finish()
    except Exception as error:
        if args.verbose:
            logging.exception("%s failed", label)
        else:  # Beam's message holds the workers' tracebacks: their last line says what went wrong
            last = [line for line in str(error).splitlines() if line.strip()][-1:] or [type(error).__name__]
            logging.error("%s failed: %s (--verbose for the traceback)", label, last[0].strip())
        return EXIT_RUN_FAILED
    wall_seconds = time.monotonic() - started
    if state not in (None, PipelineState.DONE):
        logging.error("%s ended in state %s", label, state)
        return EXIT_RUN_FAILED
    if job_only:
        options.say_the_job_was_only_built(label, runner)
        return EXIT_OK
    if args.plan:
        rows = dry_run.read_plan(plan_path)
        print("\n".join(dry_run.report(rows, args.top)), flush=True)
        return _nothing_read(label, args) if not dry_run.totals(rows)["records"] else EXIT_OK
    counters = sink_counters(pipeline_result)
    status = report(counters, wall_seconds, args, runner)
    return _nothing_read(label, args) if not counters.get("records_in") else status


def _nothing_read(label, args):
    print(f"{label}: read 0 records from {' '.join(args.input)}: are they empty, or another format "
          "(--input-format)?", file=sys.stderr, flush=True)
    return EXIT_NOTHING_READ


def summarize(pipeline_result, wall_seconds, args, runner, stopped=False):
    """Print a streaming run's summary table and accounting; the exit status (see report)."""
    return report(sink_counters(pipeline_result), wall_seconds, args, runner, stopped, streaming=True)


def report(counters, wall_seconds, args, runner, stopped=False, streaming=False):
    """Print the summary table of the sink's counters and check that they account for every record read.
    The exit status: 5 when they do not (records lost, or, in batch, counted twice: a restored streaming
    job publishes what its checkpoint's buffers held, which the attempt before counted in), 6 when a
    stopped streaming job still held records; else --strict: 3 when any record failed; else 0. The
    check's lines are printed last, where a user looks, and to stderr too."""
    accounting = Accounting(counters, runner, stopped, streaming)
    print("\n".join(summary_table(counters, wall_seconds, args.dead_letter, accounting.held)), flush=True)
    for line in accounting.lines():
        print(f"\n{line}", flush=True)
        print(line, file=sys.stderr, flush=True)
    status = accounting.status()
    if status is not None:
        return status
    return EXIT_RECORDS_FAILED if args.strict and counters.get("records_failed") else EXIT_OK
