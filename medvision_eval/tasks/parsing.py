"""Answer parsers. Pure functions: text in, :class:`Prediction` out, never an exception.

``parse_last_k`` is MedVision v1 (``parser_last_k_nums`` in ``medvision_utils.py``, the same
``extract_last_k_nums`` in ``utils/parse_utils.py`` that produced the paper's tables): find every
match of ``-?\\d+\\.?\\d*`` in the whole text, keep the last k, convert each with ``np.float32``.
Its quirks are kept on purpose: ``.5`` -> 5, ``1e-3`` -> 1, -3, ``10-12`` -> 10, -12,
``1,234`` -> 1, 234, pixel answers accepted, nothing range-checked.

``parse_strict`` is the ``corrected`` parser: only the first ``<answer>...</answer>`` counts;
numbers may use scientific notation and leading-dot decimals; a unit after a number is
converted (cm -> mm) or rejected (pixels); ranges, a wrong count of numbers, non-finite values,
negative sizes and (for boxes) values outside [0, 1] or inverted corners are ``malformed``.

Both parsers run in linear time on any input (no backtracking pattern can scan the rest of the
text from every start position), and a number that overflows float32 -- the precision the
metrics are computed in -- or float64 is ``malformed``, never ``ok`` with an infinite value.
v1 let such a number through as ``inf``; under ``paper`` it is counted as a parse failure, so
every table stays finite (strict JSON) and the success rate shows it.
"""

from __future__ import annotations

import math
import re
from array import array
from dataclasses import dataclass

import numpy as np

from ..schema import ParseStatus, Prediction

V1_NUMBER = re.compile(r"-?\d+\.?\d*")

REFUSAL = re.compile(
    r"\b(?:i\s+(?:am|'m)\s+(?:sorry|unable|not\s+able)|i\s+(?:cannot|can't|can\s+not|won't)|"
    r"unable\s+to|not\s+possible\s+to|cannot\s+(?:determine|provide|estimate|measure|be\s+determined)|"
    r"as\s+an\s+ai|i\s+(?:must\s+)?decline)",
    re.IGNORECASE,
)

# The first "<answer>" and the first "</answer>" after it, found with two linear scans.
# (``<answer>(.*?)</answer>`` is quadratic: on "<answer>" * N every opening tag scans to the end.)
ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
FLOAT32_MAX = float(np.finfo(np.float32).max)

# A strict number: optional sign, digits with optional decimals or a leading-dot decimal,
# optional exponent; not glued to a preceding letter/digit/dot (so "x1" or "T2" is no number).
STRICT_NUMBER = re.compile(
    r"(?<![\w.])(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
    r"(?P<unit>\s*(?:%|°|[a-zA-Zµ]+\b))?"
)
RANGE_AFTER = re.compile(r"\s*(?:-|–|—|~|to\b)\s*[-+]?(?:\d|\.\d)", re.IGNORECASE)

# Unit words after a number under the strict parser: factor to the task's unit, or None = reject.
UNIT_FACTORS: dict[str, dict[str, float | None]] = {
    "mm": {"mm": 1.0, "millimeter": 1.0, "millimeters": 1.0, "millimetre": 1.0, "millimetres": 1.0,
           "cm": 10.0, "centimeter": 10.0, "centimeters": 10.0, "centimetre": 10.0, "centimetres": 10.0,
           "px": None, "pixel": None, "pixels": None},
    "degree": {"°": 1.0, "deg": 1.0, "degree": 1.0, "degrees": 1.0,
               "rad": None, "radian": None, "radians": None},
    "relative": {"px": None, "pixel": None, "pixels": None, "%": None},
}
UNIT_FACTORS["angle-or-length"] = {**UNIT_FACTORS["mm"], **UNIT_FACTORS["degree"]}
# A length unit on an angle (or a degree on a length) is the wrong quantity: rejected.
_LENGTH_WORDS = [w for w, f in UNIT_FACTORS["mm"].items() if f is not None]
_ANGLE_WORDS = [w for w, f in UNIT_FACTORS["degree"].items() if f is not None]
UNIT_FACTORS["degree"].update(dict.fromkeys(_LENGTH_WORDS + ["px", "pixel", "pixels"]))
UNIT_FACTORS["mm"].update(dict.fromkeys(_ANGLE_WORDS))


