"""The summary: a hint for every failure reason, reading a long streaming run's metrics (FnApiRunner
chains one lazy generator per bundle), and the check that a run accounts for every record it read."""
import pytest

from connector import Reason
from pipelines.summary import (
    EXIT_STOPPED_HOLDING,
    EXIT_UNACCOUNTED,
    HINTS,
    PRISM_DROPPED_COUNTS,
    Accounting,
    _on_a_deep_stack,
    summary_table,
)


def chained(depth):
    """Nested generators as FnApiRunner builds them, one level per bundle."""
    items = iter([1])
    for _ in range(depth):
        items = (item for item in items)
    return items


def test_metrics_chained_over_thousands_of_bundles_can_be_read():
    with pytest.raises(RecursionError):
        list(chained(20_000))
    assert _on_a_deep_stack(lambda: list(chained(20_000))) == [1]


def test_errors_reach_the_caller():
    with pytest.raises(ZeroDivisionError):
        _on_a_deep_stack(lambda: 1 / 0)


def test_every_reason_has_a_hint_in_the_summary():
    counters = {f"failed_{reason}": 1 for reason in Reason.ALL}
    lines = summary_table(counters, 1.0)
    for reason in Reason.ALL:
        assert HINTS.get(reason), reason
        assert f"  {reason}: {HINTS[reason]}" in lines


@pytest.mark.parametrize("counters, stopped, status, loud", [
    ({"records_in": 10, "records_published": 7, "records_failed": 3}, False, None, None),
    ({"records_in": 3000}, False, EXIT_UNACCOUNTED,
     "RECORDS LOST: 3,000 of the 3,000 records read on FlinkRunner were neither published (0) nor failed (0)"),
    ({"records_in": 10, "records_published": 11}, False, EXIT_UNACCOUNTED,
     "RECORDS COUNTED TWICE: FlinkRunner published 11 and failed 0 records of 10 read: 1 more than read"),
    ({"records_in": 10, "records_published": 6, "records_failed": 1}, True, EXIT_STOPPED_HOLDING,
     "STOPPED: the FlinkRunner job stopped while its buffers held 3 of the 10 records read"),
])
def test_the_accounting_check(counters, stopped, status, loud):
    accounting = Accounting(counters, "FlinkRunner", stopped)
    assert accounting.status() == status
    assert [line.startswith(loud) for line in accounting.lines()] == ([True] if loud else [])


def test_records_unaccounted_on_prism_streaming_still_fail_the_run_and_say_prism_may_have_dropped_counts():
    prism = Accounting({"records_in": 4000, "records_published": 3968}, "PrismRunner", streaming=True)
    assert prism.status() == EXIT_UNACCOUNTED
    assert prism.lines()[0].startswith("RECORDS LOST: 32 of the 4,000") and prism.lines()[0].endswith(
        PRISM_DROPPED_COUNTS)
    batch = Accounting({"records_in": 4000, "records_published": 3968}, "PrismRunner")
    assert PRISM_DROPPED_COUNTS not in batch.lines()[0]


def test_a_restored_streaming_job_publishing_more_than_it_read_says_so_and_passes():
    """Flink's metrics after a restore are the restored attempt's: it publishes what the checkpoint's
    buffers held, which the killed attempt had counted in (5,522 read, 5,700 published in a test)."""
    accounting = Accounting({"records_in": 5522, "records_published": 5700}, "FlinkRunner", streaming=True)
    assert accounting.status() is None
    assert accounting.lines()[0].startswith("RECORDS COUNTED TWICE: FlinkRunner published 5,700") and (
        "restored from a checkpoint" in accounting.lines()[0])
