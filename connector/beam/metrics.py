"""The Beam metrics WriteToIoTPlatform reports, in one namespace, updated from the DoFn's thread.

Publishing threads return their counts in an Outcome rather than touching metrics, because Beam's
metrics container belongs to the thread running the bundle.
"""
from collections.abc import Callable
from urllib.parse import urlsplit

from apache_beam.metrics.metric import Lineage, Metrics
from apache_beam.metrics.metricbase import Counter

from .publisher import Outcome

NAMESPACE = "WriteToIoTPlatform"
# The system name of the sink in Beam's lineage: iotplatform:`host:port`.
LINEAGE_SYSTEM = "iotplatform"
# The name Dataflow's autoscaler reads to tell a throttled sink from a slow one.
THROTTLING_COUNTER = "cumulativeThrottlingSeconds"


class SinkMetrics:
    """Counters and distributions for one DoFn instance."""

    def __init__(self) -> None:
        counter: Callable[[str], Counter] = lambda name: Metrics.counter(NAMESPACE, name)  # noqa: E731
        self.records_in = counter("records_in")
        self.records_published = counter("records_published")
        self.records_failed = counter("records_failed")
        self.messages = counter("messages")
        self.payload_bytes = counter("payload_bytes")
        self.auth_calls = counter("auth_calls")
        self.retries = counter("retries")
        self.ambiguous_resends = counter("ambiguous_resends")
        self.throttled_msecs = counter("throttled_msecs")
        self._throttled_seconds = counter(THROTTLING_COUNTER)
        self._throttled_remainder = 0.0
        self.payload_size = Metrics.distribution(NAMESPACE, "payload_size_bytes")
        self.publish_latency = Metrics.distribution(NAMESPACE, "publish_latency_ms")
        self._failed_by_reason: dict[str, Counter] = {}

    def failed(self, reason: str, count: int = 1) -> None:
        self.records_failed.inc(count)
        counter = self._failed_by_reason.get(reason)
        if counter is None:
            counter = self._failed_by_reason[reason] = Metrics.counter(NAMESPACE, f"failed_{reason}")
        counter.inc(count)

    def outcome(self, outcome: Outcome, payload_bytes: int, record_count: int) -> None:
        """Count one payload's end."""
        if outcome.tries > 1:
            self.retries.inc(outcome.tries - 1)
        if outcome.ambiguous_resends:
            self.ambiguous_resends.inc(outcome.ambiguous_resends)
        if outcome.throttled_seconds:
            self.throttled_msecs.inc(int(outcome.throttled_seconds * 1000))
            # The counter is whole seconds; carry the fraction so short waits still add up.
            self._throttled_remainder += outcome.throttled_seconds
            whole = int(self._throttled_remainder)
            if whole:
                self._throttled_seconds.inc(whole)
                self._throttled_remainder -= whole
        if outcome.message_id is None:
            assert outcome.reason is not None  # a payload not accepted always has its reason
            self.failed(outcome.reason, record_count)
            return
        self.messages.inc()
        self.records_published.inc(record_count)
        self.payload_bytes.inc(payload_bytes)
        self.payload_size.update(payload_bytes)
        self.publish_latency.update(int(outcome.latency_seconds * 1000))


def report_sink(endpoint: str) -> None:
    """Report the endpoint as this pipeline's sink in Beam's lineage (what Dataflow shows in Dataplex).

    host:port is quoted here: Beam 2.62 quotes a segment holding a colon or dot itself, 2.77 does
    not, and an unquoted one is no valid Dataplex name."""
    Lineage.sinks().add(LINEAGE_SYSTEM, Lineage.wrap_segment(urlsplit(endpoint).netloc))
