"""A user vector for a matrix-factorisation model, folded in from the events the model has not
seen: the closed-form ALS solve for one user, with the item factors fixed.

    x_u = (YᵀY + Yᵀ(C_u − I)Y + λI)⁻¹ Yᵀ C_u 1,   C_u = α·log(1 + w_ui)

— implicit's confidence: α times the weight `models.factorization.ALS` feeds it (its default
"log" weighting; for "none" or "bm25" the log is an approximation). It equals implicit's own
`recalculate_user` (tested). A user with one event has personalised scores at once, without
retraining. O(d³ + m·d²) for m items.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FoldIn:
    item_factors: np.ndarray  # (n_items, d)
    alpha: float
    regularization: float
    gram: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        factors = np.asarray(self.item_factors, dtype=np.float64)
        self.gram = factors.T @ factors

    @property
    def dim(self) -> int:
        return int(self.item_factors.shape[1])

    def user_vector(self, items: np.ndarray, strengths: np.ndarray) -> np.ndarray:
        """The least-squares user vector for these (dense item index, interaction weight)."""
        items = np.asarray(items, dtype=np.int64)
        if len(items) == 0:
            return np.zeros(self.dim)
        rows = np.asarray(self.item_factors[items], dtype=np.float64)
        confidence = self.alpha * np.log1p(np.asarray(strengths, dtype=np.float64))
        a = self.gram + (rows.T * (confidence - 1.0)) @ rows
        a[np.diag_indices_from(a)] += self.regularization
        return np.linalg.solve(a, rows.T @ confidence)

    def scores(self, vector: np.ndarray) -> np.ndarray:
        return self.item_factors @ vector.astype(self.item_factors.dtype)
