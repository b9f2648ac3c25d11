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
from equilibra.models.base import Recommender, top_k


class EASE(Recommender):
    name = "ease"

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
