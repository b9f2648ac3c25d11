import pandas as pd
import pytest

from equilibra.analysis import analyse
from equilibra.analysis.behaviour import gini, sessionise
from equilibra.analysis.report import write_report


def log():
    rows = [
        ["u1", "a", "view", 0],
        ["u1", "a", "add_to_cart", 10],
        ["u1", "a", "purchase", 20],
        ["u1", "b", "view", 5000],
        ["u2", "a", "view", 0],
        ["u2", "b", "view", 100],
        ["u2", "b", "add_to_cart", 200],
        ["u3", "c", "view", 0],
        ["u1", "a", "purchase", 200_000],
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])


def test_funnel_counts_events_users_and_pairs():
    f = analyse(log())["funnel"]
    assert f["view_to_cart"] == pytest.approx(2 / 5)
    assert f["cart_to_purchase"] == pytest.approx(2 / 2)
    assert f["users"]["viewer_to_buyer"] == pytest.approx(1 / 3)
    assert f["pairs"]["viewed_then_carted"] == pytest.approx(2 / 5)
    assert f["pairs"]["carted_then_bought"] == pytest.approx(1 / 2)


def test_repeat_purchases_and_sessions():
    result = analyse(log())
    assert result["repeat_purchases"]["repeat_buyer_rate"] == 1.0
    assert result["repeat_purchases"]["repeat_item_rate"] == 1.0
    # u1: [0,10,20] then 5000 (gap > 30 min) then 200000 -> 3 sessions; u2: 1; u3: 1.
    assert result["sessions"]["sessions"] == 5
    assert sessionise(log()).nunique() == 5


def test_gini_extremes():
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 100]) == pytest.approx(0.75)


def test_categories_use_the_item_table():
    items = pd.DataFrame({"item_id": ["a", "b"], "categories": ["Home|Lamps", "Toys"]})
    cats = analyse(log(), items)["categories"]
    assert cats["top_by_events"] == {"Home": 5, "Toys": 3}


def test_report_writes_json_figures_and_html(tmp_path, tiny_shop):
    events = tiny_shop.events
    paths = write_report(analyse(events, tiny_shop.items), events, tmp_path)
    for key in ("json", "html", "funnel", "popularity_long_tail", "session_length"):
        assert paths[key].exists() and paths[key].stat().st_size > 500
    assert "funnel.png" in paths["html"].read_text()
