"""The plan columns (``plan.columns/``, :mod:`medvision_eval.planstore`) and the score step that
reads them (:mod:`medvision_eval.storescore`): written with every plan (runner and merge); the
score step's outputs are the bytes the ``plan.jsonl`` path writes, on the demo runs, a plugin
task, forced two-process runs and hostile answers; a missing, stale, corrupt, truncated or
old-version store, or a plan.jsonl edited after it, silently gives the plan.jsonl path's
outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvision_eval import planstore, scoring, storescore
from medvision_eval.columnar import float_row_texts, float_texts
from medvision_eval.planstore import INDEX, STORE_DIR, open_store
from medvision_eval.scoring import score_run
from medvision_eval.store import PlanEntry, load_plan, write_plan

TASKS = "detection,tl_size,ad_measure"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medvision_eval.cli", *args], capture_output=True, text=True,
                          timeout=600)


def make_run(demo_root: Path, out: Path, model: str = "prior", protocol: str = "paper", tasks: str = TASKS) -> Path:
    proc = cli("--tasks", tasks, "--model", model, "--protocol", protocol, "--data", str(demo_root), "--output",
               str(out), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


class Paths:
    """Which path each score_run took."""

    def __init__(self, monkeypatch) -> None:
        self.taken: list[str] = []
        store_path, jsonl_path = scoring.score_from_store, scoring._score_from_jsonl

        def from_store(*args, **kwargs):
            out = store_path(*args, **kwargs)
            self.taken.append("store")
            return out

        def from_jsonl(*args, **kwargs):
            self.taken.append("jsonl")
            return jsonl_path(*args, **kwargs)

        monkeypatch.setattr(scoring, "score_from_store", from_store)
        monkeypatch.setattr(scoring, "_score_from_jsonl", from_jsonl)


def outputs(run: Path) -> dict[str, bytes]:
    """The score step's outputs, results.json without its time stamp and inputs digest."""
    out = {p.name: p.read_bytes() for p in sorted(run.glob("samples_*.jsonl"))}
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    results.pop("created")
    results.pop("inputs_digest")
    results["config"].pop("output", None)
    out["results.json"] = json.dumps(results, indent=2).encode()
    return out


def jsonl_twin(run: Path, where: Path) -> Path:
    """A copy of ``run`` without plan columns, scored from plan.jsonl."""
    twin = where / (run.name + "-jsonl")
    shutil.copytree(run, twin)
    shutil.rmtree(twin / STORE_DIR, ignore_errors=True)
    score_run(twin)
    return twin


def assert_same_as_jsonl(run: Path, tmp_path: Path, paths: Paths, expect: str = "store") -> None:
    twin = jsonl_twin(run, tmp_path)
    paths.taken.clear()
    score_run(run)
    assert paths.taken == [expect]
    mine, theirs = outputs(run), outputs(twin)
    assert list(mine) == list(theirs)
    for name in mine:
        assert mine[name] == theirs[name], name


# -- writing --------------------------------------------------------------------------------------

