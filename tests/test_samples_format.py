"""The samples file's lines, made column-wise (:func:`medvision_eval.scoring.sample_lines` on the
plan.jsonl path, :func:`medvision_eval.storescore.format_block` from the plan columns), are
exactly the reference definition ``strict_dumps(row_of(...)) + "\\n"`` for any row: arbitrary
unicode (lone surrogates, quotes, backslashes, control characters, line separators), NaN, infinite,
-0.0, tiny and huge floats, missing and null answers, errors, token counts beyond int64, huge
indexes, uneven target lengths, few- and many-valued columns, blocks of any size."""

from __future__ import annotations

import json
import tempfile
from array import array
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from medvision_eval import storescore
from medvision_eval.columnar import (AnswerColumns, TaskColumns, Truths, float_joined, float_lists, float_texts,
                                    json_inner_texts, read_answers)
from medvision_eval.planstore import open_store
from medvision_eval.scoring import STATUS_VALUES, inner_strings, row_of, sample_lines, sample_text
from medvision_eval.schema import Response, Usage
from medvision_eval.store import ResponseLog, ResponseRecord, _storable_bytes, load_plan, strict_dumps, write_plan

ANY_CHAR = st.characters(blacklist_categories=())  # lone surrogates included
HOSTILE = ["", "plain", 'q"uote', "back\\slash", "new\nline", "tab\tnul\x00", "é ü 中", "\u2028\u2029\x85",
           "\x7f del", '","', "\ud800 lone", "\\u0000", "}}\n{"]
texts = st.one_of(st.sampled_from(HOSTILE), st.text(ANY_CHAR, max_size=12))
plain_texts = st.one_of(st.sampled_from([t for t in HOSTILE if "\ud800" not in t]),
                        st.text(st.characters(blacklist_categories=("Cs",)), max_size=12))
FLOATS = [0.0, -0.0, 1.0, 0.5, 1e-5, -1e-5, 1e-4, 9.99e-5, 1e16, 1e15, -1e16, 1e300, 5e-324, 0.1 + 0.2,
          float("nan"), float("inf"), -float("inf")]
floats = st.one_of(st.sampled_from(FLOATS), st.floats(allow_nan=True, allow_infinity=True))
finite = st.one_of(st.sampled_from([f for f in FLOATS if np.isfinite(f)]), st.floats(allow_nan=False,
                                                                                     allow_infinity=False))
counts = st.one_of(st.none(), st.integers(0, 10 ** 6), st.sampled_from([2 ** 63 - 1, -(2 ** 63) + 1, 2 ** 70,
                                                                        -(2 ** 70)]))
answers = st.one_of(st.none(), st.tuples(st.one_of(st.none(), texts), st.one_of(st.none(), texts), floats, counts,
                                         counts))
NAMES = ["IoU", "Precision", 'we"ird', "é"]


@st.composite
def rows(draw, max_rows: int = 12):
    n = draw(st.integers(0, max_rows))
    k = draw(st.integers(1, 4))
    width = draw(st.sampled_from([None, 0, 1, 4]))  # None: each row its own number of true values
    few = st.sampled_from(["a", "b", 'c"', "\ud800"]) if draw(st.booleans()) else st.just("same")
    truths = [tuple(draw(st.lists(floats, min_size=width or 0, max_size=width if width is not None else 5)))
              for _ in range(n)]
    values = np.array(draw(st.lists(st.lists(floats, min_size=k, max_size=k), min_size=n, max_size=n)),
                      dtype=np.float64).reshape(n, k)
    ok = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool) & ~np.isnan(values).any(axis=1)
    shown = {i: draw(st.one_of(st.none(), st.tuples(floats, floats))) for i in range(n) if draw(st.booleans())
             and draw(st.booleans())}
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    return dict(
        ids=[draw(texts) for _ in range(n)], configs=[draw(few) for _ in range(n)], datasets=[draw(few) for _ in range(n)],
        indexes=[draw(st.one_of(st.integers(0, 10 ** 6), st.sampled_from([2 ** 63 - 1, 2 ** 64, -1])))
                 for _ in range(n)],
        labels=[draw(few) for _ in range(n)], keys=[draw(texts) for _ in range(n)],
        prompt_hashes=[draw(texts) for _ in range(n)], units=[draw(few) for _ in range(n)], truths=truths,
        found=[draw(answers) for _ in range(n)], status=[draw(st.sampled_from(STATUS_VALUES)) for _ in range(n)],
        detail=[draw(st.one_of(st.none(), texts)) for _ in range(n)], values=values, ok=ok, shown=shown,
        scores={name: np.array([draw(floats) for _ in range(n)], dtype=np.float64) for name in names})


