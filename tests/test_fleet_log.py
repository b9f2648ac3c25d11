"""The fleet log (service/fleet_log.py): closed impressions survive the trip
through JSON exactly, and a replica that closes impressions while Redis is down learns them at
once, then passes them on, so the fleet ends in one state."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import RedisServer
from fastapi.testclient import TestClient

from equilibra.explore.feedback import ClosedImpression, FeedbackLedger, teach
from equilibra.explore.slate import Candidates
from equilibra.explore.spec import parse_policy
from equilibra.service.app import create_app
from equilibra.service.settings import load_settings

ADMIN = {"Authorization": "Bearer admin-key"}
T0 = 1_767_000_000.0


def _closed_impressions(spec: str, n: int, seed: int = 0) -> list[ClosedImpression]:
    """`n` impressions a policy drew and that earned clicks, closed by a ledger."""
    rng = np.random.default_rng(seed)
    policy = parse_policy(spec)
    ledger = FeedbackLedger(window_s=60.0)
    items = np.array([f"i{j}" for j in range(30)], dtype=object)
    for t in range(n):
        candidates = Candidates(
            items=items,
            scores=rng.random(30),
            features=rng.random((30, 3)),
            segment=["new", "known"][t % 2],
            age=np.where(np.arange(30) < 5, 100.0, 1e9),
            placement="home",
            timestamp=T0 + t,
        )
        slate = policy.select(candidates, 5, rng)
        shown = candidates.items[slate.indices].tolist()
        ledger.record(
            f"imp{t}",
            f"u{t}",
            T0 + t,
            shown,
            candidates.prior_or(0.05)[slate.indices],
            candidates.features[slate.indices],
            candidates.segment,
            candidates.placement,
            explore=slate.explore_flags.tolist(),
            info=slate.extras.get("controller"),
        )
        if rng.random() < 0.5:
            ledger.observe(f"u{t}", shown[int(rng.integers(5))], "click", T0 + t + 1)
    return ledger.close_impressions(T0 + n + 100)


@pytest.mark.parametrize("spec", ["adaptive", "lints", "thompson:discount=0.99"])
def test_a_closed_impression_teaches_the_same_after_the_trip_through_json(spec: str) -> None:
    closed = _closed_impressions(spec, 60)
    assert any(c.info for c in closed) or spec != "adaptive"
    direct, relayed = parse_policy(spec), parse_policy(spec)
    for one in closed:
        teach(direct, one)
        teach(relayed, ClosedImpression.from_json(json.loads(json.dumps(one.to_json()))))
    assert json.dumps(direct.learned_state(), sort_keys=True) == json.dumps(
        relayed.learned_state(), sort_keys=True
    )
    assert direct.learned_state() != parse_policy(spec).learned_state()  # it learnt something


def _replica(tmp_path: Path, name: str, redis_url: str, prefix: str, policy: str = "greedy"):  # type: ignore[no-untyped-def]
    """One replica's settings: its own SQLite store and model folder, the shared Redis."""
    return load_settings(
        None,
        environ={},
        db=f"sqlite:///{tmp_path / f'{name}.db'}",
        model_dir=str(tmp_path / f"model-{name}"),
        admin_key="admin-key",
        redis=redis_url,
        redis_prefix=prefix,
        replica=name,
        policy=policy,
        attribution_window=60.0,
    )


def _metric(client: TestClient, name: str) -> float:
    text = client.get("/metrics", headers=ADMIN).text
    return float(
        next(line for line in text.splitlines() if line.startswith(name + " ")).split()[-1]
    )


def _learning(client: TestClient) -> dict:
    return client.get("/v1/exploration", headers=ADMIN).json()["learning"]


