"""Names of every column in Equilibra's canonical tables, in one place."""

from __future__ import annotations


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

    # Impression table.
    position = "position"
    propensity = "propensity"
    policy = "policy"
    explore = "explore"
    reward = "reward"


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
    Columns.position,
    Columns.user,
    Columns.item,
    Columns.timestamp,
    Columns.propensity,
    Columns.policy,
    Columns.explore,
    Columns.reward,
    Columns.context,
)