def reference_lines(r: dict) -> list[str]:
    """``strict_dumps(row_of(...)) + "\\n"`` of each row: the definition of a samples line."""
    out = []
    for i in range(len(r["ids"])):
        head = (r["ids"][i], r["configs"][i], r["datasets"][i], r["indexes"][i], r["labels"][i], r["keys"][i],
                r["prompt_hashes"][i])
        v = r["shown"][i] if i in r["shown"] else (tuple(r["values"][i].tolist()) if r["ok"][i] else None)
        metrics = {name: column[i] for name, column in r["scores"].items()}
        out.append(strict_dumps(row_of(head, r["found"][i], r["status"][i], v, r["detail"][i], metrics,
                                       r["truths"][i], r["units"][i])) + "\n")
    return out


def task_columns(r: dict) -> TaskColumns:
    truths = Truths()
    for t in r["truths"]:
        truths.append(t)
    indexes = r["indexes"] if any(not -2 ** 63 <= i < 2 ** 63 for i in r["indexes"]) else array("q", r["indexes"])
    return TaskColumns(ids=r["ids"], configs=r["configs"], datasets=r["datasets"], indexes=indexes,
                       labels=r["labels"], keys=r["keys"], prompt_hashes=r["prompt_hashes"], units=r["units"],
                       truths=truths)


def parts(r: dict, found) -> tuple:
    return (task_columns(r), found, r["status"], r["detail"], r["values"], r["ok"], r["shown"], r["scores"])


@settings(max_examples=300, deadline=None)
@given(rows())
def test_plan_jsonl_path_lines_are_the_reference_lines(r):
    want = reference_lines(r)
    assert sample_lines(*parts(r, r["found"])) == want
    assert sample_text(*parts(r, AnswerColumns.of(r["found"]))) == "".join(want)


# -- the store path ------------------------------------------------------------------------------

BASE = load_plan(Path(__file__).resolve().parents[1] / "leaderboard" / "runs" / "prior")[0]


@st.composite
def store_rows(draw):
    """Rows a plan's columns can hold (no lone surrogates, no NaN target, indexes within int64),
    with answers and parses of any kind."""
    r = draw(rows(max_rows=20))
    n = len(r["ids"])
    r["ids"] = [draw(plain_texts) for _ in range(n)]
    r["keys"] = [f"{draw(st.integers(0, 2 ** 64 - 1)):016x}{i:016x}" for i in range(n)]  # cache keys, one a row
    fixed = draw(st.booleans())  # the prompt hashes' usual shape (16 hex digits) or any text
    r["prompt_hashes"] = [f"{draw(st.integers(0, 2 ** 64 - 1)):016x}" if fixed else draw(plain_texts)
                          for _ in range(n)]
    for name in ("configs", "datasets", "labels", "units"):
        r[name] = [v.replace("\ud800", "?") for v in r[name]]
    r["indexes"] = [i % 2 ** 62 for i in r["indexes"]]
    r["truths"] = [tuple(draw(finite) for _ in t) for t in r["truths"]]
    return r


