"""Sparse user × item matrices shared by the CF models (one definition of "interacted")."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp


def history_matrix(histories: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Binary (len(histories), n_items) CSR; items outside the fitted range carry no signal.

    Shared by every method that scores from a history (itemknn, ease, bpr and als fold-ins).
    """
    lengths = [len(h) for h in histories]
    rows = np.repeat(np.arange(len(histories)), lengths)
    cols = np.concatenate([np.asarray(h, np.int64) for h in histories]) if histories else np.zeros(0, np.int64)
    in_range = (cols >= 0) & (cols < n_items)
    return binary_matrix(rows[in_range], cols[in_range], (len(histories), n_items))


def binary_matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR with 1.0 wherever a (row, col) pair occurs: repeated interactions count once."""
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix
