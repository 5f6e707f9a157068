"""Annotations for mypy and readers that Beam must not read as type hints, and Beam's DoFn parameter
markers typed for them.

Beam takes the annotations of a DoFn's process, a PTransform's expand and a function given to Map as
type hints: it checks them when the pipeline is built and picks coders by them (a result annotation on
an expand makes it warn at every run). The sink tells Beam its types where it means to, with
with_output_types and element types; the annotations of those methods are for mypy only.
"""
from collections.abc import Callable
from typing import Any, TypeVar, cast

from apache_beam import DoFn
from apache_beam.transforms.userstate import StateSpec, TimerSpec
from apache_beam.typehints.decorators import no_annotations

_Function = TypeVar("_Function", bound=Callable[..., Any])
_Value = TypeVar("_Value")


def not_type_hints(function: _Function) -> _Function:
    """function, its annotations hidden from Beam's type hints (Beam's no_annotations, typed for mypy)."""
    return cast(_Function, no_annotations(function))


@not_type_hints
def same(value: _Value) -> _Value:
    """The identity, for a Map whose output type is declared with with_output_types."""
    return value


# Beam passes the window, timestamp, key, state and timers in place of a DoFn parameter's default, its
# marker. Typed as Any, a marker is a default of whatever type the parameter names, as Beam makes it.
WINDOW: Any = DoFn.WindowParam
TIMESTAMP: Any = DoFn.TimestampParam
KEY: Any = DoFn.KeyParam


def state(spec: StateSpec) -> Any:
    """DoFn.StateParam(spec): Beam passes the state in its place."""
    return DoFn.StateParam(spec)


def timer(spec: TimerSpec) -> Any:
    """DoFn.TimerParam(spec): Beam passes the timer in its place."""
    return DoFn.TimerParam(spec)
