"""`equilibra serve` as a real process: what it acknowledged survives `kill -9`, and so do the
impressions still waiting for feedback."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, serve_process

from equilibra.store import open_store

KEY = "process-admin"
T0 = 1_767_000_000.0


def call(port: int, method: str, path: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def serve(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    return serve_process(
        {
            "EQUILIBRA_DB": f"sqlite:///{tmp_path / 'shop.db'}",
            "EQUILIBRA_MODEL_DIR": str(tmp_path / "model"),
            "EQUILIBRA_ADMIN_KEY": KEY,
            "EQUILIBRA_ATTRIBUTION_WINDOW": "600",
        },
        port,
        start_within_s=60,
    )


@pytest.mark.slow
def test_acknowledged_events_and_open_impressions_survive_kill_9(tmp_path: Path) -> None:
    port = free_port()
    server = serve(tmp_path, port)
    try:
        events = [
            {"user_id": f"u{u}", "item_id": f"i{(u + j) % 20}", "type": "view",
             "timestamp": T0 + 10 * j + u}
            for u in range(30)
            for j in range(4)
        ]  # fmt: skip
        assert call(port, "POST", "/v1/events", events) == (200, {"accepted": 120, "duplicates": 0})
        status, shown = call(
            port, "POST", "/v1/recommend", {"user_id": "u1", "k": 3, "timestamp": T0 + 100}
        )
        assert status == 200
        clicked = shown["items"][0]["item_id"]  # type: ignore[index]
        impression = shown["impression_id"]  # type: ignore[index]
        click = [{"user_id": "u1", "item_id": clicked, "type": "click", "timestamp": T0 + 110,
                  "impression_id": impression}]  # fmt: skip
        assert call(port, "POST", "/v1/events", click)[0] == 200
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    with open_store(f"sqlite:///{tmp_path / 'shop.db'}") as store:
        assert store.count_events() == 121  # everything acknowledged was durable
        assert store.impressions_frame(open_only=True)["impression_id"].unique().tolist() == [
            impression
        ]
    port = free_port()
    server = serve(tmp_path, port)
    try:
        # A retry of a batch acknowledged before the crash adds nothing.
        assert call(port, "POST", "/v1/events", events)[1] == {"accepted": 0, "duplicates": 120}
        assert call(port, "GET", "/v1/stats")[1]["events"] == 121  # type: ignore[index]
        # The reopened impression closes on event time and gets the click made before the crash.
        call(port, "POST", "/v1/recommend", {"user_id": "u2", "k": 2, "timestamp": T0 + 5000})
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    with open_store(f"sqlite:///{tmp_path / 'shop.db'}") as store:
        log = store.impressions_frame()
    rewards = log[log["impression_id"] == impression].set_index("item_id")["reward"]
    assert rewards[clicked] == 1.0 and rewards.drop(clicked).eq(0.0).all()


@pytest.mark.slow
def test_a_new_model_version_is_swapped_in_under_load_without_a_failed_request(
    tmp_path: Path, tiny_shop
) -> None:
    import threading

    from equilibra.data.training import TrainingData
    from equilibra.pipeline.train import fit_artifact

    data = TrainingData(events=tiny_shop.events, items=tiny_shop.items)
    fit_artifact(data, "popularity").publish(tmp_path / "model")
    port = free_port()
    server = serve(tmp_path, port)
    users = tiny_shop.events["user_id"].astype(str).unique()[:50].tolist()
    answers: list[tuple[int, object]] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            status, body = call(port, "POST", "/v1/recommend", {"user_id": users[i % 50], "k": 5})
            answers.append((status, body.get("model_version") if isinstance(body, dict) else None))
            i += 1

    client = threading.Thread(target=load)
    try:
        client.start()
        time.sleep(1.0)
        for algorithm in ("itemknn", "als"):  # two more versions while requests keep coming
            fit_artifact(data, algorithm).publish(tmp_path / "model")
            deadline = time.time() + 30
            version = 2 if algorithm == "itemknn" else 3
            while time.time() < deadline and not any(v == version for _, v in answers[-5:]):
                time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        client.join(timeout=30)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    statuses = {s for s, _ in answers}
    versions = [v for _, v in answers]
    assert statuses == {200}, statuses
    assert versions[0] == 1 and versions[-1] == 3 and {1, 2, 3} <= set(versions)
    assert versions == sorted(versions)  # one client: never back to an older version
    assert len(answers) > 50
