"""Two `equilibra serve` replicas sharing PostgreSQL and Redis (design.md "Beyond one machine"):
an event posted to one changes the next recommendation the other serves, within a second; an
event on the Redis stream reaches both; feedback posted to one on an impression the other served
is credited, once."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import _postgres_store, free_port, serve_process

from equilibra.store import open_store

KEY = "replica-admin"
T0 = 1_767_000_000.0

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def call(port: int, path: str, body: object) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def metric(port: int, name: str) -> float:
    """One unlabelled value of the replica's /metrics."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[-1])


def rewarded(port: int) -> float:
    """The replica's count of shown items that earned a reward (its /metrics)."""
    return metric(port, "equilibra_rewarded_items_total")


def replica_settings(tmp_path: Path, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """What every replica of a test shares: the test PostgreSQL, one Redis under a fresh
    prefix, a model folder, the admin key, a 60 s window; `extra` adds or overrides."""
    from conftest import POSTGRES_URL

    return {
        "EQUILIBRA_DB": str(POSTGRES_URL),
        "EQUILIBRA_REDIS": redis_url,
        "EQUILIBRA_REDIS_PREFIX": f"{prefix}{uuid.uuid4().hex[:8]}",
        "EQUILIBRA_MODEL_DIR": str(tmp_path / "model"),
        "EQUILIBRA_ADMIN_KEY": KEY,
        "EQUILIBRA_POLICY": "greedy",
        "EQUILIBRA_ATTRIBUTION_WINDOW": "60",
        **extra,
    }


def popular_views(start: float, users: int, items: int) -> list[dict]:
    """Every user views items pop0 … pop{items-1}, one a second."""
    return [
        {"user_id": f"u{u}", "item_id": f"pop{j}", "type": "view", "timestamp": start + u + j}
        for u in range(users)
        for j in range(items)
    ]


def test_an_event_on_one_replica_changes_the_next_answer_of_the_other(
    tmp_path: Path, redis_server
) -> None:
    from conftest import POSTGRES_URL

    _postgres_store().close()  # empty tables
    settings = {
        "EQUILIBRA_DB": str(POSTGRES_URL),
        "EQUILIBRA_REDIS": redis_server.url,
        "EQUILIBRA_REDIS_PREFIX": f"replicas{uuid.uuid4().hex[:8]}",
        "EQUILIBRA_MODEL_DIR": str(tmp_path / "model"),
        "EQUILIBRA_ADMIN_KEY": KEY,
        "EQUILIBRA_POLICY": "greedy",
        "EQUILIBRA_ATTRIBUTION_WINDOW": "60",
        "EQUILIBRA_REDIS_STREAM": f"events{uuid.uuid4().hex[:8]}",
    }
    one_port, two_port = free_port(), free_port()
    one = serve_process({**settings, "EQUILIBRA_REPLICA": "one"}, one_port, start_within_s=60)
    two = serve_process({**settings, "EQUILIBRA_REPLICA": "two"}, two_port, start_within_s=60)
    try:
        # Popular items everyone views, and a pair of items seen one after the other.
        events = [
            {"user_id": f"u{u}", "item_id": f"pop{j}", "type": "view", "timestamp": T0 + u + j}
            for u in range(40)
            for j in range(5)
        ]
        events += [
            {"user_id": f"v{u}", "item_id": item, "type": "view", "timestamp": T0 + 100 + u + d}
            for u in range(6)
            for d, item in enumerate(["shoe", "sock"])
        ]
        assert call(one_port, "/v1/events", events)["accepted"] == len(events)
        with urllib.request.urlopen(f"http://127.0.0.1:{two_port}/health", timeout=10) as answer:
            health = json.loads(answer.read())
        assert health["online_state"] == "redis" and health["degraded"] is False
        before = call(two_port, "/v1/recommend", {"user_id": "newcomer", "k": 5})
        assert "sock" not in [i["item_id"] for i in before["items"]]

        view = {"user_id": "newcomer", "item_id": "shoe", "type": "view", "timestamp": T0 + 200}
        call(one_port, "/v1/events", [view])
        posted = time.perf_counter()
        while True:  # the other replica's next answers, until it reflects the event
            after = call(two_port, "/v1/recommend", {"user_id": "newcomer", "k": 5})
            shown = {i["item_id"]: i for i in after["items"]}
            elapsed = time.perf_counter() - posted
            if "sock" in shown or elapsed > 5:
                break
        assert "sock" in shown, after
        assert elapsed < 1.0
        assert "shoe" in shown["sock"]["reason"]  # "because you viewed shoe"
        # Both replicas now see the same user and the same shop.
        first = call(one_port, "/v1/recommend", {"user_id": "newcomer", "k": 5})
        assert [i["item_id"] for i in first["items"]] == [i["item_id"] for i in after["items"]]

        # An event on the Redis stream: one of the replicas stores it, both serve by it.
        import redis

        client = redis.Redis.from_url(redis_server.url)
        view = {**view, "user_id": "streamer", "event_id": "from-the-stream"}
        client.xadd(settings["EQUILIBRA_REDIS_STREAM"], {"event": json.dumps(view)})
        posted = time.perf_counter()
        while time.perf_counter() - posted < 5:
            shown = call(two_port, "/v1/recommend", {"user_id": "streamer", "k": 5})["items"]
            if "sock" in [i["item_id"] for i in shown]:
                break
        assert "sock" in [i["item_id"] for i in shown]
        assert time.perf_counter() - posted < 1.5
        client.close()

        # Feedback on an impression one replica served, posted to the other: credited once.
        # (The requests above had no timestamp: the clock is now, on arrival.)
        at = time.time() + 100
        shown = call(one_port, "/v1/recommend", {"user_id": "buyer", "k": 3, "timestamp": at})
        impression, clicked = shown["impression_id"], shown["items"][0]["item_id"]
        click = {"user_id": "buyer", "item_id": clicked, "type": "click", "timestamp": at + 10,
                 "impression_id": impression}  # fmt: skip
        call(two_port, "/v1/events", [click])
        later = {"user_id": "later", "item_id": "pop1", "type": "view", "timestamp": at + 100}
        call(two_port, "/v1/events", [later])  # the window (60 s) has passed, everywhere
        deadline = time.time() + 10
        while time.time() < deadline:
            with open_store(str(POSTGRES_URL)) as store:
                log = store.impressions_frame()
            rows = log[log["impression_id"] == impression].set_index("item_id")["reward"]
            if len(rows) and rows.notna().all():
                break
            time.sleep(0.2)
        assert rows[clicked] == 1.0 and rows.drop(clicked).eq(0.0).all(), rows
        assert len(rows) == 3  # each shown item once: written back by the replica that served it
        assert rewarded(one_port) == 1 and rewarded(two_port) == 0  # learnt by one policy, once
    finally:
        for server in (one, two):
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)


