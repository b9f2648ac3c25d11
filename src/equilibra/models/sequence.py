"""Session-aware next item: what people look at right after what this user looked at last.

Shop sessions are short, so the last few events say more than a long history. Transitions are
counted between each event and the next `window` events of the same user within `max_gap_hours`
(closer steps count more); a user's score is the recency-weighted sum of the transition rows of
their last `recent` distinct items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.interactions import EventWeights, Interactions
from equilibra.data.sparse import row_entries, row_times, rows_times, take_rows
from equilibra.models.base import (
    Recommender,
    SparseRow,
    SparseScores,
    keep_top_k_per_row,
    popularity_fallback,
    top_k_rows,
)
from equilibra.models.registry import register


@register("covisit")
class CoVisitation(Recommender):
    sparse_scores = True

    def __init__(
        self,
        window: int = 5,
        max_gap_hours: float = 24.0,
        recent: int = 5,
        recent_half_life: float = 1.0,
        k: int = 200,
        directed_weight: float = 0.7,
        normalise: float = 0.5,
    ):
        self.window = window
        self.max_gap_hours = max_gap_hours
        self.recent = recent
        self.recent_half_life = recent_half_life
        self.k = k
        self.directed_weight = directed_weight
        self.normalise = normalise

    def _fit(
        self, interactions: Interactions, items: pd.DataFrame | None, users: pd.DataFrame | None
    ) -> None:
        order = np.lexsort((interactions.event_time, interactions.event_user))
        user = interactions.event_user[order]
        item = interactions.event_item[order]
        time = interactions.event_time[order]
        kind_weight = EventWeights().by_code()
        kind_weight = np.nan_to_num(kind_weight, nan=1.0)[interactions.event_type[order]]
        n_items = self.n_items_
        rows, cols, vals = [], [], []
        for step in range(1, self.window + 1):
            same = (user[step:] == user[:-step]) & (
                time[step:] - time[:-step] <= self.max_gap_hours * 3600.0
            )
            a, b = item[:-step][same], item[step:][same]
            differ = a != b
            w = (kind_weight[step:][same] / step)[differ]
            a, b = a[differ], b[differ]
            # Forward transitions count fully, backward ones by (1 - directed_weight).
            rows += [a, b]
            cols += [b, a]
            vals += [w * self.directed_weight, w * (1.0 - self.directed_weight)]
        if rows:
            counts = sp.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                shape=(n_items, n_items),
            )
        else:
            counts = sp.csr_matrix((n_items, n_items))
        counts.sum_duplicates()
        # Damp hubs: divide by (out-degree)^normalise so popular items do not answer everything.
        out_degree = np.asarray(counts.sum(axis=1)).ravel()
        scale = np.power(np.maximum(out_degree, 1e-12), -self.normalise)
        scale[out_degree == 0] = 0.0
        counts = sp.csr_matrix(sp.diags(scale) @ counts)
        self.transitions_ = keep_top_k_per_row(counts, self.k).astype(np.float32)
        self.recent_items_ = self._recent_matrix(interactions)
        self.fallback_ = popularity_fallback(interactions)

    def _recent_matrix(self, interactions: Interactions) -> sp.csr_matrix:
        """Users × items: weight 0.5 ** (rank / half-life) on each user's last distinct items."""
        latest = interactions.last_seen.tocoo()
        frame = pd.DataFrame({"u": latest.row, "i": latest.col, "t": latest.data})
        frame = frame.sort_values(["u", "t"], ascending=[True, False], kind="stable")
        rank = frame.groupby("u", sort=False).cumcount().to_numpy()
        keep = rank < self.recent
        weight = np.power(0.5, rank[keep] / max(self.recent_half_life, 1e-9))
        return sp.csr_matrix(
            (weight.astype(np.float32), (frame["u"].to_numpy()[keep], frame["i"].to_numpy()[keep])),
            shape=interactions.shape,
        )

    def _score_users(self, users: np.ndarray) -> SparseScores:
        return SparseScores(
            rows_times(take_rows(self.recent_items_, users), self.transitions_), self.fallback_
        )

    def _score_one(self, user: int) -> SparseRow:
        recent = row_entries(self.recent_items_, user)
        return SparseRow(*row_times(*recent, self.transitions_), self.fallback_)

    def similar_items(self, items: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """ "Seen next": the items most often looked at right after each item."""
        return top_k_rows(self.transitions_, items, k, positive_only=True)
