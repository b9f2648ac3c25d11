"""From event files to a fitted model artifact: load, clean, snapshot, fit (the `fit` command)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from equilibra.data.cleaning import CleaningConfig, clean_events
from equilibra.data.columns import Columns
from equilibra.data.formats import read_events, read_items, read_users
from equilibra.data.interactions import EventWeights, Interactions
from equilibra.data.validate import validate_events, validate_items, validate_users
from equilibra.domain import EventType
from equilibra.errors import EquilibraError

C = Columns


@dataclass
class TrainingData:
    events: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    rejected: int = 0

    @property
    def is_rating_data(self) -> bool:
        """Mostly explicit ratings (MovieLens-like) rather than a shop's behaviour log."""
        return bool((self.events[C.event_type] == EventType.RATING.value).mean() > 0.5)

    def protocol(self) -> tuple[str, str]:
        """(split, exclude) that design.md prescribes for this kind of data."""
        return ("per_user", "interacted") if self.is_rating_data else ("global", "converted")


def load_training_data(
    events: Path,
    fmt: str = "canonical",
    items: Path | None = None,
    users: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainingData:
    """Read and validate event (and item/user) files into frames; counts rejected rows."""
    frames, item_frames, rejected = [], [], 0
    for chunk in read_events(events, fmt):
        checked = validate_events(chunk.events, timestamp_unit=chunk.timestamp_unit)
        frames.append(checked.valid)
        rejected += len(checked.rejects)
        if chunk.items is not None:
            item_frames.append(validate_items(chunk.items).valid)
        if progress is not None:
            progress(chunk.done, chunk.total)
    if not frames or sum(len(f) for f in frames) == 0:
        raise EquilibraError(f"events: no valid events in {events}")
    if items is not None:
        item_frames.append(validate_items(read_items(items, fmt)).valid)
    item_table = (
        pd.concat(item_frames, ignore_index=True).drop_duplicates(C.item, keep="last")
        if item_frames
        else None
    )
    user_table = validate_users(read_users(users, fmt)).valid if users is not None else None
    return TrainingData(
        events=pd.concat(frames, ignore_index=True),
        items=item_table,
        users=user_table,
        rejected=rejected,
    )


def default_weights(data: TrainingData) -> EventWeights:
    """Ratings weigh their value; shop events weigh by how much they commit to an item."""
    return EventWeights() if not data.is_rating_data else EventWeights(rating=None)


def snapshot(
    cleaned: pd.DataFrame, items: pd.DataFrame | None, weights: EventWeights | None = None
) -> Interactions:
    """Interactions with every catalogue item as a column (cold items stay rankable)."""
    item_ids = None
    if items is not None and len(items):
        item_ids = pd.unique(
            np.concatenate(
                [items[C.item].to_numpy(dtype=object), cleaned[C.item].to_numpy(dtype=object)]
            )
        )
    return Interactions.from_frame(cleaned, weights, items=item_ids)


def build_interactions(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    weights: EventWeights | None = None,
    cleaning: CleaningConfig | None = None,
) -> Interactions:
    """Clean, then snapshot."""
    cleaned, _ = clean_events(events, cleaning or CleaningConfig())
    return snapshot(cleaned, items, weights)


def fit_artifact(
    data: TrainingData,
    algorithm: str,
    params: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    interactions: Interactions | None = None,
) -> Any:
    from equilibra.artifact import ModelArtifact
    from equilibra.models.registry import create_model

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
