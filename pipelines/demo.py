"""The backfill demo: a generated fleet's history, published to an embedded emulator, on this machine.

Needs no network and no account: the sample (sample_data), the devices and credentials files, and the
platform (connector.emulator) are all local. The run itself is the ordinary command line, printed so
that it can be rerun against a real endpoint.
"""
import os
import shlex
import sys
import tempfile

from connector.emulator import Emulator

from . import sample_data


def run(devices, days, backfill, extra_argv=()):
    """Generate, start the emulator, run `backfill(argv, poll)` and return its exit status.

    extra_argv: the user's other options, after the demo's own so that they win (--plan, --encoder...)."""
    directory = tempfile.mkdtemp(prefix="iot-backfill-demo-")
    print(f"demo: generating {devices} devices x {days} days of readings in {directory}", file=sys.stderr)
    sample = sample_data.generate(directory, devices=devices, days=days)
    print(f"demo: {sample.records:,} records, with bad ones of every kind: "
          f"{', '.join(f'{n} {reason}' for reason, n in sorted(sample.expected_failures.items()))}",
          file=sys.stderr)
    with Emulator(sample.devices_file) as emulator:
        argv = ["--input", sample.input_pattern, "--endpoint", emulator.endpoint,
                "--credentials", sample.credentials_file, "--ca-file", emulator.ca_file,
                "--dead-letter", os.path.join(directory, "dead-letter", "failed"), "--order-by", "ts", *extra_argv]
        print(f"demo: emulator at {emulator.endpoint}; running\n  python -m pipelines.backfill "
              f"{shlex.join(argv)}", file=sys.stderr)
        return backfill(argv, poll=lambda: f"{emulator.counters()['messages']:,} messages at the emulator")
