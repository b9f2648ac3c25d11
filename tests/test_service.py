"""HTTP API v1 (design.md) through FastAPI's test client: the contract, auth, bad input, the
impression log and its rewards, real time, rules, forgetting a user."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from equilibra.data.training import TrainingData
from equilibra.pipeline.train import fit_artifact
from equilibra.service.schemas import RecommendOut
from equilibra.service.settings import load_settings
from equilibra.store import open_store

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from equilibra.service.app import create_app

ADMIN = {"Authorization": "Bearer admin-key"}
READ = {"Authorization": "Bearer read-key"}
T0 = 1_767_000_000.0


def written(client) -> None:
    """The impression log is written behind the requests: wait for it before reading the db."""
    assert client.app.state.engine.writer.flush()


def settings_for(tmp_path: Path, **extra: object):
    return load_settings(
        None,
        environ={},
        db=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=str(tmp_path / "model"),
        admin_key="admin-key",
        read_key="read-key",
        **extra,
    )


@pytest.fixture
def client(tmp_path: Path):
    with TestClient(create_app(settings_for(tmp_path), background=False)) as c:
        yield c


def items(n: int = 30) -> list[dict[str, object]]:
    return [
        {"item_id": f"i{i}", "title": f"Item {i}", "categories": ["shoes" if i % 2 else "hats"]}
        for i in range(n)
    ]


def browsing(users: int = 20, steps: int = 5) -> list[dict[str, object]]:
    return [
        {
            "user_id": f"u{u}",
            "item_id": f"i{(u + j) % 30}",
            "type": "view",
            "timestamp": T0 + 10 * j + u,
        }
        for u in range(users)
        for j in range(steps)
    ]


def test_an_empty_store_serves_at_once_and_learns(client) -> None:
    empty = client.post("/v1/recommend", json={"user_id": "u1", "k": 5}, headers=READ)
    assert empty.status_code == 200
    assert empty.json()["items"] == [] and empty.json()["impression_id"] is None
    assert client.post("/v1/items", json=items(), headers=ADMIN).json() == {"upserted": 30}
    assert client.post("/v1/events", json=browsing(), headers=ADMIN).json() == {
        "accepted": 100,
        "duplicates": 0,
    }
    body = client.post(
        "/v1/recommend", json={"user_id": "stranger", "k": 5, "timestamp": T0 + 100}, headers=READ
    ).json()
    assert set(body) == {"impression_id", "model_version", "items", "policy"}
    assert len(body["items"]) == 5 and body["model_version"] is None
    for item in body["items"]:
        assert set(item) == {
            "item_id",
            "score",
            "propensity",
            "propensity_error",
            "explore",
            "reason",
        }
        assert 0 < item["propensity"] <= 1 and item["reason"]
    assert body["policy"]["name"] == "adaptive"  # the balance controller's policy


def test_retries_are_idempotent_and_bad_input_names_the_field(client) -> None:
    events = browsing(3, 2)
    client.post("/v1/events", json=events, headers=ADMIN)
    assert client.post("/v1/events", json=events, headers=ADMIN).json() == {
        "accepted": 0,
        "duplicates": 6,
    }
    view = {"user_id": "u", "item_id": "i", "type": "view"}
    cases = [
        ([{**view, "type": "explode"}], "events[0].type: unknown event type"),
        ([{"user_id": "u", "type": "view"}], "events[0].item_id: Field required"),
        ([view, {**view, "timestamp": "soon"}], "events[1].timestamp: cannot parse 'soon'"),
        ([{**view, "type": "rating", "value": 9, "timestamp": T0}], "events[0].value: rating 9"),
        ({"user_id": "u"}, "body: Input should be a valid list"),
        ([{**view, "colour": "red"}], "events[0].colour: Extra inputs"),
    ]
    for body, message in cases:
        answer = client.post("/v1/events", json=body, headers=ADMIN)
        assert answer.status_code == 422, (body, answer.text)
        assert message in answer.json()["detail"], (message, answer.json()["detail"])
    broken = client.post(
        "/v1/events", content=b"[{not json", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert broken.status_code == 422 and "JSON" in broken.json()["detail"]
    for body, message in (
        ({"user_id": "u", "k": 0}, "k: Input should be greater than or equal to 1"),
        ({"user_id": "u", "k": 10**6}, "k: at most 500"),
        ({"user_id": "u", "exclude": "everything"}, "exclude: Input should be"),
        ({"k": 3}, "user_id: Field required"),
    ):
        answer = client.post("/v1/recommend", json=body, headers=READ)
        assert answer.status_code == 422 and message in answer.json()["detail"], answer.text
    huge = client.post(
        "/v1/events",
        content=b" " * (20 * 2**20),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert huge.status_code == 413 and "body" in huge.json()["detail"]


def test_keys_guard_writes_and_reads(client) -> None:
    event = [{"user_id": "u", "item_id": "i", "type": "view"}]
    assert client.post("/v1/events", json=event).status_code == 401
    assert client.post("/v1/events", json=event, headers=READ).status_code == 403
    assert (
        client.post("/v1/events", json=event, headers={"Authorization": "Bearer nope"}).status_code
        == 403
    )
    assert client.post("/v1/recommend", json={"user_id": "u"}).status_code == 401
    assert client.post("/v1/recommend", json={"user_id": "u"}, headers=READ).status_code == 200
    assert client.post("/v1/recommend", json={"user_id": "u"}, headers=ADMIN).status_code == 200
    assert client.get("/v1/stats").status_code == 401
    assert client.get("/health").status_code == 200  # probes need no key
    assert client.delete("/v1/users/u", headers=READ).status_code == 403


def test_a_new_user_with_one_event_gets_session_items_at_once(client) -> None:
    client.post("/v1/items", json=items(), headers=ADMIN)
    client.post("/v1/events", json=browsing(), headers=ADMIN)
    before = client.post(
        "/v1/recommend", json={"user_id": "newbie", "k": 3, "timestamp": T0 + 100}, headers=READ
    ).json()
    client.post(
        "/v1/events",
        json=[{"user_id": "newbie", "item_id": "i3", "type": "view", "timestamp": T0 + 101}],
        headers=ADMIN,
    )
    after = client.post(
        "/v1/recommend", json={"user_id": "newbie", "k": 3, "timestamp": T0 + 102}, headers=READ
    ).json()
    # Everyone who viewed i3 viewed i4 next: that now comes first, and says why.
    assert after["items"][0]["item_id"] == "i4" != before["items"][0]["item_id"]
    assert after["items"][0]["reason"] == "because you viewed Item 3"


def test_impressions_are_logged_and_rewards_written_back_on_event_time(client, tmp_path) -> None:
    client.post("/v1/items", json=items(), headers=ADMIN)
    client.post("/v1/events", json=browsing(), headers=ADMIN)
    shown = client.post(
        "/v1/recommend",
        json={"user_id": "u1", "k": 4, "placement": "home", "timestamp": T0 + 200},
        headers=READ,
    ).json()
    RecommendOut.model_validate(shown)  # built by hand, without FastAPI's validation
    clicked = shown["items"][1]["item_id"]
    client.post(
        "/v1/events",
        json=[
            {"user_id": "u1", "item_id": clicked, "type": "click", "timestamp": T0 + 210,
             "impression_id": shown["impression_id"]},
            {"user_id": "u1", "item_id": clicked, "type": "add_to_cart", "timestamp": T0 + 220},
        ],
        headers=ADMIN,
    )  # fmt: skip
    written(client)
    with open_store(f"sqlite:///{tmp_path / 'shop.db'}") as store:
        log = store.impressions_frame()
    assert log["position"].tolist() == [1, 2, 3, 4] and log["reward"].isna().all()  # window open
    assert log["placement"].iloc[0] == "home" and log["candidates"].iloc[0]
    # The clock is event time: a request an hour later closes the window.
    client.post(
        "/v1/recommend", json={"user_id": "u9", "k": 2, "timestamp": T0 + 4000}, headers=READ
    )
    written(client)
    with open_store(f"sqlite:///{tmp_path / 'shop.db'}") as store:
        log = store.impressions_frame()
    first = log[log["impression_id"] == shown["impression_id"]]
    assert first["reward"].tolist() == [0.0, 3.0, 0.0, 0.0]  # click 1 + add to cart 2
    assert client.get("/v1/stats", headers=READ).json()["impressions"] == 2


def test_the_served_log_feeds_ope_directly(client, tmp_path) -> None:
    from equilibra.evaluate.bandit_logs import evaluate_on_log, read_store

    client.post("/v1/items", json=items(), headers=ADMIN)
    client.post("/v1/events", json=browsing(), headers=ADMIN)
    rng = np.random.default_rng(0)
    for step in range(60):
        t = T0 + 1000 + 60 * step
        body = client.post(
            "/v1/recommend", json={"user_id": f"u{step % 20}", "k": 3, "timestamp": t}, headers=READ
        ).json()
        if rng.random() < 0.5:
            client.post(
                "/v1/events",
                json=[{"user_id": f"u{step % 20}", "item_id": body["items"][0]["item_id"],
                       "type": "click", "timestamp": t + 5,
                       "impression_id": body["impression_id"]}],
                headers=ADMIN,
            )  # fmt: skip
    client.post(
        "/v1/recommend", json={"user_id": "z", "k": 3, "timestamp": T0 + 20_000}, headers=READ
    )
    written(client)
    log = read_store(f"sqlite:///{tmp_path / 'shop.db'}")
    result = evaluate_on_log(log, "egreedy:0.2", n_boot=50)
    assert result.rounds == 180 and log.skipped["open_impressions"] == 1
    assert np.isfinite(result.estimates["snips"].value)


def test_rules_boost_exclude_and_pin(client) -> None:
    client.post("/v1/items", json=items(), headers=ADMIN)
    client.post("/v1/events", json=browsing(), headers=ADMIN)
    ask = {"user_id": "stranger", "k": 5, "timestamp": T0 + 100}
    plain = [
        i["item_id"] for i in client.post("/v1/recommend", json=ask, headers=READ).json()["items"]
    ]
    assert (
        client.post(
            "/v1/rules", json={"action": "exclude", "items": [plain[0]]}, headers=READ
        ).status_code
        == 403
    )
    rule = client.post("/v1/rules", json={"action": "exclude", "items": [plain[0]]}, headers=ADMIN)
    assert rule.status_code == 201
    pin = client.post(
        "/v1/rules",
        json={"id": "sale", "action": "pin", "items": ["i29"], "position": 2},
        headers=ADMIN,
    ).json()
    assert pin["id"] == "sale"
    shown = client.post("/v1/recommend", json=ask, headers=READ).json()["items"]
    ids = [i["item_id"] for i in shown]
    assert plain[0] not in ids and ids[1] == "i29"
    assert shown[1]["propensity"] == 1.0 and shown[1]["reason"] == "pinned (sale)"
    boost = client.post(
        "/v1/rules", json={"action": "boost", "categories": ["hats"], "factor": 50}, headers=ADMIN
    )
    assert boost.status_code == 201
    boosted = client.post("/v1/recommend", json=ask, headers=READ).json()["items"]
    assert all(int(i["item_id"][1:]) % 2 == 0 for i in boosted if i["item_id"] != "i29")
    assert len(client.get("/v1/rules", headers=READ).json()) == 3
    assert client.delete("/v1/rules/sale", headers=ADMIN).json() == {"deleted": "sale"}
    bad = client.post(
        "/v1/rules", json={"action": "pin", "items": ["a", "b"], "position": 1}, headers=ADMIN
    )
    assert bad.status_code == 422 and "exactly one item" in bad.json()["detail"]


def test_filters_and_exclusions(client) -> None:
    client.post(
        "/v1/items", json=[*items(), {"item_id": "gone", "available": False}], headers=ADMIN
    )
    client.post(
        "/v1/events",
        json=[
            *browsing(),
            {"user_id": "u1", "item_id": "gone", "type": "view", "timestamp": T0 + 90},
        ],
        headers=ADMIN,
    )
    client.post(
        "/v1/events",
        json=[{"user_id": "u1", "item_id": "i2", "type": "purchase", "timestamp": T0 + 95}],
        headers=ADMIN,
    )
    shown = client.post(
        "/v1/recommend",
        json={"user_id": "u1", "k": 10, "timestamp": T0 + 100, "filters": {"category": "shoes"}},
        headers=READ,
    ).json()["items"]
    ids = {i["item_id"] for i in shown}
    assert ids and all(int(i[1:]) % 2 == 1 for i in ids)  # shoes only
    everything = client.post(
        "/v1/recommend", json={"user_id": "u1", "k": 40, "timestamp": T0 + 101}, headers=READ
    ).json()["items"]
    ids = {i["item_id"] for i in everything}
    assert "gone" not in ids and "i2" not in ids  # unavailable; already bought


def test_forgetting_a_user_removes_their_traces(client) -> None:
    client.post("/v1/items", json=items(), headers=ADMIN)
    client.post("/v1/events", json=browsing(), headers=ADMIN)
    client.post(
        "/v1/recommend", json={"user_id": "u1", "k": 3, "timestamp": T0 + 100}, headers=READ
    )
    gone = client.delete("/v1/users/u1", headers=ADMIN).json()
    assert gone == {"events": 5, "impressions": 3, "profile": 0, "open_impressions": 1}
    engine = client.app.state.engine
    assert engine.state.user("u1") is None and len(engine.ledger) == 0


def test_similar_popular_stats_exploration_health_metrics_docs(client) -> None:
    client.post("/v1/items", json=items(), headers=ADMIN)
    client.post("/v1/events", json=browsing(), headers=ADMIN)
    similar = client.get("/v1/similar/i3?k=3", headers=READ).json()["items"]
    assert similar[0]["item_id"] == "i4"
    popular = client.get("/v1/popular?k=4&category=shoes", headers=READ).json()["items"]
    assert len(popular) == 4 and all(int(i["item_id"][1:]) % 2 for i in popular)
    assert client.get("/v1/popular?k=0", headers=READ).status_code == 422
    client.post("/v1/recommend", json={"user_id": "u1", "k": 3, "placement": "cart"}, headers=READ)
    stats = client.get("/v1/stats", headers=READ).json()
    assert stats == {
        "events": 100,
        "users": 20,
        "items": 30,
        "impressions": 1,
        "model_version": None,
    }
    exploration = client.get("/v1/exploration", headers=READ).json()
    assert exploration["policy"] == "adaptive" and exploration["controller"] == "balance"
    segment = exploration["segments"][0]
    assert segment["placement"] == "cart" and "impressions of evidence" in segment["why"]
    assert segment["budget_spent"]["shown_slots"] == 3
    assert exploration["budget"]["max_share"]["checkout"] == 0.0
    assert set(exploration["champions"]) == {"cart"} and exploration["history"] == []
    estimate = exploration["exploit_estimate"]  # the prior strength, judged online
    assert estimate["tuned"] and estimate["prior_strength"] == 20.0
    assert set(estimate["challengers"]) == {"5", "80", "320", "1280"}
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_loaded"] is False and health["auth"] == "on"
    metrics = client.get("/metrics").text
    assert "equilibra_events_ingested_total 100.0" in metrics
    assert (
        'equilibra_request_seconds_count{method="POST",route="/v1/events",status="200"}' in metrics
    )
    assert "equilibra_impression_log_failed 0.0" in metrics
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    spec = client.get("/openapi.json").json()
    paths = {"/v1/events", "/v1/recommend", "/v1/items", "/v1/users", "/v1/users/{user_id}",
             "/v1/similar/{item_id}", "/v1/popular", "/v1/stats", "/v1/exploration"}  # fmt: skip
    assert paths <= set(spec["paths"])


def test_a_trained_model_serves_its_users_and_folds_in_new_ones(tmp_path, tiny_shop) -> None:
    data = TrainingData(events=tiny_shop.events, items=tiny_shop.items)
    artifact = fit_artifact(data, "als", {"factors": 16, "iterations": 5})
    artifact.publish(tmp_path / "model")
    with TestClient(create_app(settings_for(tmp_path), background=False)) as c:
        assert c.get("/health").json()["model_version"] == 1
        known = str(tiny_shop.events["user_id"].iloc[0])
        body = c.post("/v1/recommend", json={"user_id": known, "k": 5}, headers=READ).json()
        assert body["model_version"] == 1
        assert any(i["reason"] == "picked for you from your history" for i in body["items"])
        engine = c.app.state.engine
        assert engine.model.foldin is not None
        item = str(tiny_shop.events["item_id"].iloc[0])
        c.post(
            "/v1/events",
            json=[{"user_id": "fresh", "item_id": item, "type": "add_to_cart"}],
            headers=ADMIN,
        )
        body = c.post("/v1/recommend", json={"user_id": "fresh", "k": 10}, headers=READ).json()
        assert len(body["items"]) == 10
        folded = engine.model.folded_candidates([item], [4.0], 5)
        assert folded and item not in [i for i, _ in folded]


def test_settings_come_from_the_environment_and_a_file(tmp_path) -> None:
    from equilibra.errors import EquilibraError

    config = tmp_path / "equilibra.toml"
    config.write_text(
        'db = "sqlite:///from-file.db"\npolicy = "thompson"\nattribution_window = 60\n'
    )
    s = load_settings(config, environ={"EQUILIBRA_POLICY": "egreedy:0.2"})
    assert (s.db, s.policy_spec, s.attribution_window) == (
        "sqlite:///from-file.db",
        "egreedy:0.2",
        60,
    )
    with pytest.raises(EquilibraError, match="unknown key"):
        config.write_text('colour = "red"\n')
        load_settings(config, environ={})
    with pytest.raises(EquilibraError, match="policy"):
        load_settings(None, environ={"EQUILIBRA_POLICY": "bandit"})
    with pytest.raises(EquilibraError, match="ATTRIBUTION_WINDOW"):
        load_settings(None, environ={"EQUILIBRA_ATTRIBUTION_WINDOW": "soon"})
    with pytest.raises(EquilibraError, match="EQUILIBRA_REWARD: reward: expected name=value"):
        load_settings(None, environ={"EQUILIBRA_REWARD": "clicks=1"})
    assert json.loads(json.dumps(s.model_dump(mode="json")))["policy"] == "egreedy:0.2"


def test_a_restart_resumes_the_policy_where_it_stopped(tmp_path) -> None:
    """The policy is snapshotted; impressions that closed after the last snapshot are learnt
    again at start, so a crash loses no reward and counts none twice."""
    from equilibra.service.engine import Engine

    def serve_some(c: TestClient, start: float, n: int) -> None:
        for step in range(n):
            t = start + 60 * step
            body = c.post(
                "/v1/recommend",
                json={"user_id": f"u{step % 7}", "k": 3, "timestamp": t},
                headers=READ,
            ).json()
            c.post(
                "/v1/events",
                json=[{"user_id": f"u{step % 7}", "item_id": body["items"][0]["item_id"],
                       "type": "click", "timestamp": t + 1,
                       "impression_id": body["impression_id"]}],
                headers=ADMIN,
            )  # fmt: skip

    settings = settings_for(tmp_path, attribution_window=120, policy="thompson")
    with TestClient(create_app(settings, background=False)) as c:
        c.post("/v1/items", json=items(), headers=ADMIN)
        c.post("/v1/events", json=browsing(), headers=ADMIN)
        serve_some(c, T0 + 1000, 20)
        engine = c.app.state.engine
        engine.snapshot()
        snapped = json.dumps(engine.policy.state_dict(), sort_keys=True)
        engine._snapshot_at = float("inf")  # no snapshot from here on: the crash comes first
        serve_some(c, T0 + 3000, 20)  # these close after the snapshot
        uninterrupted = engine.policy.state_dict()
        engine.snapshot = lambda: None  # type: ignore[method-assign]  # dies: none at shutdown
    assert json.dumps(uninterrupted, sort_keys=True) != snapped
    restarted = Engine(settings)
    restarted.start()
    try:
        assert restarted.policy.state_dict()["arms"] == uninterrupted["arms"]
    finally:
        restarted.store.close()


def test_the_periodic_snapshot_is_saved_off_the_request_path(tmp_path) -> None:
    """A save waits for the impression writer and commits: the request whose clock closed
    impressions must not wait for it (it runs on the event loop)."""
    import threading
    import time

    settings = settings_for(tmp_path, attribution_window=60, policy="thompson")
    with TestClient(create_app(settings, background=False)) as c:
        c.post("/v1/items", json=items(), headers=ADMIN)
        c.post("/v1/events", json=browsing(), headers=ADMIN)
        engine = c.app.state.engine
        saved_by: list[str] = []
        save = engine._save_snapshot

        def recording() -> None:
            saved_by.append(threading.current_thread().name)
            save()

        engine._save_snapshot = recording  # type: ignore[method-assign]
        engine._snapshot_at = 0.0  # due
        for step in range(5):  # 120 s apart: each request closes the one before it
            t = T0 + 5000 + 120 * step
            body = c.post("/v1/recommend", json={"user_id": "u1", "k": 3, "timestamp": t},
                          headers=READ).json()  # fmt: skip
            c.post("/v1/events", headers=ADMIN, json=[{
                "user_id": "u1", "item_id": body["items"][0]["item_id"], "type": "click",
                "timestamp": t + 1, "impression_id": body["impression_id"]}])  # fmt: skip
        deadline = time.monotonic() + 10
        while not saved_by and time.monotonic() < deadline:
            time.sleep(0.05)
        assert saved_by and set(saved_by) == {"equilibra-snapshot"}
        assert engine.store.load_snapshot("policy") is not None


def test_periodic_snapshots_are_spaced_by_how_long_they_hold_the_engine(tmp_path) -> None:
    """The copy of the state is made under the engine's lock, a stall of every request; the
    state grows with the arms learnt, so the saves space out to keep that stall a small share
    of the time (a restart relearns the rest from the impression log)."""
    import time

    from equilibra.service.engine import SNAPSHOT_DUTY, SNAPSHOT_EVERY_S

    settings = settings_for(tmp_path, attribution_window=60, policy="thompson")
    with TestClient(create_app(settings, background=False)) as c:
        engine = c.app.state.engine
        engine.snapshot()
        assert engine._snapshot_every == SNAPSHOT_EVERY_S  # a small state: the floor
        state_dict = engine.policy.state_dict

        def slow_copy() -> dict[str, object]:
            time.sleep(0.1)
            return state_dict()

        engine.policy.state_dict = slow_copy  # type: ignore[method-assign]
        engine.snapshot()
        assert engine._snapshot_every >= SNAPSHOT_DUTY * 0.1 > SNAPSHOT_EVERY_S


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=40,
    ),
    st.integers(1, 5),
)
def test_the_snapshot_text_written_in_pieces_is_what_one_dumps_writes(value, piece) -> None:
    from equilibra.service.engine import dumps_in_pieces

    assert dumps_in_pieces(value, piece) == json.dumps(value, allow_nan=True)


def test_replicas_sharing_a_store_reopen_and_resume_only_their_own(tmp_path) -> None:
    """With EQUILIBRA_REPLICA set, an impression belongs to the replica that served it: after a
    restart a replica reopens its own open impressions, not another's (which would then be
    credited and learnt twice), and resumes its own policy snapshot."""
    from equilibra.service.engine import Engine

    def serve(replica: str, user: str, t: float) -> str:
        settings = settings_for(tmp_path, attribution_window=600, replica=replica)
        with TestClient(create_app(settings, background=False)) as c:
            if replica == "one":
                c.post("/v1/items", json=items(), headers=ADMIN)
                c.post("/v1/events", json=browsing(), headers=ADMIN)
            body = c.post("/v1/recommend", json={"user_id": user, "k": 3, "timestamp": t},
                          headers=READ).json()  # fmt: skip
            written(c)
            c.app.state.engine.snapshot = lambda: None  # type: ignore[method-assign]
            return str(body["impression_id"])

    mine, theirs = serve("one", "u1", T0 + 10_000), serve("two", "u2", T0 + 10_001)
    with open_store(f"sqlite:///{tmp_path / 'shop.db'}") as store:
        owners = store.impressions_frame().groupby("impression_id")["replica"].first()
    assert owners.to_dict() == {mine: "one", theirs: "two"}
    restarted = Engine(settings_for(tmp_path, attribution_window=600, replica="one"))
    restarted.start()
    try:
        assert mine in restarted.ledger._open and theirs not in restarted.ledger._open
        restarted.snapshot()
        assert restarted.store.load_snapshot("policy@one") is not None
        assert restarted.store.load_snapshot("policy@two") is None
    finally:
        restarted.store.close()
    alone = Engine(settings_for(tmp_path, attribution_window=600))  # one server owns all
    alone.start()
    try:
        assert {mine, theirs} <= set(alone.ledger._open)
    finally:
        alone.store.close()


def test_retention_rules_file_and_a_forgotten_user_gone_from_the_next_model(tmp_path) -> None:
    from equilibra.pipeline.train import load_store_data, train

    rules = tmp_path / "rules.json"
    # An ISO date in a file rule is read as POST /v1/rules reads it (it once broke every request).
    no_hats = {"id": "no-hats", "action": "exclude", "categories": ["hats"], "until": "2099-01-01"}
    rules.write_text(json.dumps([no_hats]))
    settings = settings_for(tmp_path, retention_days=1, rules=str(rules))
    with TestClient(create_app(settings, background=False)) as c:
        assert [r["id"] for r in c.get("/v1/rules", headers=READ).json()] == ["no-hats"]
        c.post("/v1/items", json=items(), headers=ADMIN)
        c.post("/v1/events", json=browsing(), headers=ADMIN)
        later = [{"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": T0 + 3 * 86_400}]
        c.post("/v1/events", json=later, headers=ADMIN)
        ask = {"user_id": "u5", "k": 5, "timestamp": T0 + 3 * 86_400}
        shown = c.post("/v1/recommend", json=ask, headers=READ).json()
        assert all(int(i["item_id"][1:]) % 2 for i in shown["items"])  # no hats
        assert c.app.state.engine.purge() == (100, 0)  # older than a day before the clock
        assert c.get("/v1/stats", headers=READ).json()["events"] == 1
        c.post("/v1/events", json=browsing(10, 3), headers=ADMIN)
        assert c.delete("/v1/users/u3", headers=ADMIN).json()["events"] == 3
    model = train(load_store_data(settings.db), "popularity")
    assert "u3" not in set(model.users.ids) and "u4" in set(model.users.ids)


def test_the_controller_keeps_budgets_and_explore_constraints_over_http(tmp_path: Path) -> None:
    """Nothing is explored at checkout (the default budget), never more than the home
    placement's share, and never an item of an excluded category; each explored item says why."""
    settings = settings_for(
        tmp_path,
        explore_budget="default=0.3,checkout=0,home=0.2",
        explore_exclude="hats",
    )
    with TestClient(create_app(settings, background=False)) as c:
        c.post("/v1/items", json=items(), headers=ADMIN)
        c.post("/v1/events", json=browsing(), headers=ADMIN)
        shown = {"home": [0, 0], "checkout": [0, 0]}
        reasons = set()
        for r in range(160):
            placement = ("home", "checkout")[r % 2]
            body = c.post(
                "/v1/recommend",
                json={"user_id": f"v{r}", "k": 5, "placement": placement, "timestamp": T0 + r},
                headers=READ,
            ).json()
            for item in body["items"]:
                shown[placement][0] += 1
                if item["explore"]:
                    shown[placement][1] += 1
                    reasons.add(item["reason"])
                    assert int(item["item_id"][1:]) % 2 == 1  # shoes only: hats are excluded
        assert shown["checkout"][1] == 0
        assert 0 < shown["home"][1] <= 0.2 * shown["home"][0]
        assert reasons and all(
            "exploring: uncertain" in reason or "exploring: new item" in reason
            for reason in reasons
        )
        state = c.get("/v1/exploration", headers=READ).json()
        spent = {s["placement"]: s["budget_spent"] for s in state["segments"]}
        assert spent["checkout"]["explored_slots"] == 0
        assert spent["home"]["explore_share"] <= 0.2