def test_write_plan_writes_columns_that_match_the_plan(demo_root, tmp_path):
    run = make_run(demo_root, tmp_path / "run")
    index = json.loads((run / STORE_DIR / INDEX).read_text())
    assert index["format"] == planstore.FORMAT and index["version"] == planstore.VERSION
    plan_bytes = (run / "plan.jsonl").read_bytes()
    assert index["plan"]["size"] == len(plan_bytes) and index["plan"]["xxh3_128"] == planstore.plan_fingerprint(run)
    assert "sha256" not in index["plan"] and index["seal"].startswith("xxh3_128:")
    store = open_store(run)
    entries = load_plan(run)
    assert store is not None and store.rows == len(entries)
    rows = np.arange(store.rows)
    assert store.texts("id", rows) == [e.sample.id for e in entries]
    assert store.texts("key", rows) == [e.key for e in entries]
    assert store.texts("prompt_hash", rows) == [e.prompt_hash for e in entries]
    assert [store.tables["task"][c] for c in store["task"]] == [e.task for e in entries]
    assert [store.tables["config"][c] for c in store["config"]] == [e.sample.config for e in entries]
    assert store["index"].tolist() == [e.sample.index for e in entries]
    flat, offsets = store.truths(rows, False)
    assert [tuple(flat[offsets[i]:offsets[i + 1]]) for i in range(len(entries))] == \
        [tuple(e.sample.target.values) for e in entries]
    ranks = sorted(range(len(entries)), key=lambda i: entries[i].sample.id)
    assert np.argsort(store["id_rank"], kind="stable").tolist() == ranks
    # each line's offset: the line itself
    for i in (0, len(entries) // 2, len(entries) - 1):
        assert json.loads(store.line(run / "plan.jsonl", i))["key"] == entries[i].key


def test_merge_writes_the_columns_too(demo_root, tmp_path, monkeypatch):
    shards = []
    for i in range(2):
        proc = cli("--tasks", "detection,tl_size", "--model", "prior", "--data", str(demo_root), "--shard", f"{i}/2",
                   "--output", str(tmp_path / f"s{i}"), "--quiet")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        shards.append(str(tmp_path / f"s{i}"))
    proc = cli("merge", str(tmp_path / "merged"), *shards)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = open_store(tmp_path / "merged")
    assert store is not None and store.rows == len(load_plan(tmp_path / "merged"))
    assert_same_as_jsonl(tmp_path / "merged", tmp_path, Paths(monkeypatch))


def test_a_plan_the_columns_cannot_carry_exactly_gets_none(tmp_path):
    entry = load_plan(Path(__file__).resolve().parents[1] / "leaderboard" / "runs" / "prior")[0]
    nan_target = entry.sample.model_copy(update={"target": entry.sample.target.model_copy(
        update={"values": (float("nan"),) * len(entry.sample.target.values)})})
    write_plan(tmp_path, [entry, entry.model_copy(update={"sample": nan_target})])
    assert not (tmp_path / STORE_DIR / INDEX).exists() and open_store(tmp_path) is None
    write_plan(tmp_path, [entry])  # a later plan that can: columns again
    assert open_store(tmp_path) is not None


# -- the score step: the same bytes as the plan.jsonl path ---------------------------------------

@pytest.mark.parametrize("model,protocol", [("prior", "paper"), ("oracle", "corrected"), ("random", "v2"),
                                            ("random", "paper"), ("prior", "corrected")])
def test_store_path_writes_what_the_jsonl_path_writes(demo_root, tmp_path, monkeypatch, model, protocol):
    run = make_run(demo_root, tmp_path / f"{model}-{protocol}", model, protocol)
    assert_same_as_jsonl(run, tmp_path, Paths(monkeypatch))


def test_forced_two_process_store_path_writes_the_same_bytes(demo_root, tmp_path, monkeypatch):
    run = make_run(demo_root, tmp_path / "run", "random")
    paths = Paths(monkeypatch)
    twin = jsonl_twin(run, tmp_path)
    monkeypatch.setattr(scoring, "PARALLEL_ROWS", 1)
    monkeypatch.setattr(storescore, "PARALLEL_ROWS", 1)
    monkeypatch.setattr(storescore, "PARALLEL_ANSWER_BYTES", 0)
    for block in (1, 7, 20):
        monkeypatch.setattr(storescore, "BLOCK_ROWS", block)
        paths.taken.clear()
        score_run(run)
        assert paths.taken == ["store"]
        assert outputs(run) == outputs(twin)
    assert not list(run.glob(".*.tmp"))


def test_plugin_task_from_the_store_writes_the_same_bytes(demo_root, tmp_path, monkeypatch):
    run = make_run(demo_root, tmp_path / "plugin", "prior", "paper", tasks="tl_area,detection")
    assert_same_as_jsonl(run, tmp_path, Paths(monkeypatch))


def _rewrite_responses(run: Path, edit) -> None:
    path = run / "responses.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    lines = edit(records)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_duplicate_foreign_and_odd_answers_are_joined_as_the_jsonl_path_joins_them(demo_root, tmp_path, monkeypatch):
    run = make_run(demo_root, tmp_path / "run", "random")

    def edit(records):
        out = [json.dumps(r, separators=(",", ":")) for r in records]
        a, b, c = records[0], records[1], records[2]
        failed = {**a, "response": {"text": None, "error": "timeout", "latency_s": 3.0}}
        later = {**b, "response": {**b["response"], "text": "0.1 0.2 0.3 0.4 then 0.5"}}
        out.insert(0, json.dumps(failed))  # an error before the answer: the answer wins
        out.append(json.dumps(failed))  # and after it: the completed answer still wins
        out.append(json.dumps(later))  # a second completed answer: the last wins
        out.append(json.dumps({**c, "response": {"text": None, "error": "later failure"}}))
        out.append(json.dumps({**a, "key": "f" * 32}))  # a key no plan row has
        out.append(json.dumps({**a, "key": "not-a-cache-key"}))
        out.append(json.dumps({**a, "key": "A" * 32}))  # upper-case hex is another key
        big = {**c, "response": {**c["response"], "usage": {"prompt_tokens": 2 ** 70, "completion_tokens": -1}}}
        out.append(json.dumps(big))
        coerced = {**records[3], "response": {**records[3]["response"], "latency_s": "0.25"}}
        out.append(json.dumps(coerced))  # a string the model coerces: read by the model
        return out

    _rewrite_responses(run, edit)
    assert_same_as_jsonl(run, tmp_path, Paths(monkeypatch))


HOSTILE = ["lone \ud800 surrogate 0.1 0.2 0.3 0.4", "nul \x00 0.5, 0.5, 0.6, 0.7", "9" * 5000 + " 1 2 3",
           "٣ ٤ ٥ ٦ arabic-indic digits", "0.1 0.2 0.3 0.4 " * 2000, "", "  ", "\\ backslash 1 2 3 4 \"quoted\"",
           "é 0.25 0.25 0.75 0.75 ü", "1e999 2 3 4", "<answer>0.1, 0.2, 0.3, 0.4</answer>", "\u2028 1 2 3 4 \u2029"]


def test_hostile_answer_texts_give_the_same_bytes(demo_root, tmp_path, monkeypatch):
    run = make_run(demo_root, tmp_path / "run", "random", "corrected")

    def edit(records):
        out = []
        for i, r in enumerate(records):
            r["response"]["text"] = HOSTILE[i % len(HOSTILE)]
            out.append(json.dumps(r, ensure_ascii=i % 2 == 0))
        return out

    _rewrite_responses(run, edit)
    monkeypatch.setattr(storescore, "PARALLEL_ROWS", 1)
    monkeypatch.setattr(storescore, "BLOCK_ROWS", 5)
    assert_same_as_jsonl(run, tmp_path, Paths(monkeypatch))


# -- staleness: anything off gives the plan.jsonl path --------------------------------------------

def _stale_cases():
    def missing(run):
        shutil.rmtree(run / STORE_DIR)

    def no_index(run):
        (run / STORE_DIR / INDEX).unlink()

    def old_version(run):
        index = json.loads((run / STORE_DIR / INDEX).read_text())
        index["version"] = 0
        (run / STORE_DIR / INDEX).write_text(json.dumps(index))

    def corrupt_index(run):
        (run / STORE_DIR / INDEX).write_text("{not json")

    def truncated_columns(run):
        path = run / STORE_DIR / planstore.DATA
        path.write_bytes(path.read_bytes()[:100])

    def garbage_columns(run):
        index = json.loads((run / STORE_DIR / INDEX).read_text())
        index["columns"]["id.offsets"]["shape"] = [3]
        (run / STORE_DIR / INDEX).write_text(json.dumps(index))

    def plan_rewritten(run):  # another plan written without the store (size and mtime differ)
        text = (run / "plan.jsonl").read_text(encoding="utf-8")
        (run / "plan.jsonl").write_text(text.replace('"index":0,', '"index":100000,', 1), encoding="utf-8")

    return [missing, no_index, old_version, corrupt_index, truncated_columns, garbage_columns, plan_rewritten]


@pytest.mark.parametrize("spoil", _stale_cases(), ids=lambda f: f.__name__)
def test_a_missing_or_stale_store_gives_the_jsonl_outputs(demo_root, tmp_path, monkeypatch, spoil):
    run = make_run(demo_root, tmp_path / "run", "random")
    spoil(run)
    paths = Paths(monkeypatch)
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    shutil.rmtree(twin / STORE_DIR, ignore_errors=True)
    score_run(twin)
    paths.taken.clear()
    score_run(run)
    assert paths.taken == ["jsonl"]
    assert outputs(run) == outputs(twin)


def test_plan_edited_by_hand_with_its_size_and_mtime_kept_is_scored_from_plan_jsonl(demo_root, tmp_path, monkeypatch):
    """Only the sha256 can tell: the columns are trusted for reading, then the digest process's
    sha256 of plan.jsonl differs, and the step scores from plan.jsonl before writing anything."""
    run = make_run(demo_root, tmp_path / "run", "random")
    plan = run / "plan.jsonl"
    before = os.stat(plan)
    text = plan.read_text(encoding="utf-8")
    entry = json.loads(text.splitlines()[0])
    old = json.dumps(entry["sample"]["target"]["values"], separators=(",", ":"))
    values = [round(v + 0.125, 6) if isinstance(v, float) else v + 1 for v in entry["sample"]["target"]["values"]]
    new = json.dumps(values, separators=(",", ":"))
    new = new + " " * (len(old) - len(new)) if len(new) <= len(old) else new
    assert len(new) == len(old)
    plan.write_text(text.replace(old, new, 1), encoding="utf-8")
    os.utime(plan, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert open_store(run) is not None  # size and mtime as recorded
    paths = Paths(monkeypatch)
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    shutil.rmtree(twin / STORE_DIR)
    score_run(twin)
    paths.taken.clear()
    score_run(run)
    assert paths.taken == ["jsonl"]
    assert outputs(run) == outputs(twin)
    assert json.loads((run / "samples_detection.jsonl").read_text().splitlines()[0])["target"] != \
        entry["sample"]["target"]["values"] or entry["task"] != "detection"


def test_a_broken_plan_line_is_one_error_naming_plan_jsonl_and_the_line(demo_root, tmp_path):
    run = make_run(demo_root, tmp_path / "run", "prior")
    shutil.rmtree(run / STORE_DIR)
    lines = (run / "plan.jsonl").read_text(encoding="utf-8").splitlines()
    lines[-3] = '{"task": "detection", "key": "x", "sample": {"id": 5}}'
    (run / "plan.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = cli("score", str(run))
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() + proc.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"plan.jsonl:{len(lines) - 2}:" in errors[0], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_write_plan_consumes_entries_once_and_keeps_plan_bytes(tmp_path):
    entries = load_plan(Path(__file__).resolve().parents[1] / "leaderboard" / "runs" / "prior")
    write_plan(tmp_path / "a", iter(entries))
    from medvision_eval.store import write_jsonl
    write_jsonl(tmp_path / "b.jsonl", entries)
    assert (tmp_path / "a" / "plan.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert isinstance(entries[0], PlanEntry) and open_store(tmp_path / "a") is not None


def test_a_bad_response_line_is_named_by_file_and_line_on_the_store_path(demo_root, tmp_path, monkeypatch):
    run = make_run(demo_root, tmp_path / "run", "random")
    lines = (run / "responses.jsonl").read_text(encoding="utf-8").splitlines()
    lines[-2] = '{"key": "k", "task": "t", "sample_id": "s", "prompt_hash": "h", "response": {"text": ["no"]}}'
    (run / "responses.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(storescore, "PARALLEL_ANSWER_BYTES", 0)  # the bad line is in the forked reader's half
    monkeypatch.setattr(scoring, "PARALLEL_ROWS", 1)
    with pytest.raises(ValueError, match=rf"responses\.jsonl:{len(lines) - 1}: not a valid response record"):
        score_run(run)
    assert not list(run.glob(".*.tmp"))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=6), st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=48))
def test_float_row_texts_join_float_texts_of_each_row(k, values):
    n = len(values) // k if k else 0
    matrix = np.array(values[:n * k], dtype=np.float64).reshape(n, k)
    rows, inf = float_row_texts(matrix)
    assert len(rows) == n
    for i in range(n):
        texts, row_inf = float_texts(matrix[i])
        assert inf[i] == bool(row_inf.any())
        if not row_inf.any():
            assert rows[i] == ", ".join(texts)


def test_full_precision_values_line_up_across_batches(tmp_path):
    """Rows with and without ``extra.plan_values``, either side of a batch boundary."""
    base = load_plan(Path(__file__).resolve().parents[1] / "leaderboard" / "runs" / "prior")[0]
    entries = []
    for i in range(2500):
        extra = dict(base.sample.extra)
        extra.pop("plan_values", None)
        if i % 700 > 600:
            extra["plan_values"] = [0.5 + i, 1.25]
        sample = base.sample.model_copy(update={"id": f"s{i:05d}", "index": i, "extra": extra})
        entries.append(base.model_copy(update={"sample": sample, "key": f"{i:032x}"}))
    write_plan(tmp_path, entries)
    store = open_store(tmp_path)
    assert store is not None
    rows = np.arange(len(entries))
    for full in (False, True):
        flat, offsets = store.truths(rows, full)
        got = [tuple(flat[offsets[i]:offsets[i + 1]]) for i in rows]
        want = [tuple(float(v) for v in e.sample.extra["plan_values"]) if full and e.sample.extra.get("plan_values")
                else tuple(e.sample.target.values) for e in entries]
        assert got == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.booleans()), max_size=30),
       st.lists(st.integers(0, 6), max_size=12))
