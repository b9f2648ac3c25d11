"""Session models beyond the shared conformance suite: how sessions are cut, what the neighbour
search reads, training the neural ones (seeded, early stopping), and the live path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from equilibra.data.interactions import Interactions
from equilibra.data.training import TrainingData
from equilibra.models.session_knn import SessionKNN, VectorSessionKNN, position_weights
from equilibra.models.sessions import WHOLE_HISTORY, split_sessions
from equilibra.pipeline.train import fit_artifact

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from test_service import ADMIN, T0, settings_for

from equilibra.service.app import create_app


def log(rows: list[tuple[str, str, float]]) -> Interactions:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return Interactions.from_frame(frame.assign(event_type="view"))


def test_sessions_are_cut_at_gaps_repeats_collapsed_and_ordered_by_their_end() -> None:
    user = np.array([0, 0, 0, 0, 1, 1, 0])
    item = np.array([5, 5, 6, 7, 8, 9, 3])
    time = np.array([0.0, 10, 20, 4000, 100, 200, 4100])
    sessions = split_sessions(user, item, time, gap_minutes=30)
    assert [sessions[s].tolist() for s in range(len(sessions))] == [[5, 6], [8, 9], [7, 3]]
    assert sessions.user.tolist() == [0, 1, 0]
    assert sessions.end.tolist() == [20.0, 200.0, 4100.0]
    whole = split_sessions(user, item, time, gap_minutes=WHOLE_HISTORY)
    assert [whole[s].tolist() for s in range(len(whole))] == [[8, 9], [5, 6, 7, 3]]
    again = sessions.select(np.array([False, True, True]))
    assert [again[s].tolist() for s in range(len(again))] == [[8, 9], [7, 3]]


def test_the_last_click_weighs_most_in_v_sknn() -> None:
    assert position_weights(3, "div").tolist() == [1 / 3, 1 / 2, 1.0]
    assert position_weights(12, "linear")[0] == pytest.approx(0.1)
    assert position_weights(4, "none").tolist() == [1.0] * 4


def test_neighbours_vote_for_what_followed_and_v_sknn_follows_the_last_click() -> None:
    # Sessions a→b→x (many), c→d→y (many). A live session c, a: V-SKNN weighs the last click.
    rows = []
    for s in range(6):
        rows += [(f"u{s}", "a", T0 + 10 * s), (f"u{s}", "b", T0 + 10 * s + 1)]
        rows += [(f"u{s}", "x", T0 + 10 * s + 2)]
        rows += [(f"v{s}", "c", T0 + 10 * s), (f"v{s}", "d", T0 + 10 * s + 1)]
        rows += [(f"v{s}", "y", T0 + 10 * s + 2), (f"v{s}", "z", T0 + 10 * s + 3)]
    x = log(rows)
    dense = {name: int(x.items.to_dense([name])[0]) for name in "abcdxyz"}
    v = VectorSessionKNN(k=50).fit(x)
    found, _ = v.recommend_session([dense["c"], dense["a"]], 3, banned=np.array([dense["a"]]))
    assert found[0] == dense["b"]  # a's sessions (the last click) outvote c's
    s = SessionKNN(k=50).fit(x)
    found, _ = s.recommend_session([dense["c"]], 10)
    assert {dense["d"], dense["y"], dense["z"]} <= set(found[:4].tolist())
    assert dense["x"] not in found[:4]


def test_neighbours_come_from_the_most_recent_sample() -> None:
    # Old sessions a→old, recent ones a→new: with a sample of 3, only the recent ones vote.
    rows = [(f"o{s}", "a", T0 + s * 10) for s in range(10)]
    rows += [(f"o{s}", "old", T0 + s * 10 + 1) for s in range(10)]
    rows += [(f"n{s}", "a", T0 + 1000 + s * 10) for s in range(3)]
    rows += [(f"n{s}", "new", T0 + 1000 + s * 10 + 1) for s in range(3)]
    x = log(rows)
    a, old, new = x.items.to_dense(["a", "old", "new"])
    row = SessionKNN(k=10, sample_size=3).fit(x).score_session(np.array([a]))
    scored = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
    assert new in scored and old not in scored
    everything = SessionKNN(k=100, sample_size=100).fit(x).score_session(np.array([a]))
    votes = dict(zip(everything.indices.tolist(), everything.data.tolist(), strict=True))
    assert votes[old] > votes[new]  # 10 old sessions against 3 recent ones


@pytest.fixture(scope="module")
def shop_log(tiny_shop) -> Interactions:
    return Interactions.from_frame(tiny_shop.events)


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_neural_models_are_seeded_and_stop_early_on_a_temporal_split(name, shop_log) -> None:
    pytest.importorskip("torch")
    from equilibra.models.registry import create_model

    def fitted(seed: int):
        return create_model(
            name, dim=16, epochs=8, patience=1, negatives=32, validation_share=0.2, seed=seed
        ).fit(shop_log)

    first, again, other = fitted(0), fitted(0), fitted(1)
    users = np.arange(20)
    assert np.allclose(first.score(users, np.arange(30)), again.score(users, np.arange(30)))
    assert not np.allclose(first.score(users, np.arange(30)), other.score(users, np.arange(30)))
    history = first.history_
    assert all("hr@20" in epoch for epoch in history)
    scores = [epoch["hr@20"] for epoch in history]
    best = int(np.argmax(scores))
    # Stopped `patience` epochs after its best, or ran out of epochs.
    assert len(history) == 8 or len(history) == best + 2


def test_a_time_limit_stops_training_after_the_epoch_that_crosses_it(shop_log) -> None:
    pytest.importorskip("torch")
    from equilibra.models.registry import create_model

    model = create_model("gru4rec", dim=8, epochs=5, negatives=8, validation_share=0.2)
    model.time_limit_seconds = 0.0
    assert len(model.fit(shop_log).history_) == 1
    assert "time_limit_seconds" not in model.get_params()


def test_a_neural_model_without_torch_is_a_clear_error(monkeypatch, tiny_shop) -> None:
    from equilibra.errors import EquilibraError

    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # as if not installed
    data = TrainingData(events=tiny_shop.events, items=tiny_shop.items)
    with pytest.raises(EquilibraError, match=r"equilibra\[torch\]"):
        fit_artifact(data, "sasrec", {"epochs": 1})


def test_a_neural_model_feeds_the_learned_ranker_as_a_generator(tmp_path: Path, tiny_shop) -> None:
    pytest.importorskip("torch")
    from equilibra.pipeline.artifact import ModelArtifact
    from equilibra.service.model import ServingModel

    generators = [
        {"algorithm": "recent", "params": {}},
        {"algorithm": "sasrec", "params": {"dim": 8, "epochs": 2, "negatives": 8}},
    ]
    data = TrainingData(events=tiny_shop.events, items=tiny_shop.items)
    fit_artifact(data, "ranker", {"generators": generators}).publish(tmp_path / "model")
    served = ServingModel(ModelArtifact.load(tmp_path / "model"))
    assert served.session_model is not None and served.session_model.name == "sasrec"
    user = next(iter(served.user_index))
    assert served.user_candidates(user, 10, "none")
    items = list(served.item_index)[:3]
    assert served.next_in_session(items, 5)


def test_fresh_epochs_learn_from_the_held_out_tail(shop_log) -> None:
    pytest.importorskip("torch")
    from equilibra.models.registry import create_model

    def fitted(fresh: int):
        params = {"dim": 8, "epochs": 2, "negatives": 8, "validation_share": 0.2}
        return create_model("sasrec", fresh_epochs=fresh, **params).fit(shop_log)

    users, items = np.arange(10), np.arange(20)
    assert not np.allclose(fitted(0).score(users, items), fitted(1).score(users, items))


def test_windows_make_every_step_a_target_once_and_no_input_too_long() -> None:
    sessions = split_sessions(
        np.zeros(12, dtype=np.int64), np.arange(12), T0 + np.arange(12.0), WHOLE_HISTORY
    )
    windows = sessions.windows(5)
    assert windows.lengths.max() <= 6
    targets = np.concatenate([windows[w][1:] for w in range(len(windows))])
    assert sorted(targets.tolist()) == list(range(1, 12))


@pytest.mark.parametrize("name", ["vsknn", "sasrec"])
def test_next_items_are_the_models_own_strengths_with_repeats_collapsed(name, shop_log) -> None:
    if name == "sasrec":
        pytest.importorskip("torch")
    from equilibra.models.registry import create_model

    params = {"dim": 16, "epochs": 3, "negatives": 16} if name == "sasrec" else {}
    model = create_model(name, **params).fit(shop_log)
    session = model.user_session(0)[-3:]
    found, strength = model.next_items(session, 10, session[-1:])
    assert len(found) and strength[0] == 1.0
    assert ((strength > 0) & (strength <= 1)).all() and (np.diff(strength) <= 0).all()
    assert session[-1] not in found
    doubled = np.repeat(session, 2)  # a view, then its add-to-cart: one step, as in training
    again, _ = model.next_items(doubled, 10, session[-1:])
    assert again.tolist() == found.tolist()


@pytest.mark.parametrize("name", ["vsknn", "sasrec"])
def test_a_live_session_is_scored_by_the_session_model(name, tmp_path: Path, tiny_shop) -> None:
    if name == "sasrec":
        pytest.importorskip("torch")
    params = {"dim": 16, "epochs": 3, "negatives": 16} if name == "sasrec" else {}
    data = TrainingData(events=tiny_shop.events, items=tiny_shop.items)
    fit_artifact(data, name, params).publish(tmp_path / "model")
    settings = settings_for(tmp_path, policy="greedy")
    session = tiny_shop.events.sort_values("timestamp")
    first = session["user_id"].iloc[0]
    clicks = session[session["user_id"] == first]["item_id"].astype(str).tolist()[:3]
    with TestClient(create_app(settings, background=False)) as client:
        model = client.app.state.engine.model
        assert model.session_model is not None
        for step, item in enumerate(clicks):
            event = {"user_id": "walk-in", "item_id": item, "type": "view",
                     "timestamp": T0 + step}  # fmt: skip
            assert client.post("/v1/events", json=[event], headers=ADMIN).status_code == 200
        expected = model.next_in_session(clicks, 10)
        assert expected
        body = client.post(
            "/v1/recommend",
            json={"user_id": "walk-in", "k": 10, "exclude": "none", "timestamp": T0 + 3},
            headers=ADMIN,
        ).json()
        shown = [i["item_id"] for i in body["items"]]
        assert expected[0][0] in shown
        reasons = {i["item_id"]: i["reason"] for i in body["items"]}
        assert reasons[expected[0][0]].startswith("because you viewed")
