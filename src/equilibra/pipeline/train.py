"""From training data to a fitted model artifact: snapshot, fit, describe (the `fit` command)."""

from __future__ import annotations

from typing import Any

from equilibra.data.interactions import Interactions
from equilibra.data.training import TrainingData, build_interactions, default_weights
from equilibra.errors import EquilibraError
from equilibra.pipeline.artifact import ModelArtifact
from equilibra.pipeline.registry import create_model


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
    model.fit(interactions, data.items, data.users)
    summary = {
        "data": {
            "events": interactions.n_events,
            "users": interactions.shape[0],
            "items": interactions.shape[1],
            "rejected_rows": data.rejected,
            "rating_data": data.is_rating_data,
        }
    }
    return ModelArtifact.from_training(
        model, interactions, {**summary, **(info or {})}, data.items, data.users
    )
