"""The score step's answer side and serial glue (:mod:`medvision_eval.storescore`): each fast
path against the plain computation it replaces, on hostile inputs."""

from __future__ import annotations

import numpy as np
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
