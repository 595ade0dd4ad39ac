"""Every parser of every task under every protocol is linear-time on 1 MB adversarial answers,
and a number overflowing float32/float64 is ``malformed``, never ``ok`` with an infinite value."""

from __future__ import annotations

import math
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvision_eval.plugins import Registry, load_target
from medvision_eval.protocol import PROTOCOLS, get_protocol
from medvision_eval.schema import ParseStatus
from medvision_eval.tasks.parsing import StrictRules, answer_body, parse_last_k, parse_strict

MB = 1 << 20


def _fill(unit: str) -> str:
    return (unit * (MB // len(unit) + 1))[:MB]


ADVERSARIAL = {
    "open tags": _fill("<answer>"),
    "open tags, upper case": _fill("<ANSWER>"),
    "digits": _fill("7"),
    "minus signs": _fill("-"),
    "dots": _fill("."),
    "digits and dots": _fill("1."),
    "minus digit": _fill("-1"),
    "exponents": _fill("1e"),
    "whitespace": _fill(" \n\t"),
    "nested tags": _fill("<answer><answer>1"),
    "nested closed tags": _fill("<answer><answer>1</answer>"),
    "tag then digits": "<answer>" + _fill("9")[:-8],
    "tag then spaced numbers": "<answer>" + _fill("1 "),
    "number then spaces": "<answer>1" + _fill(" ")[:-20] + "</answer>",
    "refusal fragments": _fill("i am "),
    "number ranges": _fill("1 - "),
    "units": _fill("1 mm "),
    "closing tags": _fill("</answer>"),
}


def all_tasks():
    registry = Registry.discover()
    out = []
    for name, provided in sorted(registry.tasks.items()):
        cls = load_target(provided.entry.target)
        for protocol in sorted(PROTOCOLS):
            try:
                task = cls(get_protocol(protocol))
            except ValueError:  # the task declares it does not support this protocol
                continue
            out.append(pytest.param(task, id=f"{name}-{protocol}"))
    return out


@pytest.mark.parametrize("task", all_tasks())
def test_every_parser_is_linear_on_1mb_adversarial_answers(task):
    slowest = (0.0, "")
    for label, text in ADVERSARIAL.items():
        assert len(text) >= MB - 16
        # CPU time of this thread: other processes on a loaded machine do not inflate it.
        t0 = time.thread_time()
        prediction = task.parse(text)
        spent = time.thread_time() - t0
        slowest = max(slowest, (spent, label))
        assert prediction.status in set(ParseStatus)
        if prediction.status == ParseStatus.ok:
            assert all(math.isfinite(v) for v in prediction.values)
        else:
            assert prediction.values is None
            assert len(prediction.detail) < 400  # a detail never copies the megabyte
    # The quadratic parser took 85 s at 256 kB; linear ones take milliseconds. A generous bound.
    assert slowest[0] < 1.0, f"{slowest[1]!r} took {slowest[0]:.2f} s of CPU"


@pytest.mark.parametrize("text", ["1" * 41, "9" * 60, "1" * 400, "0.1, 0.2, 0.3, " + "9" * 41])
def test_last_k_overflow_is_malformed(text):
    prediction = parse_last_k(text, 1)
    assert prediction.status == ParseStatus.malformed
    assert prediction.values is None and "overflow" in prediction.detail


def test_last_k_keeps_finite_float32_values():
    assert parse_last_k("3.4e38", 2).values == pytest.approx((3.4, 38.0), rel=1e-6)  # v1 splits 'e'
    assert parse_last_k("1" * 38, 1).status == ParseStatus.ok  # 1.1e37 fits float32


@pytest.mark.parametrize(
    "text",
    ["<answer>" + "1" * 41 + ", 5</answer>", "<answer>1e39, 5</answer>", "<answer>1e400, 5</answer>",
     "<answer>" + "9" * 400 + " mm, 5</answer>"],
)
def test_strict_overflow_is_malformed(text):
    prediction = parse_strict(text, StrictRules(k=2, unit="mm"))
    assert prediction.status == ParseStatus.malformed and prediction.values is None


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_tl_size_41_digit_answer_is_malformed_under_every_protocol(protocol):
    from medvision_eval.tasks.tl_size import TumorLesionSizeTask

    task = TumorLesionSizeTask(get_protocol(protocol))
    body = f"{'1' * 41}, 12.5"
    text = f"<answer>{body}</answer>" if protocol != "paper" else body
    assert task.parse(text).status == ParseStatus.malformed


OLD_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["<answer>", "</answer>", "<ANSWER>", "</Answer>", "1", " ", "x", "\n", "<", "/"]),
                max_size=30).map("".join))
def test_answer_body_equals_the_lazy_regex(text):
    match = OLD_TAG.search(text)
    assert answer_body(text) == (match.group(1) if match else None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<answer>", "</answer>", "<ANSWER>", "</Answer>", "1", " ", "x", "\n", "<", "/"]),
                max_size=30).map("".join))
def test_case_sensitive_answer_body_equals_the_later_official_regex(text):
    match = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    assert answer_body(text, ignore_case=False) == (match.group(1) if match else None)
