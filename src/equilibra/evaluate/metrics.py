"""Top-K ranking metrics over whole test sets, vectorised.

Recommendations arrive as an (n_users, K) array of dense item indices (-1 pads a short list);
the truth as a CSR matrix of relevant items per user (same user order). Every metric returns the
per-user values, so a caller can average, slice (cold users) or bootstrap them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from equilibra.data.sparse import contains


def hits(recommended: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Boolean (n_users, K): is the item at each rank relevant to that user?"""
    recommended = np.asarray(recommended)
    if sp.csr_matrix(relevant).shape[0] != recommended.shape[0]:
        raise ValueError("relevant: needs one row per recommended list")
    rows = np.repeat(np.arange(recommended.shape[0])[:, None], recommended.shape[1], axis=1)
    found = contains(relevant, rows.ravel(), np.maximum(recommended, 0).ravel())
    return found.reshape(recommended.shape) & (recommended >= 0)


def _n_relevant(relevant: sp.csr_matrix) -> np.ndarray:
    return np.diff(sp.csr_matrix(relevant).indptr)


def precision_at_k(recommended: np.ndarray, relevant: sp.csr_matrix, k: int) -> np.ndarray:
    return hits(recommended[:, :k], relevant).sum(axis=1) / k


def recall_at_k(recommended: np.ndarray, relevant: sp.csr_matrix, k: int) -> np.ndarray:
    n_rel = _n_relevant(relevant)
    found = hits(recommended[:, :k], relevant).sum(axis=1)
    return np.divide(found, n_rel, out=np.zeros(len(n_rel)), where=n_rel > 0)


def f1_at_k(recommended: np.ndarray, relevant: sp.csr_matrix, k: int) -> np.ndarray:
    p, r = precision_at_k(recommended, relevant, k), recall_at_k(recommended, relevant, k)
    return np.divide(2 * p * r, p + r, out=np.zeros(len(p)), where=(p + r) > 0)


def hit_rate_at_k(recommended: np.ndarray, relevant: sp.csr_matrix, k: int) -> np.ndarray:
    return hits(recommended[:, :k], relevant).any(axis=1).astype(float)


def ndcg_at_k(recommended: np.ndarray, relevant: sp.csr_matrix, k: int) -> np.ndarray:
    """Binary-relevance NDCG: DCG of the list over the DCG of a perfect list."""
    found = hits(recommended[:, :k], relevant)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (found * discount[: found.shape[1]]).sum(axis=1)
    ideal_len = np.minimum(_n_relevant(relevant), k)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[ideal_len]
    return np.divide(dcg, ideal, out=np.zeros(len(dcg)), where=ideal > 0)


def map_at_k(recommended: np.ndarray, relevant: sp.csr_matrix, k: int) -> np.ndarray:
    """Average precision at K, normalised by min(|relevant|, K)."""
    found = hits(recommended[:, :k], relevant)
    ranks = np.arange(1, found.shape[1] + 1)
    precision_at_rank = np.cumsum(found, axis=1) / ranks
    denominator = np.minimum(_n_relevant(relevant), k)
    total = (precision_at_rank * found).sum(axis=1)
    return np.divide(total, denominator, out=np.zeros(len(total)), where=denominator > 0)


def mrr_at_k(recommended: np.ndarray, relevant: sp.csr_matrix, k: int) -> np.ndarray:
    found = hits(recommended[:, :k], relevant)
    first = np.argmax(found, axis=1)
    return np.where(found.any(axis=1), 1.0 / (first + 1), 0.0)


def coverage_at_k(recommended: np.ndarray, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one top-K list."""
    shown = recommended[:, :k]
    return float(len(np.unique(shown[shown >= 0])) / n_items) if n_items else 0.0


def novelty_at_k(
    recommended: np.ndarray, item_popularity: np.ndarray, n_users: int, k: int
) -> np.ndarray:
    """Mean self-information -log2(p(item)) of the recommended items, p = users who saw it."""
    shown = recommended[:, :k]
    share = np.clip(item_popularity / max(n_users, 1), 1e-12, 1.0)
    info = np.where(shown >= 0, -np.log2(share[np.maximum(shown, 0)]), np.nan)
    return np.nanmean(info, axis=1)


def popularity_bias_at_k(
    recommended: np.ndarray, item_popularity: np.ndarray, k: int
) -> np.ndarray:
    """Average recommendation popularity (ARP): mean training popularity of the list."""
    shown = recommended[:, :k]
    pops = np.where(shown >= 0, item_popularity[np.maximum(shown, 0)], np.nan)
    return np.nanmean(pops, axis=1)


def intra_list_diversity(
    recommended: np.ndarray, item_vectors: np.ndarray | sp.spmatrix, k: int
) -> np.ndarray:
    """Mean pairwise cosine distance between the items of each list (needs >= 2 items).

    Sparse item vectors stay sparse (a catalogue × users matrix would not fit densified)."""
    shown = recommended[:, :k]
    vectors = sp.csr_matrix(item_vectors, dtype=np.float64)
    norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())
    unit = sp.csr_matrix(
        sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-300), 0.0)) @ vectors
    )
    out = np.full(len(shown), np.nan)
    for row, items in enumerate(shown):
        items = items[items >= 0]
        if len(items) < 2:
            continue
        block = unit[items]
        sims = (block @ block.T).toarray()
        n = len(items)
        out[row] = 1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return out


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(actual)) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(actual))))
