"""The relay's Pub/Sub source off Dataflow: each message's data (JSON text, parsed by the relay as Kafka's
values are) at its publish time, pulled with google-cloud-pubsub by a splittable DoFn of the project's own.

Why not Beam's ReadFromPubSub everywhere: Dataflow replaces it with its own source (kept there), but
elsewhere nothing ends it: the DirectRunner's Pub/Sub read never finishes, so --duration and Ctrl-C
could not end a relay, and Prism refuses beam:transform:pubsub_read:v1. This reader pulls a batch, hands
it on, and acknowledges it only in the bundle's finalization, which the runner calls once it has
committed the bundle's outputs: a relay that stops or crashes leaves what it had not handed on
unacknowledged, and Pub/Sub delivers it again (at least once). It stops `read_for_seconds` after the
job started, or once a stop file exists (the relay's Ctrl-C), and the job then ends with its buffers
flushed. It holds the watermark at the oldest publish time it pulled, and at the clock while the
subscription is empty.

It counts the messages it hands over (MESSAGES_HANDED_OVER) for `check`, which compares them with the
records the sink took in.
"""
import logging
import os
import time

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from . import summary

METRICS_NAMESPACE = "iot_relay_pubsub"
MESSAGES_HANDED_OVER = "messages_handed_over"
UNLIMITED = 2**62  # pull rounds: the restriction of a reader that runs until told to stop
MAX_MESSAGES = 500  # a pull's most; the bundle that hands them on ends with it, so they are acked soon
IDLE_SECONDS = 0.5  # how long an empty subscription waits for its next pull
PULL_TIMEOUT_SECONDS = 5  # Pub/Sub may hold a pull open while nothing comes: the stop is checked between pulls
_LOGGER = logging.getLogger(__name__)


def _subscriber():
    from google.cloud import pubsub_v1  # apache-beam[gcp]; PUBSUB_EMULATOR_HOST points it at a test server
    return pubsub_v1.SubscriberClient()


class _PullFn(beam.DoFn, RestrictionProvider):
    """Splittable over pull rounds [0, UNLIMITED): one pull a call, whose messages are acknowledged when
    the bundle is finalized; then the rest of the range goes back to the runner (at once after a batch,
    IDLE_SECONDS after an empty pull). Its element: the time (epoch s) to stop reading at, or None."""

    def __init__(self, subscription, stop_file):
        self._subscription = subscription
        self._stop_file = stop_file

    def setup(self):
        self._client = _subscriber()
        self._handed_over = Metrics.counter(METRICS_NAMESPACE, MESSAGES_HANDED_OVER)

    def teardown(self):
        self._client.close()

    def initial_restriction(self, element):
        return OffsetRange(0, UNLIMITED)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return restriction.size()

    def process(self, stop_at, finalizer=beam.DoFn.BundleFinalizerParam, tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        # The finalizer first: Beam passes it by position, the restriction and watermark by name.
        if self._told_to_stop(stop_at):
            tracker.try_claim(tracker.current_restriction().stop)  # past the end: claims nothing, ends
            return
        if not tracker.try_claim(tracker.current_restriction().start):
            return
        pulled = self._pull()
        if pulled:
            oldest = min(received.message.publish_time.timestamp() for received in pulled)
            _advance(watermark, Timestamp.of(oldest))
            for received in pulled:
                yield TimestampedValue(received.message.data, received.message.publish_time.timestamp())
            self._handed_over.inc(len(pulled))
            ack_ids = [received.ack_id for received in pulled]
            finalizer.register(lambda: self._acknowledge(ack_ids))
        else:
            _advance(watermark, Timestamp.now())
        tracker.defer_remainder(Duration.of(0 if pulled else IDLE_SECONDS))

    def _pull(self):
        from google.api_core.exceptions import DeadlineExceeded
        try:
            return self._client.pull(subscription=self._subscription, max_messages=MAX_MESSAGES,
                                     timeout=PULL_TIMEOUT_SECONDS).received_messages
        except DeadlineExceeded:  # nothing came while the pull was open
            return []

    def _acknowledge(self, ack_ids):
        """Called once the runner committed the bundle that handed the messages on. An ack that fails
        loses nothing: Pub/Sub delivers those messages again, and the relay publishes them twice."""
        from google.api_core.exceptions import GoogleAPICallError
        try:
            self._client.acknowledge(subscription=self._subscription, ack_ids=ack_ids)
        except GoogleAPICallError as error:
            _LOGGER.warning("Pub/Sub: %d messages handed on were not acknowledged (%s): Pub/Sub delivers them "
                            "again", len(ack_ids), type(error).__name__)

    def _told_to_stop(self, stop_at):
        return (stop_at is not None and time.time() >= stop_at) or os.path.exists(self._stop_file)


def _advance(watermark, to):
    """Move the watermark to `to` unless it is already past it (a watermark never goes back)."""
    current = watermark.current_watermark()
    if current is None or to > current:
        watermark.set_watermark(to)


class ReadPubSubMessages(beam.PTransform):
    """The data (bytes) of a subscription's messages, each at its publish time. read_for_seconds: stop
    reading that long after the job started (None: never); stop_file: stop reading once it exists."""

    def __init__(self, subscription, stop_file, read_for_seconds=None):
        super().__init__()
        self._subscription, self._stop_file, self._read_for = subscription, stop_file, read_for_seconds

    def expand(self, pbegin):
        read_for = self._read_for
        return (pbegin | beam.Impulse()
                | "StopAt" >> beam.Map(lambda _: None if read_for is None else time.time() + read_for)
                | "Pull" >> beam.ParDo(_PullFn(self._subscription, self._stop_file)))


def not_there(subscription):
    """Why the subscription cannot be read, in a line, when Pub/Sub says it does not exist or its name is
    wrong; else None (the reader finds the rest: a role that may consume but not look the subscription
    up, for one, is no reason to refuse)."""
    from google.api_core.exceptions import InvalidArgument, NotFound
    client = _subscriber()
    try:
        client.get_subscription(subscription=subscription, timeout=PULL_TIMEOUT_SECONDS * 6)
    except NotFound:
        server = os.environ.get("PUBSUB_EMULATOR_HOST")
        return f"Pub/Sub has no subscription {subscription}" + (f" (the server at {server})" if server else "")
    except InvalidArgument as error:
        return f"Pub/Sub refuses the subscription name {subscription}: {error.message}"
    except Exception:  # the reader's own pulls will say what is wrong
        return None
    finally:
        client.close()
    return None


def check(result, subscription):
    """The Pub/Sub read against the relay's sink (summary.SourceCheck): the messages it handed over and
    the records the sink took in must be the same count."""
    handed_over = summary.sink_counters(result, METRICS_NAMESPACE).get(MESSAGES_HANDED_OVER, 0)
    return summary.SourceCheck(f"Pub/Sub subscription {subscription}", handed_over,
                               summary.sink_counters(result).get("records_in", 0))
