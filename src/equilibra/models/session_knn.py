"""Session neighbours: SKNN and V-SKNN, the bar a neural sequence model has to clear.

The current session is compared with past sessions that share an item with it; the `k` most
similar vote for their items, weighted by similarity (Jannach & Ludewig 2017; Ludewig et al.
2021 found tuned V-SKNN level with GRU4Rec and NARM on several shop datasets).

- **SKNN**: sessions as item sets, cosine similarity, neighbours drawn from the most recent
  `sample_size` sessions that share an item (recency sampling keeps a request bounded and
  favours what is in fashion).
- **V-SKNN** ("vector" SKNN): the current session's items are weighted by how recent they are
  within it (`decay`), so the last click counts most, and a shared rare item counts more than a
  shared best-seller (`idf_weight`).
"""

from __future__ import annotations

import numpy as np

from equilibra.data.sparse import gather, spans
from equilibra.models.base import SparseRow
from equilibra.models.registry import register
from equilibra.models.sessions import SessionRecommender, Sessions

DECAYS = ("none", "linear", "div")


def position_weights(length: int, decay: str) -> np.ndarray:
    """Weight of each position of a session (oldest first); the last item gets 1."""
    distance = np.arange(length - 1, -1, -1, dtype=np.float64)
    if decay == "linear":
        return np.maximum(1.0 - 0.1 * distance, 0.1)
    if decay == "div":
        return 1.0 / (1.0 + distance)
    return np.ones(length)


class _SessionKNN(SessionRecommender):
    """Shared neighbour search; the two models differ only in their defaults."""

    def __init__(
        self,
        k: int = 100,
        sample_size: int = 500,
        decay: str = "none",
        idf_weight: float = 0.0,
        gap_minutes: float = 30.0,
        max_length: int = 50,
    ):
        self.k = k
        self.sample_size = sample_size
        self.decay = decay
        self.idf_weight = idf_weight
        self.gap_minutes = gap_minutes
        self.max_length = max_length

    def _fit_sessions(self, sessions: Sessions) -> None:
        if self.decay not in DECAYS:
            raise ValueError(f"decay: unknown {self.decay!r}; expected one of {', '.join(DECAYS)}")
        matrix = sessions.matrix(self.n_items_)
        self.session_items_ = matrix
        # Items × sessions, each row ascending = oldest session first (sessions are by end time).
        self.item_sessions_ = matrix.T.tocsr()
        self.item_sessions_.sort_indices()
        self.session_length_ = np.diff(matrix.indptr).astype(np.float32)
        df = np.diff(self.item_sessions_.indptr).astype(np.float64)
        self.idf_ = np.log((len(sessions) + 1.0) / (df + 1.0)).astype(np.float32)

    def score_session(self, items: np.ndarray) -> SparseRow:
        items = self._known_tail(items)
        if not len(items):
            return self._nothing_known()
        weight = position_weights(len(items), self.decay)
        # An item seen twice keeps the weight of its latest position.
        distinct, last_at = np.unique(items[::-1], return_index=True)
        query_weight = weight[::-1][last_at]
        if self.idf_weight:
            query_weight = query_weight * (1.0 + self.idf_weight * self.idf_[distinct])
        indptr, index = self.item_sessions_.indptr, self.item_sessions_.indices
        # The most recent `sample_size` sessions of each item: a row's tail.
        starts = np.maximum(indptr[distinct], indptr[distinct + 1] - self.sample_size)
        counts = indptr[distinct + 1] - starts
        if counts.sum() == 0:
            return self._nothing_known()
        session = index[spans(starts, counts)].astype(np.int64)
        shared_weight = np.repeat(query_weight, counts)
        neighbours, inverse = np.unique(session, return_inverse=True)
        overlap = np.bincount(inverse, weights=shared_weight)
        if len(neighbours) > self.sample_size:  # keep the most recent sessions overall
            neighbours, overlap = neighbours[-self.sample_size :], overlap[-self.sample_size :]
        similarity = overlap / np.sqrt(self.session_length_[neighbours] * len(distinct))
        if len(neighbours) > self.k:
            best = np.argpartition(-similarity, self.k - 1)[: self.k]
            neighbours, similarity = neighbours[best], similarity[best]
        take, lengths = gather(self.session_items_.indptr, neighbours)
        voted = self.session_items_.indices[take].astype(np.int64)
        scored, inverse = np.unique(voted, return_inverse=True)
        score = np.bincount(inverse, weights=np.repeat(similarity, lengths))
        return SparseRow(scored, score.astype(np.float32), self.fallback_)


@register("sknn")
class SessionKNN(_SessionKNN):
    """SKNN: set similarity with recent sessions."""


@register("vsknn")
class VectorSessionKNN(_SessionKNN):
    """V-SKNN: the session's last items count most, rare shared items more than common ones."""

    def __init__(
        self,
        k: int = 100,
        sample_size: int = 500,
        decay: str = "div",
        idf_weight: float = 1.0,
        gap_minutes: float = 30.0,
        max_length: int = 50,
    ):
        super().__init__(k, sample_size, decay, idf_weight, gap_minutes, max_length)
