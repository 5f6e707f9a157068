"""A zoo of the values real records carry, as hypothesis strategies: timestamps of every kind, dates,
times, durations, decimals, UUIDs, bytes, enums, numpy scalars and arrays, rows, NamedTuples, dataclasses,
tuples, sets, dicts with keys that are not text, NaN and NaT, nesting past the limit; and, for the unit
tests only, values no pickle or UTF-8 coder takes.

Module-level types, so that Beam's workers unpickle them by name.
"""
import dataclasses
import enum
import threading
import typing
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.utils.timestamp import Timestamp
from hypothesis import strategies as st

from connector.beam.json_values import MAX_DEPTH


class Mode(enum.Enum):
    ECO = "eco"
    BOOST = 2


class Reading(typing.NamedTuple):
    value: typing.Any
    unit: str


@dataclasses.dataclass
class Sample:
    value: typing.Any
    flags: typing.Any = None


class Unprintable:
    """A value whose str() raises: the dead letters must still write something for it."""

    def __str__(self):
        raise RuntimeError("no text")


def deep(levels):
    """A value of `levels` nested lists."""
    value = []
    for _ in range(levels - 1):
        value = [value]
    return value


_ZONES = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
_NUMPY = st.one_of(
    st.integers(-2**63, 2**63 - 1).map(np.int64), st.floats(width=32).map(np.float32), st.floats().map(np.float64),
    st.booleans().map(np.bool_), st.integers(-2**40, 2**40).map(lambda ms: np.datetime64(ms, "ms")),
    st.integers(-2**60, 2**60).map(lambda ns: np.datetime64(ns, "ns")),
    st.integers(-2**40, 2**40).map(lambda us: np.timedelta64(us, "us")), st.just(np.datetime64("NaT")),
    st.lists(st.floats(allow_nan=False, width=32), max_size=3).map(np.array),
    st.lists(st.lists(st.integers(-9, 9), min_size=2, max_size=2), max_size=2).map(np.array))
_PANDAS = st.one_of(
    st.builds(lambda moment, nanos: pd.Timestamp(moment) + pd.Timedelta(nanoseconds=nanos),
              st.datetimes(datetime(1700, 1, 1), datetime(2200, 1, 1)), st.integers(0, 999)),
    st.builds(lambda moment: pd.Timestamp(moment), st.datetimes(timezones=_ZONES).filter(
        lambda moment: 1700 < moment.year < 2200)),
    st.integers(-2**62, 2**62).map(lambda ns: pd.Timedelta(nanoseconds=ns)), st.just(pd.NaT), st.just(pd.NA))


def _text(surrogates):
    return st.text(max_size=6) if surrogates else st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)


def _leaves(unpicklable, surrogates):
    leaves = st.one_of(
        st.none(), st.booleans(), st.integers(-2**80, 2**80), st.floats(), _text(surrogates),
        st.datetimes(), st.datetimes(timezones=_ZONES), st.dates(), st.times(), st.timedeltas(),
        st.integers(-2**60, 2**60).map(lambda micros: Timestamp(micros=micros)),
        st.decimals(), st.uuids(), st.binary(max_size=6), st.binary(max_size=6).map(bytearray),
        st.sampled_from(Mode), _NUMPY, _PANDAS,
        st.frozensets(st.integers(-5, 5) | st.text(max_size=2), max_size=3), st.sets(st.integers(-5, 5), max_size=3),
        st.just(deep(MAX_DEPTH + 3)))
    if unpicklable:
        leaves = leaves | st.sampled_from([threading.Lock(), memoryview(b"\x00view"), Unprintable()])
    return leaves


def _keys(surrogates):
    return st.one_of(_text(surrogates), st.integers(-3, 3), st.none(), st.booleans(), st.floats(allow_nan=False),
                     st.tuples(st.integers(-3, 3), _text(surrogates)), st.dates(), st.uuids(), st.sampled_from(Mode))


def zoo_values(unpicklable=False, surrogates=False):
    """Any value a record may hold, nested a few levels."""
    return st.recursive(
        _leaves(unpicklable, surrogates),
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.lists(children, max_size=3).map(tuple),
            st.dictionaries(_keys(surrogates), children, max_size=3),
            st.builds(Reading, children, st.sampled_from(["C", "%"])), st.builds(Sample, children, children),
            st.builds(lambda a, b: beam.Row(a=a, b=b), children, children)),
        max_leaves=6)


def zoo_records(unpicklable=False, surrogates=False):
    """A record: a dict of text fields (and now and then other keys) holding zoo values."""
    fields = st.dictionaries(_text(surrogates), zoo_values(unpicklable, surrogates), max_size=4)
    return st.one_of(fields, st.builds(lambda record, key, value: {**record, key: value}, fields, _keys(surrogates),
                                       zoo_values(unpicklable, surrogates)))
