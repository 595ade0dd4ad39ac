"""The score step's bulk kernels give exactly what their one-at-a-time originals give.

``parse_last_k_many`` / ``parse_last_k_spans`` against ``parse_last_k`` answer by answer, over
hostile texts (separators and newlines inside answers, digits of other scripts, lone surrogates,
huge and long numbers, empty answers, JSON escapes hiding digits)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvision_eval.schema import ParseStatus
from medvision_eval.tasks.parsing import parse_last_k, parse_last_k_many, parse_last_k_spans


def assert_same_as_one_by_one(texts, k, failures, values):
    assert len(failures) == len(texts) and values.shape == (len(texts), k)
    for i, text in enumerate(texts):
        one = parse_last_k(text, k)
        if failures[i] is None:
            assert one.status == ParseStatus.ok, (text, one)
            assert one.values == tuple(values[i].tolist()), (text, one, values[i])
            # bit for bit (the sign of zero too)
            assert np.array(one.values, dtype=np.float64).tobytes() == values[i].tobytes()
        else:
            assert failures[i] == one, (text, failures[i], one)
            assert np.isnan(values[i]).all()


NUMBER = st.one_of(
    st.from_regex(r"-?[0-9]{1,22}(\.[0-9]{0,22})?", fullmatch=True),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda v: f"{v:.9g}"),
    st.sampled_from(["9" * 39, "3.4028235677973366e38", "340282356779733661637539395458142568448",
                     "340282346638528859811704183484516925440", "1" + "0" * 400, "0" * 30 + "1", "-0", "-0.",
                     "0.000000000000000000001", "123456789012345.6", "12345678901234.56", "1234567890123456"]),
)
ODD = st.sampled_from(["\n", "\x00", "\\", "\\u0031", "..", ".", "-", "--", "e", "E+", "٣", "１", "७", "𝟙",
                       "\ud800", "\udfff", "\x1c", "\u2028", " ", ",", "[", "]", "I cannot determine", "I'M SORRY",
                       "K", "\u212a", "as an AI", "é"])
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789.-\n\x00\\ e,٣", max_size=40),
    st.lists(st.one_of(NUMBER, ODD), max_size=10).map("".join),
    st.lists(st.one_of(NUMBER, ODD), max_size=10).map(" ".join),
    st.just(""),
    st.just("   \n\t"),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(HOSTILE_TEXT, max_size=16), st.integers(min_value=1, max_value=5))
def test_parse_last_k_many_is_parse_last_k_of_each_answer(texts, k):
    failures, values = parse_last_k_many(texts, k)
    assert_same_as_one_by_one(texts, k, failures, values)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(NUMBER, min_size=1, max_size=6).map(", ".join), max_size=30),
       st.integers(min_value=1, max_value=4))
def test_bulk_decimal_conversion_rounds_as_str_to_double_to_float32(texts, k):
    failures, values = parse_last_k_many(texts, k)
    assert_same_as_one_by_one(texts, k, failures, values)


def _json_bytes(text: str, ascii_only: bool) -> bytes:
    return json.dumps(text, ensure_ascii=ascii_only)[1:-1].encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(HOSTILE_TEXT, st.booleans()), max_size=16), st.integers(min_value=1, max_value=5),
       st.binary(max_size=4))
def test_parse_last_k_spans_of_json_escaped_answers_is_parse_last_k(items, k, filler):
    """Answers as JSON string bodies inside one buffer (as they stand in responses.jsonl, with
    other bytes between them): a digit hidden in an escape (``\\u0031``) or in another script's
    digits is found, because such rows are handed to ``text_of``."""
    texts = [text for text, _ in items]
    pieces, starts, ends = [], [], []
    at = 0
    for text, ascii_only in items:
        body = _json_bytes(text, ascii_only)
        pieces.append(filler + b'"')
        at += len(filler) + 1
        starts.append(at)
        pieces.append(body)
        at += len(body)
        ends.append(at)
        pieces.append(b'"')
        at += 1
    data = b"".join(pieces)
    asked = []

    def text_of(i: int) -> str:
        asked.append(i)
        return texts[i]

    failures, values = parse_last_k_spans(data, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64), k,
                                          text_of)
    assert_same_as_one_by_one(texts, k, failures, values)
    for i in range(len(texts)):
        if failures[i] is None and i not in asked:  # taken from the bytes: they must be the text
            assert _json_bytes(texts[i], True) == _json_bytes(texts[i], False) == data[starts[i]:ends[i]]


def test_parse_last_k_spans_ranges_may_touch_and_overlap():
    data = b"1 2 3 4 5"
    failures, values = parse_last_k_spans(data, np.array([0, 0, 4]), np.array([5, 9, 9]), 2, lambda i: None)
    assert failures == [None, None, None]
    assert values.tolist() == [[2.0, 3.0], [4.0, 5.0], [4.0, 5.0]]
    # "12" split in two ranges is two numbers, not one
    failures, values = parse_last_k_spans(b"12", np.array([0, 1]), np.array([1, 2]), 1, lambda i: None)
    assert values.tolist() == [[1.0], [2.0]]


def test_bulk_parsers_keep_v1_quirks_and_wording():
    texts = ["1e-3 .5 10-12", "1.2.3.4", "1..2 -.5 5.-3", "x " + "9" * 60 + " 1 2 3", "I cannot tell", "",
             "  ", "1, 234", "٣ ٤ 5 6", "1 2 3 \ud800 4", "-0 -0. 0.0 -000.000"]
    failures, values = parse_last_k_many(texts, 4)
    assert_same_as_one_by_one(texts, 4, failures, values)
    assert values[0].tolist() == [-3.0, 5.0, 10.0, -12.0]
    assert failures[1].detail == "2 numbers found, 4 needed"
    assert failures[3].detail.startswith("number overflows float32")
    assert failures[4].status == ParseStatus.refused and failures[5].detail == "empty answer"
    assert failures[6].detail == "empty answer" and failures[7].detail == "2 numbers found, 4 needed"
    assert failures[8] is None  # Arabic-Indic digits are \d to v1
    assert np.signbit(values[10]).tolist() == [True, True, False, True]


def test_bulk_parsers_reject_k_below_one():
    with pytest.raises(ValueError, match="k >= 1"):
        parse_last_k_many(["1"], 0)
    with pytest.raises(ValueError, match="k >= 1"):
        parse_last_k_spans(b"1", np.array([0]), np.array([1]), 0, lambda i: "1")


def test_bulk_parser_takes_answers_that_are_not_str_one_by_one():
    failures, values = parse_last_k_many([None, "1 2"], 2)  # type: ignore[list-item]
    assert failures[0] == parse_last_k(None, 2) and failures[1] is None and values[1].tolist() == [1.0, 2.0]
