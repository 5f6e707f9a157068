"""Running WriteToIoTPlatform in a real pipeline and collecting what it outputs, on any runner.

Outputs go through files (pickled, one per line in base64) because multi-process and portable
runners do not share memory with the test.
"""
import base64
import collections
import glob
import json
import os
import pickle

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

import connector
from pipelines.options import LOCAL_RUNNER

# Worker processes (multi-process and portable runners) unpickle functions from this module by name.
_HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_HERE, os.environ.get("PYTHONPATH")]))

FN_API = [f"--runner={LOCAL_RUNNER}"]
MULTI_PROCESS = [*FN_API, "--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def write_credentials(path, devices):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(devices, handle)
    return str(path)


def _dump(value):
    return base64.b64encode(pickle.dumps(value)).decode()


def read_outputs(prefix):
    values = []
    for name in sorted(glob.glob(f"{prefix}*")):
        with open(name, encoding="utf-8") as handle:
            values.extend(pickle.loads(base64.b64decode(line)) for line in handle if line.strip())
    return values


_IN_MEMORY = collections.defaultdict(list)  # for the in-process streaming runner, whose file sinks need windows


class _Collect(beam.DoFn):
    def __init__(self, key):
        self._key = key

    def process(self, value):
        _IN_MEMORY[self._key].append(value)


def _sink(pcoll, name, out, in_memory):
    """Send outputs where the test can read them back; returns a reader."""
    key = f"{out}-{name}"
    if in_memory:
        pcoll | f"Collect{name}" >> beam.ParDo(_Collect(key))
        return lambda: _IN_MEMORY.pop(key, [])
    pcoll | f"Dump{name}" >> beam.Map(_dump) | f"Write{name}" >> beam.io.WriteToText(key)
    return lambda: read_outputs(key)


class Run:
    """What one pipeline run gave: receipts, failed records, the sink's counters, and what steps of the
    test's own gave (by name)."""

    def __init__(self, receipts, failed, counters, more=None):
        self.receipts = receipts
        self.failed = failed
        self.counters = counters
        self.more = more or {}

    def failed_reasons(self):
        reasons = {}
        for entry in self.failed:
            reasons[entry.reason] = reasons.get(entry.reason, 0) + 1
        return reasons


def run_write(records, emulator, credentials, tmp_path, options=FN_API, source=None, more=None, **write_options):
    """Run records (or a `source` PTransform) through WriteToIoTPlatform against the emulator. `more`, a
    function of the sink's result, adds steps of the test's own and returns their outputs by name."""
    write_options.setdefault("ca_file", emulator.ca_file)
    out = os.path.join(str(tmp_path), "out")
    pipeline = beam.Pipeline(options=PipelineOptions(list(options)))
    read = source if source is not None else beam.Create(records, reshuffle=False)
    result = (pipeline | "Read" >> read
              | connector.WriteToIoTPlatform(emulator.endpoint, credentials, **write_options))
    in_memory = "--streaming" in options
    receipts = _sink(result.published, "Receipts", out, in_memory)
    failed = _sink(result.failed, "Failed", out, in_memory)
    extra = {name: _sink(pcoll, name, out, in_memory) for name, pcoll in (more(result) if more else {}).items()}
    outcome = pipeline.run()
    outcome.wait_until_finish()
    counters = {}
    try:
        for counter in outcome.metrics().query()["counters"]:
            if counter.key.metric.namespace == "WriteToIoTPlatform":
                name = counter.key.metric.name
                counters[name] = counters.get(name, 0) + counter.committed
    except (NotImplementedError, AttributeError):
        pass
    return Run(receipts(), failed(), counters, {name: read() for name, read in extra.items()})