def _empty(text: str | None) -> bool:
    return text is None or not text.strip()


def _failure(status: ParseStatus, detail: str) -> Prediction:
    return Prediction(status=status, values=None, detail=detail)


def _float32(token: str) -> float:
    """v1 converts each matched string with ``np.float32`` (overflow gives inf; callers reject it)."""
    with np.errstate(over="ignore"):
        return float(np.float32(token))


def answer_body(text: str, *, ignore_case: bool = True) -> str | None:
    """What the first ``<answer>...</answer>`` pair encloses, or None; linear time.

    Same result as ``re.search(r"<answer>(.*?)</answer>", text, re.S | (re.I if ignore_case else 0))``:
    if the first opening tag has no closing tag after it, no later one has either.
    """
    if ignore_case:
        opening = ANSWER_OPEN.search(text)
        start = -1 if opening is None else opening.end()
        closing = ANSWER_CLOSE.search(text, start) if start >= 0 else None
        return None if closing is None else text[start : closing.start()]
    start = text.find("<answer>")
    if start < 0:
        return None
    start += len("<answer>")
    end = text.find("</answer>", start)
    return None if end < 0 else text[start:end]


def overflows(value: float) -> bool:
    """Infinite, NaN, or too large for float32 (the metrics' precision): never an ``ok`` parse."""
    return _overflows(value)


def _overflows(value: float) -> bool:
    """Infinite, NaN, or too large for float32 (the metrics' precision)."""
    return not math.isfinite(value) or abs(value) > FLOAT32_MAX


def _float32_all(tokens: list[str]) -> tuple[float, ...]:
    """``_float32`` of each token, fast: ``np.float32(str)`` rounds the string to a double and
    the double to float32 (inf beyond its range), exactly what ``array('f', doubles)`` does."""
    return tuple(array("f", [float(t) for t in tokens]))


def parse_last_k(text: str | None, k: int) -> Prediction:
    """MedVision v1 parser: the last ``k`` matches of ``-?\\d+\\.?\\d*`` anywhere in ``text``."""
    if _empty(text):
        return _failure(ParseStatus.missing, "empty answer")
    try:
        tokens = V1_NUMBER.findall(text)
    except Exception as exc:  # pragma: no cover - re on str does not raise; belt and braces
        return _failure(ParseStatus.malformed, f"regex failed: {exc}")
    if len(tokens) < k:
        if not tokens and REFUSAL.search(text):
            return _failure(ParseStatus.refused, "refusal, no numbers")
        return _failure(ParseStatus.missing, f"{len(tokens)} numbers found, {k} needed")
    values = _float32_all(tokens[-k:])
    bad = [t for t, v in zip(tokens[-k:], values) if _overflows(v)]
    if bad:
        shown = bad[0] if len(bad[0]) <= 24 else f"{bad[0][:20]}… ({len(bad[0])} characters)"
        return _failure(ParseStatus.malformed, f"number overflows float32: {shown}")
    return Prediction(status=ParseStatus.ok, values=values)


