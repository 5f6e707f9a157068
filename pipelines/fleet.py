"""A simulated fleet: an unbounded source of live readings at a set rate, for the local relay.

A splittable DoFn emits reading n at start + n / rate and, when the next one is not due yet, hands the
rest of its range back to the runner to resume shortly (defer_remainder): the runner publishes what
came so far meanwhile. It stops after `count` readings, or as soon as `stop()` is called in this
process (the relay's Ctrl-C handler), which ends the run cleanly: buffers flush, the summary prints.

Reading n is a function of n and the start time alone (its `seq` is n, its time the one it was due
at), so a runner that restores the source from a checkpoint emits the very same readings again, and
duplicates can be told from losses. The source holds the watermark at its last reading while it has
more to come: without that hold, Flink ends the source's stage once its input (the impulse) is done
and drops the readings it had deferred.

It counts what it emits (READINGS_EMITTED) and the highest reading number it reached (LAST_READING), so
that the relay can compare them with what its sink took in and with the readings that were due (check).
"""
import math
import random
import threading
import time

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from . import summary

UNLIMITED = 2**62
METRICS_NAMESPACE = "iot_relay_fleet"
READINGS_EMITTED = "readings_emitted"
LAST_READING = "reading_number"  # a distribution: its max is the last reading emitted
_STOP = threading.Event()


def stop():
    """Ask every fleet running in this process to end after the reading it is on."""
    _STOP.set()


def stopped():
    """Whether stop() was called: the fleet did not emit all it was due, by request."""
    return _STOP.is_set()


class _FleetFn(beam.DoFn, RestrictionProvider):
    """Splittable over reading numbers [0, count) and a closing step, count; is its own RestrictionProvider.

    The closing step claims nothing and emits nothing, in a call of its own after the last readings went
    out: the remainder's watermark hold is released only then. On Flink, when the call that emitted the
    last readings also released it, those readings were sometimes lost (the last 0.5 s of a run, in
    about one run in four)."""

    def __init__(self, devices, rate, count):
        self._devices = devices  # (productKey, deviceName) pairs: names only, no secrets
        self._rate = rate
        self._count = count

    def setup(self):
        self._emitted = Metrics.counter(METRICS_NAMESPACE, READINGS_EMITTED)
        self._last = Metrics.distribution(METRICS_NAMESPACE, LAST_READING)

    def initial_restriction(self, element):
        return OffsetRange(0, self._count + 1)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return restriction.size()

    def process(self, start_ms, tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        # Set by hand: Beam 2.62's MonotonicWatermarkEstimator fails (compares with None) when a
        # resumed remainder emits before its watermark was ever set.
        first = tracker.current_restriction().start
        position = first
        try:
            while True:
                if _STOP.is_set():
                    tracker.try_claim(tracker.current_restriction().stop)  # past the end: claims nothing, ends
                    return
                if position == self._count:  # the closing step
                    if position > first:
                        tracker.defer_remainder(Duration.of(0.1))
                    else:
                        tracker.try_claim(position)
                    return
                due = due_ms(start_ms, self._rate, position) / 1000
                wait = due - time.time()
                if wait > 0:
                    watermark.set_watermark(Timestamp.of(due - 0.001))  # what is left holds the watermark
                    tracker.defer_remainder(Duration.of(min(wait, 0.5)))
                    return
                if not tracker.try_claim(position):
                    return
                yield TimestampedValue(reading(self._devices, start_ms, self._rate, position), due)
                watermark.set_watermark(Timestamp.of(due))
                position += 1
        finally:  # counted once a call, not once a reading
            if position > first:
                self._emitted.inc(position - first)
                self._last.update(position - 1)


def due_ms(start_ms, rate, n):
    """When reading n is due, in epoch milliseconds."""
    return start_ms + int(n * 1000 / rate)


def reading(devices, start_ms, rate, n):
    """Reading n of a fleet of `devices` that started at `start_ms` (epoch ms) at `rate` readings/s."""
    product_key, device_name = devices[n % len(devices)]
    ts = due_ms(start_ms, rate, n)
    rng = random.Random(n)
    phase = 2 * math.pi * (ts / 1000 % 86_400) / 86_400
    return {"productKey": product_key, "deviceName": device_name, "seq": n, "ts": ts,
            "temperature": round(20 + 5 * math.sin(phase) + rng.gauss(0, 0.3), 2),
            "humidity": round(50 - 15 * math.sin(phase) + rng.gauss(0, 1), 1)}


class SimulatedFleet(beam.PTransform):
    """Readings of `devices` at `rate` per second in all, for `duration` seconds (None: until stop())."""

    def __init__(self, devices, rate, duration=None):
        super().__init__()
        self._devices = [tuple(device) for device in devices]
        self._rate = rate
        self.count = UNLIMITED if duration is None else max(1, int(rate * duration))  # the readings due

    def expand(self, pbegin):
        return (pbegin | beam.Impulse()
                | "Start" >> beam.Map(lambda _: int(time.time() * 1000))
                | "Readings" >> beam.ParDo(_FleetFn(self._devices, self._rate, self.count)))


def check(result, count, stopped):
    """The fleet against the relay's sink (summary.SourceCheck): what it emitted, and, for a run with a
    --duration that was not stopped, whether it emitted every reading that was due (count). The
    counts are the job's latest attempt's; the last reading's number holds across a restore."""
    emitted = summary.metrics_of(result, METRICS_NAMESPACE)
    handed_over = emitted["counters"].get(READINGS_EMITTED, 0)
    findings = shortfall(count, handed_over, emitted["distributions"].get(LAST_READING), stopped)
    return summary.SourceCheck("the simulated fleet", handed_over, summary.sink_counters(result).get("records_in", 0),
                               findings)


def shortfall(count, handed_over, last, stopped):
    """The finding (line, exit status) of a fleet that emitted fewer than the `count` readings due (its
    last reading's number `last`, None when it reported none), or none. A fleet stopped by stop(), or
    without a --duration, was due nothing more; a runner that reports no distributions, only counts,
    tells nothing here unless the fleet emitted nothing at all."""
    short = (not handed_over) if last is None else last + 1 < count
    if stopped or count == UNLIMITED or not short:
        return []
    emitted = "none" if last is None else f"readings 0 to {last:,}"
    return [(f"READINGS NOT EMITTED: the simulated fleet emitted {emitted} of the {count:,} due in its --duration, "
             "and no more: the runner ended its source early", summary.EXIT_UNACCOUNTED)]
