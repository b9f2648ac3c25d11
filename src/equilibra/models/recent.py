"""The user's own recent items, then popular ones: what every shop shows first.

Strong on shop logs, where people come back to what they were looking at. Also the fallback for
users whose history is all the signal there is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from equilibra.data.interactions import Interactions
from equilibra.data.sparse import row_entries, take_rows
from equilibra.models.base import Recommender, SparseRow, SparseScores, popularity_fallback
from equilibra.models.registry import register


@register("recent")
class RecentItems(Recommender):
    sparse_scores = True

    def __init__(self, half_life_days: float = 1.0, popularity_weight: float = 1e-3):
        self.half_life_days = half_life_days
        self.popularity_weight = popularity_weight

    def _fit(
        self, interactions: Interactions, items: pd.DataFrame | None, users: pd.DataFrame | None
    ) -> None:
        latest = interactions.last_seen.tocsr()
        age_days = np.clip(interactions.reference_time - latest.data, 0, None) / 86_400.0
        recency = latest.copy()
        # In (1, 2]: any item the user touched ranks above every popular-only item (<= 1e-3).
        recency.data = 1.0 + np.power(0.5, age_days / self.half_life_days)
        self.recency_ = recency.astype(np.float32)
        self.popularity_ = popularity_fallback(interactions, self.popularity_weight)

    def _score_users(self, users: np.ndarray) -> SparseScores:
        return SparseScores(take_rows(self.recency_, users), self.popularity_)

    def _score_one(self, user: int) -> SparseRow:
        return SparseRow(*row_entries(self.recency_, user), self.popularity_)
