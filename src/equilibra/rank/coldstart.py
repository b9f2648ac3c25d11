"""What to show someone with no history: trending items, narrowed by what is known about them.

`ColdStart` is fitted with the model and kept in its artifact. For a user the model does not know
it ranks items by trending popularity (distinct users, decayed with a half-life), mixed with the
popularity inside the user's segments (low-cardinality user attributes such as region or device,
when a user table was given), and puts items of a requested category first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.interactions import Interactions
from equilibra.models.popularity import Popularity, item_categories

MAX_SEGMENT_VALUES = 50


def _unit(values: np.ndarray) -> np.ndarray:
    top = values.max() if len(values) else 0.0
    return values / top if top > 0 else values


@dataclass
class ColdStart:
    trending: np.ndarray
    item_categories: sp.csr_matrix
    category_names: list[str]
    # attribute -> (values, values × items CSR of distinct users per item in that segment)
    segments: dict[str, tuple[list[str], sp.csr_matrix]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        interactions: Interactions,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        half_life_days: float = 7.0,
    ) -> ColdStart:
        trending = Popularity(half_life_days=half_life_days).fit(interactions).item_scores_
        categories, names = item_categories(interactions, items)
        return cls(
            trending=np.asarray(trending, dtype=np.float64),
            item_categories=categories,
            category_names=names,
            segments=cls._segments(interactions, users),
        )

    @staticmethod
    def _segments(
        interactions: Interactions, users: pd.DataFrame | None
    ) -> dict[str, tuple[list[str], sp.csr_matrix]]:
        if users is None or "attributes" not in users or users.empty:
            return {}
        attrs = pd.DataFrame(
            [json.loads(a) if isinstance(a, str) and a else {} for a in users["attributes"]],
            index=users["user_id"].to_numpy(),
        )
        dense_users = interactions.users.to_dense(attrs.index.to_numpy())
        attrs, dense_users = attrs[dense_users >= 0], dense_users[dense_users >= 0]
        seen = sp.csr_matrix(interactions.interacted(), dtype=np.float64)
        out = {}
        for column in attrs.columns:
            values = attrs[column].astype(str)
            distinct = list(pd.unique(values))
            if not 1 < len(distinct) <= MAX_SEGMENT_VALUES:
                continue
            codes = pd.Index(distinct).get_indexer(values)
            membership = sp.csr_matrix(
                (np.ones(len(codes)), (codes, dense_users)),
                shape=(len(distinct), interactions.shape[0]),
            )
            out[str(column)] = (distinct, sp.csr_matrix(membership @ seen))
        return out

    def scores(
        self, context: dict[str, Any] | None = None, attributes: dict[str, Any] | None = None
    ) -> np.ndarray:
        score = self.trending.copy()
        for key, value in (attributes or {}).items():
            if key in self.segments and str(value) in self.segments[key][0]:
                values, matrix = self.segments[key]
                row = matrix[values.index(str(value))].toarray().ravel()
                score = 0.5 * score + 0.5 * _unit(row)
        category = (context or {}).get("category")
        if category is not None and str(category) in self.category_names:
            column = self.category_names.index(str(category))
            in_category = self.item_categories[:, column].toarray().ravel() > 0
            score = score + in_category  # the category's items first, by the same order
        return score

    # --- persistence ----------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "trending.npy", self.trending, allow_pickle=False)
        sp.save_npz(folder / "item_categories.npz", sp.csr_matrix(self.item_categories))
        files = {}
        for index, (key, (values, matrix)) in enumerate(self.segments.items()):
            files[key] = {"values": values, "file": f"segment-{index}.npz"}
            sp.save_npz(folder / files[key]["file"], matrix)
        (folder / "coldstart.json").write_text(
            json.dumps({"categories": self.category_names, "segments": files})
        )

    @classmethod
    def load(cls, folder: Path) -> ColdStart:
        meta = json.loads((folder / "coldstart.json").read_text())
        segments = {
            key: (spec["values"], sp.load_npz(folder / spec["file"]).tocsr())
            for key, spec in meta["segments"].items()
        }
        return cls(
            trending=np.load(folder / "trending.npy"),
            item_categories=sp.load_npz(folder / "item_categories.npz").tocsr(),
            category_names=meta["categories"],
            segments=segments,
        )
