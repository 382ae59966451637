"""Sparse user × item matrices shared by the CF models (one definition of "interacted")."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp


def history_matrix(histories: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Binary (len(histories), n_items) CSR; items outside the fitted range carry no signal.

    Shared by every method that scores from a history (itemknn, ease, bpr and als fold-ins). Built from
    its CSR arrays directly: the served path calls this once per model per request, and the generic
    (row, col) constructor spent more time checking and converting than the product that follows.
    """
    rows = []
    for history in histories:
        history = np.asarray(history, np.int64)
        rows.append(np.unique(history[(history >= 0) & (history < n_items)]))
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(row) for row in rows], out=indptr[1:])
    indices = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    index_dtype = np.int32 if max(n_items, len(indices)) < np.iinfo(np.int32).max else np.int64
    matrix = sp.csr_matrix((np.ones(len(indices), np.float32), indices.astype(index_dtype),
                            indptr.astype(index_dtype)), shape=(len(rows), n_items))
    matrix.has_canonical_format = True  # each row's indices are sorted and unique (np.unique)
    return matrix


def binary_matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR with 1.0 wherever a (row, col) pair occurs: repeated interactions count once."""
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix
