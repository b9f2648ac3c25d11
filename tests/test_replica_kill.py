"""A replica killed with `kill -9` (design.md "Beyond one machine", issue 13's failure cases):
every event it acknowledged is in the shared store and the online state; an impression it
served still earns its reward when the feedback arrives at another replica while it is dead,
credited once, by the killed replica when it comes back (it reopens its open impressions from
the store and replays the events since)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from conftest import _postgres_store, free_port, serve_process
from test_replicas import call, metric, popular_views, replica_settings, rewarded

from equilibra.online.redis_state import RedisState
from equilibra.store import open_store

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _store_rows(url: str, impression: str):  # type: ignore[no-untyped-def]
    with open_store(url) as store:
        log = store.impressions_frame()
    return log[log["impression_id"] == impression].set_index("item_id")["reward"]


def test_kill_9_loses_no_acknowledged_event_and_no_reward(tmp_path: Path, redis_server) -> None:
    from conftest import POSTGRES_URL

    url = str(POSTGRES_URL)
    _postgres_store().close()  # empty tables
    settings = replica_settings(tmp_path, redis_server.url, "kill")
    one_port, two_port = free_port(), free_port()
    one = serve_process({**settings, "EQUILIBRA_REPLICA": "one"}, one_port, start_within_s=60)
    two = serve_process({**settings, "EQUILIBRA_REPLICA": "two"}, two_port, start_within_s=60)
    try:
        now = time.time()
        events = popular_views(now, users=30, items=4)
        acknowledged = sum(call(one_port, "/v1/events", [e])["accepted"] for e in events)
        shown = call(one_port, "/v1/recommend", {"user_id": "buyer", "k": 3, "timestamp": now + 50})
        impression, clicked = shown["impression_id"], shown["items"][0]["item_id"]
        # The impression log is written behind the requests, within 0.1 s (service/writer.py):
        # what a kill -9 may lose is an impression of its last 0.1 s, never an event.
        deadline = time.time() + 5
        while len(_store_rows(url, impression)) < 3 and time.time() < deadline:
            time.sleep(0.05)
        last = {"user_id": "last", "item_id": "pop0", "type": "view", "timestamp": now + 51}
        acknowledged += call(one_port, "/v1/events", [last])["accepted"]
        one.send_signal(signal.SIGKILL)  # right after the last acknowledgement
        one.wait(timeout=10)

        # Every acknowledged event is stored, and the other replica serves by it.
        with open_store(url) as store:
            assert store.stats().events == acknowledged == len(events) + 1
        shared = RedisState(redis_server.url, prefix=settings["EQUILIBRA_REDIS_PREFIX"])
        try:
            assert shared.events == acknowledged  # the online state learnt each of them
            last_user = shared.user("last")
            assert last_user is not None and "pop0" in last_user.recent_items(5)
        finally:
            shared.close()

        # Feedback on the dead replica's impression reaches the surviving one.
        assert len(_store_rows(url, impression)) == 3
        click = {"user_id": "buyer", "item_id": clicked, "type": "click",
                 "timestamp": now + 60, "impression_id": impression}  # fmt: skip
        assert call(two_port, "/v1/events", [click])["accepted"] == 1

        # The killed replica comes back, reopens its impression and credits the click once
        # the window has passed on the shared event clock.
        one = serve_process({**settings, "EQUILIBRA_REPLICA": "one"}, one_port, start_within_s=60)
        later = {"user_id": "later", "item_id": "pop1", "type": "view", "timestamp": now + 200}
        call(two_port, "/v1/events", [later])
        deadline = time.time() + 10
        while time.time() < deadline:
            rows = _store_rows(url, impression)
            if rows.notna().all():
                break
            time.sleep(0.2)
        assert rows[clicked] == 1.0 and rows.drop(clicked).eq(0.0).all(), rows
        assert rewarded(one_port) == 1 and rewarded(two_port) == 0  # learnt once, by one policy
    finally:
        for server in (one, two):
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=20)


def test_a_replica_that_never_comes_back_is_adopted(tmp_path: Path, redis_server) -> None:
    """Killed for good: once its heartbeat expires the surviving replica adopts its open
    impression, with the click that reached the fleet meanwhile, and credits it once."""
    from conftest import POSTGRES_URL

    url = str(POSTGRES_URL)
    _postgres_store().close()  # empty tables
    settings = replica_settings(tmp_path, redis_server.url, "adopt", EQUILIBRA_REPLICA_TTL="2")
    one_port, two_port = free_port(), free_port()
    one = serve_process({**settings, "EQUILIBRA_REPLICA": "one"}, one_port, start_within_s=60)
    two = serve_process({**settings, "EQUILIBRA_REPLICA": "two"}, two_port, start_within_s=60)
    try:
        now = time.time()
        events = popular_views(now, users=20, items=4)
        call(one_port, "/v1/events", events)
        shown = call(one_port, "/v1/recommend", {"user_id": "buyer", "k": 3, "timestamp": now + 50})
        impression, clicked = shown["impression_id"], shown["items"][0]["item_id"]
        deadline = time.time() + 5
        while len(_store_rows(url, impression)) < 3 and time.time() < deadline:
            time.sleep(0.05)
        one.send_signal(signal.SIGKILL)  # and it never comes back
        one.wait(timeout=10)
        click = {"user_id": "buyer", "item_id": clicked, "type": "click",
                 "timestamp": now + 60, "impression_id": impression}  # fmt: skip
        call(two_port, "/v1/events", [click])
        later = {"user_id": "later", "item_id": "pop1", "type": "view", "timestamp": now + 200}
        call(two_port, "/v1/events", [later])  # the window has passed: only an owner can close it
        deadline = time.time() + 15  # a 2 s heartbeat, renewed every 0.7 s
        while time.time() < deadline:
            rows = _store_rows(url, impression)
            if rows.notna().all():
                break
            time.sleep(0.2)
        assert rows[clicked] == 1.0 and rows.drop(clicked).eq(0.0).all(), rows
        with open_store(url) as store:
            log = store.impressions_frame()
        assert set(log[log["impression_id"] == impression]["replica"]) == {"two"}
        assert rewarded(two_port) == 1  # credited once, by the adopter
        assert metric(two_port, "equilibra_impressions_adopted") == 1
        time.sleep(1.0)  # a second look finds nothing more to adopt, and counts nothing twice
        assert rewarded(two_port) == 1
    finally:
        for server in (one, two):
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=20)
