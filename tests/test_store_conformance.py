"""One suite, every backend (see the `store` fixture)."""

import pandas as pd
import pytest

from equilibra.data.validate import validate_events, validate_items, validate_users

NOW = 1_767_261_600.0


def events(rows, **extra):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    for key, value in extra.items():
        frame[key] = value
    return validate_events(frame, now=NOW).valid


def test_append_is_idempotent_on_event_id(store):
    batch = events(
        [
            ["u1", "i1", "view", 1767000000],
            ["u1", "i2", "purchase", 1767000100],
            ["u2", "i1", "view", 1767000200],
        ]
    )
    first = store.append_events(batch)
    assert (first.accepted, first.duplicates) == (3, 0)
    again = store.append_events(batch)
    assert (again.accepted, again.duplicates) == (0, 3)
    assert store.count_events() == 3


def test_duplicates_within_one_batch_are_counted(store):
    batch = events([["u1", "i1", "view", 1767000000], ["u1", "i1", "view", 1767000000]])
    result = store.append_events(batch)
    assert (result.accepted, result.duplicates) == (1, 1)


def test_explicit_event_ids_and_optional_fields_round_trip(store):
    batch = events(
        [["u1", "i1", "rating", 1767000000]],
        value=[4.5],
        event_id=["e1"],
        impression_id=["imp-1"],
        context=[{"page": "home"}],
    )
    store.append_events(batch)
    row = store.events_frame().iloc[0]
    assert row["event_id"] == "e1" and row["value"] == 4.5 and row["impression_id"] == "imp-1"
    assert row["context"] == '{"page": "home"}'


def test_events_frame_filters_by_window_types_and_users(store):
    store.append_events(
        events(
            [
                ["u1", "i1", "view", 1767000000],
                ["u1", "i2", "add_to_cart", 1767000100],
                ["u2", "i3", "purchase", 1767000200],
                ["u3", "i3", "view", 1767000300],
            ]
        )
    )
    window = store.events_frame(since=1767000100, until=1767000300)
    assert window["item_id"].tolist() == ["i2", "i3"]
    assert store.events_frame(types=["view"])["user_id"].tolist() == ["u1", "u3"]
    assert store.events_frame(users=["u2"])["item_id"].tolist() == ["i3"]
    assert store.events_frame(types=[]).empty
    assert store.count_events(since=1767000100) == 3
    assert store.count_events(types=["view", "purchase"]) == 3


