"""core/wire.py: a record to strict JSON and back, with the one rule for numbers that are not finite."""

from __future__ import annotations

import json
import math
import re

import pytest

from lookinside.core.errors import BadInput
from lookinside.core.records import Candidate, NextToken, Piece
from lookinside.core.wire import from_wire, to_wire


def _record(logit: float, prob: float = 0.5) -> NextToken:
    piece = Piece(0, 5, "▁hi", " hi", "text")
    return NextToken("m", "hi", (piece,), {"logits": [1, 1, 9]}, [Candidate(1, 7, " x", prob, logit)], None, None)


def test_a_non_finite_number_is_null_said_in_nulls_and_comes_back():
    record = _record(-math.inf, math.nan)
    wire = json.loads(json.dumps(to_wire(record), allow_nan=False))  # strict JSON: no NaN, no Infinity
    assert wire["top"][0]["logit"] is None and wire["top"][0]["prob"] is None
    assert wire["nulls"] == {"top[0].logit": "-Infinity", "top[0].prob": "NaN"}
    back = from_wire(NextToken, wire)
    assert back.top[0].logit == -math.inf and math.isnan(back.top[0].prob)
    assert back.tokens == record.tokens and back.shapes == record.shapes


def test_a_finite_record_has_no_nulls_and_round_trips_equal():
    record = _record(3.25)
    assert "nulls" not in to_wire(record) and from_wire(NextToken, to_wire(record)) == record


@pytest.mark.parametrize("nulls, says", [
    ({"top[0].logit": "Huge"}, "cannot be 'Huge'"),
    ({"top[3].logit": "NaN"}, "there is no 'top[3].logit'"),
    ({"top[0].token": "NaN"}, "is not null"),
    ("NaN", "must map places"),
])
def test_a_nulls_object_that_does_not_fit_is_one_line(nulls, says):
    wire = to_wire(_record(math.nan))
    wire["nulls"] = nulls
    with pytest.raises(BadInput, match=re.escape(says)):
        from_wire(NextToken, wire)
