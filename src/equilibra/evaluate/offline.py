"""Offline evaluation on a temporal split: every metric of design.md.

Ranked lists for test users are scored by NDCG@10, Recall@20, HitRate@10, MAP@10, coverage,
intra-list diversity and novelty (`evaluate_model`); cold users (test users with no training
history) are scored separately, ranked as the service ranks them, by trending items
(`cold_user_metrics`); on rating data, predicted ratings by RMSE and MAE (`rating_errors`).
`pipeline.evaluation.evaluate_split` runs the whole protocol.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.columns import Columns as C
from equilibra.data.interactions import Interactions
from equilibra.data.split import TestTruth, exclusion_matrix, positives
from equilibra.domain import EventType
from equilibra.evaluate import metrics as m
from equilibra.models.base import top_k
from equilibra.models.popularity import item_categories
from equilibra.rank.coldstart import ColdStart


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_user_ndcg: np.ndarray = field(repr=False)
    recommend_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.metrics, "recommend_seconds": round(self.recommend_seconds, 3)}


def score_lists(
    recs: np.ndarray,
    train: Interactions,
    truth: TestTruth,
    k: int = 10,
    k_recall: int = 20,
    item_vectors: np.ndarray | sp.spmatrix | None = None,
) -> dict[str, float]:
    """Every list metric of design.md for ranked lists (one row per `truth.users` entry)."""
    rel = truth.relevant
    popularity = train.item_popularity()
    results = {
        "users": float(len(truth.users)),
        f"ndcg@{k}": _mean(m.ndcg_at_k(recs, rel, k)),
        f"recall@{k_recall}": _mean(m.recall_at_k(recs, rel, k_recall)),
        f"hitrate@{k}": _mean(m.hit_rate_at_k(recs, rel, k)),
        f"map@{k}": _mean(m.map_at_k(recs, rel, k)),
        f"precision@{k}": _mean(m.precision_at_k(recs, rel, k)),
        f"mrr@{k}": _mean(m.mrr_at_k(recs, rel, k)),
        f"coverage@{k}": m.coverage_at_k(recs, train.shape[1], k),
        f"novelty@{k}": _mean(m.novelty_at_k(recs, popularity, train.shape[0], k)),
        f"popularity@{k}": _mean(m.popularity_bias_at_k(recs, popularity, k)),
    }
    if item_vectors is not None:
        results[f"diversity@{k}"] = _mean(m.intra_list_diversity(recs, item_vectors, k))
    return results


def evaluate_model(
    model: Any,
    train: Interactions,
    truth: TestTruth,
    exclude: str = "interacted",
    k: int = 10,
    k_recall: int = 20,
    item_vectors: np.ndarray | sp.spmatrix | None = None,
) -> Evaluation:
    """Rank the full catalogue for every test user and score the lists."""
    banned = exclusion_matrix(train, exclude)
    depth = max(k, k_recall)
    started = time.perf_counter()
    recs, _ = model.recommend(truth.users, depth, exclude=banned)
    seconds = time.perf_counter() - started
    results = score_lists(recs, train, truth, k, k_recall, item_vectors)
    ndcg = m.ndcg_at_k(recs, truth.relevant, k)
    return Evaluation(metrics=results, per_user_ndcg=ndcg, recommend_seconds=seconds)


def diversity_vectors(train: Interactions, items: pd.DataFrame | None) -> tuple[sp.csr_matrix, str]:
    """What intra-list diversity compares items by: their categories where the catalogue has
    them, else who interacted with them (items × users)."""
    categories, names = item_categories(train, items)
    if len(names) >= 2 and categories.nnz:
        return categories, "categories"
    return sp.csr_matrix(train.matrix.T.tocsr()), "co-interaction"


def cold_user_metrics(
    train: Interactions,
    test: pd.DataFrame,
    items: pd.DataFrame | None,
    k: int = 10,
    k_recall: int = 20,
) -> dict[str, float]:
    """The cold slice: test users with no training history, shown trending items (as the
    service shows them), scored on their positive test events on items seen in training."""
    targets = positives(test)
    users = train.users.to_dense(targets[C.user].to_numpy())
    seen_users = np.diff(train.matrix.indptr) > 0
    cold = (users < 0) | ~seen_users[np.maximum(users, 0)]
    item_index = train.items.to_dense(targets[C.item].to_numpy())
    seen_items = np.diff(train.matrix.tocsc().indptr) > 0
    keep = cold & (item_index >= 0)
    keep[keep] = seen_items[item_index[keep]]
    if not keep.any():
        return {"users": 0.0}
    ids, row = np.unique(targets[C.user].to_numpy()[keep].astype(str), return_inverse=True)
    relevant = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (row, item_index[keep])),
        shape=(len(ids), train.shape[1]),
    )
    relevant.data[:] = 1.0
    ranking = ColdStart.fit(train, items).scores()
    found, _ = top_k(ranking[None, :], max(k, k_recall))
    recs = np.repeat(found, len(ids), axis=0)
    return {
        "users": float(len(ids)),
        f"ndcg@{k}": _mean(m.ndcg_at_k(recs, relevant, k)),
        f"recall@{k_recall}": _mean(m.recall_at_k(recs, relevant, k_recall)),
        f"hitrate@{k}": _mean(m.hit_rate_at_k(recs, relevant, k)),
        f"map@{k}": _mean(m.map_at_k(recs, relevant, k)),
    }


def rating_errors(train_events: pd.DataFrame, test_events: pd.DataFrame) -> dict[str, float]:
    """RMSE and MAE of predicted ratings on the test ratings, by the classic baseline
    r̂ = μ + b_u + b_i (biases damped toward 0 by 10 and 25 ratings' worth of evidence)."""
    is_rating = EventType.RATING.value
    train = train_events[train_events[C.event_type] == is_rating]
    test = test_events[test_events[C.event_type] == is_rating]
    if train.empty or test.empty:
        return {}
    mu = float(train[C.value].mean())
    item_bias = (train[C.value] - mu).groupby(train[C.item]).agg(["sum", "count"])
    b_i = item_bias["sum"] / (item_bias["count"] + 25.0)
    residual = train[C.value] - mu - train[C.item].map(b_i).fillna(0.0)
    user_bias = residual.groupby(train[C.user]).agg(["sum", "count"])
    b_u = user_bias["sum"] / (user_bias["count"] + 10.0)
    predicted = (mu + test[C.user].map(b_u).fillna(0.0) + test[C.item].map(b_i).fillna(0.0)).clip(
        train[C.value].min(), train[C.value].max()
    )
    actual = test[C.value].to_numpy(dtype=float)
    return {
        "rmse": m.rmse(predicted.to_numpy(), actual),
        "mae": m.mae(predicted.to_numpy(), actual),
        "rated": float(len(test)),
        "rmse_of_global_mean": m.rmse(np.full(len(actual), mu), actual),
    }


def _mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else 0.0
