"""Batch.subset on cached CSR features: the fast row gather equals scipy's fancy indexing."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from tools.base import Batch, Item


def _features(n: int) -> sp.csr_matrix:
    x = sp.random(n, 1000, density=0.02, format="csr", dtype=np.float32, random_state=0)
    x.sort_indices()
    return x


@pytest.mark.parametrize("idx", [[3], [9, 0, 0, 4], [], [-1, 2], list(range(10))[::-1]])
def test_subset_gathers_the_same_csr_rows_as_scipy(idx: list[int]) -> None:
    x = _features(10)
    batch = Batch([Item(str(i), f"t{i}") for i in range(10)])
    batch.cached("x", lambda items: x)
    sub = batch.subset(idx)
    got, want = sub.cached("x", lambda items: pytest.fail("recomputed")), x[np.asarray(idx, dtype=np.int64)]
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got.indptr, want.indptr) and np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.data, want.data)
    assert [it.key for it in sub.items] == [str(i % 10) for i in idx]


def test_subset_rejects_rows_out_of_range() -> None:
    batch = Batch([Item("a"), Item("b")])
    batch.cached("x", lambda items: _features(2))
    with pytest.raises(IndexError):
        batch.subset([2])
