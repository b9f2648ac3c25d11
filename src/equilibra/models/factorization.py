"""Matrix factorisation through `implicit`: ALS (weighted, implicit feedback) and BPR."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from equilibra.data.interactions import Interactions
from equilibra.models.base import Recommender, normalise_rows, top_k
from equilibra.models.neighbours import bm25_weight
from equilibra.models.registry import register


class _Factors(Recommender):
    """Shared scoring: user_factors_ · item_factors_ᵀ; similar items by factor cosine."""

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors_[users] @ self.item_factors_.T

    def recommend(
        self,
        users: np.ndarray,
        k: int = 10,
        exclude: sp.csr_matrix | None = None,
        batch_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """implicit's fused dot-product + top-k (C++, threaded): no users × items block."""
        from implicit.cpu.topk import topk

        users = np.asarray(users, dtype=np.int64)
        query = np.ascontiguousarray(self.user_factors_[users], dtype=np.float32)
        items = np.ascontiguousarray(self.item_factors_, dtype=np.float32)
        banned = sp.csr_matrix(exclude[users], dtype=np.float32) if exclude is not None else None
        kk = min(k, items.shape[0])
        ids, scores = topk(items, query, kk, filter_query_items=banned, num_threads=0)
        ids = np.asarray(ids, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        # implicit marks filtered or missing slots with -FLT_MAX scores; report them as -1.
        invalid = ~np.isfinite(scores) | (scores < -1e30) | (ids < 0)
        ids[invalid], scores[invalid] = -1, -np.inf
        if kk < k:
            ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
        return ids, scores

    def similar_items(self, items: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        unit = normalise_rows(sp.csr_matrix(self.item_factors_)).toarray()
        items = np.asarray(items, dtype=np.int64)
        block = unit[items] @ unit.T
        block[np.arange(len(items)), items] = -np.inf
        return top_k(block, k)


@register("als")
class ALS(_Factors):
    """implicit's conjugate-gradient ALS. `weighting`: none, log (1 + alpha·log(1 + w)) or bm25."""

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 10.0,
        iterations: int = 15,
        weighting: str = "log",
        seed: int = 42,
    ):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.weighting = weighting
        self.seed = seed

    def _confidence(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        x = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        if self.weighting == "log":
            x.data = np.log1p(x.data)
        elif self.weighting == "bm25":
            x = sp.csr_matrix(bm25_weight(x), dtype=np.float32)
        elif self.weighting != "none":
            raise ValueError("weighting: expected none, log or bm25")
        return x

    def _fit(
        self, interactions: Interactions, items: pd.DataFrame | None, users: pd.DataFrame | None
    ) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        # implicit parallelises itself; a multi-threaded BLAS underneath only fights it.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
            )
            model.fit(self._confidence(interactions.matrix), show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)


@register("bpr")
class BPR(_Factors):
    """implicit's Bayesian Personalised Ranking (pairwise, sampled negatives)."""

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 100,
        seed: int = 42,
    ):
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.seed = seed

    def _fit(
        self, interactions: Interactions, items: pd.DataFrame | None, users: pd.DataFrame | None
    ) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        model = BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.seed,
        )
        binary = sp.csr_matrix(interactions.matrix, dtype=np.float32, copy=True)
        binary.data[:] = 1.0
        with threadpool_limits(1, "blas"):
            model.fit(binary, show_progress=False)
        # implicit's BPR appends a bias column to the item factors and a 1 to the users'.
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)
