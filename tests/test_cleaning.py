import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from equilibra.data.cleaning import CleaningConfig, clean_events, min_support


def test_bots_and_duplicates_are_removed_and_counted(tiny_shop):
    events = tiny_shop.events
    bot = pd.DataFrame(
        {
            "user_id": "bot-1",
            "item_id": [f"i{k % 50}" for k in range(300)],
            "event_type": "view",
            "timestamp": events["timestamp"].min() + pd.Series(range(300)) * 0.5,
        }
    )
    dirty = pd.concat([events, events.iloc[:10], bot], ignore_index=True)
    cleaned, report = clean_events(dirty)
    assert report.duplicates == 10
    assert report.bots == ["bot-1"] and report.bot_events == 300
    assert len(cleaned) == len(events) == report.events_out


def test_outlier_users_are_flagged_by_robust_deviation():
    rows = [[f"u{u}", f"i{k}", "view", float(k * 3600)] for u in range(30) for k in range(5)]
    rows += [["heavy", f"i{k % 99}", "view", float(k * 3600)] for k in range(5000)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    _, report = clean_events(frame, CleaningConfig(bot_events_per_minute=None, outlier_mad=5))
    assert report.outlier_users == 1 and report.outlier_events == 5000


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=80),
    st.integers(1, 4),
    st.integers(1, 4),
)
def test_min_support_leaves_a_k_core(pairs, min_user, min_item):
    frame = pd.DataFrame([[f"u{u}", f"i{i}"] for u, i in pairs], columns=["user_id", "item_id"])
    kept = min_support(frame, min_user, min_item)
    if len(kept):
        assert kept["user_id"].value_counts().min() >= min_user
        assert kept["item_id"].value_counts().min() >= min_item
