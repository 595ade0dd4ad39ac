"""Parsers: v1 quirks reproduced under ``paper``, strict rules under ``corrected``, and no input
crashes either (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvision_eval.protocol import get_protocol
from medvision_eval.schema import ParseStatus
from medvision_eval.tasks.ad_measure import AngleDistanceTask
from medvision_eval.tasks.detection import DetectionTask
from medvision_eval.tasks.parsing import StrictRules, parse_last_k, parse_strict
from medvision_eval.tasks.tl_size import TumorLesionSizeTask

TASKS = [cls(get_protocol(p)) for cls in (DetectionTask, TumorLesionSizeTask, AngleDistanceTask)
         for p in ("paper", "corrected")]


@pytest.mark.parametrize(
    ("text", "k", "values"),
    [
        ("0.1, 0.2, 0.5, 0.6", 4, (0.1, 0.2, 0.5, 0.6)),
        (".5", 1, (5.0,)),  # leading-dot decimal loses its dot
        ("1e-3", 2, (1.0, -3.0)),  # scientific notation splits
        ("10-12", 2, (10.0, -12.0)),  # a range becomes a negative number
        ("1,234 mm", 2, (1.0, 234.0)),  # thousands separator splits
        ("In 2 steps: 12.5, 7.25. Done in 3 s", 2, (7.25, 3.0)),  # trailing numbers shift the window
        ("5.", 1, (5.0,)),
        ("-0.25", 1, (-0.25,)),  # negative A/D answers count as parsed (parse_outputs path)
    ],
)
def test_last_k_reproduces_v1_quirks(text, k, values):
    pred = parse_last_k(text, k)
    assert pred.status == ParseStatus.ok
    assert pred.values == pytest.approx(values, rel=1e-6)


def test_last_k_converts_with_float32():
    pred = parse_last_k("0.1", 1)
    assert pred.values == (float.fromhex("0x1.99999a0000000p-4"),)  # float32(0.1), not 0.1
    # np.float32 overflows to inf as in v1; counted as malformed so every table stays finite
    overflow = parse_last_k("9" * 60, 1)
    assert overflow.status == ParseStatus.malformed and overflow.values is None


@pytest.mark.parametrize(
    ("text", "status"),
    [(None, ParseStatus.missing), ("", ParseStatus.missing), ("   ", ParseStatus.missing),
     ("0.1, 0.2, 0.3", ParseStatus.missing), ("I'm sorry, I cannot help with that.", ParseStatus.refused),
     ("the box", ParseStatus.missing)],
)
def test_last_k_failures(text, status):
    pred = parse_last_k(text, 4)
    assert pred.status == status and pred.values is None and pred.detail


BOX = StrictRules(k=4, unit="relative", box=True)
MM2 = StrictRules(k=2, unit="mm")
AD = StrictRules(k=1, unit="angle-or-length")


@pytest.mark.parametrize(
    ("text", "rules", "status", "values"),
    [
        ("<think>x</think><answer>0.1, 0.2, 0.5, 0.6</answer>", BOX, ParseStatus.ok, (0.1, 0.2, 0.5, 0.6)),
        ("<answer>.1, 2e-1, 5E-1, 0.6</answer>", BOX, ParseStatus.ok, (0.1, 0.2, 0.5, 0.6)),
        ("<answer>[x1=0.1, y1=0.2, x2=0.5, y2=0.6]</answer>", BOX, ParseStatus.ok, (0.1, 0.2, 0.5, 0.6)),
        ("<answer>0.5, 0.6, 0.1, 0.2</answer>", BOX, ParseStatus.malformed, None),  # inverted
        ("<answer>0.1, 0.2, 0.1, 0.6</answer>", BOX, ParseStatus.malformed, None),  # zero width
        ("<answer>12, 20, 200, 220</answer>", BOX, ParseStatus.malformed, None),  # pixel units
        ("<answer>0.1, 0.2, 0.5</answer>", BOX, ParseStatus.malformed, None),  # too few
        ("0.1, 0.2, 0.5, 0.6", BOX, ParseStatus.malformed, None),  # no tags
        ("<answer>2.5 cm, 12 mm</answer>", MM2, ParseStatus.ok, (25.0, 12.0)),
        ("<answer>10-12, 5</answer>", MM2, ParseStatus.malformed, None),  # range
        ("<answer>10 to 12 mm, 5</answer>", MM2, ParseStatus.malformed, None),
        ("<answer>30 px, 20 px</answer>", MM2, ParseStatus.malformed, None),
        ("<answer>-3, 5</answer>", MM2, ParseStatus.malformed, None),
        ("<answer>I cannot estimate this.</answer>", MM2, ParseStatus.refused, None),
        ("I am unable to measure that.", MM2, ParseStatus.refused, None),
        ("<answer></answer>", MM2, ParseStatus.missing, None),
        ("<answer>12.5°</answer>", AD, ParseStatus.ok, (12.5,)),
        ("<answer>1e1 degrees</answer>", AD, ParseStatus.ok, (10.0,)),
        ("<answer>4.2 cm</answer>", AD, ParseStatus.ok, (42.0,)),
    ],
)
def test_strict_parser(text, rules, status, values):
    pred = parse_strict(text, rules)
    assert pred.status == status, pred.detail
    if values is None:
        assert pred.values is None
    else:
        assert pred.values == pytest.approx(values)


answers = st.one_of(
    st.text(),
    st.text(alphabet="0123456789.,-+eE <>/answerthink°cmpx%", max_size=80),
    st.builds(lambda a, b: f"<answer>{a}</answer>{b}", st.text(alphabet="0123456789.,-eE cmx", max_size=40), st.text(max_size=10)),
)


@settings(max_examples=300, deadline=None)
@given(answers)
def test_parsers_never_crash(text):
    for task in TASKS:
        pred = task.parse(text)
        assert pred.status in set(ParseStatus)
        if pred.status == ParseStatus.ok:
            assert pred.values is not None and len(pred.values) == task.k
            if task.protocol.parser == "strict":
                assert all(math.isfinite(v) and v >= 0 for v in pred.values)
                if task.name == "detection":
                    x1, y1, x2, y2 = pred.values
                    assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        else:
            assert pred.values is None and pred.detail


def test_strict_ad_parser_knows_angle_from_distance_when_given_the_sample():
    from test_tasks_metrics import make_sample

    task = AngleDistanceTask(get_protocol("corrected"))
    angle = make_sample(0, "ad_measure", (12.0,), "degree", metric_type="angle")
    dist = make_sample(1, "ad_measure", (40.0,), "mm", metric_type="distance")
    assert task.parse_for(angle, "<answer>12.5 degrees</answer>").values == (12.5,)
    wrong = task.parse_for(angle, "<answer>12.5 mm</answer>")
    assert wrong.status == ParseStatus.malformed
    assert task.parse_for(dist, "<answer>4.1 cm</answer>").values == pytest.approx((41.0,))
    assert task.parse_for(dist, "<answer>41 degrees</answer>").status == ParseStatus.malformed
    assert task.parse_for(dist, "<answer>41 px</answer>").status == ParseStatus.malformed
    # without the sample (plain parse) both kinds of unit are accepted, as documented
    assert task.parse("<answer>12.5 mm</answer>").status == ParseStatus.ok
    # the paper protocol ignores units entirely, sample or not
    paper = AngleDistanceTask(get_protocol("paper"))
    assert paper.parse_for(angle, "12.5 mm").values == (12.5,)


def test_fast_float32_conversion_equals_numpy_float32_per_token():
    import random

    from medvision_eval.tasks.parsing import _float32, _float32_all

    rng = random.Random(7)
    tokens = [f"{rng.randint(0, 10 ** rng.randint(1, 12))}.{rng.randint(0, 10 ** rng.randint(0, 20))}" for _ in range(5000)]
    tokens += ["9" * 39, "-" + "9" * 45, "340282356779733661637539395458142568447", "0." + "0" * 50 + "1", "5.", "007",
               "\u0661\u0662"]
    assert list(_float32_all(tokens)) == [_float32(t) for t in tokens]