def test_join_answers_picks_what_read_answers_keeps(answers, plan):
    """Keys sharing their first 8 bytes, duplicates (last completed wins, else last), keys no plan
    row has, plan rows with no answer."""
    def key(k: int, j: int = 0) -> bytes:
        return bytes([k % 3] * 8) + bytes([k, j] * 4)  # keys 0, 3 share the first 8 bytes

    table = storescore._empty_table()
    table = storescore.AnswerTable(
        hex_key=np.array([list(key(k)) for k, _, _ in answers], dtype=np.uint8).reshape(-1, 16),
        other_key={}, text=np.zeros(0, dtype=np.uint8), text_start=np.zeros(len(answers), dtype=np.int64),
        text_end=np.zeros(len(answers), dtype=np.int64), has_text=np.array([d for _, _, d in answers], dtype=bool),
        latency=np.zeros(len(answers)), prompt_tokens=np.zeros(len(answers), dtype=np.int64),
        completion_tokens=np.zeros(len(answers), dtype=np.int64))
    best: dict[bytes, int] = {}
    for i, (k, _, done) in enumerate(answers):
        old = best.get(key(k))
        if old is None or done or not answers[old][2]:
            best[key(k)] = i
    plan_keys = np.array([list(key(k)) for k in plan], dtype=np.uint8).reshape(-1, 16)
    got = storescore.join_answers(plan_keys, table).tolist()
    assert got == [best.get(key(k), -1) for k in plan]