def test_paging_visits_every_event_once_in_time_order(store):
    rows = [[f"u{i % 7}", f"i{i}", "view", 1767000000 + (i // 3)] for i in range(50)]
    store.append_events(events(rows))
    seen, cursor, pages = [], None, 0
    while True:
        page = store.page_events(limit=8, cursor=cursor)
        seen.extend(page.events["event_id"])
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 50 and pages == 7
    times = store.events_frame()["timestamp"].tolist()
    assert times == sorted(times)
    with pytest.raises(ValueError, match="cursor"):
        store.page_events(cursor="garbage")


def test_upsert_items_and_users(store):
    items = validate_items(
        pd.DataFrame(
            {
                "item_id": ["a", "b"],
                "title": ["Lamp", "Chair"],
                "categories": ["Home|Lamps", None],
                "price": ["10", None],
                "colour": ["red", None],
            }
        ),
        now=NOW,
    ).valid
    assert store.upsert_items(items) == 2
    store.upsert_items(
        validate_items(
            pd.DataFrame({"item_id": ["a"], "title": ["Lamp 2"], "available": ["0"]}), now=NOW
        ).valid
    )
    frame = store.items_frame().set_index("item_id")
    assert frame.loc["a", "title"] == "Lamp 2" and not frame.loc["a", "available"]
    assert frame.loc["b", "available"] and pd.isna(frame.loc["b", "price"])
    store.upsert_users(validate_users(pd.DataFrame({"user_id": ["u1"], "age": ["31"]})).valid)
    assert '"age": "31"' in store.users_frame()["attributes"].iloc[0]


def test_forget_user_removes_events_impressions_and_profile(store):
    store.append_events(
        events([["u1", "i1", "view", 1767000000], ["u2", "i1", "view", 1767000000]])
    )
    store.upsert_users(validate_users(pd.DataFrame({"user_id": ["u1", "u2"]})).valid)
    store.append_impressions(
        pd.DataFrame(
            {
                "impression_id": ["x", "x"],
                "position": [1, 2],
                "user_id": ["u1", "u1"],
                "item_id": ["i1", "i2"],
                "timestamp": [1767000000.0] * 2,
                "propensity": [0.9, 0.1],
                "policy": ["egreedy:0.1"] * 2,
                "explore": [False, True],
                "reward": [None, None],
                "context": [None, None],
            }
        )
    )
    assert len(store.impressions_frame("u1")) == 2
    result = store.forget_user("u1")
    assert (result.events, result.impressions, result.profile) == (1, 2, 1)
    assert store.events_frame(users=["u1"]).empty and store.impressions_frame("u1").empty
    assert store.users_frame()["user_id"].tolist() == ["u2"]
    assert store.forget_user("nobody").events == 0


def test_stats_count_distinct_users_items_and_impressions(store):
    store.append_events(
        events([["u1", "i1", "view", 1767000000], ["u2", "i2", "view", 1767000000]])
    )
    store.upsert_items(validate_items(pd.DataFrame({"item_id": ["i3"]}), now=NOW).valid)
    stats = store.stats()
    assert (stats.events, stats.users, stats.items, stats.impressions) == (2, 2, 3, 0)


def test_bulk_load_keeps_dedupe_and_restores_indexes(store):
    with store.bulk_load():
        store.append_events(events([["u1", "i1", "view", 1767000000]]))
        assert store.append_events(events([["u1", "i1", "view", 1767000000]])).duplicates == 1
    assert store.forget_user("u1").events == 1


def impression_rows(impression_id, user, timestamp, items, reward=None):
    return pd.DataFrame(
        {
            "impression_id": impression_id,
            "timestamp": float(timestamp),
            "user_id": user,
            "placement": "home",
            "segment": "known",
            "policy": "thompson",
            "model_version": "3",
            "position": range(1, len(items) + 1),
            "item_id": items,
            "score": [0.9 - 0.1 * i for i in range(len(items))],
            "prior": 0.05,
            "propensity": 0.5,
            "propensity_error": 0.01,
            "explore": [False] + [True] * (len(items) - 1),
            "reason": "exploit: best estimate",
            "exposure": 1.0,
            "reward": reward,
            "candidates": ['{"items":["a","b","c"],"scores":[3,2,1]}'] + [None] * (len(items) - 1),
            "context": None,
        }
    )


def test_impression_log_round_trips_windows_and_takes_rewards_back(store):
    store.append_impressions(impression_rows("x", "u1", 1767000000, ["a", "b"]))
    store.append_impressions(impression_rows("y", "u2", 1767000100, ["c", "a"]))
    store.append_impressions(impression_rows("z", "u1", 1767000200, ["b"], reward=1.0))
    frame = store.impressions_frame()
    assert frame["impression_id"].tolist() == ["x", "x", "y", "y", "z"]
    first = frame.iloc[0]
    assert (first["position"], first["placement"], first["segment"], first["model_version"]) == (
        1,
        "home",
        "known",
        "3",
    )
    assert first["prior"] == 0.05 and first["propensity_error"] == 0.01 and not first["explore"]
    assert first["candidates"].startswith('{"items"') and pd.isna(frame.iloc[1]["candidates"])
    window = store.impressions_frame(since=1767000050, until=1767000200)
    assert window["impression_id"].unique().tolist() == ["y"]
    assert store.impressions_frame(open_only=True)["impression_id"].unique().tolist() == ["x", "y"]
    written = store.write_rewards(
        pd.DataFrame(
            {"impression_id": ["x", "x", "nope"], "position": [1, 2, 1], "reward": [3.0, 0.0, 1.0]}
        )
    )
    assert written == 2
    assert store.impressions_frame(open_only=True)["impression_id"].unique().tolist() == ["y"]
    assert store.impressions_frame("u1")["reward"].tolist() == [3.0, 0.0, 1.0]
    assert store.stats().impressions == 3


def test_open_impressions_of_a_gone_replica_are_reassigned_once(store):
    store.append_impressions(
        impression_rows("x", "u1", 1767000000, ["a", "b"]).assign(replica="r1")
    )
    store.append_impressions(
        impression_rows("y", "u2", 1767000100, ["c"], reward=1.0).assign(replica="r1")
    )
    store.append_impressions(impression_rows("z", "u3", 1767000200, ["d"]).assign(replica="r2"))
    assert store.reassign_open_impressions("r1", "r3") == ["x"]  # y is closed
    assert store.reassign_open_impressions("r1", "r2") == []  # a second adopter finds none
    owners = store.impressions_frame().groupby("impression_id")["replica"].first().to_dict()
    assert owners == {"x": "r3", "y": "r1", "z": "r2"}


def test_a_store_of_schema_one_gains_the_impression_log_columns(tmp_path):
    import sqlite3

    from equilibra.store import open_store

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE impressions (impression_id TEXT NOT NULL, position INTEGER NOT NULL,"
        " user_id TEXT NOT NULL, item_id TEXT NOT NULL, timestamp DOUBLE PRECISION NOT NULL,"
        " propensity DOUBLE PRECISION NOT NULL, policy TEXT, explore BOOLEAN,"
        " reward DOUBLE PRECISION, context TEXT, PRIMARY KEY (impression_id, position))"
    )
    conn.execute(
        "INSERT INTO impressions VALUES"
        " ('old', 1, 'u1', 'i1', 1767000000, 0.2, 'obd', NULL, 1, NULL)"
    )
    conn.commit()
    conn.close()
    with open_store(f"sqlite:///{path}") as store:
        frame = store.impressions_frame()
        assert frame["propensity"].tolist() == [0.2] and pd.isna(frame["prior"].iloc[0])
        assert frame["explore"].iloc[0] is None  # NULL stays unknown, not True
        store.append_impressions(impression_rows("new", "u1", 1767000100, ["a"]))
        assert len(store.impressions_frame()) == 2
        names = {row[1] for row in store._query("PRAGMA index_list(events)")}
        assert "events_impression" in names
        assert store._query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == "4"
        assert "variant" in frame  # schema 3: the A/B test arm