def test_impressions_closed_while_redis_is_down_are_learnt_here_then_by_the_fleet(
    tmp_path: Path,
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    redis = RedisServer(tmp_path)
    redis.start()

    def settings(name: str):  # type: ignore[no-untyped-def]
        return _replica(tmp_path, name, redis.url, "outage", policy="adaptive")

    seed = [
        {"user_id": f"u{u}", "item_id": f"pop{j}", "type": "view", "timestamp": T0 + u + j}
        for u in range(20)
        for j in range(8)
    ]
    try:
        with (
            TestClient(create_app(settings("a"), background=False)) as a,
            TestClient(create_app(settings("b"), background=False)) as b,
        ):
            for client in (a, b):
                assert client.post("/v1/events", json=seed, headers=ADMIN).status_code == 200
            shown = []
            for n in range(10):
                body = {"user_id": f"s{n}", "k": 4, "timestamp": T0 + 100 + n}
                shown.append(a.post("/v1/recommend", json=body, headers=ADMIN).json())
            assert _learning(b)["digest"] == _learning(a)["digest"]
            redis.stop()  # the impressions close while Redis is down
            clicks = [
                {"user_id": f"s{n}", "item_id": answer["items"][0]["item_id"], "type": "click",
                 "timestamp": T0 + 105 + n, "impression_id": answer["impression_id"]}
                for n, answer in enumerate(shown)
            ]  # fmt: skip
            later = {"user_id": "later", "item_id": "pop0", "type": "view", "timestamp": T0 + 400}
            assert a.post("/v1/events", json=[*clicks, later], headers=ADMIN).status_code == 200
            alone = _learning(a)
            assert alone["impressions_learnt"] == 10  # learnt here at once
            assert _learning(b)["impressions_learnt"] == 0
            assert _metric(a, "equilibra_fleet_unsent_entries") == 1  # one closing batch
            redis.start()
            deadline = time.time() + 15
            while _learning(b)["impressions_learnt"] < 10 and time.time() < deadline:
                time.sleep(0.1)
            fleet = [_learning(a), _learning(b)]
            assert [s["impressions_learnt"] for s in fleet] == [10, 10], fleet
            assert fleet[0]["digest"] == fleet[1]["digest"] == alone["digest"], fleet
            assert _metric(a, "equilibra_fleet_unsent_entries") == 0
            assert _metric(b, "equilibra_policy_learnt_impressions") == 10
    finally:
        redis.stop()


def test_admin_changes_made_on_one_replica_reach_the_others(tmp_path: Path, redis_server) -> None:
    """Items, rules and A/B tests posted to one replica change what the others serve; a
    promotion on either one changes the policy of both."""

    def settings(name: str):  # type: ignore[no-untyped-def]
        return _replica(tmp_path, name, redis_server.url, f"changes{tmp_path.name[-12:]}")

    seed = [
        {"user_id": f"u{u}", "item_id": f"pop{j}", "type": "view", "timestamp": T0 + u + j}
        for u in range(20)
        for j in range(6)
    ]

    def shown(client: TestClient) -> list[str]:
        answer = client.post("/v1/recommend", json={"user_id": "probe", "k": 4}, headers=ADMIN)
        return [i["item_id"] for i in answer.json()["items"]]

    def policy(client: TestClient) -> str:
        return str(client.get("/v1/exploration", headers=ADMIN).json()["policy"])

    def eventually(check, within_s: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.time() + within_s
        while not check() and time.time() < deadline:
            time.sleep(0.05)
        return bool(check())

    with (
        TestClient(create_app(settings("a"), background=False)) as a,
        TestClient(create_app(settings("b"), background=False)) as b,
    ):
        for client in (a, b):
            assert client.post("/v1/events", json=seed, headers=ADMIN).status_code == 200
        top = shown(b)[0]
        # An item out of stock, posted to a: b stops showing it.
        item = {"item_id": top, "available": False}
        assert a.post("/v1/items", json=[item], headers=ADMIN).status_code == 200
        assert eventually(lambda: top not in shown(b)), shown(b)
        # A rule posted to b: a lists and applies it; deleted on a: gone from b.
        rule = {"id": "no-pop1", "action": "exclude", "items": ["pop1"]}
        assert "pop1" in shown(a)
        assert b.post("/v1/rules", json=rule, headers=ADMIN).status_code == 201
        rules = lambda: [r["id"] for r in a.get("/v1/rules", headers=ADMIN).json()]  # noqa: E731
        assert eventually(lambda: rules() == ["no-pop1"])
        assert "pop1" not in shown(a)
        assert a.delete("/v1/rules/no-pop1", headers=ADMIN).status_code == 200
        assert eventually(lambda: b.get("/v1/rules", headers=ADMIN).json() == [])
        # An A/B test started on a runs on b; promoted on b, its winner serves on both.
        variants = [
            {"name": "control", "share": 0.5},
            {"name": "egreedy", "share": 0.5, "policy": "egreedy:0.2"},
        ]
        test = {"name": "explore-more", "variants": variants}
        assert a.post("/v1/experiments", json=test, headers=ADMIN).status_code == 201
        path = "/v1/experiments/explore-more"
        assert eventually(lambda: b.get(path, headers=ADMIN).status_code == 200)
        promoted = b.post(f"{path}/promote", json={"variant": "egreedy"}, headers=ADMIN)
        assert promoted.status_code == 200, promoted.text
        assert policy(b).startswith("egreedy")  # applied at its turn in the log, then answered
        assert eventually(lambda: policy(a).startswith("egreedy"))
        assert a.get(path, headers=ADMIN).json()["promoted"] == "egreedy"


def test_an_entry_offered_twice_is_learnt_once_and_a_bad_one_is_skipped(tmp_path: Path) -> None:
    from equilibra.service.engine import Engine
    from equilibra.service.fleet_log import CLOSED, Entry

    settings = load_settings(
        None, environ={}, db=f"sqlite:///{tmp_path / 'shop.db'}", policy="adaptive"
    )
    engine, reference = Engine(settings), parse_policy("adaptive")
    closed = _closed_impressions("adaptive", 3)
    engine.apply_fleet(
        [
            Entry("1-0", False, False, CLOSED, closed[:2]),
            Entry("2-0", False, False, CLOSED, closed[1:2]),  # an append retried: again
            Entry("3-0", False, False, "rule", {"id": "r", "action": "nonsense"}),  # skipped
            Entry("4-0", False, False, CLOSED, closed[2:]),
        ]
    )
    for one in closed:
        teach(reference, ClosedImpression.from_json({**one.to_json(), "info": {
            k: v for k, v in (one.info or {}).items() if k != "charges"}}))  # fmt: skip
    assert engine.learned_through == "4-0" and engine.counters.learnt_impressions == 3
    assert engine.rules == {}
    assert json.dumps(engine.policy.learned_state(), sort_keys=True) == json.dumps(
        reference.learned_state(), sort_keys=True
    )
    engine.close()


def test_catch_up_tells_a_trimmed_gap_from_an_up_to_date_replica(redis_server) -> None:
    """A replica back from a snapshot replays the stream, unless entries after the snapshot's
    last were trimmed: then it relearns from the impression log (`learn_gap`)."""
    import uuid

    from equilibra.service.fleet_log import START, FleetLog

    class Replica:  # what the log needs of an engine
        origin = "r"

        def __init__(self, through: str) -> None:
            self.learned_through, self.applied, self.gap = through, [], None

        def apply_fleet(self, entries) -> None:  # type: ignore[no-untyped-def]
            self.applied += [e.entry_id for e in entries]
            self.learned_through = entries[-1].entry_id

        def learn_gap(self, resume_from: str) -> None:
            self.gap = resume_from

    prefix = f"gap{uuid.uuid4().hex[:8]}"
    writer = FleetLog(Replica(START), redis_server.url, prefix)  # type: ignore[arg-type]
    ids = [writer.publish_change("rule", {"n": n}, applied=False) for n in range(6)]
    assert all(ids)

    def catch_up(through: str) -> Replica:
        replica = Replica(through)
        log = FleetLog(replica, redis_server.url, prefix)  # type: ignore[arg-type]
        log.catch_up()
        log.client.close()
        return replica

    fresh = catch_up(START)
    assert fresh.applied == ids and fresh.gap is None
    writer.client.xtrim(writer.stream, minid=ids[3], approximate=False)  # ids[0:3] are gone
    behind = catch_up(ids[1])  # it needed ids[2]: a gap
    assert behind.gap == ids[-1] and behind.applied == []
    current = catch_up(ids[3])  # the first entry kept is the last it learnt: no gap
    assert current.gap is None and current.applied == ids[4:]
    writer.client.close()