def get(port: int, path: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def learning(port: int) -> dict:
    return get(port, "/v1/exploration")["learning"]


def wait_until_learnt(ports: list[int], impressions: int, within_s: float = 10.0) -> list[dict]:
    deadline = time.time() + within_s
    while True:
        states = [learning(port) for port in ports]
        if all(s["impressions_learnt"] >= impressions for s in states) or time.time() > deadline:
            return states
        time.sleep(0.1)


def test_replicas_share_one_policy_and_give_the_same_propensities(
    tmp_path: Path, redis_server
) -> None:
    """The balance controller's policy learns every closed impression once on every replica,
    in the shared log's order: the same posterior and controller state (one digest), the same
    propensities for the same request, and a replica joining later starts from that state."""

    _postgres_store().close()  # empty tables
    settings = replica_settings(tmp_path, redis_server.url, "learn", EQUILIBRA_POLICY="adaptive")
    ports = [free_port(), free_port()]
    servers = [
        serve_process({**settings, "EQUILIBRA_REPLICA": name}, port, start_within_s=60)
        for name, port in zip(["one", "two"], ports, strict=True)
    ]
    try:
        now = time.time()
        events = popular_views(now, users=30, items=12)
        call(ports[0], "/v1/events", events)
        untaught = learning(ports[1])["digest"]
        # Each replica serves impressions; the feedback reaches the other one; item pop7 is
        # clicked wherever it is shown, so the policy has something to learn.
        served = 0
        for n in range(24):
            port, other = ports[n % 2], ports[1 - n % 2]
            at = now + 100 + n
            shown = call(port, "/v1/recommend", {"user_id": f"s{n}", "k": 6, "timestamp": at})
            served += 1
            for item in shown["items"]:
                if item["item_id"] in ("pop7", "pop1"):
                    click = {
                        "user_id": f"s{n}",
                        "item_id": item["item_id"],
                        "type": "click",
                        "timestamp": at + 5,
                        "impression_id": shown["impression_id"],
                    }
                    call(other, "/v1/events", [click])
        later = {"user_id": "later", "item_id": "pop0", "type": "view", "timestamp": now + 300}
        for port in ports:  # the window (60 s) has passed, everywhere
            call(port, "/v1/events", [{**later, "user_id": f"later{port}"}])
        states = wait_until_learnt(ports, served)
        assert [s["impressions_learnt"] for s in states] == [served, served], states
        assert all(s["shared"] for s in states)
        assert states[0]["digest"] == states[1]["digest"] != untaught, states
        assert states[0]["learned_through"] == states[1]["learned_through"]

        # The same request to either replica: the same candidates and the same policy state,
        # so an item drawn into a slot carries the same propensity whichever replica drew it.
        request = {"user_id": "probe", "k": 6, "timestamp": now + 301}
        propensities: dict[tuple[int, str], set[float]] = {}
        for port in ports:
            for _ in range(4):
                answer = call(port, "/v1/recommend", request)
                for slot, item in enumerate(answer["items"]):
                    value = round(item["propensity"], 12)
                    propensities.setdefault((slot, item["item_id"]), set()).add(value)
        differ = {key: p for key, p in propensities.items() if len(p) > 1}
        assert len(propensities) > 6 and not differ, differ

        # A third replica, started now, joins the fleet's state (its snapshot, then the log).
        servers[0].send_signal(signal.SIGTERM)  # a clean stop writes the snapshot
        servers[0].wait(timeout=20)
        servers[0] = serve_process({**settings, "EQUILIBRA_REPLICA": "one"}, ports[0], 60)
        import redis

        client = redis.Redis.from_url(redis_server.url)
        client.xtrim(f"{settings['EQUILIBRA_REDIS_PREFIX']}:fleet", maxlen=0)  # only the snapshot
        client.close()
        third = free_port()
        servers.append(
            serve_process({**settings, "EQUILIBRA_REPLICA": "three"}, third, start_within_s=60)
        )
        joined = [learning(port) for port in [*ports, third]]
        assert {s["digest"] for s in joined} == {states[0]["digest"]}, joined
        assert joined[2]["impressions_learnt"] == served  # counted from the fleet's snapshot
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)