def parse_last_k_many(texts: list[str], k: int) -> tuple[list[Prediction | None], np.ndarray]:
    """:func:`parse_last_k` of many answers at once, for the score step.

    Returns ``(failures, values)``: ``values`` is an (n, k) float64 array holding each ``ok``
    parse's float32 values (NaN rows elsewhere), and ``failures[i]`` is ``None`` for an ``ok``
    parse or exactly ``parse_last_k(texts[i], k)`` otherwise. The common case (k or more numbers,
    none overflowing) converts every answer's last k tokens in one pass -- the same
    ``str -> double -> float32`` rounding as :func:`_float32_all` -- and any other answer
    (empty, too few numbers, a refusal, an overflow) goes through :func:`parse_last_k` itself,
    so statuses, values and details are the same as parsing one answer at a time.
    """
    if k < 1:
        raise ValueError(f"parse_last_k_many needs k >= 1, got {k}")
    n = len(texts)
    findall = V1_NUMBER.findall
    tails: list[str] = []
    rows: list[int] = []
    failures: list[Prediction | None] = [None] * n
    for i, text in enumerate(texts):
        tokens = findall(text)
        if len(tokens) >= k:
            tails += tokens[-k:]
            rows.append(i)
        else:
            failures[i] = parse_last_k(text, k)
    values = np.full((n, k), np.nan)
    if rows:
        parsed = np.frombuffer(array("f", map(float, tails)), dtype=np.float32).reshape(len(rows), k)
        index = np.asarray(rows, dtype=np.int64)
        finite = np.isfinite(parsed).all(axis=1)
        values[index[finite]] = parsed[finite]
        for i in index[~finite].tolist():  # an overflow: parse_last_k words the detail
            failures[i] = parse_last_k(texts[i], k)
    return failures, values


@dataclass(frozen=True)
class StrictRules:
    """What the strict parser accepts for one task family."""

    k: int
    unit: str  # "relative" | "mm" | "degree"
    nonnegative: bool = True
    box: bool = False  # values in [0, 1], x1 < x2, y1 < y2


def _convert(value: float, unit_word: str | None, unit: str) -> tuple[float | None, str | None]:
    if not unit_word:
        return value, None
    word = unit_word.strip().lower()
    factors = UNIT_FACTORS.get(unit, {})
    if word not in factors:
        # A word after a number that is not a unit ("and", "for"): the number stands alone.
        return value, None
    factor = factors[word]
    if factor is None:
        return None, f"unit {word!r} not accepted for {unit} answers"
    return value * factor, None


def parse_strict(text: str | None, rules: StrictRules) -> Prediction:
    """The ``corrected`` parser (see module docstring). Never raises."""
    if _empty(text):
        return _failure(ParseStatus.missing, "empty answer")
    body = answer_body(text)
    if body is None:
        if REFUSAL.search(text) and not STRICT_NUMBER.search(text):
            return _failure(ParseStatus.refused, "refusal, no <answer> tag")
        if STRICT_NUMBER.search(text):
            return _failure(ParseStatus.malformed, "no <answer>...</answer> tag")
        return _failure(ParseStatus.missing, "no <answer> tag and no numbers")
    numbers = list(STRICT_NUMBER.finditer(body))
    if not numbers:
        if REFUSAL.search(body) or REFUSAL.search(text):
            return _failure(ParseStatus.refused, "refusal inside <answer>")
        return _failure(ParseStatus.missing, "no number inside <answer>")
    values: list[float] = []
    for m in numbers:
        if RANGE_AFTER.match(body, m.end("num")) or (m.group("unit") and RANGE_AFTER.match(body, m.end())):
            return _failure(ParseStatus.malformed, f"range in answer: {body[m.start():m.end() + 12][:60]!r}")
        try:
            value = float(m.group("num"))
        except ValueError:  # pragma: no cover - the regex only matches float syntax
            return _failure(ParseStatus.malformed, f"not a number: {m.group('num')[:40]!r}")
        converted, problem = _convert(value, m.group("unit"), rules.unit)
        if problem is not None:
            return _failure(ParseStatus.malformed, problem)
        values.append(converted)
    if len(values) != rules.k:
        return _failure(ParseStatus.malformed, f"{len(values)} numbers in <answer>, {rules.k} expected")
    if any(_overflows(v) for v in values):
        return _failure(ParseStatus.malformed, "non-finite value or a number that overflows float32")
    if rules.nonnegative and any(v < 0 for v in values):
        return _failure(ParseStatus.malformed, "negative value")
    if rules.box:
        x1, y1, x2, y2 = values
        if any(v < 0.0 or v > 1.0 for v in values):
            return _failure(ParseStatus.malformed, "box coordinate outside [0, 1]")
        if not (x1 < x2 and y1 < y2):
            return _failure(ParseStatus.malformed, "inverted or zero-area box")
    return Prediction(status=ParseStatus.ok, values=tuple(values))
