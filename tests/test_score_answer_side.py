"""The score step's answer side and serial glue (:mod:`medvision_eval.storescore`): each fast
path against the plain computation it replaces, on hostile inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvision_eval import storescore


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_id_order_is_the_stable_argsort_of_the_rows_ranks(data):
    """A permutation (the store's id_rank) and subsets of its rows in any order; and ranks that are
    not a permutation (repeated, negative, beyond the row count) go through the sort itself."""
    total = data.draw(st.integers(0, 40))
    if data.draw(st.booleans()):
        id_rank = np.array(data.draw(st.permutations(range(total))), dtype=np.int64)
    else:
        id_rank = np.array(data.draw(st.lists(st.integers(-3, total + 3), min_size=total, max_size=total)),
                           dtype=np.int64)
    rows = np.array(data.draw(st.lists(st.integers(0, max(total - 1, 0)), max_size=total, unique=True))
                    if total else [], dtype=np.int64)
    if data.draw(st.booleans()):
        rows = np.sort(rows)
    want = np.argsort(id_rank[rows], kind="stable")
    assert storescore.id_order(id_rank, rows).tolist() == want.tolist()


def test_id_order_of_all_rows_of_a_large_permutation():
    rng = np.random.default_rng(3)
    id_rank = rng.permutation(50_000).astype(np.int64)
    for rows in (np.arange(50_000), np.sort(rng.choice(50_000, 20_000, replace=False))):
        assert np.array_equal(storescore.id_order(id_rank, rows), np.argsort(id_rank[rows], kind="stable"))


_COUNTS = st.one_of(st.none(), st.integers(-(1 << 63) + 1, (1 << 63) - 1),
                    st.sampled_from([-(1 << 63), 1 << 63, 1 << 70, -(1 << 70), 0, -1]))
_ANSWERS = st.one_of(st.none(), st.tuples(
    st.one_of(st.none(), st.text(max_size=8)), st.one_of(st.none(), st.text(max_size=8)),
    st.floats(allow_nan=False), _COUNTS, _COUNTS))


@settings(max_examples=300, deadline=None)
@given(st.lists(_ANSWERS, max_size=12))
def test_answer_columns_give_back_each_answer_and_null_counts_are_the_sentinel(found):
    """One helper puts answers into columns (AnswerColumns and the score step's answer table):
    each answer comes back whole; a count beyond int64 (or the sentinel itself) keeps its answer
    whole in ``exact``; null counts are NULL_COUNT in the arrays."""
    from medvision_eval.columnar import NULL_COUNT, AnswerColumns

    cols = AnswerColumns.of(found)
    assert [cols[i] for i in range(len(found))] == found
    for i, a in enumerate(found):
        if a is None:
            assert not cols.present[i]
            continue
        fits = all(c is None or NULL_COUNT < c < -NULL_COUNT for c in a[3:])
        assert (i in cols.exact) == (not fits)
        if fits:
            assert [int(cols.prompt_tokens[i]), int(cols.completion_tokens[i])] == \
                [NULL_COUNT if c is None else c for c in a[3:]]
        assert (i in cols.errors) == (a[1] is not None)


def test_scanned_odd_lines_fill_the_table_through_the_same_helper(tmp_path):
    """Lines the bulk scanner leaves to the exact reader (extra spaces, a count beyond int64, an
    escaped error, a lone surrogate) and canonical ones: each answer read back as read_answers has it."""
    import json

    from medvision_eval.columnar import read_answers

    def line(key, text, error=None, pt=None, ct=None, spaced=False):
        record = {"key": key, "task": "detection", "sample_id": "s", "prompt_hash": "h",
                  "response": {"text": text, "error": error, "latency_s": 0.5,
                               "usage": {"prompt_tokens": pt, "completion_tokens": ct}}, "time": 1.0}
        return json.dumps(record, separators=None if spaced else (",", ":"), ensure_ascii="\ud800" in (text or ""))

    keys = [f"{i:032x}" for i in range(6)]
    lines = [line(keys[0], "0.1, 0.2"), line(keys[1], "x", spaced=True), line(keys[2], "y", pt=1 << 70, ct=3),
             line(keys[3], None, error='bad "quote"'), line(keys[4], "lone \ud800"), line(keys[5], "z", pt=-4, ct=None)]
    data = "\n".join(lines).encode("utf-8") + b"\n"
    (tmp_path / "responses.jsonl").write_bytes(data)
    want = read_answers(tmp_path)
    table = storescore.scan_answers([(tmp_path / "responses.jsonl", 0, None)])
    texts = table.texts(np.arange(len(table)))
    got = {keys[i]: table.answer(i, texts[i]) for i in range(len(table))}
    assert got == want


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.text(alphabet="-+.0123456789eE ,x", max_size=12),
                          st.sampled_from(["-0", "-0.0", "0", "00", "01", "1.", ".5", "-", "+1", "1e5", "0.0e0",
                                           "1764128499.1234567", "9" * 40, "9" * 41, "-" + "1" * 39, "0.", "-.5",
                                           "18446744073709551616", "1..2", "--1", "0x1"])),
                min_size=1, max_size=12))
def test_a_plain_number_is_one_orjson_reads_as_int_or_float(texts):
    """The time stamp's check without a parse: every text it passes, orjson reads as a number;
    those it does not pass go to the exact reader (a number with an exponent among them)."""
    import re

    import orjson

    from medvision_eval.answerscan import _plain_numbers

    raw = [t.encode() for t in texts]
    data = b"|".join(raw) + b"|"
    starts = np.cumsum([0] + [len(r) + 1 for r in raw[:-1]]).astype(np.int64)
    ends = starts + np.array([len(r) for r in raw], dtype=np.int64)
    got = _plain_numbers(np.frombuffer(data, dtype=np.uint8), starts, ends).tolist()
    for text, plain in zip(texts, got):
        if plain:
            assert type(orjson.loads(text)) in (int, float), text
        assert plain == (re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?", text) is not None and len(text) <= 40), text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-3, 60), max_size=40))
def test_first_indexes_is_np_unique_with_return_index(values):
    codes = np.array(values, dtype=np.int32)
    used, first = storescore.first_indexes(codes)
    want_used, want_first = np.unique(codes, return_index=True)
    assert used.tolist() == want_used.tolist() and first.tolist() == want_first.tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=30), st.data(), st.booleans())
def test_truths_of_consecutive_rows_are_the_gathered_truths(lengths, data, full):
    """The one-slice read of consecutive rows gives what the row-by-row gather gives."""
    from medvision_eval.planstore import PlanStore

    n = len(lengths)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.arange(int(offsets[-1]), dtype=np.float64) * 0.5 + 0.25
    store = object.__new__(PlanStore)
    store._arrays = {"truth": flat, "truth.offsets": offsets, "truth_full": -flat, "truth_full.offsets": offsets}
    lo = data.draw(st.integers(0, n - 1))
    hi = data.draw(st.integers(lo + 1, n))
    rows = np.arange(lo, hi, dtype=np.int64)
    got_flat, got_offsets = store.truths(rows, full)
    source = -flat if full else flat
    want = [source[offsets[r]:offsets[r + 1]].tolist() for r in rows]
    assert [got_flat[got_offsets[j]:got_offsets[j + 1]].tolist() for j in range(len(rows))] == want
    assert got_offsets[0] == 0 and len(got_offsets) == len(rows) + 1 and got_flat.dtype == np.float64
    gap = np.concatenate([rows[:1], rows[2:]]) if len(rows) > 2 else rows  # not consecutive: the gather
    g_flat, g_offsets = store.truths(gap, full)
    assert [g_flat[g_offsets[j]:g_offsets[j + 1]].tolist() for j in range(len(gap))] == \
        [source[offsets[r]:offsets[r + 1]].tolist() for r in gap]


# -- end to end: hostile response files through the store path (forced two readers) and plan.jsonl ---

def _hostile_responses(kind: str, run) -> None:
    import json

    path = run / "responses.jsonl"
    lines = path.read_bytes().split(b"\n")[:-1]
    middle = len(lines) // 2  # where the two readers split the bytes (about)
    if kind == "crlf":
        lines = [line + b"\r" for line in lines]
    elif kind == "bom":
        lines[0] = b"\xef\xbb\xbf" + lines[0]
    elif kind == "torn-and-blank":
        lines.insert(middle, b"")
        lines.insert(3, b"   ")
        lines.append(lines[1][: len(lines[1]) // 2] + b"\n" + lines[2][:40])  # a torn last line
    elif kind == "duplicates-across-the-split":
        for at in (middle - 1, middle, middle + 1):
            record = json.loads(lines[at])
            failed = {**record, "response": {**record["response"], "text": None, "error": "late failure"}}
            again = {**record, "response": {**record["response"], "text": record["response"]["text"] + " 0.9"}}
            lines.insert(0, json.dumps(again, separators=(",", ":")).encode())  # an earlier answer, replaced
            lines.append(json.dumps(failed, separators=(",", ":")).encode())  # a later failure, ignored
    elif kind == "huge-numbers":
        for at, usage, latency in ((1, {"prompt_tokens": 2 ** 64, "completion_tokens": 1}, 1e308),
                                   (middle, {"prompt_tokens": -(2 ** 63), "completion_tokens": 2 ** 63 - 1}, 0),
                                   (middle + 1, {"prompt_tokens": None, "completion_tokens": None}, 5)):
            record = json.loads(lines[at])
            record["response"]["usage"] = usage
            record["response"]["latency_s"] = latency
            record["time"] = 1e300 if at == 1 else 17
            lines[at] = json.dumps(record, separators=(",", ":")).encode()
    elif kind == "empty-files":
        (run / "responses.rank1.jsonl").write_bytes(b"")
        (run / "responses.rank2.jsonl").write_bytes(b"\n")
    elif kind == "non-cache-keys":
        record = json.loads(lines[middle])
        for key in (record["key"].upper(), record["key"][:31], record["key"] + "0", "\ud800" * 2):
            lines.append(json.dumps({**record, "key": key}).encode())
    path.write_bytes(b"\n".join(lines) + (b"" if kind == "torn-and-blank" else b"\n"))


def _outcome(run):
    from test_plan_columns import outputs

    from medvision_eval.scoring import score_run

    try:
        score_run(run)
    except ValueError as exc:
        return ("error", str(exc).replace(str(run), "RUN"))
    return ("ok", {name: data.splitlines() for name, data in outputs(run).items()})


@pytest.mark.parametrize("kind", ["crlf", "bom", "torn-and-blank", "duplicates-across-the-split", "huge-numbers",
                                  "empty-files", "non-cache-keys"])
def test_hostile_response_files_score_as_the_plan_jsonl_path(demo_root, tmp_path, monkeypatch, kind):
    import shutil

    from test_plan_columns import Paths, make_run

    from medvision_eval import scoring
    from medvision_eval.planstore import STORE_DIR

    run = make_run(demo_root, tmp_path / "run", "random")
    _hostile_responses(kind, run)
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    shutil.rmtree(twin / STORE_DIR)
    monkeypatch.setattr(storescore, "PARALLEL_ANSWER_BYTES", 0)  # two readers, split mid-file
    monkeypatch.setattr(scoring, "PARALLEL_ROWS", 1)
    monkeypatch.setattr(storescore, "PARALLEL_ROWS", 1)
    paths = Paths(monkeypatch)
    want = _outcome(twin)
    paths.taken.clear()
    got = _outcome(run)
    assert paths.taken[:1] == ["store"] or got[0] == "error"
    assert got[0] == want[0] and (got[1] == want[1] if got[0] == "error" else got[1].keys() == want[1].keys())
    if got[0] == "ok":
        for name in want[1]:
            diff = [(i, a, b) for i, (a, b) in enumerate(zip(got[1][name], want[1][name])) if a != b]
            assert not diff and len(got[1][name]) == len(want[1][name]), (name, diff[:3])
    assert not list(run.glob(".*.tmp"))