def _join_reference(answer_keys, completed, plan_keys):
    """The dictionary rule of :func:`medvision_eval.columnar.read_answers`: per key, the last
    completed answer, else the last one; a key that is no cache key matches no plan row."""
    best: dict[str, int] = {}
    for i, k in enumerate(answer_keys):
        old = best.get(k)
        if old is None or completed[i] or not completed[old]:
            best[k] = i
    return [best.get(k, -1) for k in plan_keys]


def _table_of(keys: list[str], has_text: list[bool], errors: dict[int, str]) -> storescore.AnswerTable:
    m = len(keys)
    hexed = np.zeros((m, 16), dtype=np.uint8)
    other = {}
    for i, k in enumerate(keys):
        one = planstore.hex_keys([k])
        if one is None:
            other[i] = k
        else:
            hexed[i] = one[0]
    return storescore.AnswerTable(
        hex_key=hexed, other_key=other, text=np.zeros(0, dtype=np.uint8), text_start=np.zeros(m, dtype=np.int64),
        text_end=np.zeros(m, dtype=np.int64), has_text=np.array(has_text, dtype=bool).reshape(m),
        latency=np.zeros(m), prompt_tokens=np.zeros(m, dtype=np.int64),
        completion_tokens=np.zeros(m, dtype=np.int64), errors=errors)


