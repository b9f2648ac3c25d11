"""Small batches validated row by row: the service's `POST /v1/events` fast path.

`validate_events` is vectorised for bulk import, and a pandas pass costs ~15 ms whatever the
batch size, most of a small request's time. This applies the same rules in plain Python to
batches the schema has already typed (ids normalised, event types checked) and answers only for
batches that are wholly valid; anything else (a reject to report, a timestamp that is not a plain
number) returns None and goes through `validate_events`, which stays the one source of the error
messages. A property test holds the two paths to the same frame.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
import pandas as pd

from equilibra.data.columns import EVENT_COLUMNS
from equilibra.data.columns import Columns as C
from equilibra.data.validate import derive_event_ids
from equilibra.domain import DEFAULT_RULES, EventType, ValidationRules

# Batches above this go to the vectorised path: there pandas' fixed cost is already shared.
ROW_PATH_MAX = 200
# A plain decimal number: what numpy and Python parse alike (no "1_000", "nan", "inf", hex).
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_RATING = EventType.RATING.value


class TypedEvent(Protocol):
    """What the HTTP schema hands over: ids normalised, the type lower-cased and known."""

    user_id: str
    item_id: str
    type: str
    timestamp: str | float | int | None
    value: float | None
    event_id: str | None
    impression_id: str | None
    context: dict[str, Any] | None


def validate_event_rows(
    events: Iterable[TypedEvent],
    arrival: float,
    rules: ValidationRules = DEFAULT_RULES,
    now: float | None = None,
) -> pd.DataFrame | None:
    """-> the valid canonical frame `validate_events` would return, or None: use it instead."""
    latest = rules.latest_allowed(arrival if now is None else now)
    columns: dict[str, list[Any]] = {name: [] for name in EVENT_COLUMNS}
    for event in events:
        seconds = _seconds(arrival if event.timestamp is None else event.timestamp)
        if seconds is None or not rules.min_timestamp <= seconds <= latest:
            return None
        value = event.value
        if value is not None and math.isnan(value):
            value = None  # a NaN value reads as missing there too
        if value is not None and not math.isfinite(value):
            return None
        if event.type == _RATING and (
            value is None or not rules.rating_min <= value <= rules.rating_max
        ):
            return None
        columns[C.event_id].append(event.event_id)
        columns[C.user].append(event.user_id)
        columns[C.item].append(event.item_id)
        columns[C.event_type].append(event.type)
        columns[C.timestamp].append(seconds)
        columns[C.value].append(np.nan if value is None else float(value))
        columns[C.impression_id].append(event.impression_id)
        context = event.context
        columns[C.context].append(None if context is None else json.dumps(context, sort_keys=True))
    frame = pd.DataFrame(
        {
            name: np.asarray(values, dtype="float64" if name in (C.timestamp, C.value) else object)
            for name, values in columns.items()
        }
    )
    missing = [index for index, given in enumerate(columns[C.event_id]) if given is None]
    if missing:
        frame.loc[missing, C.event_id] = derive_event_ids(frame.loc[missing]).to_numpy()
    return frame


def _seconds(stamp: str | float | int) -> float | None:
    if isinstance(stamp, bool):
        return None
    if not isinstance(stamp, int | float) and not (
        isinstance(stamp, str) and _PLAIN_NUMBER.fullmatch(stamp.strip())
    ):
        return None  # ISO-8601 text and anything odd: the vectorised path parses and words it
    try:
        seconds = float(stamp)
    except OverflowError:  # an integer past float's range
        return None
    return seconds if math.isfinite(seconds) else None
