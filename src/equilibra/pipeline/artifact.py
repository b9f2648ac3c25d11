"""A trained model as a self-contained directory: the model, its id maps and what to exclude.

`equilibra fit` writes one; `equilibra recommend` (and later the service) reads it and answers in
external ids. Layout (version 1)::

    DIR/equilibra.json     algorithm, parameters, data summary, validation scores, version
    DIR/users.npy          external user ids in dense order (unicode array, no pickle)
    DIR/items.npy          external item ids in dense order
    DIR/type_flags.npz     users × items bit flags of the event types seen in training
    DIR/popularity.npy     distinct users per item (the cold-user fallback)
    DIR/model/             the Recommender's own artifact
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.interactions import IdMap, Interactions, cells_with_types
from equilibra.domain import CONVERSION_TYPES, EVENT_TYPES
from equilibra.errors import EquilibraError
from equilibra.models.base import Recommender, top_k
from equilibra.rank.coldstart import ColdStart

FORMAT_VERSION = 1
EXCLUDE_CHOICES = ("interacted", "converted", "none")


@dataclass
class ModelArtifact:
    model: Recommender
    users: IdMap
    items: IdMap
    type_flags: sp.csr_matrix
    popularity: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    cold: ColdStart | None = None

    @classmethod
    def from_training(
        cls,
        model: Recommender,
        interactions: Interactions,
        info: dict[str, Any] | None = None,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
    ) -> ModelArtifact:
        return cls(
            model=model,
            users=interactions.users,
            items=interactions.items,
            type_flags=interactions.type_flags.tocsr(),
            popularity=interactions.item_popularity().astype(np.float64),
            info=dict(info or {}),
            cold=ColdStart.fit(interactions, items, users),
        )

    # --- persistence ----------------------------------------------------------------------------
    def save(self, folder: Path | str) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "users.npy", self.users.ids.astype(str), allow_pickle=False)
        np.save(folder / "items.npy", self.items.ids.astype(str), allow_pickle=False)
        sp.save_npz(folder / "type_flags.npz", self.type_flags)
        np.save(folder / "popularity.npy", self.popularity, allow_pickle=False)
        self.model.save(folder / "model")
        if self.cold is not None:
            self.cold.save(folder / "coldstart")
        meta = {
            "format_version": FORMAT_VERSION,
            "algorithm": self.model.name,
            "params": self.model.get_params(),
            "saved_at": time.time(),
            "users": len(self.users),
            "items": len(self.items),
            **self.info,
        }
        (folder / "equilibra.json").write_text(json.dumps(meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> ModelArtifact:
        folder = Path(folder)
        meta_path = folder / "equilibra.json"
        if not meta_path.exists():
            raise EquilibraError(f"model: {folder} is not a model directory (no equilibra.json)")
        info = json.loads(meta_path.read_text())
        if info.get("format_version") != FORMAT_VERSION:
            raise EquilibraError(
                f"model: format {info.get('format_version')} is not "
                f"{FORMAT_VERSION}; refit with this version"
            )
        return cls(
            model=Recommender.load(folder / "model"),
            users=IdMap(np.load(folder / "users.npy").astype(object)),
            items=IdMap(np.load(folder / "items.npy").astype(object)),
            type_flags=sp.load_npz(folder / "type_flags.npz").tocsr(),
            popularity=np.load(folder / "popularity.npy"),
            info=info,
            cold=ColdStart.load(folder / "coldstart")
            if (folder / "coldstart" / "coldstart.json").exists()
            else None,
        )

    # --- answering ------------------------------------------------------------------------------
    def exclusion(self, exclude: str) -> sp.csr_matrix | None:
        if exclude not in EXCLUDE_CHOICES:
            raise EquilibraError(
                f"exclude: expected one of {', '.join(EXCLUDE_CHOICES)}, not {exclude!r}"
            )
        if exclude == "none":
            return None
        types = EVENT_TYPES if exclude == "interacted" else CONVERSION_TYPES
        return cells_with_types(self.type_flags, types)

    def recommend(
        self,
        user_ids: pd.Series | np.ndarray | list[str],
        k: int,
        exclude: str = "interacted",
        context: dict[str, Any] | None = None,
        attributes: dict[str, dict[str, Any]] | None = None,
    ) -> pd.DataFrame:
        """Top-k per external user id -> `user_id, rank, item_id, score`.

        Users the model does not know get the cold-start ranking: trending items, narrowed by
        `context` (e.g. {"category": "Shoes"}) and by their `attributes` (user id -> {attr: v}).
        """
        user_ids = pd.Series(user_ids, dtype=object).astype(str)
        dense = self.users.to_dense(user_ids.to_numpy())
        banned = self.exclusion(exclude)
        known = dense >= 0
        items = np.full((len(dense), k), -1, dtype=np.int64)
        scores = np.full((len(dense), k), -np.inf)
        if known.any():
            items[known], scores[known] = self.model.recommend(dense[known], k, exclude=banned)
        answers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for row in np.flatnonzero(~known):
            attrs = (attributes or {}).get(user_ids.iloc[row], {})
            key = json.dumps(attrs, sort_keys=True, default=str)
            if key not in answers:
                ranking = (
                    self.cold.scores(context, attrs)
                    if self.cold is not None
                    else self.popularity.astype(float)
                )
                found, values = top_k(ranking[None, :], k)
                answers[key] = (found[0], values[0])
            items[row], scores[row] = answers[key]
        rows = np.repeat(np.arange(len(dense)), k)
        ranks = np.tile(np.arange(1, k + 1), len(dense))
        flat_items = items.ravel()
        valid = flat_items >= 0
        return pd.DataFrame(
            {
                "user_id": user_ids.to_numpy()[rows[valid]],
                "rank": ranks[valid],
                "item_id": self.items.to_external(flat_items[valid]),
                "score": np.round(scores.ravel()[valid], 6),
            }
        )
