"""A weighted blend of several generators' per-user normalised scores.

Each component's row of scores is scaled to [0, 1] per user (min-max over the items it can
score) before weighting, so a generator whose raw scores run large cannot drown the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.interactions import Interactions
from equilibra.models import leaders
from equilibra.models.base import (
    Recommender,
    SparseScores,
    dense_scores,
    load_composite,
    save_composite,
)
from equilibra.models.registry import create_model, register


def minmax_rows(scores: np.ndarray) -> np.ndarray:
    finite = np.isfinite(scores)
    low = np.where(finite, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(finite, scores, -np.inf).max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    out = np.where(finite, (scores - low) / span, 0.0)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


@register("hybrid")
class Hybrid(Recommender):
    """`components`: [{"algorithm": name, "params": {...}, "weight": w}, ...]."""

    def __init__(self, components: list[dict[str, Any]] | None = None):
        self.components = components or [
            {"algorithm": "recent", "params": {}, "weight": 1.0},
            {"algorithm": "covisit", "params": {}, "weight": 1.0},
            {"algorithm": "itemknn", "params": {}, "weight": 0.5},
        ]

    def _fit(
        self, interactions: Interactions, items: pd.DataFrame | None, users: pd.DataFrame | None
    ) -> None:

        self.models_ = [
            create_model(c["algorithm"], **c.get("params", {})).fit(interactions, items, users)
            for c in self.components
        ]

    @property
    def sparse_scores(self) -> bool:  # type: ignore[override]
        return all(getattr(m, "sparse_scores", False) for m in getattr(self, "models_", []))

    @property
    def weights(self) -> np.ndarray:
        return np.array([float(c.get("weight", 1.0)) for c in self.components])

    def component_scores(self, users: np.ndarray) -> list[np.ndarray]:
        return [
            minmax_rows(dense_scores(m._score_users(users)).astype(np.float64))
            for m in self.models_
        ]

    def _score_users(self, users: np.ndarray) -> np.ndarray | SparseScores:
        raw = [m._score_users(users) for m in self.models_]
        if len(users) == 1 and all(isinstance(r, SparseScores) for r in raw):
            return self._blend_one_row(raw)  # type: ignore[arg-type]
        if all(isinstance(r, SparseScores) for r in raw):
            # All parts sparse: blend sparse parts and backgrounds, never the full catalogue.
            scaled = [r.scaled() for r in raw]
            parts = [(w, r.matrix.tocoo()) for w, r in zip(self.weights, scaled, strict=True) if w]
            matrix = sp.csr_matrix(
                (
                    np.concatenate([w * m.data for w, m in parts] or [np.empty(0)]),
                    (
                        np.concatenate([m.row for _, m in parts] or [np.empty(0, int)]),
                        np.concatenate([m.col for _, m in parts] or [np.empty(0, int)]),
                    ),
                ),
                shape=(len(users), self.n_items_),
            )  # duplicates (an item several parts score) are summed
            return SparseScores(matrix, self._blended_background([r.background for r in scaled]))
        total = np.zeros((len(users), self.n_items_))
        for weight, scores in zip(self.weights, raw, strict=True):
            if weight:
                total += weight * minmax_rows(dense_scores(scores).astype(np.float64))
        return total

    def _blend_one_row(self, raw: list[SparseScores]) -> SparseScores:
        """The sparse blend below for one user (a serving request), in plain numpy.

        The same arithmetic as `SparseScores.scaled` and the weighted sum, without the half
        dozen scipy matrices the batch path builds and checks: ~0.3 ms of a request otherwise.
        """
        items, values = [], []
        for weight, part in zip(self.weights, raw, strict=True):
            row = part.matrix.tocsr()
            if not weight or not row.nnz:
                continue
            top = 0.0 if part.background is None else leaders.maximum(part.background)
            bound = float(row.data.max()) + top
            bound = 1.0 if bound <= 0 else bound
            items.append(row.indices)
            values.append(weight * (row.data / np.asarray(bound, dtype=row.data.dtype)))
        background = self._blended_background([r.background for r in raw])
        if not items:
            return SparseScores(sp.csr_matrix((1, self.n_items_)), background)
        cells, inverse = np.unique(np.concatenate(items), return_inverse=True)
        sums = np.bincount(inverse, weights=np.concatenate(values), minlength=len(cells))
        matrix = sp.csr_matrix(
            (sums, cells, np.array([0, len(cells)])), shape=(1, self.n_items_), copy=False
        )
        return SparseScores(matrix, background)

    def _blended_background(self, backgrounds: list[np.ndarray | None]) -> np.ndarray | None:
        """The weighted sum of the parts' fixed backgrounds, made once: the same array on every
        call, so its leaders are found once too (`models.leaders`)."""
        cached = getattr(self, "_background_blend", None)
        if cached is not None and all(a is b for a, b in zip(cached[0], backgrounds, strict=True)):
            return cached[1]  # type: ignore[no-any-return]
        total: np.ndarray | None = None
        for weight, background in zip(self.weights, backgrounds, strict=True):
            if weight and background is not None:
                part = weight * background.astype(np.float64)
                total = part if total is None else total + part
        self._background_blend = (backgrounds, total)
        return total

    def similar_items(self, items: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """From the first component that ranks similar items (components in weight order)."""
        for index in np.argsort(-self.weights, kind="stable"):
            try:
                return self.models_[index].similar_items(items, k)
            except NotImplementedError:
                continue
        raise NotImplementedError("no component of this hybrid ranks similar items")

    def save(self, folder: Path | str) -> Path:
        return save_composite(self, folder, self.models_, {})

    @classmethod
    def load_folder(cls, folder: Path, meta: dict[str, Any]) -> Hybrid:
        model, model.models_ = load_composite(cls, folder, meta)
        return model
