import pandas as pd
import pytest

from equilibra.data.split import global_temporal_split, leave_last_out, per_user_temporal_split

DAY = 86_400.0


def log(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])


def test_per_user_split_takes_the_latest_fifth_of_each_user():
    rows = [["a", f"i{t}", "view", float(t)] for t in range(10)] + [
        ["b", "x", "view", 5.0],
        ["b", "y", "view", 1.0],
    ]
    split = per_user_temporal_split(log(rows))
    test = split.test.groupby("user_id")["item_id"].apply(sorted).to_dict()
    assert test == {"a": ["i8", "i9"], "b": ["x"]}
    assert len(split.train) + len(split.test) == len(rows)


@pytest.mark.parametrize(("span_days", "expected_cut_days"), [(100, 86.0), (30, 24.0)])
def test_global_cut_is_the_later_of_14_days_and_the_last_fifth(span_days, expected_cut_days):
    rows = [["u", f"i{d}", "view", d * DAY] for d in range(span_days + 1)]
    split = global_temporal_split(log(rows))
    assert split.cut == pytest.approx(expected_cut_days * DAY)
    assert (split.test["timestamp"] >= split.cut).all()
    assert (split.train["timestamp"] < split.cut).all()


def test_leave_last_out_keeps_single_event_users_in_training():
    rows = [["a", "x", "view", 1.0], ["a", "y", "view", 2.0], ["b", "z", "view", 1.0]]
    split = leave_last_out(log(rows))
    assert split.test["item_id"].tolist() == ["y"]
    assert sorted(split.train["item_id"]) == ["x", "z"]
