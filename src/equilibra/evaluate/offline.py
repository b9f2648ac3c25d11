"""Offline evaluation of a fitted model on a temporal split: one call, every metric of design.md."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from equilibra.data.interactions import Interactions
from equilibra.data.split import TestTruth, exclusion_matrix
from equilibra.evaluate import metrics as m


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


def _mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else 0.0
