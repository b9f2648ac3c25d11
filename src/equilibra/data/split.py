"""Temporal splits, the protocol that picks one, and the test truth (design.md's protocols).

- Rating data (every user long-lived, e.g. MovieLens): per user, the last 20 % of their events by
  time are test (:func:`per_user_temporal_split`).
- Shop logs (short-lived visitors): one global cut; the last 14 days or the last 20 % of the time
  span, whichever starts later, are test (:func:`global_temporal_split`).
- :func:`leave_last_out` keeps each user's last event for test.

Either way, :func:`test_truth` keeps test users with at least one training interaction and, as
targets, positive test events on items seen in training that the user is not excluded from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.columns import Columns
from equilibra.data.interactions import Interactions
from equilibra.data.sparse import contains
from equilibra.domain import CONVERSION_TYPES, EventType

C = Columns
DAY = 86_400.0


@dataclass
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    cut: float | None = None  # the global cut time, where there is one


@dataclass(frozen=True)
class Protocol:
    """How design.md evaluates one kind of data: the split and what a user may not be shown."""

    split: str  # "per_user" (rating data) or "global" (shop logs)
    exclude: str  # "interacted" (rating data) or "converted" (shop logs)

    @property
    def rating_data(self) -> bool:
        return self.split == "per_user"

    def split_events(self, events: pd.DataFrame) -> Split:
        if self.rating_data:
            return per_user_temporal_split(events)
        return global_temporal_split(events)


RATING_PROTOCOL = Protocol("per_user", "interacted")
SHOP_PROTOCOL = Protocol("global", "converted")


def is_rating_data(events: pd.DataFrame) -> bool:
    """Mostly explicit ratings (MovieLens-like) rather than a shop's behaviour log."""
    if events.empty:
        return False
    return bool((events[C.event_type] == EventType.RATING.value).mean() > 0.5)


def protocol_for(events: pd.DataFrame) -> Protocol:
    """The one place that decides between the rating-data and the shop-log protocol."""
    return RATING_PROTOCOL if is_rating_data(events) else SHOP_PROTOCOL


def per_user_temporal_split(events: pd.DataFrame, test_share: float = 0.2) -> Split:
    """Per user, the latest `test_share` of their events (at least one, if they have two)."""
    ordered = events.sort_values([C.user, C.timestamp], kind="stable")
    rank = ordered.groupby(C.user, sort=False).cumcount()
    size = ordered.groupby(C.user, sort=False)[C.user].transform("size")
    n_test = np.floor(size * test_share).astype(int)
    n_test = np.where((n_test == 0) & (size >= 2), 1, n_test)
    is_test = rank >= size - n_test
    return Split(train=ordered[~is_test], test=ordered[is_test])


def global_temporal_split(
    events: pd.DataFrame, test_days: float = 14.0, test_share: float = 0.2
) -> Split:
    """Everything after one cut is test: the later of (end - test_days, 80 % of the span)."""
    start, end = float(events[C.timestamp].min()), float(events[C.timestamp].max())
    cut = max(end - test_days * DAY, start + (1.0 - test_share) * (end - start))
    is_test = events[C.timestamp] >= cut
    return Split(train=events[~is_test], test=events[is_test], cut=cut)


def leave_last_out(events: pd.DataFrame) -> Split:
    ordered = events.sort_values([C.user, C.timestamp], kind="stable")
    last = ~ordered.duplicated(C.user, keep="last")
    single = ordered.groupby(C.user)[C.user].transform("size") == 1
    is_test = last & ~single
    return Split(train=ordered[~is_test], test=ordered[is_test])


def positives(events: pd.DataFrame, rating_threshold: float = 4.0) -> pd.DataFrame:
    """Events that count as relevant: ratings >= threshold, carts and purchases."""
    kind = events[C.event_type]
    is_rating = kind == EventType.RATING.value
    good_rating = is_rating & (events[C.value] >= rating_threshold) if C.value in events else False
    return events[good_rating | kind.isin(CONVERSION_TYPES)]


@dataclass
class TestTruth:
    users: np.ndarray  # dense user indices (in the training Interactions) with a target
    relevant: sp.csr_matrix  # one row per entry of `users`, items in training's index
    cold_users: np.ndarray  # external ids of test users with no training history


def exclusion_matrix(train: Interactions, exclude: str) -> sp.csr_matrix | None:
    """What a user may not be recommended: `interacted`, `converted` or `none`."""
    if exclude == "interacted":
        return train.interacted()
    if exclude == "converted":
        return train.converted()
    if exclude == "none":
        return None
    raise ValueError(f"exclude: expected interacted, converted or none, not {exclude!r}")


def test_truth(
    train: Interactions,
    test: pd.DataFrame,
    exclude: str = "interacted",
    rating_threshold: float = 4.0,
) -> TestTruth:
    targets = positives(test, rating_threshold)
    users = train.users.to_dense(targets[C.user].to_numpy())
    items = train.items.to_dense(targets[C.item].to_numpy())
    cold = pd.unique(targets[C.user].to_numpy()[users < 0])
    # The snapshot may carry catalogue items (and users) with no training event: a target must
    # have been seen in training, and its user must have a training history.
    seen_items = np.diff(train.matrix.tocsc().indptr) > 0
    seen_users = np.diff(train.matrix.indptr) > 0
    keep = (users >= 0) & (items >= 0)
    keep[keep] = seen_items[items[keep]] & seen_users[users[keep]]
    users, items = users[keep], items[keep]
    banned = exclusion_matrix(train, exclude)
    if banned is not None and len(users):
        allowed = ~contains(banned, users, items)
        users, items = users[allowed], items[allowed]
    unique_users, row = np.unique(users, return_inverse=True)
    relevant = sp.csr_matrix(
        (np.ones(len(items), dtype=np.float32), (row, items)),
        shape=(len(unique_users), train.shape[1]),
    )
    relevant.data[:] = 1.0  # a target bought twice is still one target
    return TestTruth(users=unique_users, relevant=relevant, cold_users=cold)
