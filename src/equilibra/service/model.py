"""A model version as the service serves it: the artifact plus what a request must not compute
again (exclusion matrices, id lookups, the cold-start ranking, a fold-in solver for factor
models). Built once per version, off the request path, then swapped in whole."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from equilibra.models.base import top_k
from equilibra.models.sessions import WHOLE_HISTORY, SessionRecommender
from equilibra.online.foldin import FoldIn
from equilibra.online.state import UserState
from equilibra.pipeline.artifact import ModelArtifact

Scored = list[tuple[str, float]]


def _find_part(model: Any, wanted: Callable[[Any], bool]) -> Any | None:
    """The first model that is `wanted`: the model itself, or a part of a hybrid or learned
    ranker (depth first)."""
    if wanted(model):
        return model
    for part in getattr(model, "models_", []) or []:
        found = _find_part(part, wanted)
        if found is not None:
            return found
    return None


def _is_factor_model(model: Any) -> bool:
    return getattr(model, "name", None) == "als" and hasattr(model, "item_factors_")


def _is_session_model(model: Any) -> bool:
    return isinstance(model, SessionRecommender)


@dataclass
class ServingModel:
    artifact: ModelArtifact
    user_index: dict[str, int] = field(init=False)
    item_index: dict[str, int] = field(init=False)
    item_ids: np.ndarray = field(init=False)
    exclusions: dict[str, sp.csr_matrix | None] = field(init=False)
    unavailable: np.ndarray = field(init=False)
    cold: Scored = field(init=False)
    foldin: FoldIn | None = field(init=False)
    session_model: SessionRecommender | None = field(init=False)
    _unit_factors: np.ndarray | None = field(init=False, default=None)
    # The model's lists per user do not change until the next version: the latest users' are
    # kept (dense items as int32, scores as float32: ~800 bytes a user at 100 candidates).
    cache_users: int = 50_000
    _cache: OrderedDict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]] = field(
        init=False, default_factory=OrderedDict
    )
    _cache_lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        a = self.artifact
        # Python strings in an object array: indexing hands out the same string objects on
        # every request (their hashes computed once) instead of making new ones from '<U'.
        names = np.asarray(a.items.ids).astype(str).tolist()
        self.item_ids = np.array(names, dtype=object)
        self.item_index = {item: i for i, item in enumerate(names)}
        self.user_index = {u: i for i, u in enumerate(np.asarray(a.users.ids).astype(str).tolist())}
        self.exclusions = {name: a.exclusion(name) for name in ("interacted", "converted", "none")}
        self.unavailable = np.zeros(len(self.item_ids), dtype=bool)
        self.unavailable[a.unavailable] = True
        ranking = (a.cold.scores() if a.cold is not None else a.popularity).astype(float).copy()
        ranking[self.unavailable] = -np.inf
        found, values = top_k(ranking[None, :], min(1000, len(ranking)))
        keep = found[0] >= 0
        self.cold = list(
            zip(self.item_ids[found[0][keep]].tolist(), values[0][keep].tolist(), strict=True)
        )
        self.session_model = _find_part(a.model, _is_session_model)
        als = _find_part(a.model, _is_factor_model)
        self.foldin = (
            FoldIn(np.asarray(als.item_factors_), float(als.alpha), float(als.regularization))
            if als is not None
            else None
        )
        if als is not None:
            factors = np.asarray(als.item_factors_, dtype=np.float32)
            norms = np.linalg.norm(factors, axis=1, keepdims=True)
            self._unit_factors = factors / np.maximum(norms, 1e-12)

    @property
    def version(self) -> int | None:
        return self.artifact.model_version

    @property
    def algorithm(self) -> str:
        return str(self.artifact.model.name)

    def knows_user(self, user_id: str) -> bool:
        return user_id in self.user_index

    def knows_items(self, items: list[str]) -> np.ndarray:
        """Which of the items the model was trained on."""
        index = self.item_index
        return np.fromiter((i in index for i in items), dtype=bool, count=len(items))

    def _listed(self, items: np.ndarray, scores: np.ndarray) -> Scored:
        keep = (items >= 0) & np.isfinite(scores)
        items, scores = items[keep], scores[keep]
        allowed = ~self.unavailable[items]
        return list(
            zip(self.item_ids[items[allowed]].tolist(), scores[allowed].tolist(), strict=True)
        )

    def user_candidates(self, user_id: str, n: int, exclude: str = "converted") -> Scored:
        """The model's top n for a user it was trained on (empty for anyone else)."""
        user = self.user_index.get(user_id)
        if user is None:
            return []
        key = (user_id, n, exclude)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is None:
            items, scores = self.artifact.model.recommend_one(user, n, self.exclusions.get(exclude))
            hit = (items.astype(np.int32), scores.astype(np.float32))
            with self._cache_lock:
                self._cache[key] = hit
                if len(self._cache) > self.cache_users:
                    self._cache.popitem(last=False)
        return self._listed(hit[0].astype(np.int64), hit[1].astype(np.float64))

    def trained_items(self, user_id: str, exclude: str) -> set[str]:
        """What the training data says this user may not be shown under `exclude`."""
        user = self.user_index.get(user_id)
        matrix = self.exclusions.get(exclude)
        if user is None or matrix is None:
            return set()
        row = matrix.indices[matrix.indptr[user] : matrix.indptr[user + 1]]
        return set(self.item_ids[row].tolist())

    def folded_candidates(self, items: list[str], strengths: list[float], n: int) -> Scored:
        """Top n by a user vector folded in from these (item, weight) events."""
        if self.foldin is None:
            return []
        pairs = [(self.item_index.get(i), w) for i, w in zip(items, strengths, strict=True)]
        pairs = [(i, w) for i, w in pairs if i is not None]
        if not pairs:
            return []
        dense, weights = zip(*pairs, strict=True)
        vector = self.foldin.user_vector(np.array(dense), np.array(weights))
        scores = self.foldin.scores(vector).astype(np.float64)
        scores[list(dense)] = -np.inf  # what the user just touched comes from the session
        found, values = top_k(scores[None, :], n)
        return self._listed(found[0], values[0])

    def next_in_session(self, items: list[str], n: int) -> Scored:
        """The session model's top n after this live session (oldest first), its last item
        left out; strengths in (0, 1]. Empty without a session model."""
        if self.session_model is None:
            return []
        dense = [self.item_index.get(i) for i in items]
        known = np.array([i for i in dense if i is not None], dtype=np.int64)
        if not len(known):
            return []
        # The model's own scores only (no popularity background), the best one 1.
        found, values = self.session_model.next_items(known, n, known[-1:])
        return self._listed(found, values.astype(np.float64))

    def session_candidates(self, last_item: str, user: UserState, n: int) -> tuple[Scored, Scored]:
        """The model's view of a live session -> (the last item's neighbours, n // 2 of them;
        the session model's next items after the whole session, n). A dense (neural) session
        model gives no neighbours: they would be a second pass of the network for what the
        pass over the whole session already refines."""
        model = self.session_model
        neighbours = self.similar(last_item, n // 2) if model is None or model.sparse_scores else []
        if model is None:
            return neighbours, []
        # Trained on whole histories (rating data), it reads the user's history, not the visit.
        events = user.history if model.gap_minutes == WHOLE_HISTORY else user.session()
        live = sorted(events, key=lambda seen: seen.timestamp)
        return neighbours, self.next_in_session([seen.item for seen in live], n)

    def similar(self, item_id: str, n: int) -> Scored:
        """Items like this one by the model (factor cosine, or the model's own neighbours)."""
        item = self.item_index.get(item_id)
        if item is None:
            return []
        if self._unit_factors is not None:
            scores = (self._unit_factors @ self._unit_factors[item]).astype(np.float64)
            scores[item] = -np.inf
            found, values = top_k(scores[None, :], n)
            return self._listed(found[0], values[0])
        try:
            found, values = self.artifact.model.similar_items(np.array([item]), n)
        except NotImplementedError:
            return []
        return self._listed(found[0], values[0])
