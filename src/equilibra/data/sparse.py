"""Small sparse-matrix helpers shared by models, ranking and metrics."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def lookup(matrix: sp.spmatrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """matrix[rows[i], cols[i]] for many pairs at once (0 where absent), without fancy indexing.

    Cells are keyed as row * n_cols + col and found by binary search, which stays fast for
    millions of pairs where scipy's fancy indexing does not.
    """
    matrix = sp.csr_matrix(matrix)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    n_cols = matrix.shape[1]
    row_of = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    keys = row_of * n_cols + matrix.indices
    order = np.argsort(keys, kind="stable")
    keys, data = keys[order], matrix.data[order]
    query = rows * n_cols + cols
    if len(keys) == 0:
        return np.zeros(query.shape, dtype=np.float64)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[pos] == query, data[pos], 0).astype(np.float64)


def contains(matrix: sp.spmatrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether each (rows[i], cols[i]) is a stored, non-zero cell."""
    return lookup(matrix, rows, cols) != 0
