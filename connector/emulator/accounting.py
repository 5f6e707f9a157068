"""The accounting check: was every input record either delivered or reported as failed?

Takes the input records, the emulator's accepted messages and the failed output, decodes every
accepted payload back into records, and counts. Tests and benchmarks call it; so can users' tests.
"""
import collections
import json
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, NamedTuple

__all__ = ["Accounting", "account", "canonical"]


def canonical(record: object) -> str | bytes:
    """A record's identity for matching: its canonical JSON (bytes stand for themselves)."""
    if isinstance(record, (bytes, bytearray)):
        return bytes(record)
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=repr)


class Accounting(NamedTuple):
    """What became of the input records: complete when none is lost and none invented."""

    input: int
    delivered: int  # input records found in accepted payloads (each counted once)
    duplicated: int  # extra deliveries of a record beyond its count in the input
    failed: dict[str, int]  # reason -> records reported failed (and not delivered)
    delivered_and_failed: int  # reported failed but delivered all the same (ambiguous failures)
    lost: int  # neither delivered nor failed: must be 0
    unexpected: int  # delivered records that were never in the input

    @property
    def complete(self) -> bool:
        """Nothing lost, nothing invented."""
        return self.lost == 0 and self.unexpected == 0

    def summary(self) -> str:
        """One line for a test's failure message or a benchmark's report."""
        failed = sum(self.failed.values())
        return (f"input {self.input}: delivered {self.delivered}, failed {failed} {dict(self.failed)}, "
                f"duplicated {self.duplicated}, delivered-and-failed {self.delivered_and_failed}, "
                f"lost {self.lost}, unexpected {self.unexpected}")


def account(records: Iterable[Any], messages: Iterable[Mapping[str, Any]], failed: Iterable[Any], encoder: Any,
            identity: Callable[[Any], Hashable] = canonical) -> Accounting:
    """Count deliveries and failures of `records`.

    Args:
        records: the input records.
        messages: the emulator's accepted messages (dicts with "payload" bytes), as Emulator.messages().
        failed: FailedRecord values from WriteToIoTPlatform's failed output.
        encoder: the Encoder the payloads were written with (its decode() gives the records back).
        identity: record -> hashable; for encoders whose decode() does not give the input record back
            (the Alink ones), map input records to what decode() gives.

    Returns:
        The counts; `complete` says whether nothing was lost or invented.
    """
    wanted = collections.Counter(identity(record) for record in records)
    delivered: collections.Counter[Hashable] = collections.Counter(canonical(item) for message in messages
                                                                   for item in encoder.decode(message["payload"]))
    failures: dict[Hashable, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for entry in failed:
        failures[identity(entry.record)][entry.reason] += 1
    counts: collections.Counter[str] = collections.Counter()
    failed_by_reason: collections.Counter[str] = collections.Counter()
    for key, expected in wanted.items():
        arrived = delivered.get(key, 0)
        reported = failures.get(key, collections.Counter())
        counts["delivered"] += min(arrived, expected)
        counts["duplicated"] += max(0, arrived - expected)
        missing = max(0, expected - arrived)
        reported_total = sum(reported.values())
        counts["delivered_and_failed"] += max(0, reported_total - missing)
        counts["lost"] += max(0, missing - reported_total)
        for reason, number in reported.items():
            failed_by_reason[reason] += number
    return Accounting(
        input=sum(wanted.values()), delivered=counts["delivered"], duplicated=counts["duplicated"],
        failed=dict(failed_by_reason), delivered_and_failed=counts["delivered_and_failed"],
        lost=counts["lost"], unexpected=sum(n for key, n in delivered.items() if key not in wanted))
