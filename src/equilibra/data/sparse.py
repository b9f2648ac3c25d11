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


# Up to this many rows, `take_rows` and `rows_times` work on the CSR arrays in numpy: scipy's
# fancy indexing and products cost tens of microseconds per call in checks and conversions,
# most of a one-user request; for larger batches scipy's own loops are faster.
FEW_ROWS = 8


def _csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]):
    return sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)


def spans(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The positions `starts[i] .. starts[i] + counts[i] - 1` of every span, concatenated in
    order: many slices of one flat array taken at once."""
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.zeros(len(starts), dtype=np.int64)
    np.cumsum(counts[:-1], out=offsets[1:])
    return np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()))


def gather(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (positions in the data arrays of `rows`' entries, in order; each row's entry count)."""
    starts = indptr[rows].astype(np.int64)
    counts = indptr[rows + 1] - starts
    return spans(starts, counts), counts


def take_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """`matrix[rows]` (CSR in, CSR out)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) > FEW_ROWS:
        return sp.csr_matrix(matrix[rows])
    pos, counts = gather(matrix.indptr, rows)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return _csr(matrix.data[pos], matrix.indices[pos], indptr, (len(rows), matrix.shape[1]))


def rows_times(left: sp.csr_matrix, right: sp.csr_matrix) -> sp.csr_matrix:
    """`left @ right` for a left of a few rows (a user's items times an item-item matrix):
    the right rows each left entry names, scaled and summed per (row, column)."""
    if left.shape[0] > FEW_ROWS:
        return sp.csr_matrix(left @ right)
    n_rows, n_cols = left.shape[0], right.shape[1]
    entry_row = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(left.indptr))
    cells, sums = _products(entry_row, left.indices, left.data, right)
    dtype = np.result_type(left.dtype, right.dtype)
    indptr = np.searchsorted(cells // n_cols, np.arange(n_rows + 1))
    return _csr(sums.astype(dtype), cells % n_cols, indptr, (n_rows, n_cols))


def row_entries(matrix: sp.csr_matrix, row: int) -> tuple[np.ndarray, np.ndarray]:
    """One CSR row's (columns, values), as views: no matrix is built."""
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    return matrix.indices[start:end], matrix.data[start:end]


def row_times(
    indices: np.ndarray, data: np.ndarray, right: sp.csr_matrix
) -> tuple[np.ndarray, np.ndarray]:
    """One sparse row (its columns and values) times `right` -> the product's (columns,
    values), columns ascending: `rows_times` for a single row, with no matrix built either side
    (each scipy matrix costs tens of microseconds in checks, a serving request's budget)."""
    cells, sums = _products(np.zeros(len(indices), dtype=np.int64), indices, data, right)
    dtype = np.result_type(data.dtype, right.dtype)
    return cells % right.shape[1], sums.astype(dtype)


def _products(
    entry_row: np.ndarray, indices: np.ndarray, data: np.ndarray, right: sp.csr_matrix
) -> tuple[np.ndarray, np.ndarray]:
    """-> (cells keyed row * n_cols + col, ascending; their summed products)."""
    pos, counts = gather(right.indptr, indices)
    keys = np.repeat(entry_row, counts) * right.shape[1] + right.indices[pos]
    values = right.data[pos] * np.repeat(data, counts)
    cells, inverse = np.unique(keys, return_inverse=True)
    return cells, np.bincount(inverse, weights=values, minlength=len(cells))
