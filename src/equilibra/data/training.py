"""What a model is trained on: validated frames from files or a store, and their snapshot.

`TrainingData` holds the events (and the item and user tables, where known) with the number of
rows each table rejected, so a caller can say what was left out; `snapshot` turns cleaned events
into the `Interactions` every model is fitted on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from equilibra.data.cleaning import CleaningConfig, clean_events
from equilibra.data.columns import Columns
from equilibra.data.formats import read_events, read_items, read_users
from equilibra.data.interactions import EventWeights, Interactions
from equilibra.data.split import Protocol, protocol_for
from equilibra.data.validate import validate_events, validate_items, validate_users
from equilibra.errors import EquilibraError

C = Columns


@dataclass
class TrainingData:
    events: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    # Rows left out by validation, per table ("events", "items", "users").
    rejects: dict[str, int] = field(default_factory=dict)
    # The first few reasons, per table, so a summary can say why.
    reject_reasons: dict[str, list[str]] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return int(sum(self.rejects.values()))

    @property
    def protocol(self) -> Protocol:
        return protocol_for(self.events)

    @property
    def is_rating_data(self) -> bool:
        return self.protocol.rating_data


def _note(data: TrainingData, table: str, rejects: pd.DataFrame) -> None:
    data.rejects[table] = data.rejects.get(table, 0) + len(rejects)
    if len(rejects) and "reason" in rejects:
        reasons = data.reject_reasons.setdefault(table, [])
        for reason in rejects["reason"].astype(str).unique()[:3]:
            if reason not in reasons and len(reasons) < 3:
                reasons.append(reason)


def load_training_data(
    events: Path,
    fmt: str = "canonical",
    items: Path | None = None,
    users: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainingData:
    """Read and validate event (and item/user) files into frames; counts rejects per table."""
    data = TrainingData(events=pd.DataFrame(), rejects={"events": 0, "items": 0, "users": 0})
    frames, item_frames = [], []
    for chunk in read_events(events, fmt):
        checked = validate_events(chunk.events, timestamp_unit=chunk.timestamp_unit)
        frames.append(checked.valid)
        _note(data, "events", checked.rejects)
        if chunk.items is not None:
            checked_items = validate_items(chunk.items)
            item_frames.append(checked_items.valid)
            _note(data, "items", checked_items.rejects)
        if progress is not None:
            progress(chunk.done, chunk.total)
    if not frames or sum(len(f) for f in frames) == 0:
        raise EquilibraError(f"events: no valid events in {events}")
    if items is not None:
        checked_items = validate_items(read_items(items, fmt))
        item_frames.append(checked_items.valid)
        _note(data, "items", checked_items.rejects)
    if item_frames:
        data.items = pd.concat(item_frames, ignore_index=True).drop_duplicates(C.item, keep="last")
    if users is not None:
        checked_users = validate_users(read_users(users, fmt))
        data.users = checked_users.valid
        _note(data, "users", checked_users.rejects)
    data.events = pd.concat(frames, ignore_index=True)
    return data


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