# keys sharing their first 8 bytes (first-word collisions), a key of zeros (what a non-cache key's
# row holds in hex_key), keys differing only in their last byte, upper-case and short non-cache keys
_KEYS = ["00" * 16, "11" * 8 + "22" * 8, "11" * 8 + "23" * 8, "11" * 8 + "00" * 8, "ff" * 16, "ff" * 15 + "fe",
         "0123456789abcdef" * 2, "fedcba9876543210" * 2]
_ODD_KEYS = ["11" * 8 + "22" * 7 + "2G", "AB" * 16, "x", ""]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_KEYS + _ODD_KEYS), st.booleans(), st.booleans()), max_size=40),
       st.lists(st.sampled_from(_KEYS), max_size=16), st.booleans())
def test_join_answers_is_the_dictionary_rule_on_hostile_keys(answers, plan, plan_order):
    """Duplicates (completed or not, errors), non-cache keys (never matched, also when their other
    bytes look like a plan key's), first-word collisions, duplicate plan keys, missing answers; and
    the answers-in-plan-order shortcut with and without duplicate plan keys."""
    if plan_order:  # answers exactly the plan's keys in plan order (the shortcut's case)
        answers = [(k, d, e) for k, (_, d, e) in zip(plan, answers + [("", True, False)] * len(plan))]
    keys = [k for k, _, _ in answers]
    errors = {i: "boom" for i, (_, _, e) in enumerate(answers) if e}
    completed = [d and not e for _, d, e in answers]
    table = _table_of(keys, [d for _, d, _ in answers], errors)
    plan_keys = np.array([list(bytes.fromhex(k)) for k in plan], dtype=np.uint8).reshape(-1, 16)
    assert storescore.join_answers(plan_keys, table).tolist() == _join_reference(keys, completed, plan)


