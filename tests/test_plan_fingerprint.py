"""plan.jsonl's fingerprint in the plan columns' index and the inputs digest computed in the same
read (:mod:`medvision_eval.rundigest`): the inputs digest keeps its value (results.json records it
and ``cached_results`` compares it); an index written now records XXH3-128 (and seals with it), an
index written by an older version (sha256 fingerprint and seal) is still read and still checked;
a plan.jsonl edited by hand with its size and mtime kept is caught either way."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import xxhash

from medvision_eval import __version__, planstore, rundigest, scoring
from medvision_eval.planstore import DATA, INDEX, STORE_DIR, open_store
from medvision_eval.scoring import score_run
from test_plan_columns import Paths, make_run, outputs


def _reference_inputs_digest(run: Path) -> str:
    """The inputs digest as results.json has always recorded it, written out plainly."""
    h = hashlib.sha256(__version__.encode())
    names = ["run.json", "plan.jsonl", *sorted(p.name for p in run.glob("responses*.jsonl"))]
    names += sorted(p.name for p in run.glob("judged_*.jsonl"))
    for name in names:
        h.update(name.encode())
        h.update((run / name).read_bytes())
    return h.hexdigest()


def _as_older_index(run: Path) -> None:
    """Rewrite the index as an older version wrote it: sha256 of plan.jsonl, a bare sha256 seal."""
    path = run / STORE_DIR / INDEX
    index = json.loads(path.read_text(encoding="utf-8"))
    plan = index["plan"]
    del plan["xxh3_128"]
    plan["sha256"] = hashlib.sha256((run / "plan.jsonl").read_bytes()).hexdigest()
    del index["seal"]
    seal = hashlib.sha256(planstore._sealed_text(index))
    seal.update((run / STORE_DIR / DATA).read_bytes())
    index["seal"] = seal.hexdigest()
    path.write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _edit_keeping_size_and_mtime(run: Path) -> None:
    plan = run / "plan.jsonl"
    before = os.stat(plan)
    data = bytearray(plan.read_bytes())
    at = data.index(b'"index":0,') + len(b'"index":')
    data[at:at + 1] = b"7"  # the first sample's index 0 -> 7: same size
    plan.write_bytes(bytes(data))
    os.utime(plan, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.fixture(scope="module")
def scored_run(demo_root, tmp_path_factory):
    return make_run(demo_root, tmp_path_factory.mktemp("fp") / "run", "random")


def test_inputs_digest_keeps_its_value_and_the_plan_fingerprints_are_the_files(scored_run):
    run = scored_run
    plan_bytes = (run / "plan.jsonl").read_bytes()
    want = _reference_inputs_digest(run)
    assert rundigest.inputs_digest(run) == scoring.inputs_digest(run) == want
    assert rundigest.digests(run, None) == (want, None)
    assert rundigest.digests(run, "sha256") == (want, hashlib.sha256(plan_bytes).hexdigest())
    assert rundigest.digests(run, "xxh3_128") == (want, xxhash.xxh3_128(plan_bytes).hexdigest())
    assert json.loads((run / "results.json").read_text())["inputs_digest"] == want


@pytest.mark.parametrize("size", [0, 1, rundigest.BLOCK - 1, rundigest.BLOCK, rundigest.BLOCK + 1, 3 * rundigest.BLOCK + 5])
def test_digests_of_files_around_the_block_size(tmp_path, size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    (tmp_path / "run.json").write_bytes(b"{}")
    (tmp_path / "plan.jsonl").write_bytes(data)
    (tmp_path / "responses.jsonl").write_bytes(data[::-1])
    want = hashlib.sha256(__version__.encode() + b"run.json{}plan.jsonl" + data + b"responses.jsonl" + data[::-1])
    assert rundigest.digests(tmp_path, "xxh3_128") == (want.hexdigest(), xxhash.xxh3_128(data).hexdigest())


def test_a_new_index_records_xxh3_and_the_store_exposes_it(scored_run):
    store = open_store(scored_run)
    assert store is not None and store.plan_hash == "xxh3_128"
    assert store.plan_digest == xxhash.xxh3_128((scored_run / "plan.jsonl").read_bytes()).hexdigest()


def test_an_older_index_with_sha256_is_read_and_checked_with_sha256(scored_run, tmp_path, monkeypatch):
    run = tmp_path / "old"
    shutil.copytree(scored_run, run)
    _as_older_index(run)
    store = open_store(run)
    assert store is not None and store.plan_hash == "sha256"
    seen = []
    digests = scoring.digests

    def spy(run_dir, plan_hash=None):
        seen.append(plan_hash)
        return digests(run_dir, plan_hash)

    monkeypatch.setattr(scoring, "digests", spy)
    paths = Paths(monkeypatch)
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    shutil.rmtree(twin / STORE_DIR)
    score_run(twin)
    paths.taken.clear()
    seen.clear()
    score_run(run)
    assert paths.taken == ["store"] and seen == ["sha256"]
    assert outputs(run) == outputs(twin)


@pytest.mark.parametrize("older", [False, True], ids=["xxh3-index", "sha256-index"])
def test_a_hand_edit_keeping_size_and_mtime_is_caught_by_either_fingerprint(scored_run, tmp_path, monkeypatch, older):
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    if older:
        _as_older_index(run)
    _edit_keeping_size_and_mtime(run)
    assert open_store(run) is not None  # size and mtime as recorded: only the fingerprint tells
    paths = Paths(monkeypatch)
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    shutil.rmtree(twin / STORE_DIR)
    score_run(twin)
    paths.taken.clear()
    score_run(run)
    assert paths.taken == ["jsonl"]
    assert outputs(run) == outputs(twin)
    first = json.loads((run / "samples_detection.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["index"] == 7


def _spoil_index(run: Path, edit) -> None:
    path = run / STORE_DIR / INDEX
    index = json.loads(path.read_text(encoding="utf-8"))
    edit(index)
    path.write_text(json.dumps(index), encoding="utf-8")


@pytest.mark.parametrize("edit", [
    lambda i: i["plan"].update(xxh3_128=12345),  # not a text
    lambda i: i["plan"].pop("xxh3_128"),  # no fingerprint at all
    lambda i: i.update(seal="xxh3_128:" + "0" * 32),  # a seal of the right form, not the columns'
    lambda i: i.update(seal=i["seal"][len("xxh3_128:"):]),  # the XXH3 seal read as a sha256 one
    lambda i: i.update(seal=None),
], ids=["fingerprint-int", "no-fingerprint", "wrong-seal", "bare-seal", "null-seal"])
def test_a_spoilt_fingerprint_or_seal_gives_no_store_and_the_jsonl_outputs(scored_run, tmp_path, monkeypatch, edit):
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    _spoil_index(run, edit)
    assert open_store(run) is None
    paths = Paths(monkeypatch)
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    shutil.rmtree(twin / STORE_DIR)
    score_run(twin)
    paths.taken.clear()
    score_run(run)
    assert paths.taken == ["jsonl"]
    assert outputs(run) == outputs(twin)