def test_a_click_without_an_impression_id_is_credited_once_among_replicas(
    tmp_path: Path, redis_server
) -> None:
    """Both replicas showed the item to the user; the click names no impression: only the
    latest impression (design.md's rule), on whichever replica served it, earns it."""
    from conftest import POSTGRES_URL

    _postgres_store().close()  # empty tables
    settings = replica_settings(tmp_path, redis_server.url, "shown")
    ports = [free_port(), free_port()]
    servers = [
        serve_process({**settings, "EQUILIBRA_REPLICA": name}, port, start_within_s=60)
        for name, port in zip(["one", "two"], ports, strict=True)
    ]
    try:
        now = time.time()
        events = popular_views(now, users=20, items=4)
        call(ports[0], "/v1/events", events)
        request = {"user_id": "shopper", "k": 3}
        first = call(ports[0], "/v1/recommend", {**request, "timestamp": now + 100})
        second = call(ports[1], "/v1/recommend", {**request, "timestamp": now + 105})
        both = {i["item_id"] for i in first["items"]} & {i["item_id"] for i in second["items"]}
        clicked = sorted(both)[0]
        click = {"user_id": "shopper", "item_id": clicked, "type": "click", "timestamp": now + 110}
        call(ports[0], "/v1/events", [click])  # to the replica whose impression is the older
        # The window passes, through the same replica: the feedback bus brings the other one
        # the click, then the later event, in that order.
        later = {"user_id": "later", "item_id": "pop1", "type": "view", "timestamp": now + 300}
        call(ports[0], "/v1/events", [later])
        deadline = time.time() + 10
        while time.time() < deadline:
            with open_store(str(POSTGRES_URL)) as store:
                log = store.impressions_frame()
            mine = log[log["user_id"] == "shopper"]
            if len(mine) == 6 and mine["reward"].notna().all():
                break
            time.sleep(0.2)
        earned = mine.set_index(["impression_id", "item_id"])["reward"]
        assert earned[(second["impression_id"], clicked)] == 1.0, earned
        assert earned.sum() == 1.0, earned  # the older impression earns nothing
        assert rewarded(ports[0]) + rewarded(ports[1]) == 1
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
