"""Sessions, and the base class of the models that recommend from one.

A session is one user's run of events with no gap over `gap_minutes`, consecutive repeats of an
item collapsed (a reload is not a step). Session models (session kNN, GRU4Rec, SASRec) answer
"what comes next after this sequence?": `recommend_session(items, k)` for a live session as it
grows, and, behind the common model protocol, `recommend(users)` from each user's last session
in the training data.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.interactions import Interactions
from equilibra.data.sparse import spans
from equilibra.models.base import (
    Recommender,
    SparseRow,
    SparseScores,
    popularity_fallback,
    top_k,
    top_k_row,
)

# A user's whole history is one session: rating data, where the order of ratings is the signal.
WHOLE_HISTORY = 0.0


@dataclass(frozen=True)
class Sessions:
    """Sessions in order of their last event: session `s` is `items[indptr[s]:indptr[s + 1]]`."""

    indptr: np.ndarray  # int64, n_sessions + 1
    items: np.ndarray  # int64 dense item ids, in time order within each session
    user: np.ndarray  # int64, the session's user
    end: np.ndarray  # float64, the time of its last event

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.items[self.indptr[index] : self.indptr[index + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[s] for s in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def matrix(self, n_items: int) -> sp.csr_matrix:
        """Sessions × items, 1 where the session holds the item."""
        row = np.repeat(np.arange(len(self)), self.lengths)
        m = sp.csr_matrix(
            (np.ones(len(self.items), dtype=np.float32), (row, self.items)),
            shape=(len(self), n_items),
        )
        m.data[:] = 1.0  # an item seen twice in a session counts once
        return m

    def select(self, keep: np.ndarray) -> Sessions:
        keep = np.flatnonzero(keep) if keep.dtype == bool else np.asarray(keep)
        lengths = self.lengths[keep]
        take = spans(self.indptr[keep], lengths)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return Sessions(indptr, self.items[take], self.user[keep], self.end[keep])

    def windows(self, max_length: int) -> Sessions:
        """Each session cut into windows of at most `max_length` + 1 items, consecutive windows
        sharing one item, so every step is a target once and no input is longer than what a
        model is later given to score (its last `max_length` items)."""
        pieces, users, ends = [], [], []
        for s, items in enumerate(self):
            for start in range(0, max(len(items) - 1, 1), max_length):
                pieces.append(items[start : start + max_length + 1])
                users.append(self.user[s])
                ends.append(self.end[s])
        indptr = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
        items = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        return Sessions(indptr, items.astype(np.int64), np.array(users, np.int64),
                        np.array(ends, np.float64))  # fmt: skip


def split_sessions(
    user: np.ndarray, item: np.ndarray, time: np.ndarray, gap_minutes: float
) -> Sessions:
    """Cut an event log into sessions (`gap_minutes` = WHOLE_HISTORY: one per user)."""
    order = np.lexsort((time, user))
    user, item, time = user[order], item[order], time[order]
    n = len(user)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Sessions(np.zeros(1, dtype=np.int64), empty, empty, np.zeros(0))
    start = np.ones(n, dtype=bool)
    start[1:] = user[1:] != user[:-1]
    if gap_minutes > 0:
        start[1:] |= np.diff(time) > gap_minutes * 60.0
    repeat = np.zeros(n, dtype=bool)
    repeat[1:] = (item[1:] == item[:-1]) & ~start[1:]
    keep = ~repeat
    user, item, time, start = user[keep], item[keep], time[keep], start[keep]
    first = np.flatnonzero(start)
    last = np.concatenate([first[1:], [len(user)]]) - 1
    # Order sessions by their last event: the most recent sessions are the last ones.
    by_end = np.argsort(time[last], kind="stable")
    lengths = (last - first + 1)[by_end]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    take = spans(first[by_end], lengths)
    return Sessions(
        indptr,
        item[take].astype(np.int64),
        user[first[by_end]].astype(np.int64),
        time[last[by_end]].astype(np.float64),
    )


def revisit_share(sessions: Iterable[np.ndarray]) -> float:
    """Share of next-item steps whose target is an item already earlier in its session.

    Neighbour methods score the session's own items (their neighbours hold them too); a neural
    model without a copy mechanism has to learn to return to them (the repeat gate of
    `models/neural.py` is set from this share)."""
    hits = steps = 0
    for items in sessions:
        for t in range(1, len(items)):
            steps += 1
            hits += bool((items[:t] == items[t]).any())
    return hits / max(steps, 1)


def collapse_repeats(items: np.ndarray) -> np.ndarray:
    """A live session as training saw sessions: consecutive repeats of an item (a view, then
    its add-to-cart) are one step."""
    if len(items) < 2:
        return items
    return items[np.concatenate([[True], items[1:] != items[:-1]])]


def interaction_sessions(interactions: Interactions, gap_minutes: float) -> Sessions:
    return split_sessions(
        interactions.event_user.astype(np.int64),
        interactions.event_item.astype(np.int64),
        interactions.event_time.astype(np.float64),
        gap_minutes,
    )


class SessionRecommender(Recommender):
    """A model that scores the next item of a sequence. Subclasses implement `_fit_sessions`
    and `score_session`; the user-level protocol reads each user's last training session."""

    sparse_scores: ClassVar[bool] = True

    # Set by subclasses' __init__.
    gap_minutes: float
    max_length: int

    def _fit(
        self, interactions: Interactions, items: pd.DataFrame | None, users: pd.DataFrame | None
    ) -> None:
        sessions = interaction_sessions(interactions, self.gap_minutes)
        self.fallback_ = popularity_fallback(interactions)
        self._remember_last_sessions(sessions)
        self._fit_sessions(sessions)

    def _remember_last_sessions(self, sessions: Sessions) -> None:
        """Each user's last session (its last `max_length` items), as CSR-like arrays."""
        last = np.full(self.n_users_, -1, dtype=np.int64)
        # Sessions are in time order: each user's latest is the highest index of theirs.
        np.maximum.at(last, sessions.user, np.arange(len(sessions), dtype=np.int64))
        lengths = np.zeros(self.n_users_, dtype=np.int64)
        has = last >= 0
        lengths[has] = np.minimum(sessions.lengths[last[has]], self.max_length)
        self.user_indptr_ = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ends = sessions.indptr[last[has] + 1]
        self.user_items_ = sessions.items[spans(ends - lengths[has], lengths[has])]

    def user_session(self, user: int) -> np.ndarray:
        return self.user_items_[self.user_indptr_[user] : self.user_indptr_[user + 1]]

    @abstractmethod
    def _fit_sessions(self, sessions: Sessions) -> None: ...

    @abstractmethod
    def score_session(self, items: np.ndarray) -> SparseRow:
        """Scores of every item as the next one after `items` (dense ids, oldest first)."""

    def _known_tail(self, items: np.ndarray) -> np.ndarray:
        """What `score_session` reads of a session: its last `max_length` items the model knows."""
        items = np.asarray(items, dtype=np.int64)[-self.max_length :]
        return items[(items >= 0) & (items < self.n_items_)]

    def _nothing_known(self) -> SparseRow:
        """A session with no known item: no scores of the model's own, popularity behind."""
        return SparseRow(np.zeros(0, np.int64), np.zeros(0, np.float32), self.fallback_)

    def recommend_session(
        self, items: Sequence[int] | np.ndarray, k: int = 20, banned: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best next items after the session `items`; `banned`: item ids never shown."""
        return top_k_row(self.score_session(np.asarray(items, dtype=np.int64)), k, banned)

    def next_items(
        self, items: Sequence[int] | np.ndarray, k: int = 20, banned: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The model's own `k` best next items after a session and their strength in (0, 1],
        the best one 1: no popularity background, nothing the model does not score. What the
        service adds as the live session's generator and what `similar_items` lists."""
        row = self.score_session(collapse_repeats(np.asarray(items, dtype=np.int64)))
        if self.sparse_scores:
            found, values = top_k_row(SparseRow(row.indices, row.data), k, banned)
        elif len(row.indices) and k > 0:
            # A dense row (every item, in order): ban by position and partition once, a third
            # of what the sparse top-k's membership search over the catalogue costs.
            scores = row.data.astype(np.float64)
            if banned is not None and len(banned):
                scores[np.asarray(banned, dtype=np.int64)] = -np.inf
            found, values = (part[0] for part in top_k(scores[None, :], k))
        else:
            return np.zeros(0, np.int64), np.zeros(0)
        keep = values > 0
        found, values = found[keep], values[keep]
        return found, values / values[0] if len(values) else values

    def _score_users(self, users: np.ndarray) -> SparseScores:
        rows = [self.score_session(self.user_session(int(u))) for u in users]
        indptr = np.concatenate([[0], np.cumsum([len(r.indices) for r in rows])])
        indices = np.concatenate([r.indices for r in rows]) if rows else np.zeros(0, np.int64)
        data = np.concatenate([r.data for r in rows]) if rows else np.zeros(0, np.float32)
        matrix = sp.csr_matrix((data, indices, indptr), shape=(len(users), self.n_items_))
        return SparseScores(matrix, self.fallback_)

    def _score_one(self, user: int) -> SparseRow:
        return self.score_session(self.user_session(user))

    def similar_items(self, items: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """What comes next after a session of just that item."""
        items = np.asarray(items, dtype=np.int64)
        out = np.full((len(items), k), -1, dtype=np.int64)
        scores = np.full((len(items), k), -np.inf)
        for row, item in enumerate(items):
            found, values = self.next_items(np.array([item]), k, np.array([item]))
            out[row, : len(found)], scores[row, : len(found)] = found, values
        return out, scores
