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
from collections.abc import Callable
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
    parse or exactly ``parse_last_k(texts[i], k)`` otherwise.

    ASCII answers (nearly all) are scanned together: joined into one byte buffer, their
    ``V1_NUMBER`` matches are found with array operations (:func:`_v1_spans`), and the last k
    tokens of every answer with k or more are converted in one pass -- the same
    ``str -> double -> float32`` rounding as :func:`_float32_all`. Any other answer (not ASCII,
    where ``\\d`` also matches other scripts' digits; not a str; fewer than k numbers; a refusal;
    an overflow) goes through :func:`parse_last_k` itself, so statuses, values and details are
    the same as parsing one answer at a time.
    """
    if k < 1:
        raise ValueError(f"parse_last_k_many needs k >= 1, got {k}")
    n = len(texts)
    try:
        plain = "".join(texts).isascii()
    except TypeError:  # a None or other non-str answer
        plain = False
    scanned = texts
    if not plain:  # those answers are parsed one by one; the others are scanned together
        scanned = [text if type(text) is str and text.isascii() else "" for text in texts]
    data = ("\n" + "\n".join(scanned) + "\n").encode("ascii")
    lengths = np.fromiter(map(len, scanned), dtype=np.int64, count=n)
    starts = _packed_starts(lengths)
    failures, values, counts = _last_k_of_spans(np.frombuffer(data, dtype=np.uint8), starts, starts + lengths, k)
    if not plain:
        for i, text in enumerate(texts):
            if type(text) is not str or not text.isascii():
                failures[i] = _EXACT
    _settle(failures, values, counts, texts.__getitem__, k)
    return failures, values


def _packed_starts(lengths: np.ndarray) -> np.ndarray:
    """Where each range starts when ranges of these lengths are laid out after one separator
    byte, one separator byte between each and the next."""
    starts = np.ones(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1] + 1, out=starts[1:])
        starts[1:] += 1
    return starts


def _settle(failures: list[Prediction | None], values: np.ndarray, counts: np.ndarray,
            text_of: Callable[[int], str | None], k: int) -> None:
    """Decide every row the scan left open: ``_FEW`` (fewer than k numbers, ``counts[i]`` of
    them) as :func:`parse_last_k` words it, ``_EXACT`` by :func:`parse_last_k` itself. Rows with
    the same outcome share one :class:`Prediction` (equal to a fresh one; do not mutate it)."""
    shared: dict[tuple[ParseStatus, str], Prediction] = {}

    def failure(status: ParseStatus, detail: str) -> Prediction:
        pred = shared.get((status, detail))
        if pred is None:
            pred = shared[status, detail] = _failure(status, detail)
        return pred

    for i, f in enumerate(failures):
        if f is None:
            continue
        if f is _FEW:
            found = int(counts[i])
            if found == 0:  # parse_last_k's order: empty, then a refusal, then the count
                text = text_of(i)
                if _empty(text):
                    failures[i] = failure(ParseStatus.missing, "empty answer")
                    continue
                if REFUSAL.search(text):
                    failures[i] = failure(ParseStatus.refused, "refusal, no numbers")
                    continue
            failures[i] = failure(ParseStatus.missing, f"{found} numbers found, {k} needed")
            continue
        one = parse_last_k(text_of(i), k)
        if one.status is ParseStatus.ok:
            failures[i] = None
            values[i] = one.values
        else:
            failures[i] = one


def parse_last_k_spans(data: bytes | np.ndarray, starts: np.ndarray, ends: np.ndarray, k: int,
                       text_of: Callable[[int], str | None]) -> tuple[list[Prediction | None], np.ndarray]:
    """:func:`parse_last_k_many` of answers held as byte ranges of one buffer, without a ``str``
    per answer: answer ``i`` is ``data[starts[i]:ends[i]]``.

    Those bytes are trusted to be the answer's text only where they are pure ASCII with no
    backslash (so JSON-escaped text straight out of ``responses.jsonl`` can be passed as is).
    For any other row -- a byte >= 0x80 (non-ASCII text, whose digits in other scripts ``\\d``
    matches), a backslash (a JSON escape such as ``\\u0031`` may hide a digit), fewer than k
    numbers, an overflow -- ``text_of(i)`` is called for the answer's exact text (``None`` for
    none) and :func:`parse_last_k` decides. Returns ``(failures, values)`` as
    :func:`parse_last_k_many` does; ``text_of`` is called only for those rows (about 5 % of the
    benchmark's answers, the ones that are not ``ok``)."""
    if k < 1:
        raise ValueError(f"parse_last_k_spans needs k >= 1, got {k}")
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    n = len(starts)
    if n and (lengths < 0).any():
        raise ValueError("parse_last_k_spans: a range ends before it starts")
    # Copy the ranges into one buffer with a newline (no number's byte) before, between and after
    # them, so no match runs from one answer into the next (ranges may touch or overlap in data).
    new_starts = _packed_starts(lengths)
    used = int(lengths.sum())
    packed = np.full(used + n + 1, 10, dtype=np.uint8)
    if used:
        at = np.arange(used, dtype=np.int64)
        before = np.cumsum(lengths) - lengths
        packed[at + np.repeat(new_starts - before, lengths)] = buf[at + np.repeat(starts - before, lengths)]
        del at
    # a row holding a byte the scan cannot vouch for (>= 0x80, or a backslash) is parsed whole
    odd = np.flatnonzero((packed >= 0x80) | (packed == 92))
    odd_rows = np.unique(np.searchsorted(new_starts, odd, side="right") - 1).tolist() if odd.size else []
    for i in odd_rows:
        packed[new_starts[i]:new_starts[i] + lengths[i]] = 10
    failures, values, counts = _last_k_of_spans(packed, new_starts, new_starts + lengths, k)
    for i in odd_rows:
        failures[i] = _EXACT
    _settle(failures, values, counts, text_of, k)
    return failures, values


# markers in a failures list under construction: a row parse_last_k decides; a row with too few numbers
_EXACT = Prediction(status=ParseStatus.missing, detail="(to be parsed one by one)")
_FEW = Prediction(status=ParseStatus.missing, detail="(too few numbers)")

_DOT, _MINUS = ord("."), ord("-")


def _v1_spans(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of every ``V1_NUMBER`` match in ``buf``, an ASCII byte array whose
    first and last bytes are not ``0-9``, ``.`` or ``-``; what ``re.finditer`` finds, in order.

    ``-?\\d+\\.?\\d*`` scans left to right: a match is a maximal run of digits (``\\d+`` is
    greedy and the next byte is no digit), with the ``-`` right before it, and then a ``.`` and
    the whole digit run after that dot. A run that such a dot joins to an earlier match is
    consumed by it, so along a chain of runs joined by single dots ("1.2.3.4") matches start at
    every other run ("1.2", "3.4"); "1.2.3" gives "1.2", "3" (the second dot is skipped)."""
    digit = (buf - np.uint8(48)) <= 9  # wraps around below "0"
    # a digit run starts after each rising edge and ends after each falling one; they alternate,
    # starting with a rise (the first and last bytes are no digits)
    edges = np.nonzero(digit[1:] ^ digit[:-1])[0] + 1
    run_start, run_end = edges[0::2], edges[1::2]
    if not run_start.size:
        return run_start, run_end
    joined = np.zeros(run_start.size, dtype=bool)  # run r is one dot after run r - 1
    joined[1:] = (run_end[:-1] == run_start[1:] - 1) & (buf[run_start[1:] - 1] == _DOT)
    index = np.arange(run_start.size)
    chain_first = np.maximum.accumulate(np.where(joined, 0, index))
    first = ((index - chain_first) & 1) == 0  # a run where a match starts
    next_joined = np.zeros(run_start.size, dtype=bool)
    next_joined[:-1] = joined[1:]
    after = np.empty(run_start.size, dtype=np.int64)
    after[:-1] = run_end[1:]
    after[-1] = 0
    ends = np.where(next_joined, after, run_end + (buf[run_end] == _DOT))
    starts = run_start - (buf[run_start - 1] == _MINUS)
    return starts[first], ends[first]


def _last_k_of_spans(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, k: int
                     ) -> tuple[list[Prediction | None], np.ndarray, np.ndarray]:
    """Scan answers ``buf[starts[i]:ends[i]]`` (ASCII, each range bordered by bytes that are
    not ``0-9``, ``.`` or ``-``): ``(failures, values, counts)`` with ``None`` for an ``ok`` row,
    ``_FEW`` for a row with fewer than k numbers and ``_EXACT`` for one that overflows; ``counts``
    is the number of ``V1_NUMBER`` matches of each row."""
    n = len(starts)
    values = np.full((n, k), np.nan)
    tok_start, tok_end = _v1_spans(buf)
    if not n or not tok_start.size:
        return [_FEW] * n, values, np.zeros(n, dtype=np.int64)
    # a token lies inside one range (the bytes between ranges are no number's): the tokens of
    # range i are those starting before ends[i] and not before ends[i - 1]
    upto = np.searchsorted(tok_start, ends)
    counts = np.diff(upto, prepend=0)
    rows = np.flatnonzero(counts >= k)
    if not rows.size:
        return [_FEW] * n, values, counts
    chosen = (upto[rows][:, None] - k + np.arange(k)).reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        parsed = _decimals(buf, tok_start[chosen], tok_end[chosen]).astype(np.float32).reshape(len(rows), k)
    finite = np.isfinite(parsed).all(axis=1)
    good = rows[finite]
    values[good] = parsed[finite]
    failures: list[Prediction | None] = [None] * n
    for i in np.flatnonzero(counts < k).tolist():
        failures[i] = _FEW
    for i in rows[~finite].tolist():
        failures[i] = _EXACT
    return failures, values, counts


# 10**0 .. 10**22: every one exactly a double
_POW10 = np.array([10.0 ** e for e in range(23)])
_FAST_DIGITS = 15  # an integer of 15 digits is below 2**53: exactly a double


def _decimals(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``float(token)`` of each ``V1_NUMBER`` token ``buf[starts[i]:ends[i]]``, exactly.

    A token of at most 15 digits is ``±M / 10**f`` with ``M`` (its digits as an integer) and
    ``10**f`` (``f`` <= 15 digits after the dot) both exact doubles; one IEEE division of two
    exact doubles is the correctly rounded quotient, which is what ``float(str)`` (correctly
    rounded, David Gay's algorithm) returns -- Clinger's fast path, which CPython's own
    conversion takes for such inputs. Longer tokens are converted by ``float`` one by one."""
    out = np.empty(len(starts), dtype=np.float64)
    if not len(starts):
        return out
    negative = buf[starts] == _MINUS
    first = starts + negative
    length = ends - first
    fast = length <= _FAST_DIGITS  # without a dot; with one, 14 digits or fewer
    for i in np.flatnonzero(~fast).tolist():
        out[i] = float(buf[starts[i]:ends[i]].tobytes())
    if not fast.any():
        return out
    index = np.flatnonzero(fast)
    first, length = first[index], length[index]
    mantissa = np.zeros(len(index), dtype=np.int64)
    dot_at = np.full(len(index), -1, dtype=np.int64)
    for j in range(int(length.max())):
        live = length > j
        at = np.where(live, first + j, 0)
        byte = buf[at]
        digit = live & (byte != _DOT)
        mantissa = np.where(digit, mantissa * 10 + (byte.astype(np.int64) - 48), mantissa)
        dot_at = np.where(live & ~digit, j, dot_at)
    after_dot = np.where(dot_at >= 0, length - 1 - dot_at, 0)
    value = mantissa.astype(np.float64) / _POW10[after_dot]
    out[index] = np.where(negative[index], -value, value)
    return out


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
