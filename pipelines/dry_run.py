"""--plan: what a run would send, computed with the same steps as a run, without publishing anything.

Records go through the connector's own batch steps (batch.grouped_chunks: routed, encoded and chunked
per device and topic before the shuffle, then grouped), and each device's chunks are packed (and
ordered, with --order-by) by a run's packing (batch.ChunkPacking), which here plans each payload
instead of sending it. So a record a run would fail (unroutable, unencodable, too large, unorderable)
the dry run reports failed, with the same reason and message. Devices missing from the credentials
file are found too; a wrong secret or a skewed clock cannot be found without calling the platform.
One row per device is gathered into a single JSON file (`--plan-output`, any Beam filesystem) that the
launcher reads back to print the plan.

The plan was --dry-run, one character from Beam's --dry_run=True (DataflowRunner builds the job and
submits nothing), which the commands took for the plan (Beam's spelling of our options is ours). So
--plan is the plan, --dry-run still asks for it (existing commands), --dry_run=True is Beam's, and
any other spelling of either is refused as ambiguous (`spelled`).
"""
import json
import os
import sys
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from connector import FailedRecord, FileCredentials, Reason
from connector.beam.batch import ChunkPacking, grouped_chunks
from connector.beam.metrics import SinkMetrics
from connector.protocol.device import Device
from connector.protocol.limits import ACCOUNT_REQUESTS_PER_SECOND, DEVICE_MESSAGES_PER_SECOND

from . import options
from .checks import UsageError

NO_DEVICE = "(no device)"
PLAN = "--plan"
OLD_PLAN = "--dry-run"  # the plan's name until 2026-12: still the plan
BEAMS = "--dry_run=True"  # Beam's: DataflowRunner builds the job and submits nothing
AMBIGUOUS = (f"{{}} is ambiguous: give {PLAN} for the plan (read, route, encode and pack; publish nothing; on "
             f"any runner), or {BEAMS} for Dataflow's dry run (DataflowRunner builds the job and submits nothing)")


def add_options(parser):
    group = parser.add_argument_group("plan (a dry run)")
    group.add_argument(PLAN, action="store_true", help=f"read, route, encode and pack; publish nothing; print "
                       f"the plan (was {OLD_PLAN}, still accepted; {BEAMS} is Beam's: on DataflowRunner, build "
                       "the job offline and submit nothing)")
    group.add_argument("--plan-output", help="where the dry run writes its plan (JSON; any Beam filesystem; "
                       "default a local temporary file, so give one on a remote runner)")
    group.add_argument("--top", type=int, default=10, help="devices to list in the plan")


def spelled(argv):
    """argv with the plan's old name as --plan (saying so on stderr) and Beam's --dry_run=True left to
    Beam; any other spelling of either (--dry_run, --dry_run=False, which Beam takes as true,
    --dry-run=VALUE) is a UsageError."""
    spelled = []
    for arg in argv:
        name = arg.partition("=")[0]
        if arg == OLD_PLAN:
            print(f"note: {OLD_PLAN} is now {PLAN} (the plan; Beam's {BEAMS} builds a Dataflow job offline)",
                  file=sys.stderr, flush=True)
            spelled.append(PLAN)
        elif name in (OLD_PLAN, "--dry_run") and arg != BEAMS:
            raise UsageError(AMBIGUOUS.format(arg))
        else:
            spelled.append(arg)
    return spelled


def _row(device=NO_DEVICE, records=0, messages=0, payload_bytes=0, failed=None, why=None):
    return {"device": device, "records": records, "messages": messages, "bytes": payload_bytes,
            "failed": failed or {}, "why": why or {}}


class _PlanFn(beam.DoFn):
    """A run's packing of one device+topic group, planning each payload instead of sending it: the
    group's row of the plan (the payloads, and the records that would fail)."""

    def __init__(self, encoder, max_payload_bytes, credentials, order_by):
        self._packing = ChunkPacking(encoder, max_payload_bytes, order_by)
        self._credentials = credentials

    def setup(self):
        self._metrics = SinkMetrics()
        # Only which devices have a secret is kept; the secrets themselves are dropped at once.
        self._known = set(FileCredentials(self._credentials).secrets()) if self._credentials else None

    def process(self, element):
        ((product_key, device_name), topic), chunks = element
        device = Device(product_key, device_name)
        row = _row("/".join(device))
        for item in self._packing.payloads(device, topic, chunks):
            if isinstance(item, FailedRecord):
                self._metrics.failed(item.reason)
                row["records"] += 1
                _fail(row, item.reason, item.message)
            elif self._known is not None and device not in self._known:
                row["records"] += len(item.records)
                _fail(row, Reason.UNKNOWN_DEVICE, f"no secret for {device} in the credentials", len(item.records))
            else:
                row["records"] += len(item.records)
                row["messages"] += 1
                row["bytes"] += len(item.body)
        yield row


