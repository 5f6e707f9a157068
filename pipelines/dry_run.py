"""--dry-run: what a run would send, computed with the connector's own routing, encoding and packing,
without publishing anything.

Records are routed (make_router), grouped per device and topic as WriteToIoTPlatform groups them, then
encoded (the Encoder) and packed (packing.pack) into the payloads a real run would publish. Devices
missing from the credentials file are found too; a wrong secret or a skewed clock cannot be found
without calling the platform. One row per device is gathered into a single JSON file (`--plan-output`,
any Beam filesystem) that the launcher reads back to print the plan.
"""
import json
import os
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from connector import EncodeError, FileCredentials, Reason
from connector.beam.packing import Payload, pack
from connector.beam.routing import make_router
from connector.beam.write import KeyByDevice
from connector.protocol.device import Device
from connector.protocol.limits import ACCOUNT_REQUESTS_PER_SECOND, DEVICE_MESSAGES_PER_SECOND

from . import options

NO_DEVICE = "(no device)"


def add_options(parser):
    group = parser.add_argument_group("dry run")
    group.add_argument("--dry-run", action="store_true", help="read, route, encode and pack; publish nothing")
    group.add_argument("--plan-output", help="where the dry run writes its plan (JSON; any Beam filesystem; "
                       "default a local temporary file, so give one on a remote runner)")
    group.add_argument("--top", type=int, default=10, help="devices to list in the plan")


def _row(device=NO_DEVICE, records=0, messages=0, payload_bytes=0, failed=None, why=None):
    return {"device": device, "records": records, "messages": messages, "bytes": payload_bytes,
            "failed": failed or {}, "why": why or {}}


class _PlanFn(beam.DoFn):
    """One device+topic group: the payloads a run would publish, and the records that would fail."""

    def __init__(self, encoder, max_payload_bytes, credentials):
        self._encoder = encoder
        self._max_payload_bytes = max_payload_bytes
        self._credentials = credentials

    def setup(self):
        # Only which devices have a secret is kept; the secrets themselves are dropped at once.
        self._known = set(FileCredentials(self._credentials).secrets()) if self._credentials else None

    def process(self, element):
        ((product_key, device_name), _topic), records = element
        device = Device(product_key, device_name)
        row = _row(str(device))
        for item in pack(self._encoder, device, self._encoded(records, row), self._max_payload_bytes):
            if not isinstance(item, Payload):
                _fail(row, Reason.TOO_LARGE, str(item[1]))
            elif self._known is not None and device not in self._known:
                _fail(row, Reason.UNKNOWN_DEVICE, f"no secret for {device} in the credentials", len(item.records))
            else:
                row["messages"] += 1
                row["bytes"] += len(item.body)
        yield row

    def _encoded(self, records, row):
        for record in records:
            row["records"] += 1
            try:
                yield record, self._encoder.encode(record)
            except EncodeError as error:
                _fail(row, Reason.UNENCODABLE, str(error))


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
        self._router = make_router(**options.routing(args))
        self._encoder = options.encoder(args)
        self._max_payload_bytes = args.max_payload_bytes
        self._credentials = args.credentials
        self._output = output

    def expand(self, records):
        keyed, unroutable = records | "Route" >> KeyByDevice(self._router)
        planned = (keyed | "GroupByDevice" >> beam.GroupByKey()
                   | "Pack" >> beam.ParDo(_PlanFn(self._encoder, self._max_payload_bytes, self._credentials)))
        unplanned = unroutable | "Unroutable" >> beam.Map(
            lambda failed: _row(records=1, failed={failed.reason: 1}, why={failed.reason: failed.message}))
        return ((planned, unplanned) | beam.Flatten()
                | "ByDevice" >> beam.Map(lambda row: (row["device"], row))
                | "Merge" >> beam.CombinePerKey(_MergeRows())
                | beam.Values()
                | "Gather" >> beam.combiners.ToList()
                | "Json" >> beam.Map(json.dumps)
                | "Write" >> beam.io.WriteToText(self._output, num_shards=1, shard_name_template=""))


def plan_output(args):
    return args.plan_output or os.path.join(tempfile.mkdtemp(prefix="iot-dry-run-"), "plan.json")


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
