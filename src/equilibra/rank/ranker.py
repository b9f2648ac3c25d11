"""A learned ranker over the candidates of several generators.

Fitting, on a snapshot:

1. split its event log by time (per user for rating data; for shop logs a global cut, repeated
   on the earlier part for three nested cuts, since one cut holds few conversions);
2. fit every generator on the earlier part; for users with a positive in the later part, take
   the union of each generator's top-N as candidates and describe each (user, item) pair: every
   generator's normalised score and reciprocal rank, item popularity and freshness, how popular
   the item was in the month and the year before the user's last visit and how old it was then
   (what was in the shop when they came), the user's own history with the item (weight, recency,
   whether they carted it), the user's activity;
3. train a classifier (gradient-boosted trees by default, or logistic regression) to tell the
   later positives from the other candidates, and measure how much each feature matters
   (permutation importance on held-out users);
4. refit the generators on the whole snapshot.

Serving ranks each user's candidates by the classifier's probability.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.interactions import Interactions, type_mask
from equilibra.data.sparse import lookup
from equilibra.data.split import protocol_for, test_truth
from equilibra.domain import CONVERSION_TYPES
from equilibra.models.base import (
    BLOCK_FLOATS,
    Recommender,
    dense_scores,
    load_composite,
    save_composite,
    top_k,
)
from equilibra.models.registry import create_model, register
from equilibra.rank.hybrid import minmax_rows

DAY = 86_400.0
CART_BITS = type_mask(CONVERSION_TYPES)


def _visit_context(interactions: Interactions) -> dict[str, Any]:
    """What the ranker needs to ask "how popular was this item when the user last came?".

    A user's visit time is their latest event. Item events are keyed by (item, time) in one sorted
    float array, item × span + offset, so a window count is two binary searches per pair.
    """
    n_items = interactions.shape[1]
    # A user's latest event is the row maximum of the latest time per (user, item).
    seen = interactions.last_seen
    latest = np.asarray(seen.max(axis=1).todense()).ravel().astype(np.float64)
    visit = np.where(np.diff(seen.indptr) > 0, latest, interactions.reference_time)
    first = np.full(n_items, interactions.reference_time, dtype=np.float64)
    times = interactions.event_time.astype(np.float64)
    base = float(times.min()) if len(times) else 0.0
    span = float(times.max() - base + 1.0) if len(times) else 1.0
    if len(times):
        earliest = np.full(n_items, np.inf)
        np.minimum.at(earliest, interactions.event_item, times)
        first = np.where(np.isfinite(earliest), earliest, first)
    keys = np.sort(interactions.event_item.astype(np.float64) * span + (times - base))
    return {
        "visit_time": visit,
        "item_first_event": first,
        "event_keys": keys,
        "event_time_base": np.array([base, span]),
    }


def _events_between(
    context: dict[str, Any], items: np.ndarray, start: np.ndarray, end: np.ndarray
) -> np.ndarray:
    """Events of each item in (start, end], for many (item, window) pairs at once."""
    keys = context["event_keys"]
    base, span = context["event_time_base"]
    block = items.astype(np.float64) * span
    # Clipping keeps each query inside its item's block of keys [item × span, item × span + span).
    hi = np.searchsorted(keys, block + np.clip(end - base, -0.5, span - 0.5), side="right")
    lo = np.searchsorted(keys, block + np.clip(start - base, -0.5, span - 0.5), side="right")
    return (hi - lo).astype(np.float64)


@register("ranker")
class LearnedRanker(Recommender):
    def __init__(
        self,
        generators: list[dict[str, Any]] | None = None,
        candidates: int = 50,
        classifier: str = "gbdt",
        max_train_users: int = 5_000,
        cuts: int | None = None,
        seed: int = 42,
    ):
        self.generators = generators or [
            {"algorithm": "recent", "params": {}},
            {"algorithm": "covisit", "params": {"window": 10, "recent": 10}},
            {"algorithm": "als", "params": {}},
            {"algorithm": "itemknn", "params": {"k": 100}},
            {"algorithm": "popularity", "params": {"half_life_days": 7.0}},
        ]
        self.candidates = candidates
        self.classifier = classifier
        self.max_train_users = max_train_users
        self.cuts = cuts
        self.seed = seed

    # --- features -------------------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        names = []
        for g in self.generators:
            names += [f"{g['algorithm']}_score", f"{g['algorithm']}_rrank"]
        return [
            *names,
            "item_popularity",
            "item_days_since_last_event",
            "item_events_month_before_visit",
            "item_events_year_before_visit",
            "item_age_at_visit",
            "user_item_weight",
            "user_item_recency",
            "user_item_converted",
            "user_activity",
        ]

    def _context(self, interactions: Interactions) -> dict[str, Any]:
        last_event = np.full(interactions.shape[1], -np.inf)
        np.maximum.at(last_event, interactions.event_item, interactions.event_time)
        age = np.where(
            np.isfinite(last_event), (interactions.reference_time - last_event) / DAY, 365.0
        )
        return {
            "popularity": np.log1p(interactions.item_popularity().astype(np.float64)),
            "item_age": np.log1p(np.clip(age, 0, None)),
            "weights": interactions.matrix,
            "last_seen": interactions.last_seen,
            "flags": interactions.type_flags,
            "reference": interactions.reference_time,
            "activity": np.log1p(np.diff(interactions.matrix.indptr)).astype(np.float64),
            **_visit_context(interactions),
        }

    def _candidates(
        self, models: list[Recommender], context: dict[str, Any], users: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (row in `users`, item, features) for every candidate pair of a batch."""
        n_items = models[0].n_items_
        blocks, tops = [], []
        for model in models:
            raw = dense_scores(model._score_users(users)).astype(np.float64)
            tops.append(top_k(raw, self.candidates)[0])
            blocks.append(minmax_rows(raw))
        pairs = pd.DataFrame(
            {
                "row": np.repeat(np.arange(len(users)), self.candidates * len(models)),
                "item": np.concatenate(tops, axis=1).ravel(),
            }
        )
        pairs = pairs[pairs["item"] >= 0].drop_duplicates()
        row, item = pairs["row"].to_numpy(), pairs["item"].to_numpy()
        columns = []
        reciprocal = 1.0 / (1.0 + np.arange(self.candidates))
        for block, top in zip(blocks, tops, strict=True):
            columns.append(block[row, item])
            rank = np.zeros((len(users), n_items), dtype=np.float32)
            valid = top >= 0
            r_idx = np.repeat(np.arange(len(users)), valid.sum(axis=1))
            rank[r_idx, top[valid]] = np.broadcast_to(reciprocal, top.shape)[valid]
            columns.append(rank[row, item])
        user = users[row]
        last = lookup(context["last_seen"], user, item)
        recency = np.where(last > 0, np.exp(-(context["reference"] - last) / DAY), 0.0)
        flags = lookup(context["flags"], user, item).astype(np.int64)
        visit = context["visit_time"][user]
        columns += [
            context["popularity"][item],
            context["item_age"][item],
            np.log1p(_events_between(context, item, visit - 30 * DAY, visit)),
            np.log1p(_events_between(context, item, visit - 365 * DAY, visit)),
            # Only the past of the visit: an item first seen later looks brand new, not "future".
            np.log1p(np.maximum(visit - context["item_first_event"][item], 0.0) / DAY),
            np.log1p(lookup(context["weights"], user, item)),
            recency,
            ((flags & CART_BITS) != 0).astype(np.float64),
            context["activity"][user],
        ]
        return row, item, np.column_stack(columns)

    def _batches(self, users: np.ndarray) -> list[np.ndarray]:
        size = max(1, BLOCK_FLOATS // max(self.n_items_, 1) // 2)
        return [users[i : i + size] for i in range(0, len(users), size)]

    # --- fitting --------------------------------------------------------------------------------
    def _fit_generators(
        self, interactions: Interactions, items: pd.DataFrame | None, users: pd.DataFrame | None
    ) -> list[Recommender]:
        return [
            create_model(g["algorithm"], **g.get("params", {})).fit(interactions, items, users)
            for g in self.generators
        ]

    def _fit(
        self, interactions: Interactions, items: pd.DataFrame | None, users: pd.DataFrame | None
    ) -> None:
        events = interactions.events_frame()
        protocol = protocol_for(events)
        # Shop logs have few conversions per cut, so the classifier learns from several nested
        # cuts (each one test window earlier); rating data has plenty in one.
        cuts = self.cuts if self.cuts is not None else (1 if protocol.rating_data else 3)
        rng = np.random.default_rng(self.seed)
        xs, ys, groups, n_train_users = [], [], [], 0
        for level in range(cuts):
            split = protocol.split_events(events)
            rows = self._cut_rows(interactions, split, protocol.exclude, items, users, rng)
            if rows is None:
                break
            x, y, group = rows
            xs.append(x)
            ys.append(y)
            groups.append(group + level * interactions.shape[0])
            n_train_users += len(np.unique(group))
            events = split.train
        if not ys:
            raise ValueError("ranker: too few validation users with a target to learn from")
        x, y, group = np.vstack(xs), np.concatenate(ys), np.concatenate(groups)
        if y.sum() == 0:
            raise ValueError("ranker: no validation positive among the candidates")
        self.classifier_ = self._train_classifier(x, y, group, rng)
        self.training_ = {
            "pairs": len(y),
            "positives": int(y.sum()),
            "users": n_train_users,
            "cuts": len(ys),
            "split": protocol.split,
        }
        self.models_ = self._fit_generators(interactions, items, users)
        self._context_full = self._context(interactions)

    def _cut_rows(
        self,
        interactions: Interactions,
        split: Any,
        exclude: str,
        items: pd.DataFrame | None,
        users: pd.DataFrame | None,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Labelled candidate rows from one cut: generators fitted before it, targets after."""
        inner = Interactions.from_frame(
            split.train,
            interactions.weights,
            users=interactions.users.ids,
            items=interactions.items.ids,
        )
        truth = test_truth(inner, split.test, exclude=exclude)
        if len(truth.users) < 10 or inner.n_events == 0:
            return None
        models = self._fit_generators(inner, items, users)
        for model in models:
            model.n_users_, model.n_items_ = inner.shape
        train_users = truth.users
        if len(train_users) > self.max_train_users:
            train_users = np.sort(rng.choice(train_users, self.max_train_users, replace=False))
        position = {u: i for i, u in enumerate(truth.users)}
        context = self._context(inner)
        banned = inner.interacted() if exclude == "interacted" else inner.converted()
        xs, ys, groups = [], [], []
        for batch in self._batches(train_users):
            row, item, features = self._candidates(models, context, batch)
            user = batch[row]
            keep = ~lookup(banned, user, item).astype(bool)
            truth_rows = np.array([position[u] for u in user[keep]])
            label = lookup(truth.relevant, truth_rows, item[keep]) > 0
            xs.append(features[keep])
            ys.append(label)
            groups.append(user[keep])
        return np.vstack(xs), np.concatenate(ys), np.concatenate(groups)

    def _train_classifier(
        self, x: np.ndarray, y: np.ndarray, group: np.ndarray, rng: np.random.Generator
    ) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.inspection import permutation_importance
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        def make() -> Any:
            if self.classifier == "logistic":
                return make_pipeline(
                    StandardScaler(), LogisticRegression(max_iter=500, class_weight="balanced")
                )
            if self.classifier == "gbdt":
                return HistGradientBoostingClassifier(
                    max_iter=200,
                    learning_rate=0.05,
                    max_leaf_nodes=31,
                    l2_regularization=1.0,
                    random_state=self.seed,
                )
            raise ValueError("classifier: expected gbdt or logistic")

        # Importance is measured on held-out users: a quarter of them, by user.
        unique = np.unique(group)
        held = np.isin(group, rng.choice(unique, max(1, len(unique) // 4), replace=False))
        probe = make().fit(x[~held], y[~held])
        if y[held].any() and (~y[held]).any():
            result = permutation_importance(
                probe,
                x[held],
                y[held],
                scoring="average_precision",
                n_repeats=3,
                random_state=self.seed,
            )
            importance = result.importances_mean
        else:
            importance = np.zeros(x.shape[1])
        self.feature_importance_ = dict(
            zip(self.feature_names(), np.round(importance, 5).tolist(), strict=True)
        )
        return make().fit(x, y)

    # --- serving --------------------------------------------------------------------------------
    def _score_users(self, users: np.ndarray) -> np.ndarray:
        out = np.full((len(users), self.n_items_), -1e9)
        for start in range(0, len(users), 512):
            batch = users[start : start + 512]
            row, item, features = self._candidates(self.models_, self._context_full, batch)
            out[start + row, item] = self.classifier_.predict_proba(features)[:, 1]
        return out

    # --- persistence ----------------------------------------------------------------------------
    def save(self, folder: Path | str) -> Path:
        import joblib

        folder = save_composite(
            self,
            folder,
            self.models_,
            {
                "feature_importance_": self.feature_importance_,
                "training_": self.training_,
                "reference_": self._context_full["reference"],
            },
        )
        # scikit-learn's own persistence; load only artifacts you wrote yourself.
        joblib.dump(self.classifier_, folder / "classifier.joblib")
        context = self._context_full
        np.savez_compressed(
            folder / "context.npz",
            popularity=context["popularity"],
            item_age=context["item_age"],
            activity=context["activity"],
            visit_time=context["visit_time"],
            item_first_event=context["item_first_event"],
            event_keys=context["event_keys"],
            event_time_base=context["event_time_base"],
        )
        for key in ("weights", "last_seen", "flags"):
            sp.save_npz(folder / f"context-{key}.npz", sp.csr_matrix(context[key]))
        return folder

    @classmethod
    def load_folder(cls, folder: Path, meta: dict[str, Any]) -> LearnedRanker:
        import joblib

        model, model.models_ = load_composite(cls, folder, meta)
        model.classifier_ = joblib.load(folder / "classifier.joblib")
        with np.load(folder / "context.npz", allow_pickle=False) as arrays:
            context: dict[str, Any] = {k: arrays[k] for k in arrays.files}
        for key in ("weights", "last_seen", "flags"):
            context[key] = sp.load_npz(folder / f"context-{key}.npz").tocsr()
        context["reference"] = model.reference_
        model._context_full = context
        return model
