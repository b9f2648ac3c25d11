"""/v1/experiments over HTTP: definition checks, routing by user, the impression log's variant,
each arm's own learning and statistics, stop, promote, and a restart in the middle."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from equilibra.evaluate.experiments import assign
from equilibra.store import open_store

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from test_service import ADMIN, READ, T0, browsing, items, settings_for, written

from equilibra.service.app import create_app

TEST = {
    "name": "explore-more",
    "placement": "home",
    "metric": "click",
    "variants": [
        {"name": "control", "share": 0.5},
        {"name": "treatment", "share": 0.5, "policy": "egreedy:0.3"},
    ],
}


def shop(client: TestClient) -> None:
    client.post("/v1/items", json=items(), headers=ADMIN)
    client.post("/v1/events", json=browsing(), headers=ADMIN)


def recommend(client: TestClient, user: str, at: float, placement: str = "home") -> dict:
    body = {"user_id": user, "k": 4, "placement": placement, "timestamp": at}
    answer = client.post("/v1/recommend", json=body, headers=READ)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"variants": [{"name": "a", "share": 1.0}]}, "variants: List should have at least 2"),
        ({"variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.6}]}, "sum to 1"),
        ({"variants": [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]}, "distinct"),
        ({"metric": "ctr"}, "metric: Input should be"),
        ({"variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5,
                        "policy": "nonsense:1"}]}, "variants[1].policy"),
        ({"variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5,
                        "model_version": 7}]}, "variants[1].model_version: no version 7"),
        ({"variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5,
                        "rules": [{"action": "pin", "items": ["i1"]}]}]}, "variants[1].rules[0]"),
    ],
)  # fmt: skip
def test_a_test_that_cannot_run_is_refused_naming_the_field(tmp_path: Path, change, message):
    with TestClient(create_app(settings_for(tmp_path), background=False)) as client:
        answer = client.post("/v1/experiments", json={**TEST, **change}, headers=ADMIN)
        assert answer.status_code == 422, answer.text
        assert message in answer.json()["detail"], answer.json()["detail"]
        assert client.post("/v1/experiments", json=TEST, headers=READ).status_code == 403
        assert client.get("/v1/experiments/nope", headers=READ).status_code == 404


def test_users_are_served_by_their_variant_and_each_arm_learns_its_own(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, attribution_window=60.0)
    with TestClient(create_app(settings, background=False)) as client:
        shop(client)
        started = client.post("/v1/experiments", json=TEST, headers=ADMIN)
        assert started.status_code == 201, started.text
        assert started.json()["status"] == "running" and "preview" in started.json()
        assert client.post("/v1/experiments", json=TEST, headers=ADMIN).status_code == 422
        engine = client.app.state.engine
        users = [f"u{u}" for u in range(20)] + [f"new-{u}" for u in range(20)]
        served = {}
        for step, user in enumerate(users):
            body = recommend(client, user, T0 + 200 + step)
            expected = ["control", "treatment"][assign("explore-more", user, [0.5, 0.5])]
            assert body["experiment"] == {"name": "explore-more", "variant": expected}
            spec = "egreedy:0.3" if expected == "treatment" else engine.policy.spec
            assert body["policy"]["name"] == spec
            served[body["impression_id"]] = (user, expected, body["items"][0]["item_id"])
        other = recommend(client, "u1", T0 + 250, placement="product")
        assert "experiment" not in other  # the test covers `home` only
        clicks = [
            {"user_id": user, "item_id": item, "type": "click", "timestamp": T0 + 260,
             "impression_id": impression}
            for impression, (user, _, item) in served.items()
        ]  # fmt: skip
        client.post("/v1/events", json=clicks, headers=ADMIN)
        treatment = engine.experiments.tests["explore-more"].policies["treatment"]
        before = treatment.state_dict()
        recommend(client, "u0", T0 + 400)  # the clock passes every window: impressions close
        assert treatment.state_dict() != before  # the treatment learned from its own
        written(client)
        with open_store(settings.db) as store:
            log = store.impressions_frame()
        by_impression = log.groupby("impression_id")["variant"].first()
        for impression, (_, variant, _) in served.items():
            assert by_impression[impression] == f"explore-more/{variant}"
        summary = client.get("/v1/experiments/explore-more", headers=READ).json()
        rows = {v["name"]: v for v in summary["variants"]}
        counts = {v: sum(1 for s in served.values() if s[1] == v) for v in rows}
        for name, row in rows.items():
            assert row["impressions"] == counts[name]
            assert row["mean"] == pytest.approx(1.0)  # every served list got its click
        assert summary["interval_method"].startswith("Robbins")
        assert rows["treatment"]["vs_control"]["decision"] == "undecided"  # 20 impressions


def test_stop_promote_and_a_restart_keep_the_test(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, attribution_window=60.0)
    with TestClient(create_app(settings, background=False)) as client:
        shop(client)
        client.post("/v1/experiments", json=TEST, headers=ADMIN)
        for step in range(10):
            recommend(client, f"u{step}", T0 + 200 + step)
        recommend(client, "u0", T0 + 400)
    with TestClient(create_app(settings, background=False)) as client:  # a restart
        summary = client.get("/v1/experiments/explore-more", headers=READ).json()
        assert sum(v["impressions"] for v in summary["variants"]) == 10
        assert summary["status"] == "running"
        stopped = client.post("/v1/experiments/explore-more/stop", headers=ADMIN).json()
        assert stopped["status"] == "stopped"
        assert "experiment" not in recommend(client, "u3", T0 + 500)
        wrong = client.post(
            "/v1/experiments/explore-more/promote", json={"variant": "x"}, headers=ADMIN
        )
        assert wrong.status_code == 422 and "variant" in wrong.json()["detail"]
        promoted = client.post(
            "/v1/experiments/explore-more/promote", json={"variant": "treatment"}, headers=ADMIN
        ).json()
        assert promoted["promoted"] == "treatment"
        assert recommend(client, "u3", T0 + 501)["policy"]["name"] == "egreedy:0.3"
    with TestClient(create_app(settings, background=False)) as client:
        assert recommend(client, "u3", T0 + 600)["policy"]["name"] == "egreedy:0.3"
        listed = client.get("/v1/experiments", headers=READ).json()
        assert [t["name"] for t in listed] == ["explore-more"]


def test_the_preview_estimates_each_variant_on_the_log_before_launch(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, attribution_window=60.0)
    with TestClient(create_app(settings, background=False)) as client:
        shop(client)
        for step in range(40):  # a log to preview on, its windows closed
            recommend(client, f"u{step % 20}", T0 + 200 + step)
        recommend(client, "u0", T0 + 400)
        written(client)
        body = client.post("/v1/experiments", json=TEST, headers=ADMIN).json()
        preview = body["preview"]
        assert preview["impressions"] >= 40
        assert preview["paths"] == settings.preview_paths == 6  # intervals hold the path
        for variant in ("control", "treatment"):
            snips = preview[variant]["per_slot"]["snips"]
            low, high = snips["ci"]
            wide_low, wide_high = snips["prediction"]
            assert wide_low <= low <= snips["value"] <= high <= wide_high
            assert preview[variant]["previewed"] == "all of it"
        assert preview["treatment"]["policy"] == "egreedy:0.3"


def test_a_variants_rules_serve_its_users_and_show_in_the_summary(tmp_path: Path) -> None:
    pinned = {"action": "pin", "items": ["i7"], "position": 1}
    test = {
        **TEST,
        "name": "pin-i7",
        "variants": [
            {"name": "control", "share": 0.5},
            {"name": "treatment", "share": 0.5, "rules": [pinned]},
        ],
    }
    settings = settings_for(tmp_path, attribution_window=60.0)
    with TestClient(create_app(settings, background=False)) as client:
        shop(client)
        started = client.post("/v1/experiments", json=test, headers=ADMIN)
        assert started.status_code == 201, started.text
        rows = {v["name"]: v for v in started.json()["variants"]}
        assert rows["control"]["rules"] == []
        (rule,) = rows["treatment"]["rules"]
        assert rule["id"] == "pin-i7/treatment/0" and rule["items"] == ["i7"]
        for step in range(12):
            user = f"u{step}"
            body = recommend(client, user, T0 + 200 + step)
            pins = [i["item_id"] for i in body["items"] if i["reason"].startswith("pinned")]
            assert pins == (["i7"] if body["experiment"]["variant"] == "treatment" else [])
    with TestClient(create_app(settings, background=False)) as client:  # a restart keeps them
        summary = client.get("/v1/experiments/pin-i7", headers=READ).json()
        rows = {v["name"]: v for v in summary["variants"]}
        assert [r["id"] for r in rows["treatment"]["rules"]] == ["pin-i7/treatment/0"]
