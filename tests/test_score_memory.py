"""What keeps the score step's memory bounded, checked as behaviour (no sizes or times asserted:
those are measured by benchmarks/bench_scoring.py): the plan columns' pages are unmapped once read
and stay readable, a block's true values are read when the block needs them, and the tables
process's inputs gathered from the parsed blocks are the ones the object path orders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from medvision_eval import scoring, storescore
from medvision_eval.planstore import STORE_DIR, open_store

sys.path.insert(0, str(Path(__file__).parent))
from test_plan_columns import Paths, assert_same_as_jsonl, make_run  # noqa: E402

linux_only = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps")


def mapped_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path``."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and all(c in "0123456789abcdef-" for c in head[0]):
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@linux_only
def test_the_seal_check_leaves_no_column_page_mapped_and_release_unmaps_what_was_read(demo_root, tmp_path):
    run = make_run(demo_root, tmp_path / "run")
    columns = (run / STORE_DIR / "columns.bin").resolve()
    store = open_store(run)
    assert store is not None
    assert mapped_kb(columns) == 0  # hashing read every page; none stays mapped
    rows = np.arange(store.rows)
    ids = store.texts("id", rows)
    ratio = np.array(store["box_ratio"])
    assert mapped_kb(columns) > 0
    store.release()
    assert mapped_kb(columns) == 0
    assert store.texts("id", rows) == ids  # still readable, the same bytes
    assert np.array_equal(np.asarray(store["box_ratio"]), ratio, equal_nan=True)


def test_block_truths_are_the_slices_of_the_whole_task_gather(demo_root, tmp_path):
    run = make_run(demo_root, tmp_path / "run")
    store = open_store(run)
    for name, rows in storescore.task_rows(store).items():
        for full in (False, True):
            plan = storescore.task_plan(store, run / "plan.jsonl", name, rows, full)
            flat, offsets = store.truths(rows, full)
            for lo, hi in ((0, len(rows)), (0, 1), (1, min(len(rows), 7)), (len(rows) - 1, len(rows))):
                part, starts = plan.truths(lo, hi)
                assert starts.tolist() == (offsets[lo:hi + 1] - offsets[lo]).tolist()
                assert part.tobytes() == flat[offsets[lo]:offsets[hi]].tobytes()


@pytest.mark.parametrize("parallel", [False, True])
def test_tables_from_the_parsed_blocks_equal_the_jsonl_path(demo_root, tmp_path, monkeypatch, parallel):
    """Small blocks and (with ``parallel``) the forked tables/row-writing processes: the results and
    samples files equal the plan.jsonl path's, so the tables process's own gathering of id order,
    scores and status counts is the object path's."""
    monkeypatch.setattr(storescore, "BLOCK_ROWS", 7)
    if parallel:
        monkeypatch.setattr(scoring, "PARALLEL_ROWS", 1)
        monkeypatch.setattr(storescore, "PARALLEL_ROWS", 1)
    run = make_run(demo_root, tmp_path / "run")
    paths = Paths(monkeypatch)
    where = tmp_path / "tables-pids"
    gather = storescore.table_result

    def recorded(*args, **kwargs):
        with open(where, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return gather(*args, **kwargs)

    monkeypatch.setattr(storescore, "table_result", recorded)
    assert_same_as_jsonl(run, tmp_path, paths)
    pids = set(where.read_text().split())
    assert pids and (str(os.getpid()) not in pids) == (parallel and storescore.FORK)


def test_heap_trim_is_harmless_when_repeated_or_unavailable(monkeypatch):
    storescore.trim_heap()
    storescore.trim_heap()
    import ctypes

    def missing(*args, **kwargs):
        raise OSError("no libc")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    storescore.trim_heap()  # no glibc: a no-op
