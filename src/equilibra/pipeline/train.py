"""From training data to a fitted model artifact (the `fit` command, the demo, the service).

Training data comes from files (`data.training.load_training_data`) or from a store
(`load_store_data`); `train` picks the model (`--algorithm auto`) or takes the one named, fits
it on one cleaned snapshot and returns the artifact, which `ModelArtifact.publish` writes as the
next version of a model folder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from equilibra.data.interactions import Interactions
from equilibra.data.training import TrainingData, build_interactions, default_weights
from equilibra.errors import EquilibraError
from equilibra.pipeline.artifact import ModelArtifact
from equilibra.pipeline.registry import create_model

# What `auto` falls back to when the log is too small to validate on: trending items for shop
# logs, plain popularity for ratings.
FALLBACK = {"shop": ("popularity", {"half_life_days": 7.0}), "rating": ("popularity", {})}


def load_store_data(url: str) -> TrainingData:
    """Events, items and users of a store (already validated when they were stored)."""
    from equilibra.data.interactions import SNAPSHOT_COLUMNS
    from equilibra.store import open_store

    with open_store(url) as store:
        events = store.events_frame(columns=SNAPSHOT_COLUMNS)
        items = store.items_frame()
        users = store.users_frame()
    if events.empty:
        raise EquilibraError(f"db: {url} holds no events to train on")
    return TrainingData(
        events=events,
        items=items if len(items) else None,
        users=users if len(users) else None,
        rejects={"events": 0, "items": 0, "users": 0},
    )


def fit_artifact(
    data: TrainingData,
    algorithm: str,
    params: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    interactions: Interactions | None = None,
) -> ModelArtifact:
    try:
        model = create_model(algorithm, **(params or {}))
    except TypeError as exc:
        raise EquilibraError(f"params: {exc}") from None
    except ValueError as exc:
        raise EquilibraError(str(exc)) from None
    if interactions is None:
        interactions = build_interactions(data.events, data.items, default_weights(data))
    try:
        model.fit(interactions, data.items, data.users)
    except ImportError as exc:  # an optional extra (torch) is not installed: say which
        raise EquilibraError(str(exc)) from None
    summary = {
        "data": {
            "events": interactions.n_events,
            "users": interactions.shape[0],
            "items": interactions.shape[1],
            "rejected_rows": data.rejected,
            "rejects": dict(data.rejects),
            "reject_reasons": dict(data.reject_reasons),
            "rating_data": data.is_rating_data,
        }
    }
    return ModelArtifact.from_training(
        model, interactions, {**summary, **(info or {})}, data.items, data.users
    )


Progress = Callable[[int, int, str], None]


def train(
    data: TrainingData,
    algorithm: str = "auto",
    params: dict[str, Any] | None = None,
    budget: float = 300.0,
    progress: Progress | None = None,
    note: Callable[[str], None] | None = None,
    info: dict[str, Any] | None = None,
) -> ModelArtifact:
    """Fit `algorithm` (or, for `auto`, the best candidate on a validation split) on `data`.

    When `auto` cannot validate (too little data for a temporal split with a target), it falls
    back to a popularity model and says so in the artifact (`auto.fallback`) and through `note`.
    """
    info = dict(info or {})
    chosen, chosen_params = algorithm, dict(params or {})
    if algorithm == "auto":
        from equilibra.pipeline.auto import search

        try:
            result = search(data, budget, progress)
        except ValueError as exc:
            chosen, chosen_params = FALLBACK["rating" if data.is_rating_data else "shop"]
            reason = str(exc)
            info["auto"] = {"chosen": chosen, "fallback": reason}
            if note is not None:
                note(f"{reason}; falling back to {chosen}")
        else:
            chosen, chosen_params = result.best.algorithm, result.best.params
            info["auto"] = {
                "chosen": result.best.label,
                "protocol": result.protocol,
                "validation": result.scores,
            }
    return fit_artifact(data, chosen, chosen_params, info)
