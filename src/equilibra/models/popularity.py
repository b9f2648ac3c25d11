"""Popularity: global, time-decayed trending, and per category of the user's taste."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.interactions import Interactions
from equilibra.models.base import Recommender, normalise_rows
from equilibra.models.registry import register

DAY = 86_400.0


@register("popularity")
class Popularity(Recommender):
    """Distinct users per item; `half_life_days` turns it into trending (recent counts more).

    With `by_category`, each user's list favours the categories they engaged with (a mix of the
    global ranking and the ranking inside their categories), which is what shops show as
    "popular in what you like".
    """

    def __init__(
        self,
        half_life_days: float | None = None,
        by_category: bool = False,
        category_weight: float = 0.7,
    ):
        self.half_life_days = half_life_days
        self.by_category = by_category
        self.category_weight = category_weight

    def _fit(
        self, interactions: Interactions, items: pd.DataFrame | None, users: pd.DataFrame | None
    ) -> None:
        # One vote per (user, item), weighted by how recent that user's latest event is.
        latest = interactions.last_seen
        weight = np.ones(latest.nnz)
        if self.half_life_days:
            age = np.clip(interactions.reference_time - latest.data, 0, None) / DAY
            weight = np.power(0.5, age / self.half_life_days)
        counts = np.bincount(latest.indices, weights=weight, minlength=self.n_items_)
        self.item_scores_ = counts / max(counts.max(), 1e-12)
        if self.by_category:
            self.item_category_, _ = item_categories(interactions, items)
            self.user_category_ = normalise_rows(
                sp.csr_matrix(interactions.matrix) @ self.item_category_
            ).astype(np.float32)
        else:
            self.item_category_ = sp.csr_matrix((self.n_items_, 0))
            self.user_category_ = sp.csr_matrix((self.n_users_, 0))

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        base = np.broadcast_to(self.item_scores_, (len(users), self.n_items_)).copy()
        if self.by_category and self.item_category_.shape[1]:
            affinity = (self.user_category_[users] @ self.item_category_.T).toarray()
            base = (1 - self.category_weight) * base + self.category_weight * affinity * base
        return base

    def similar_items(self, items: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Popular items of the same category (or globally, without categories)."""
        from equilibra.models.base import top_k

        items = np.asarray(items, dtype=np.int64)
        scores = np.broadcast_to(self.item_scores_, (len(items), self.n_items_)).copy()
        if self.item_category_.shape[1]:
            same = (self.item_category_[items] @ self.item_category_.T).toarray() > 0
            scores = scores + same
        scores[np.arange(len(items)), items] = -np.inf
        return top_k(scores, k)


def item_categories(
    interactions: Interactions, items: pd.DataFrame | None
) -> tuple[sp.csr_matrix, list[str]]:
    """Items × categories (0/1) from the item table's `categories` column, in dense item order,
    with the category names of its columns."""
    n_items = interactions.shape[1]
    if items is None or "categories" not in items:
        return sp.csr_matrix((n_items, 0), dtype=np.float32), []
    table = items.set_index("item_id")["categories"].dropna().astype(str)
    dense = interactions.items.to_dense(table.index.to_numpy())
    keep = dense >= 0
    exploded = pd.Series(table.to_numpy()[keep], index=dense[keep]).str.split("|").explode()
    exploded = exploded[exploded.str.len() > 0]
    codes, names = pd.factorize(exploded.to_numpy())
    matrix = sp.csr_matrix(
        (np.ones(len(codes), dtype=np.float32), (exploded.index.to_numpy(dtype=np.int64), codes)),
        shape=(n_items, len(names)),
    )
    return matrix, [str(name) for name in names]