def _failed_row(failed):
    """The plan's row for a record that failed before its device's group was packed."""
    device = f"{failed.product_key}/{failed.device_name}" if failed.product_key and failed.device_name else NO_DEVICE
    return _row(device, records=1, failed={failed.reason: 1}, why={failed.reason: failed.message})


def _fail(row, reason, why, count=1):
    row["failed"][reason] = row["failed"].get(reason, 0) + count
    row["why"].setdefault(reason, why)


class _MergeRows(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, total, row):
        if total is None:
            return {**row, "failed": dict(row["failed"]), "why": dict(row["why"])}
        for field in ("records", "messages", "bytes"):
            total[field] += row[field]
        for reason, count in row["failed"].items():
            total["failed"][reason] = total["failed"].get(reason, 0) + count
        for reason, why in row["why"].items():
            total["why"].setdefault(reason, why)
        return total

    def merge_accumulators(self, totals):
        merged = None
        for total in totals:
            if total is not None:
                merged = self.add_input(merged, total)
        return merged

    def extract_output(self, total):
        return total


class Plan(beam.PTransform):
    """records -> one JSON file listing a row per device: records, messages, bytes, failures and why."""

    def __init__(self, args, output):
        super().__init__()
        self._router = options.router(args)
        self._encoder = options.encoder(args)
        self._max_payload_bytes = args.max_payload_bytes
        self._credentials = args.credentials
        self._order_by = args.order_by
        self._output = output

    def expand(self, records):
        grouped, failed = grouped_chunks(records, self._router, self._encoder, self._max_payload_bytes)
        planned = grouped | "Pack" >> beam.ParDo(
            _PlanFn(self._encoder, self._max_payload_bytes, self._credentials, self._order_by))
        unplanned = failed | "Failed" >> beam.Map(_failed_row)
        return ((planned, unplanned) | beam.Flatten()
                | "ByDevice" >> beam.Map(lambda row: (row["device"], row))
                | "Merge" >> beam.CombinePerKey(_MergeRows())
                | beam.Values()
                | "Gather" >> beam.combiners.ToList()
                | "Json" >> beam.Map(json.dumps)
                | "Write" >> beam.io.WriteToText(self._output, num_shards=1, shard_name_template=""))


def plan_output(args):
    return args.plan_output or os.path.join(tempfile.mkdtemp(prefix="iot-plan-"), "plan.json")


def read_plan(path):
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


def totals(rows):
    """records, messages, bytes, failed by reason (with why), devices, and the busiest device's messages."""
    merged = _MergeRows().merge_accumulators(rows) or _row()
    devices = [row for row in rows if row["device"] != NO_DEVICE]
    return {**{field: merged[field] for field in ("records", "messages", "bytes", "failed", "why")},
            "devices": len(devices), "busiest_device_messages": max((r["messages"] for r in devices), default=0)}


def estimated_seconds(total):
    """The platform's limits bound the time: 30 messages/s per device, 10,000/s per account."""
    return max(total["busiest_device_messages"] / DEVICE_MESSAGES_PER_SECOND,
               total["messages"] / ACCOUNT_REQUESTS_PER_SECOND)


def report(rows, top):
    """The plan as text lines."""
    total = totals(rows)
    lines = ["", "Dry run: nothing was published", "------------------------------",
             f"records read        {total['records']:>14,}",
             f"devices             {total['devices']:>14,}",
             f"messages to send    {total['messages']:>14,}",
             f"payload bytes       {total['bytes']:>14,}",
             f"records that would fail {sum(total['failed'].values()):>10,}"]
    lines += [f"  {reason}: {count:,} (e.g. {total['why'][reason]})"
              for reason, count in sorted(total["failed"].items())]
    lines += [f"estimated time      {estimated_seconds(total):>12.1f} s  (at {DEVICE_MESSAGES_PER_SECOND} "
              f"messages/s per device and {ACCOUNT_REQUESTS_PER_SECOND:,}/s per account)",
              "", f"Top {top} devices by bytes:", f"  {'device':<36}{'records':>10}{'messages':>10}{'bytes':>14}"]
    busiest = sorted((r for r in rows if r["device"] != NO_DEVICE), key=lambda r: (-r["bytes"], r["device"]))
    lines += [f"  {r['device']:<36}{r['records']:>10,}{r['messages']:>10,}{r['bytes']:>14,}" for r in busiest[:top]]
    lines.append("\nA dry run cannot detect a wrong secret or a skewed clock: a real run reports those as "
                 "auth_failed.")
    return lines
