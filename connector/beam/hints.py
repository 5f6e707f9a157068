"""Annotations for mypy and readers that Beam must not read as type hints.

Beam takes the annotations of a DoFn's process, a PTransform's expand and a function given to Map as
type hints: it checks them when the pipeline is built and picks coders by them (a result annotation on
an expand made it warn at every run). The sink tells Beam its types where it means to, with
with_output_types and element types; the annotations of those methods are for mypy only.
"""
from collections.abc import Callable
from typing import Any, TypeVar, cast

from apache_beam.typehints.decorators import no_annotations

_Function = TypeVar("_Function", bound=Callable[..., Any])


def not_type_hints(function: _Function) -> _Function:
    """function, its annotations hidden from Beam's type hints (Beam's no_annotations, typed for mypy)."""
    return cast(_Function, no_annotations(function))
