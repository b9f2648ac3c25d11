"""Maximal marginal relevance: a list that is good and not all alike.

Greedily, each next item is the candidate with the best (1 − λ)·relevance − λ·(its highest
similarity to an item already picked), relevance being the score rescaled to [0, 1]. λ = 0 is the
plain ranking; λ = 1 picks only for novelty. Similarity is cosine between item vectors (category
indicators by default).

For the service, the MMR order is handed to the policy as scores (`diversified_scores`): the
candidates keep the set of score values they had, re-assigned in MMR order, so the policy's exploit
ranking is the diverse one and its propensities are those of the list shown.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _unit_rows(vectors: np.ndarray | sp.spmatrix) -> np.ndarray:
    dense = vectors.toarray() if sp.issparse(vectors) else np.asarray(vectors, dtype=float)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    return np.divide(dense, norms, out=np.zeros_like(dense, dtype=float), where=norms > 0)


def mmr_order(
    scores: np.ndarray, vectors: np.ndarray | sp.spmatrix, weight: float, depth: int
) -> np.ndarray:
    """Indices of the first `depth` picks in MMR order, then the rest by score."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError("weight: must lie in [0, 1]")
    scores = np.asarray(scores, dtype=float)
    by_score = np.argsort(-scores, kind="stable")
    n = len(scores)
    depth = min(depth, n)
    if weight == 0.0 or depth <= 1:
        return by_score
    low, high = float(scores.min()), float(scores.max())
    relevance = (scores - low) / (high - low) if high > low else np.ones(n)
    unit = _unit_rows(vectors)
    similarity = unit @ unit.T
    picked: list[int] = []
    closest = np.zeros(n)  # each candidate's highest similarity to what is picked
    open_ = np.ones(n, dtype=bool)
    for _ in range(depth):
        value = (1.0 - weight) * relevance - weight * closest
        value[~open_] = -np.inf
        best = int(np.argmax(value))
        picked.append(best)
        open_[best] = False
        np.maximum(closest, similarity[best], out=closest)
    rest = [i for i in by_score.tolist() if open_[i]]
    return np.array(picked + rest, dtype=np.int64)


def diversified_scores(
    scores: np.ndarray, vectors: np.ndarray | sp.spmatrix, weight: float, depth: int
) -> np.ndarray:
    """The same score values, re-assigned so that sorting by them gives the MMR order."""
    scores = np.asarray(scores, dtype=float)
    order = mmr_order(scores, vectors, weight, depth)
    out = np.empty_like(scores)
    out[order] = np.sort(scores)[::-1]
    return out
