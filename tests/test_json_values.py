"""The value mapping of the JSON encoders (json_values): the user guide's table is checked row by row against
the code, and hypothesis shows that the mapping is total: any value is written, or refused with an
Unmappable naming its field, and the dead letters' text is made of anything without raising."""
import datetime
import json
import os
import re
import threading
from datetime import date, time, timedelta, timezone
from decimal import Decimal
from http import HTTPStatus
from uuid import UUID

import apache_beam as beam
import hypothesis
import numpy as np
import pandas as pd
import pytest
from hypothesis import strategies as st

from connector.beam import json_values
from connector.beam.json_values import EPOCH_MS, ISO, MAX_DEPTH, Unmappable, record_text, write_json
from zoo_support import deep, zoo_records, zoo_values

USER_GUIDE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "user-guide.md")
# What the table's examples may name.
NAMESPACE = {"datetime": datetime.datetime, "date": date, "time": time, "timedelta": timedelta, "timezone": timezone,
             "Decimal": Decimal, "UUID": UUID, "HTTPStatus": HTTPStatus, "np": np, "pd": pd, "beam": beam}


def _table_rows():
    """(value column, example, written as) of the user guide's "Values in JSON" table."""
    with open(USER_GUIDE, encoding="utf-8") as handle:
        section = handle.read().split("### Values in JSON", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("value", "---"):
            rows.append((cells[0], _code(cells[1]), cells[2] if cells[2] == "refused" else _code(cells[2])))
    return rows


def _code(cell):
    """The text of a cell's code span (`...`), or None for an empty cell."""
    match = re.fullmatch(r"`(.*)`", cell)
    assert match or not cell, cell
    return match.group(1).replace("\\\\", "\\") if match else None


ROWS = _table_rows()


def test_the_table_lists_every_kind_of_value():
    assert len(ROWS) >= 25 and sum(written == "refused" for _, _, written in ROWS) == 5


@pytest.mark.parametrize("kind, example, written", [row for row in ROWS if row[1]], ids=[row[0] for row in ROWS
                                                                                       if row[1]])
def test_each_row_of_the_user_guides_table_is_what_the_encoders_write(kind, example, written):
    value = eval(example, dict(NAMESPACE))  # noqa: S307 - the user guide's own examples
    timestamps = EPOCH_MS if "epoch-ms" in kind else ISO
    if written == "refused":
        with pytest.raises(Unmappable) as refused:
            write_json({"field": value}, timestamps)
        assert "(field field" in str(refused.value)
        return
    assert write_json({"v": value}, timestamps) == b'{"v":' + written.encode() + b"}"
    assert write_json({"v": value, "gone": None}, timestamps) == b'{"v":' + written.encode() + b',"gone":null}'
    # The walk the encoders take for what orjson refuses writes the same.
    assert walked({"v": value}, timestamps) == b'{"v":' + written.encode() + b"}"


@pytest.mark.parametrize("value, problem", [
    (float("inf"), "NaN/Infinity"), (np.float64("nan"), "NaN/Infinity"), (Decimal("NaN"), "Decimal NaN"),
    (np.array([1.0, float("nan")]), "NaN/Infinity"), (deep(MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
    ({1: "a", "1": "b"}, "same text '1'"), ("\ud800", "not valid Unicode"), (threading.Lock(), "type lock"),
    (datetime.datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))), "outside years 1 to 9999"),
])
def test_what_json_cannot_hold_is_refused_naming_the_field_and_the_type(value, problem):
    with pytest.raises(Unmappable) as refused:
        write_json({"outer": [0, {"inner": value}]})
    assert problem in str(refused.value) and "(field outer.1.inner" in str(refused.value)


def test_nesting_up_to_the_limit_is_written_and_a_circular_record_refused():
    assert write_json({"deep": deep(MAX_DEPTH - 1)}).count(b"[") == MAX_DEPTH - 1
    assert write_json({"deep": deep(MAX_DEPTH - 1), "gone": None}).count(b"[") == MAX_DEPTH - 1
    circular = {}
    circular["self"] = circular
    with pytest.raises(Unmappable, match=r"circular.*field self\.self\.self\.self\.\(\d+ more\)"):
        write_json(circular)


def test_epoch_milliseconds_floor_what_is_finer():
    moments = [datetime.datetime(1969, 12, 31, 23, 59, 59, 999_999), pd.Timestamp("2024-01-01T00:00:00.001999999"),
               np.datetime64("2024-01-01T00:00:00.0015"), beam.utils.timestamp.Timestamp(micros=1_500)]
    assert json.loads(write_json(moments, EPOCH_MS)) == [-1, 1704067200001, 1704067200001, 1]


def test_keys_that_are_not_text():
    record = {True: 1, 2.5: 2, date(2024, 1, 1): 3, Decimal("1.50"): 4, b"\x00": 5, UUID(int=1): 6, 2**70: 7,
              (1, (2, "x")): 8, HTTPStatus.OK: 9}
    assert json.loads(write_json(record)) == {
        "true": 1, "2.5": 2, "2024-01-01": 3, "1.50": 4, "AA==": 5, "00000000-0000-0000-0000-000000000001": 6,
        str(2**70): 7, '[1,[2,"x"]]': 8, "200": 9}


def test_record_text_sorts_keys_and_writes_what_the_encoders_refuse_as_text():
    class Unprintable:
        def __str__(self):
            raise RuntimeError("no")

    record = {"b": float("nan"), "a": {1: "x", "1": "y"}, "c": Unprintable(), "d": Decimal("1.50"), "e": "\ud800",
              "f": deep(MAX_DEPTH + 5), "g": datetime.datetime(2024, 1, 1)}
    text = record_text(record)
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed)
    assert parsed["a"] == [["1", "x"], ["1", "y"]] and parsed["c"] == "<Unprintable>" and parsed["e"] == "\ud800"
    assert parsed["b"] != parsed["b"] and parsed["g"] == "2024-01-01T00:00:00.000Z"
    assert f"nested deeper than {MAX_DEPTH}" in text
    assert record_text({"d": Decimal("1.50")}) == '{"d":1.50}'


@hypothesis.settings(max_examples=300, deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(record=zoo_records(unpicklable=True, surrogates=True), timestamps=st.sampled_from([ISO, EPOCH_MS]))
def test_every_value_is_written_or_refused_naming_its_field_and_its_text_is_always_made(record, timestamps):
    try:
        written = write_json(record, timestamps)
    except Unmappable as refused:
        assert str(refused)
    else:  # the dead letters' text reads back as what the encoders wrote
        assert json.loads(written) == json.loads(record_text(record, timestamps))
    assert isinstance(json.loads(record_text(record, timestamps)), dict | list | str)


def walked(value, timestamps=ISO):
    """What the walk writes, which write_json takes when orjson refuses a record."""
    return json_values._write_walked(json_values.json_ready(value, timestamps))


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(value=zoo_values())
def test_the_fast_path_and_the_walk_write_the_same(value):
    """orjson on the record as it is, and the walk a record takes when orjson refuses it (an integer
    beyond 64 bits, a key that is not text, elsewhere in the record), agree byte for byte."""
    try:
        fast = write_json({"v": value, "gone": None})
    except Unmappable:
        with pytest.raises(Unmappable):
            walked({"v": value})
        with pytest.raises(Unmappable):
            write_json({"v": value, "big": 2**70})
        return
    assert walked({"v": value, "gone": None}) == fast
    assert write_json({"v": value, "gone": None, 1: 2**70}) == fast[:-1] + b',"1":' + str(2**70).encode() + b"}"
