"""The service on a Redis online state that goes away and comes back: no request fails, /health
says it is degraded, and it learns again once Redis answers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import RedisServer
from fastapi.testclient import TestClient

from equilibra.service.app import create_app
from equilibra.service.settings import load_settings

ADMIN = {"Authorization": "Bearer admin-key"}
T0 = 1_767_000_000.0


def test_redis_down_never_fails_a_request_and_recovers(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    redis = RedisServer(tmp_path)  # not started yet: Redis is down when the service starts
    settings = load_settings(
        None,
        environ={},
        db=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=str(tmp_path / "model"),
        admin_key="admin-key",
        redis=redis.url,
    )
    views = [
        {"user_id": f"u{u}", "item_id": item, "type": "view", "timestamp": T0 + 10 * u + d}
        for u in range(5)
        for d, item in enumerate(["shoe", "sock"])
    ]
    with TestClient(create_app(settings, background=False)) as client:
        client.app.state.engine.state.retry_after_s = 0.0  # ask Redis again on every call
        assert client.post("/v1/events", json=views, headers=ADMIN).status_code == 200
        answer = client.post("/v1/recommend", json={"user_id": "u1", "k": 5}, headers=ADMIN)
        assert answer.status_code == 200  # served, from what is known without the state
        assert client.get("/health").json()["degraded"] is True
        redis.start()
        try:
            fresh = [{"user_id": "v", "item_id": i, "type": "view", "timestamp": T0 + 100 + t}
                     for t, i in enumerate(["shoe", "sock"])]  # fmt: skip
            assert client.post("/v1/events", json=fresh, headers=ADMIN).status_code == 200
            assert client.get("/health").json()["degraded"] is False
            view = {"user_id": "w", "item_id": "shoe", "type": "view", "timestamp": T0 + 200}
            client.post("/v1/events", json=[view], headers=ADMIN)
            answer = client.post("/v1/recommend", json={"user_id": "w", "k": 5}, headers=ADMIN)
            assert "sock" in [i["item_id"] for i in answer.json()["items"]]
        finally:
            redis.stop()
