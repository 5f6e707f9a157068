"""The summary: a hint for every failure reason, and reading a long streaming run's metrics
(FnApiRunner chains one lazy generator per bundle)."""
import pytest

from connector import Reason
from pipelines.summary import HINTS, _on_a_deep_stack, summary_table


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