def test_join_answers_of_many_shuffled_and_repeated_answers_is_the_dictionary_rule():
    rng = np.random.default_rng(7)
    plan = [f"{int(v):032x}" for v in rng.integers(0, 1 << 62, 3000)] + [f"{i:032x}" for i in range(500)]
    keys = [plan[i] for i in rng.permutation(len(plan))[:3200]]  # some rows unanswered
    keys += [keys[i] for i in rng.integers(0, len(keys), 900)]  # retries
    keys += ["AB" * 16, "0" * 31]  # no cache keys
    rng.shuffle(keys)
    has_text = (rng.random(len(keys)) < 0.8).tolist()
    errors = {int(i): "err" for i in np.flatnonzero(rng.random(len(keys)) < 0.1)}
    completed = [h and i not in errors for i, h in enumerate(has_text)]
    table = _table_of(keys, has_text, errors)
    plan_keys = np.frombuffer(bytes.fromhex("".join(plan)), dtype=np.uint8).reshape(-1, 16)
    assert storescore.join_answers(plan_keys, table).tolist() == _join_reference(keys, completed, plan)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=40), st.integers(1, 4))
def test_float_arrays_dump_as_their_floats(values, k):
    """The row writer hands orjson float64 arrays: the same text as the list of their floats."""
    import orjson

    from medvision_eval.columnar import _dumps_floats

    flat = np.array(values, dtype=np.float64)
    assert _dumps_floats(flat) == orjson.dumps(flat.tolist())
    matrix = flat[:len(flat) // k * k].reshape(-1, k)
    assert _dumps_floats(matrix) == orjson.dumps(matrix.tolist())
