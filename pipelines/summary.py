"""What a run did: progress lines while it works, a summary table from the sink's Beam metrics, and the
check that the run accounts for every record it read."""
import sys
import threading
import time

from apache_beam.metrics.metric import MetricsFilter

from connector import Reason
from connector.beam.metrics import NAMESPACE

EXIT_UNACCOUNTED = 5  # records read != published + failed: records lost (or counted twice) somewhere
EXIT_STOPPED_HOLDING = 6  # a streaming job stopped while its buffers still held records (counted, not sent)
# Prism (2.78) can end a streaming job while a last bundle is still running, and that bundle's counts
# never arrive: in the suite's long test process the relay twice counted 15 and 32 fewer published than
# the platform had stored (every record there, once). The run still cannot account for them itself.
PRISM_DROPPED_COUNTS = ("; Prism can end a streaming job before its last bundle's counts arrive: compare with "
                        "what the platform stored (see docs/runners.md)")

# What to check first, per reason; the dead-letter messages give the details.
HINTS = {
    Reason.INVALID_RECORD: "records that are not objects with named fields (check --input-format), or CSV "
                           "values that are not their --csv-types type",
    Reason.UNROUTABLE: "records lack the device fields (or their id is not in --device-map)",
    Reason.INVALID_TOPIC: "--topic makes a topic the platform refuses (a field's value empty or holding "
                          "'/', '+' or '#', or the topic too long)",
    Reason.UNKNOWN_DEVICE: "devices missing from --credentials",
    Reason.AUTH_FAILED: "wrong device secret, device not on the platform, or this machine's clock is off "
                        "by more than 15 minutes",
    Reason.UNENCODABLE: "values the encoder cannot write (e.g. NaN in JSON)",
    Reason.TOO_LARGE: "a single record is larger than --max-payload-bytes",
    Reason.UNORDERABLE: "--order-by values of kinds that cannot be compared with the others' (e.g. numbers "
                        "and text mixed): make the field one type",
    Reason.REJECTED: "the platform refused the payload as invalid (10001): check --topic and --encoder",
    Reason.TLS_ERROR: "the endpoint's certificate did not verify: give its CA with --ca-file",
    Reason.ENDPOINT_NOT_FOUND: "nothing answers at --endpoint's address (HTTP 404): check its host and path",
    Reason.THROTTLED: "still throttled (40000) after all retries: lower --max-in-flight",
    Reason.RETRIES_EXHAUSTED: "network or platform errors outlasted the retries (see the warnings; "
                              "--retry-max-seconds, --max-attempts)",
}