def _store_run(r: dict, where: Path):
    entries = []
    for i in range(len(r["ids"])):
        target = BASE.sample.target.model_copy(update={"values": r["truths"][i], "unit": r["units"][i],
                                                       "names": tuple(f"v{j}" for j in range(len(r["truths"][i])))})
        sample = BASE.sample.model_copy(update={
            "id": r["ids"][i], "config": r["configs"][i], "dataset": r["datasets"][i], "index": r["indexes"][i],
            "label": r["labels"][i], "target": target, "extra": {"box_area_ratio": 0.5}})
        entries.append(BASE.model_copy(update={"sample": sample, "key": r["keys"][i],
                                               "prompt_hash": r["prompt_hashes"][i]}))
    write_plan(where, entries)
    store = open_store(where)
    assert store is not None and "key.hex" in store
    with ResponseLog(where) as log:  # the answers as a run stores them
        for i, answer in enumerate(r["found"]):
            if answer is not None:
                text, error, latency, prompt, completion = answer
                log.append(ResponseRecord(key=r["keys"][i], task=BASE.task, sample_id=r["ids"][i],
                                          prompt_hash=r["prompt_hashes"][i], response=Response(
                                              text=text, error=error, latency_s=latency,
                                              usage=Usage(prompt_tokens=prompt, completion_tokens=completion))))
    found = read_answers(where)  # what the plan.jsonl path reads back: the reference's answers
    r["found"] = [found.get(key) for key in r["keys"]]
    table = storescore.read_answer_table(where, parallel=False)
    pick = storescore.join_answers(np.asarray(store["key.hex"]), table)
    plan = storescore.task_plan(store, where / "plan.jsonl", BASE.task, np.arange(store.rows), False)
    return store, plan, table, pick


def _parsed(r: dict, lo: int, hi: int) -> storescore.Parsed:
    shown = {i - lo: v for i, v in r["shown"].items() if lo <= i < hi}
    return storescore.Parsed(r["status"][lo:hi], r["detail"][lo:hi], r["values"][lo:hi], r["ok"][lo:hi], shown,
                             {k: v[lo:hi] for k, v in r["scores"].items()}, (0, 0, 0))


@settings(max_examples=60, deadline=None)
@given(store_rows(), st.integers(1, 7))
def test_store_path_bytes_are_the_reference_lines(r, block):
    n = len(r["ids"])
    if not n:
        return
    with tempfile.TemporaryDirectory() as tmp:
        store, plan, table, pick = _store_run(r, Path(tmp))
        got = b"".join(storescore.format_block(store, plan, table, pick, _parsed(r, lo, min(n, lo + block)), lo,
                                               min(n, lo + block)) for lo in range(0, n, block))
    assert got == _storable_bytes("".join(reference_lines(r)))


# -- the helpers ----------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(texts, max_size=20))
def test_inner_strings_are_the_json_strings_without_quotes(values):
    bad: set[int] = set()
    got = inner_strings(values, bad)
    for i, v in enumerate(values):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: the row is written by strict_dumps
            assert i in bad
            continue
        assert got[i] == json.dumps(v, ensure_ascii=False)[1:-1] and i not in bad


@settings(max_examples=300, deadline=None)
@given(st.lists(plain_texts, max_size=20), st.randoms())
def test_json_inner_texts_of_utf8_bytes(values, rnd):
    raw = [v.encode("utf-8") for v in values]
    blob = np.frombuffer(b"".join(raw) or b"\0", dtype=np.uint8)
    bounds = np.cumsum([0] + [len(b) for b in raw])
    order = list(range(len(values)))
    rnd.shuffle(order)  # rows in any order: gathered, not one slice
    for picked in (list(range(len(values))), order):
        idx = np.array(picked, dtype=np.int64)
        got = json_inner_texts(blob, bounds[idx], bounds[idx + 1])
        assert got == [strict_dumps(values[i])[1:-1] for i in picked]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5), st.lists(floats, max_size=40), st.lists(st.sampled_from([", ", ', "a": ', "], [", ": "]),
                                                                    min_size=4, max_size=4))
def test_float_joined_rows_are_float_texts_with_their_joints(k, values, joints):
    n = len(values) // k
    matrix = np.array(values[:n * k], dtype=np.float64).reshape(n, k)
    rows_, inf = float_joined(matrix, joints[:k - 1])
    assert len(rows_) == n
    for i in range(n):
        texts_, row_inf = float_texts(matrix[i])
        assert inf[i] == bool(row_inf.any())
        assert rows_[i] == "".join(t + j for t, j in zip(texts_, joints[:k - 1])) + texts_[-1]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5), st.lists(floats, max_size=40))
def test_float_lists_are_the_json_lists_of_float_texts(k, values):
    n = len(values) // k if k else 3
    matrix = np.array(values[:n * k], dtype=np.float64).reshape(n, k)
    lists, inf = float_lists(matrix)
    assert len(lists) == n
    for i in range(n):
        texts_, row_inf = float_texts(matrix[i])
        assert inf[i] == bool(row_inf.any())
        assert lists[i] == "[" + ", ".join(texts_) + "]"
