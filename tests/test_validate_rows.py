"""The row-by-row fast path for small event batches against the vectorised `validate_events`:
whenever the fast path answers, it answers exactly what the vectorised path would, and it
declines every batch the vectorised path would reject."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from equilibra.data.validate import validate_events
from equilibra.data.validate_rows import validate_event_rows
from equilibra.domain import EVENT_TYPES
from equilibra.service.routes.events import events_frame
from equilibra.service.schemas import EventIn

NOW = 1_767_000_000.0

ids = st.one_of(
    st.text(alphabet="abcxyz019 _-", min_size=0, max_size=6),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=False, width=32),
)
stamps = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.sampled_from(
        [
            "1767000000",
            " 1767000000.5 ",
            "1.767e9",
            "2026-01-01T10:00:00Z",
            "soon",
            "",
            "1_767e6",
            "nan",
            "inf",
            "-1767000000",
            "1767000000000",
            "2026-13-01",
            "0x10",
            "1e400",
        ]
    ),
    st.floats(NOW - 10**8, NOW + 2 * 86_400),
)
values = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(-1, 7), st.integers(0, 5)
)
contexts = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["page", "device", "n"]),
        st.one_of(st.text(max_size=3), st.integers(), st.booleans(), st.none()),
        max_size=3,
    ),
)
raw_event = st.fixed_dictionaries(
    {
        "user_id": ids,
        "item_id": ids,
        "type": st.sampled_from([*EVENT_TYPES, " View", "PURCHASE"]),
        "timestamp": stamps,
        "value": values,
        "event_id": st.one_of(st.none(), ids),
        "impression_id": st.one_of(st.none(), ids),
        "context": contexts,
    }
)


def typed(raw: dict) -> EventIn | None:
    try:
        return EventIn.model_validate(raw)
    except ValidationError:
        return None  # the schema answers 422 before validation: not this test's business


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.lists(raw_event, min_size=1, max_size=8))
@example([{"user_id": "0", "item_id": 0, "type": "view", "value": float("nan")}])  # NaN: missing
def test_fast_path_equals_vectorised_path(raws: list[dict]) -> None:
    events = [e for e in map(typed, raws) if e is not None]
    if not events:
        return
    fast = validate_event_rows(events, NOW)
    checked = validate_events(events_frame(events, NOW), now=NOW)
    if fast is None:
        assert len(checked.rejects) or _has_text_stamp(events), "declined a clean batch"
        return
    assert len(checked.rejects) == 0
    pd.testing.assert_frame_equal(fast, checked.valid)


def _has_text_stamp(events: list[EventIn]) -> bool:
    """Text timestamps that are not plain numbers (ISO-8601) go the vectorised way on purpose."""
    return any(isinstance(e.timestamp, str) and not _is_number(e.timestamp) for e in events)


def _is_number(text: str) -> bool:
    try:
        float(text.replace("_", "!"))  # Python reads "1_000"; the fast path does not
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": "yesterday"},
        {"timestamp": NOW + 3 * 86_400},
        {"timestamp": 1.0},
        {"type": "rating"},
        {"type": "rating", "value": 9.0},
        {"value": float("inf")},
    ],
)
def test_fast_path_declines_what_the_vectorised_path_rejects(change: dict) -> None:
    event = EventIn.model_validate({"user_id": "u", "item_id": "i", "type": "view", **change})
    assert validate_event_rows([event], NOW) is None
    assert len(validate_events(events_frame([event], NOW), now=NOW).rejects) == 1


def test_fast_path_derives_the_same_event_ids() -> None:
    events = [
        EventIn(user_id="u1", item_id="i1", type="view", timestamp=NOW - 5),
        EventIn(
            user_id="u1", item_id="i2", type="purchase", timestamp=NOW, value=12.5, event_id="given"
        ),
    ]
    fast = validate_event_rows(events, NOW)
    assert fast is not None
    assert fast["event_id"].tolist()[1] == "given"
    assert (
        fast["event_id"].tolist()[0]
        == validate_events(events_frame(events, NOW)).valid["event_id"].tolist()[0]
    )