class Progress:
    """Prints elapsed time (and whatever `poll()` reports) to stderr every `interval` seconds.

    Beam's local runners give metrics only once a run ends, so the count comes from elsewhere, e.g.
    the embedded emulator's message count.
    """

    def __init__(self, label, poll=None, interval=2.0, out=sys.stderr):
        self._label, self._poll, self._interval, self._out = label, poll, interval, out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self):
        self.started = time.monotonic()
        print(f"{self._label}: started", file=self._out, flush=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(self._interval):
            line = f"[{time.monotonic() - self.started:6.1f}s] {self._label}: running"
            if self._poll is not None:
                try:
                    line += f", {self._poll()}"
                except Exception as error:  # a progress line must never stop a run
                    line += f" ({type(error).__name__} while polling)"
            print(line, file=self._out, flush=True)


def sink_counters(result, namespace=NAMESPACE):
    """{counter name: value} of a metrics namespace (the sink's by default), summed over steps."""
    return metrics_of(result, namespace)["counters"]


def metrics_of(result, namespace):
    """{"counters": {name: sum over steps}, "distributions": {name: max over steps}} of a namespace."""
    found = {"counters": {}, "distributions": {}}
    query = lambda: result.metrics().query(MetricsFilter().with_namespace(namespace))  # noqa: E731
    metrics = _on_a_deep_stack(query)
    for counter in metrics["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        found["counters"][counter.key.metric.name] = found["counters"].get(counter.key.metric.name, 0) + (value or 0)
    for distribution in metrics["distributions"]:
        value = distribution.committed if distribution.committed is not None else distribution.attempted
        if value is not None and value.count:
            name = distribution.key.metric.name
            found["distributions"][name] = max(found["distributions"].get(name, value.max), value.max)
    return found


def _on_a_deep_stack(call, stack_bytes=512 << 20, depth=1_000_000):
    """call() in a thread with a deep stack and recursion limit.

    FnApiRunner merges each bundle's metrics into one lazily chained generator per stage (Beam's
    fn_runner.py), one level per bundle: reading them after a streaming run of a few thousand bundles
    passes Python's default recursion limit. Reading them deep is the workaround.
    """
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    previous_limit = sys.getrecursionlimit()
    previous_stack = threading.stack_size(stack_bytes)
    sys.setrecursionlimit(max(previous_limit, depth))
    try:
        reader = threading.Thread(target=run, name="read-metrics")
        reader.start()
        reader.join()
    finally:
        threading.stack_size(previous_stack)
        sys.setrecursionlimit(previous_limit)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def summary_table(counters, wall_seconds, dead_letter=None, held=0):
    """The summary as text lines; records/s counts records read. held: records a stopped streaming job
    still held in its buffers (a row of its own when there were any)."""
    records_in = counters.get("records_in", 0)
    rows = [("records read", records_in),
            ("records published", counters.get("records_published", 0)),
            ("messages", counters.get("messages", 0)),
            ("payload bytes", counters.get("payload_bytes", 0)),
            ("records failed", counters.get("records_failed", 0))]
    if held:
        rows.insert(2, ("records held at stop", held))
    failed = sorted((name[len("failed_"):], value) for name, value in counters.items()
                    if name.startswith("failed_") and value)
    rows += [(f"  {reason}", value) for reason, value in failed]
    rows += [("auth calls", counters.get("auth_calls", 0)),
             ("retries", counters.get("retries", 0)),
             ("throttled time", f"{counters.get('throttled_msecs', 0) / 1000:.1f} s"),
             ("wall time", f"{wall_seconds:.1f} s"),
             ("records/s", f"{records_in / wall_seconds:,.0f}" if wall_seconds else "-")]
    lines = ["", "Summary", "-------"]
    lines += [f"{name:<22}{value:>16,}" if isinstance(value, int) else f"{name:<22}{value:>16}"
              for name, value in rows]
    if failed:
        where = f"the dead letters at {dead_letter}*" if dead_letter else "the run's failed output"
        lines.append(f"\nFailed records are in {where} (reason and message for each). Likely causes:")
        lines += [f"  {reason}: {HINTS[reason]}" for reason, _ in failed if reason in HINTS]
    return lines


class Accounting:
    """Records read by the sink against what became of them: published, failed, or (a streaming job
    stopped before it flushed) held in its buffers when it stopped."""

    def __init__(self, counters, runner, stopped=False, streaming=False):
        self.streaming = streaming
        self.read = counters.get("records_in", 0)
        self.published = counters.get("records_published", 0)
        self.failed = counters.get("records_failed", 0)
        self.runner, self.stopped = runner, stopped
        left = self.read - self.published - self.failed
        self.held = left if stopped and left > 0 else 0
        self.unaccounted = left - self.held  # > 0: lost; < 0: published or failed more than read

    def lines(self):
        """Nothing when every record is accounted for; else one loud line (and one for what was held)."""
        lines = []
        if self.held:
            lines.append(f"STOPPED: the {self.runner} job stopped while its buffers held {self.held:,} of the "
                         f"{self.read:,} records read: they were not sent (a savepoint keeps them; else "
                         "resend them from the source)")
        if self.unaccounted > 0:
            lines.append(f"RECORDS LOST: {self.unaccounted:,} of the {self.read:,} records read on {self.runner} "
                         f"were neither published ({self.published:,}) nor failed ({self.failed:,})"
                         + (f" nor held ({self.held:,})" if self.held else "")
                         + (PRISM_DROPPED_COUNTS if self.streaming and self.runner == "PrismRunner" else ""))
        elif self.unaccounted < 0:
            lines.append(f"RECORDS COUNTED TWICE: {self.runner} published {self.published:,} and failed "
                         f"{self.failed:,} records of {self.read:,} read: {-self.unaccounted:,} more than read"
                         + (" (a streaming job restored from a checkpoint publishes what its buffers held then, "
                            "which the attempt before it counted in: at least once)" if self.streaming else ""))
        return lines

    def status(self):
        """EXIT_UNACCOUNTED, EXIT_STOPPED_HOLDING, or None when the run accounts for every record."""
        if self.unaccounted > 0 or (self.unaccounted < 0 and not self.streaming):
            return EXIT_UNACCOUNTED
        return EXIT_STOPPED_HOLDING if self.held else None


class SourceCheck:
    """What a relay's source says it handed over against the records its sink took in, and what else the
    source can tell (records left in Kafka, a fleet that stopped short) as (line, exit status or None)
    findings: a line with a status is loud (stdout and stderr), one without is a note. Both counts are
    the job's latest attempt's: a job restored from a checkpoint counts from there on, in both."""

    def __init__(self, source, handed_over, read, findings=()):
        self.source, self.handed_over, self.read, self.findings = source, handed_over, read, list(findings)

    def lines(self):
        """(line, loud) pairs: the comparison when it fails, then the source's findings."""
        lines = []
        if self.handed_over > self.read:
            lines.append((f"RECORDS LOST: {self.source} handed over {self.handed_over:,} records and the sink took "
                          f"in {self.read:,}: {self.handed_over - self.read:,} never reached it", True))
        elif self.handed_over < self.read:
            lines.append((f"RECORDS COUNTED TWICE: the sink took in {self.read:,} records where {self.source} "
                          f"handed over {self.handed_over:,}", True))
        lines += [(line, status is not None) for line, status in self.findings]
        return lines

    def status(self):
        """EXIT_UNACCOUNTED when the counts differ, else the first finding's status; None when all is well."""
        if self.handed_over != self.read:
            return EXIT_UNACCOUNTED
        return next((status for _, status in self.findings if status is not None), None)
