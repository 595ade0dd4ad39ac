"""The score step at scale gives exactly what scoring one validated object at a time gave:
the columnar reader, the batch last-k parser, the columnar task path and the row writer;
and the bootstrap's large-sample limit agrees with the exact bootstrap."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvision_eval import scoring, stats
from medvision_eval.columnar import float_texts, read_answers, read_inputs, read_plan
from medvision_eval.factory import build_task
from medvision_eval.plugins import Registry
from medvision_eval.protocol import get_protocol
from medvision_eval.scoring import score_run, score_task, score_task_columns
from medvision_eval.store import load_plan, load_responses, strict_dumps
from medvision_eval.tasks.parsing import parse_last_k, parse_last_k_many

DEMO_RUN = Path(__file__).resolve().parents[1] / "leaderboard" / "runs" / "prior"

ANSWER_TEXT = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789.-, e\n[]abcI'mnot", max_size=60),
    st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr), st.just("9" * 50),
                       st.just("1" + "0" * 400), st.just("-.5"), st.just("I cannot determine")),
             max_size=6).map(" ".join),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ANSWER_TEXT, max_size=12), st.integers(min_value=1, max_value=4))
def test_batch_last_k_parser_equals_parse_last_k_on_any_text(texts, k):
    failures, values = parse_last_k_many(texts, k)
    for i, text in enumerate(texts):
        one = parse_last_k(text, k)
        if failures[i] is None:
            assert one.status.value == "ok" and one.values == tuple(values[i].tolist())
        else:
            assert failures[i] == one and np.isnan(values[i]).all()


def test_batch_last_k_parser_keeps_v1_quirks_and_overflow_details():
    texts = ["1e-3 .5 10-12", "x " + "9" * 60 + " 1 2 3", "I cannot tell", "", "1, 234"]
    failures, values = parse_last_k_many(texts, 4)
    assert failures[0] is None and values[0].tolist() == [-3.0, 5.0, 10.0, -12.0]  # v1: 1e-3 -> 1, -3
    assert failures[1].status.value == "malformed" and failures[1].detail.startswith("number overflows float32")
    assert failures[2].status.value == "refused"
    assert failures[3].detail == "empty answer"
    assert failures[4].detail == "2 numbers found, 4 needed"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=40))
def test_float_texts_are_repr_and_null_for_nan(values):
    texts, inf = float_texts(np.array(values, dtype=np.float64))
    for v, text, is_inf in zip(values, texts, inf.tolist()):
        assert is_inf == math.isinf(v)
        if not math.isinf(v):
            assert text == ("null" if math.isnan(v) else repr(v))


# -- the reader -----------------------------------------------------------------------------------

def _answers_from_records(run_dir: Path) -> dict:
    return {k: (r.response.text, r.response.error, r.response.latency_s, r.response.usage.prompt_tokens,
                r.response.usage.completion_tokens) for k, r in load_responses(run_dir).items()}


HOSTILE_RESPONSES = [
    {"key": "a", "task": "t", "sample_id": "s", "prompt_hash": "h", "response": {"text": "0.1 0.2", "error": None}},
    {"key": "b", "task": "t", "sample_id": "s", "prompt_hash": "h", "response": {"text": None, "error": "boom",
                                                                                 "latency_s": 2}},
    {"key": "b", "task": "t", "sample_id": "s", "prompt_hash": "h",
     "response": {"text": "later", "error": None, "latency_s": "1.5", "usage": {"prompt_tokens": "3"}}},
    {"key": "b", "task": "t", "sample_id": "s", "prompt_hash": "h", "response": {"text": None, "error": "after ok"}},
    {"key": "c", "task": "t", "sample_id": "s", "prompt_hash": "h",
     "response": {"text": "x", "latency_s": 0.5, "usage": {"prompt_tokens": 7, "completion_tokens": None}}},
]


def _write_lines(path: Path, lines: list[str], tail: str = "") -> None:
    path.write_text("".join(line + "\n" for line in lines) + tail, encoding="utf-8")


def test_answers_reader_matches_the_validated_records_on_odd_lines(tmp_path):
    lines = [json.dumps(r) for r in HOSTILE_RESPONSES]
    lines.append('{"key": "d", "task": "t", "sample_id": "s", "prompt_hash": "h", "response": '
                 '{"text": "lone \\ud800 surrogate", "error": null}}')
    lines.append('{"key": "e", "task": "t", "sample_id": "s", "prompt_hash": "h", "response": '
                 '{"text": "t", "error": null, "latency_s": null}, "null_reasons": {"/response/latency_s": "NaN: x"}}')
    lines.append("   ")
    _write_lines(tmp_path / "responses.jsonl", lines, tail='{"key": "torn", "task"')
    _write_lines(tmp_path / "responses.rank1.jsonl", [json.dumps({**HOSTILE_RESPONSES[0], "key": "f"})])
    got = read_answers(tmp_path)
    want = _answers_from_records(tmp_path)
    assert set(got) == set(want) == {"a", "b", "c", "d", "e", "f"}
    for key in want:
        assert got[key][:2] == want[key][:2] and got[key][3:] == want[key][3:]
        assert got[key][2] == want[key][2] or (math.isnan(got[key][2]) and math.isnan(want[key][2]))
    assert got["b"][0] == "later" and got["b"][2] == 1.5 and got["b"][3] == 3  # coerced exactly as the model does
    assert got["d"][0] == "lone \ufffd surrogate"


@pytest.mark.parametrize("bad", ["{not json", '{"key": 3, "task": "t"}', '{"key": "k", "task": "t", "sample_id": "s", '
                                 '"prompt_hash": "h", "response": {"text": ["no"]}}'])
def test_answers_reader_rejects_a_bad_line_naming_file_and_line(tmp_path, bad):
    _write_lines(tmp_path / "responses.jsonl", [json.dumps(HOSTILE_RESPONSES[0]), bad])
    with pytest.raises(ValueError, match=r"responses\.jsonl:2: not a valid response record"):
        read_answers(tmp_path)
    with pytest.raises(ValueError, match=r"responses\.jsonl:2: not a valid response record"):
        load_responses(tmp_path)


def _plan_lines() -> list[str]:
    return (DEMO_RUN / "plan.jsonl").read_text(encoding="utf-8").splitlines()


def test_plan_reader_columns_equal_the_validated_entries_including_lax_lines(tmp_path):
    lines = _plan_lines()
    odd = json.loads(lines[0])
    odd["sample"]["index"] = "0"  # a numeric string: the model coerces it; the fast path leaves it to the model
    odd["sample"]["target"]["values"] = [str(v) for v in odd["sample"]["target"]["values"]]
    lines[0] = json.dumps(odd)
    _write_lines(tmp_path / "plan.jsonl", lines, tail='{"task": "detection", "key"')
    protocol = get_protocol("paper")
    registry = Registry.discover()
    columns, planned = read_plan(tmp_path, lambda name: True, protocol.full_precision_targets)
    entries = load_plan(tmp_path)
    assert planned == len(entries) == len(lines)
    for name, cols in columns.items():
        mine = [e for e in entries if e.task == name]
        task = build_task(registry, name, protocol)
        assert cols.ids == [e.sample.id for e in mine]
        assert cols.keys == [e.key for e in mine] and cols.prompt_hashes == [e.prompt_hash for e in mine]
        assert list(cols.indexes) == [e.sample.index for e in mine] and cols.labels == [e.sample.label for e in mine]
        assert list(cols.truths) == [task.true_values(e.sample) for e in mine]
        assert list(cols.truths[2:5]) == [task.true_values(e.sample) for e in mine[2:5]]
        for e, code in zip(mine, cols.codes):
            profile = cols.profiles[code]
            assert (profile.label, profile.modality, profile.plane, profile.dataset) == (
                e.sample.label, e.sample.modality, e.sample.plane, e.sample.dataset)


def test_two_process_reading_joins_to_exactly_what_one_process_reads(tmp_path):
    shutil.copytree(DEMO_RUN, tmp_path / "run")
    one, total, answers = read_inputs(tmp_path / "run", lambda name: name != "ad_measure", False, parallel=False)
    two, total2, answers2 = read_inputs(tmp_path / "run", lambda name: name != "ad_measure", False, parallel=True)
    assert total == total2 == 60 and answers == answers2 and list(one) == list(two)
    for name in one:
        if name == "ad_measure":
            assert one[name] == two[name]
            continue
        a, b = one[name], two[name]
        assert a.ids == b.ids and a.keys == b.keys and list(a.truths) == list(b.truths)
        assert list(a.indexes) == list(b.indexes)
        assert np.array_equal(np.array(a.box_ratios), np.array(b.box_ratios), equal_nan=True)
        assert [a.profiles[c].label for c in a.codes] == [b.profiles[c].label for c in b.codes]


@pytest.mark.parametrize("parallel", [False, True])
def test_plan_reader_raises_what_the_model_raises_on_a_garbage_line(tmp_path, parallel):
    lines = _plan_lines()[:30] + ['{"task": "detection", "key": "k", "prompt_hash": "p", "sample": {"id": 1}}']
    _write_lines(tmp_path / "plan.jsonl", lines)
    shutil.copy(DEMO_RUN / "responses.jsonl", tmp_path / "responses.jsonl")
    with pytest.raises(ValueError) as fast:  # with parallel, the bad line is in the forked reader's part
        read_inputs(tmp_path, lambda name: True, False, parallel=parallel)
    with pytest.raises(ValueError) as slow:
        load_plan(tmp_path)
    assert type(fast.value) is type(slow.value) and str(fast.value) == str(slow.value)


# -- the columnar task path ----------------------------------------------------------------------

ODD_TEXTS = ["0.1, 0.2, 0.6, 0.7", "<answer>0.2, 0.1, 0.5, 0.9</answer>", "I cannot determine this.", "",
             "x " + "9" * 45 + " 1 2 3", 'quote " back \\ slash \n new\tline ünï 😀 0.3 0.4 0.8 0.9', "12.5 mm 7 cm",
             "<answer>33.3 degrees</answer>", "<answer>-4, 5</answer>", "1e-3 .5 10-12", "\x00\x1f 0.5 0.6 0.7 0.8"]


def _odd_answers(keys: list[str]) -> dict:
    answers = {}
    for i, key in enumerate(keys):
        kind = i % (len(ODD_TEXTS) + 3)
        if kind == len(ODD_TEXTS):
            continue  # never answered
        if kind == len(ODD_TEXTS) + 1:
            answers[key] = (None, "HTTP 500: \"oops\"", 0.25, None, None)
        elif kind == len(ODD_TEXTS) + 2:
            answers[key] = (None, None, 1.0, None, None)
        else:
            answers[key] = (ODD_TEXTS[kind], None, 0.125 * i, i, None if i % 2 else 2 * i)
    return answers


@pytest.mark.parametrize("protocol_name", ["paper", "corrected", "v2"])
def test_columnar_task_path_gives_the_object_path_result_and_rows(tmp_path, protocol_name, monkeypatch):
    monkeypatch.setattr(scoring, "ROW_BLOCK", 7)  # parse and format in blocks that do not divide the rows
    protocol = get_protocol(protocol_name)
    registry = Registry.discover()
    shutil.copy(DEMO_RUN / "plan.jsonl", tmp_path / "plan.jsonl")
    columns, _ = read_plan(tmp_path, lambda name: True, protocol.full_precision_targets)
    entries = load_plan(tmp_path)
    for name, cols in columns.items():
        task = build_task(registry, name, protocol)
        mine = [e for e in entries if e.task == name]
        answers = _odd_answers([e.key for e in mine])
        result, rows = score_task(task, mine, answers, seed=3)
        fast, lines, counts = score_task_columns(task, cols, answers, seed=3)
        assert strict_dumps(fast) == strict_dumps(result)
        assert list(lines) == [strict_dumps(row) + "\n" for row in rows]
        assert counts[0] == sum(1 for r in rows if r["response"] is not None and r["error"] is None)
        # the same file whether the second half of the rows is formatted by a forked process or not
        _, both, _ = score_task_columns(task, cols, answers, seed=3)
        scoring.write_rows(tmp_path / "forked.jsonl", both, parallel=True)
        scoring.write_rows(tmp_path / "inline.jsonl", both, parallel=False)
        expected = "".join(strict_dumps(row) + "\n" for row in rows).encode()
        assert (tmp_path / "forked.jsonl").read_bytes() == (tmp_path / "inline.jsonl").read_bytes() == expected
        assert not list(tmp_path.glob(".*.tmp"))


def test_columnar_rows_with_non_finite_numbers_fall_back_to_strict_rows(tmp_path):
    protocol = get_protocol("paper")
    lines = _plan_lines()
    tl = [json.loads(line) for line in lines if json.loads(line)["task"] == "tl_size"][:3]
    tl[0]["sample"]["target"]["values"] = [1e308, 0.0]  # MRE of 0 target -> huge; MAE fine
    _write_lines(tmp_path / "plan.jsonl", [json.dumps(d) for d in tl])
    columns, _ = read_plan(tmp_path, lambda name: True, False)
    entries = load_plan(tmp_path)
    task = build_task(Registry.discover(), "tl_size", protocol)
    answers = {e.key: ("-1e308 -1e308 " + "9" * 30 + " 5", None, math.inf, None, None) for e in entries}
    answers[entries[1].key] = ("3 4", None, 0.5, None, None)
    result, rows = score_task(task, entries, answers, seed=0)
    fast, out, _ = score_task_columns(task, columns["tl_size"], answers, seed=0)
    text = list(out)
    assert text == [strict_dumps(row) + "\n" for row in rows]
    assert "null_reasons" in text[0]


# -- the bootstrap's large-sample limit ----------------------------------------------------------

def _columns(n: int, seed: int = 1) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    value = rng.uniform(0, 1, n) ** 2
    valid = rng.random(n) < 0.8
    group = rng.integers(0, 3, n)
    cols = np.stack([np.where(valid, value, 0.0), valid.astype(float), (group == 0) * value, (group == 0) * 1.0], axis=1)
    statistics = {"mean": stats.mean_stat(0, 1), "group0": stats.mean_stat(2, 3),
                  "ratio": lambda s: s[:, 2] / np.maximum(s[:, 0], 1e-12)}
    return cols, statistics


def test_below_the_threshold_the_intervals_are_the_exact_bootstrap():
    cols, statistics = _columns(2000)
    default = stats.bootstrap_intervals(cols, statistics, seed=5)
    exact = stats.bootstrap_intervals(cols, statistics, seed=5, exact_max_n=10**9)
    assert default == exact
    assert stats.EXACT_MAX_N >= 23_071  # a paper-scale run's largest task is bootstrapped exactly


def test_the_normal_limit_agrees_with_the_exact_bootstrap_within_a_tenth_of_the_interval():
    cols, statistics = _columns(20_000)
    exact = stats.bootstrap_intervals(cols, statistics, seed=7, exact_max_n=10**9)
    with stats.track_approximations() as used:
        approx = stats.bootstrap_intervals(cols, statistics, seed=7, exact_max_n=1000)
    assert used == [20_000]
    for name in statistics:
        width = exact[name].high - exact[name].low
        assert approx[name].value == exact[name].value
        assert abs(approx[name].low - exact[name].low) <= 0.1 * width
        assert abs(approx[name].high - exact[name].high) <= 0.1 * width


def test_a_bad_response_line_read_by_the_forked_reader_is_the_same_error(tmp_path, monkeypatch):
    shutil.copytree(DEMO_RUN, tmp_path / "run")
    with open(tmp_path / "run" / "responses.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"key": "x", "task": "detection"}\n')
    monkeypatch.setattr(scoring, "PARALLEL_BYTES", 0)
    with pytest.raises(ValueError, match=r"responses\.jsonl:61: not a valid response record"):
        score_run(tmp_path / "run")


def test_results_say_when_the_normal_limit_was_used(tmp_path, monkeypatch):
    shutil.copytree(DEMO_RUN, tmp_path / "run")
    plain = score_run(tmp_path / "run")
    assert not any("normal limit" in note for t in plain.tasks.values() for note in t.notes)
    monkeypatch.setattr(stats, "EXACT_MAX_N", 5)
    approx = score_run(tmp_path / "run")
    for name, result in approx.tasks.items():
        assert any("normal limit" in note and "more than 5" in note for note in result.notes), name
        assert result.metrics.keys() == plain.tasks[name].metrics.keys()


def test_undecodable_bytes_in_a_response_line_are_named_by_file_and_line(tmp_path):
    from medvision_eval.storescore import scan_answers

    good = json.dumps(HOSTILE_RESPONSES[0]).encode()
    bad = good.replace(b'"text": "', b'"text": "\xff\xfe', 1)
    assert bad != good
    (tmp_path / "responses.jsonl").write_bytes(good + b"\n" + bad + b"\n")
    with pytest.raises(ValueError, match=r"responses\.jsonl:2: not a valid response record: 'utf-8' codec"):
        read_answers(tmp_path)  # the plan.jsonl path
    with pytest.raises(ValueError, match=r"responses\.jsonl:2: not a valid response record: 'utf-8' codec"):
        scan_answers([(tmp_path / "responses.jsonl", 0, None)])  # the plan columns' path
