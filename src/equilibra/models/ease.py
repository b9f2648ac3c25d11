"""EASE (Steck, 2019): a closed-form item-item linear model, B = I - P / diag(P).

Dense in items, so its memory is n² floats: on a 235k-item catalogue that is 220 GB, beyond any
machine here. `max_items` bounds it: the model is solved over the `max_items` items with the
most support (distinct users) and scores every other item as "unknown" (below all modelled items,
ordered by popularity). Those long-tail items are what other generators in a hybrid cover.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from equilibra.data.interactions import Interactions
from equilibra.models.base import BLOCK_FLOATS, Recommender, top_k
from equilibra.models.registry import register


@register("ease")
class EASE(Recommender):
    def __init__(self, regularization: float = 250.0, max_items: int = 12_000, binary: bool = True):
        self.regularization = regularization
        self.max_items = max_items
        self.binary = binary

    def _fit(
        self, interactions: Interactions, items: pd.DataFrame | None, users: pd.DataFrame | None
    ) -> None:
        x = sp.csr_matrix(interactions.matrix, dtype=np.float64, copy=True)
        if self.binary:
            x.data[:] = 1.0
        support = np.diff(sp.csc_matrix(x).indptr)
        n_keep = min(self.max_items, int((support > 0).sum()))
        kept = np.sort(np.argsort(-support, kind="stable")[:n_keep])
        gram = (x[:, kept].T @ x[:, kept]).toarray()
        gram[np.diag_indices_from(gram)] += self.regularization
        precision = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
        weights = precision / (-np.diag(precision))
        weights[np.diag_indices_from(weights)] = 0.0
        self.kept_items_ = kept.astype(np.int64)
        self.weights_ = weights.astype(np.float32)
        self.user_items_ = sp.csr_matrix(x[:, kept], dtype=np.float32)
        # Unmodelled items rank below modelled ones, by popularity among themselves.
        self.fallback_ = (support / max(support.max(), 1) - 2.0).astype(np.float32)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        scores = np.broadcast_to(self.fallback_, (len(users), self.n_items_)).copy()
        scores[:, self.kept_items_] = self.user_items_[users] @ self.weights_
        return scores

    def recommend(
        self,
        users: np.ndarray,
        k: int = 10,
        exclude: sp.csr_matrix | None = None,
        batch_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over the modelled items; unmodelled ones (below them by construction) only
        fill lists the modelled items cannot, so no users × catalogue block is built."""
        users = np.asarray(users, dtype=np.int64)
        kept = self.kept_items_
        out_items = np.full((len(users), k), -1, dtype=np.int64)
        out_scores = np.full((len(users), k), -np.inf)
        batch = batch_size or max(1, BLOCK_FLOATS // max(len(kept), 1))
        others = np.setdiff1d(np.arange(self.n_items_), kept)
        for lo in range(0, len(users), batch):
            rows = users[lo : lo + batch]
            block = np.asarray(self.user_items_[rows] @ self.weights_, dtype=np.float64)
            if exclude is not None:
                sub = exclude[rows][:, kept].tocoo()
                block[sub.row, sub.col] = -np.inf
            local, values = top_k(block, k)
            found = np.where(local >= 0, kept[np.maximum(local, 0)], -1)
            short = (found < 0).any(axis=1)
            if short.any() and len(others):
                rest = self.fallback_[others][None, :].repeat(short.sum(), axis=0).astype(float)
                if exclude is not None:
                    sub = exclude[rows[short]][:, others].tocoo()
                    rest[sub.row, sub.col] = -np.inf
                fill_local, fill_values = top_k(rest, k)
                for r, row in enumerate(np.flatnonzero(short)):
                    have = int((found[row] >= 0).sum())
                    extra = fill_local[r][fill_local[r] >= 0][: k - have]
                    found[row, have : have + len(extra)] = others[extra]
                    values[row, have : have + len(extra)] = fill_values[r][: len(extra)]
            out_items[lo : lo + batch], out_scores[lo : lo + batch] = found, values
        return out_items, out_scores

    def similar_items(self, items: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        items = np.asarray(items, dtype=np.int64)
        position = np.full(self.n_items_, -1)
        position[self.kept_items_] = np.arange(len(self.kept_items_))
        block = np.full((len(items), self.n_items_), -np.inf)
        known = position[items] >= 0
        rows = known.nonzero()[0]
        block[np.ix_(rows, self.kept_items_)] = self.weights_[:, position[items[known]]].T
        block[np.arange(len(items)), items] = -np.inf
        return top_k(block, k)
