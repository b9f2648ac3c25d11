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
    SparseRow,
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
        if len(users) == 1:
            row = self._score_one(int(users[0]))
            if row is not None:
                return row.as_scores(self.n_items_)
        raw = [m._score_users(users) for m in self.models_]
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

    def _score_one(self, user: int) -> SparseRow | None:
        """The sparse blend below for one user (a serving request), in plain numpy: the same
        arithmetic as `SparseScores.scaled` and the weighted sum, on the parts' `SparseRow`s."""
        rows = [m._score_one(user) for m in self.models_]
        if any(row is None for row in rows):
            return None
        items, values = [], []
        for weight, part in zip(self.weights, rows, strict=True):
            assert part is not None
            if not weight or not len(part.indices):
                continue
            top = 0.0 if part.background is None else leaders.maximum(part.background)
            bound = float(part.data.max()) + top
            bound = 1.0 if bound <= 0 else bound
            items.append(part.indices)
            values.append(weight * (part.data / np.asarray(bound, dtype=part.data.dtype)))
        background = self._blended_background([r.background for r in rows])  # type: ignore[union-attr]
        if not items:
            return SparseRow(np.empty(0, dtype=np.int64), np.empty(0), background)
        cells, inverse = np.unique(np.concatenate(items), return_inverse=True)
        sums = np.bincount(inverse, weights=np.concatenate(values), minlength=len(cells))
        return SparseRow(cells, sums, background)

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
