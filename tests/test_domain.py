import math

import pytest
from pydantic import ValidationError as PydanticError

from equilibra.domain import Event, EventType, Item, User, ValidationError, parse_timestamp


def test_event_accepts_iso_and_unix_timestamps_and_numeric_ids():
    a = Event(user_id=12, item_id="i9", type="click", timestamp="2026-01-01T10:00:00Z")
    b = Event(user_id="12", item_id="i9", type="CLICK", timestamp=1767261600)
    assert a.user_id == "12" and a.timestamp == b.timestamp == 1767261600.0
    assert a.type is EventType.CLICK


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "like"}, "unknown event type"),
        ({"user_id": "  "}, "user_id: is empty"),
        ({"item_id": None}, "item_id: is missing"),
        ({"type": "rating", "value": 7}, "rating 7 outside"),
        ({"type": "rating"}, "needs a numeric value"),
        ({"timestamp": "yesterday"}, "cannot parse"),
        ({"timestamp": 1767261600000}, "looks like milliseconds"),
        ({"timestamp": 0}, "before 1980"),
    ],
)
def test_event_rejects_bad_input_naming_the_field(fields, message):
    base = {"user_id": "u", "item_id": "i", "type": "view", "timestamp": 1767261600}
    with pytest.raises((PydanticError, ValidationError), match=message):
        Event(**{**base, **fields})


def test_item_validates_price_and_splits_categories():
    item = Item(item_id=5, categories="Home| Lamps |", price="9.5")
    assert item.item_id == "5" and item.categories == ("Home", "Lamps") and item.price == 9.5
    for bad, message in ((-1, "negative"), (math.nan, "finite")):
        with pytest.raises(PydanticError, match=message):
            Item(item_id="x", price=bad)


def test_user_id_normalised():
    assert User(user_id=3.0).user_id == "3"


def test_parse_timestamp_naive_iso_is_utc():
    assert parse_timestamp("2026-01-01T00:00:00") == parse_timestamp("2026-01-01T00:00:00+00:00")
