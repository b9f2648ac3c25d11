"""Names of every column in Equilibra's canonical tables, in one place."""

from __future__ import annotations

from typing import Any

import pandas as pd


class Columns:
    user = "user_id"
    item = "item_id"
    event_type = "event_type"
    timestamp = "timestamp"
    value = "value"
    event_id = "event_id"
    impression_id = "impression_id"
    context = "context"
    # Where a row came from in its source file, carried along so a reject can point at it.
    source_row = "source_row"

    # Item table.
    title = "title"
    description = "description"
    categories = "categories"
    price = "price"
    available = "available"
    created_at = "created_at"
    attributes = "attributes"

    # Impression table (the impression log of design.md): one row per shown item.
    placement = "placement"
    segment = "segment"
    policy = "policy"
    variant = "variant"  # the A/B test arm that served an impression: `experiment/variant`
    # The replica (EQUILIBRA_REPLICA) that served an impression and credits its feedback.
    replica = "replica"
    model_version = "model_version"
    position = "position"  # 1 = the top slot
    score = "score"
    prior = "prior"
    propensity = "propensity"
    propensity_error = "propensity_error"
    explore = "explore"
    reason = "reason"
    exposure = "exposure"
    reward = "reward"  # written back when the attribution window closes
    candidates = "candidates"  # once per impression (position 1): JSON of every candidate


EVENT_COLUMNS: tuple[str, ...] = (
    Columns.event_id,
    Columns.user,
    Columns.item,
    Columns.event_type,
    Columns.timestamp,
    Columns.value,
    Columns.impression_id,
    Columns.context,
)
ITEM_COLUMNS: tuple[str, ...] = (
    Columns.item,
    Columns.title,
    Columns.description,
    Columns.categories,
    Columns.price,
    Columns.available,
    Columns.created_at,
    Columns.attributes,
)
USER_COLUMNS: tuple[str, ...] = (Columns.user, Columns.attributes)
IMPRESSION_COLUMNS: tuple[str, ...] = (
    Columns.impression_id,
    Columns.timestamp,
    Columns.user,
    Columns.placement,
    Columns.segment,
    Columns.policy,
    Columns.model_version,
    Columns.position,
    Columns.item,
    Columns.score,
    Columns.prior,
    Columns.propensity,
    Columns.propensity_error,
    Columns.explore,
    Columns.reason,
    Columns.exposure,
    Columns.reward,
    Columns.candidates,
    Columns.context,
    Columns.variant,
    Columns.replica,
)


def is_missing(value: Any) -> bool:
    """What a column of optional values holds where one is absent: None, NaN, pandas' NA or
    NaT. Per value and without pandas' machinery: the small-batch paths call it per cell."""
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and value != value)
    )
