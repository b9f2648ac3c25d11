import numpy as np
import pandas as pd

from equilibra.data.validate import (
    derive_event_ids,
    validate_events,
    validate_impressions,
    validate_items,
)

NOW = 1_767_261_600.0  # 2026-01-01T10:00:00Z


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "value"])


def test_every_row_is_either_valid_or_rejected_with_a_reason():
    rows = [
        ["u1", "i1", "view", "1767000000", None],
        ["u1", "i1", "VIEW ", "2025-12-29T09:00:00Z", None],
        ["", "i1", "view", "1767000000", None],
        ["u1", None, "view", "1767000000", None],
        ["u1", "i1", "like", "1767000000", None],
        ["u1", "i1", "rating", "1767000000", "9"],
        ["u1", "i1", "rating", "1767000000", None],
        ["u1", "i1", "view", "not a time", None],
        ["u1", "i1", "view", "1767000000000", None],
        ["u1", "i1", "view", "2099-01-01T00:00:00Z", None],
        ["u1", "i1", "view", "1767000000", "abc"],
        [" u2 ", "i2", "purchase", "1767000000", "19.99"],
    ]
    checked = validate_events(frame(rows), now=NOW)
    assert len(checked.valid) + len(checked.rejects) == len(rows)
    assert len(checked.valid) == 3
    reasons = checked.rejects["reason"].tolist()
    for expected in [
        "user_id: is empty",
        "item_id: is missing",
        "unknown type 'like'",
        "rating 9.0 outside",
        "needs a numeric value",
        "cannot parse 'not a time'",
        "looks like milliseconds",
        "too far in the future",
        "value: is not a number",
    ]:
        assert any(expected in r for r in reasons), (expected, reasons)
    assert checked.valid["user_id"].tolist()[-1] == "u2"  # stripped
    assert checked.valid["event_type"].tolist()[1] == "view"  # lower-cased


def test_derived_event_ids_are_stable_and_distinguish_events():
    valid = validate_events(
        frame([["u1", "i1", "view", "1767000000", None], ["u1", "i1", "view", "1767000001", None]]),
        now=NOW,
    ).valid
    again = validate_events(frame([["u1", "i1", "view", "1767000000", None]]), now=NOW).valid
    assert valid["event_id"].iloc[0] == again["event_id"].iloc[0]
    assert valid["event_id"].nunique() == 2
    assert derive_event_ids(valid).str.len().eq(17).all()


def test_given_event_ids_are_kept():
    rows = frame([["u1", "i1", "view", "1767000000", None]]).assign(event_id=["e-1"])
    assert validate_events(rows, now=NOW).valid["event_id"].tolist() == ["e-1"]


def test_items_reject_negative_and_nan_prices_and_keep_free_attributes():
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "price": ["1.5", "-2", "nan", "x"],
            "brand": ["Acme", None, None, None],
        }
    )
    checked = validate_items(items, now=NOW)
    assert checked.valid["item_id"].tolist() == ["a"]
    assert '"brand": "Acme"' in checked.valid["attributes"].iloc[0]
    assert {r.split(":")[0] for r in checked.rejects["reason"]} == {"price"}


def test_impression_propensity_must_be_a_probability():
    shown = pd.DataFrame(
        {
            "impression_id": ["x", "x", "y"],
            "position": [1, 2, 0],
            "user_id": ["u", "u", "u"],
            "item_id": ["a", "b", "c"],
            "timestamp": [NOW - 5] * 3,
            "propensity": [0.5, 1.5, 0.2],
        }
    )
    checked = validate_impressions(shown, now=NOW)
    assert checked.valid["item_id"].tolist() == ["a"]
    assert sorted(r.split(":")[0] for r in checked.rejects["reason"]) == ["position", "propensity"]


def test_numeric_columns_from_parquet_are_accepted():
    rows = pd.DataFrame(
        {
            "user_id": np.array([1, 2]),
            "item_id": np.array([3.0, 4.0]),
            "event_type": ["view", "purchase"],
            "timestamp": np.array([1767000000, 1767000001]),
        }
    )
    valid = validate_events(rows, now=NOW).valid
    assert valid["user_id"].tolist() == ["1", "2"] and valid["item_id"].tolist() == ["3", "4"]
