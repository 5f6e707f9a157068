"""Reading a long streaming run's metrics: FnApiRunner chains one lazy generator per bundle."""
import pytest

from pipelines.summary import _on_a_deep_stack


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
