"""Simulated shoppers against `equilibra serve` over HTTP: `adaptive` vs fixed settings of
`EQUILIBRA_POLICY`, so what the simulator shows is checked in the product.

    python benchmarks/closed_loop.py --data-dir ../shared/datasets --requests 3000 \
        --out docs/exploration/controller

The hidden truth is the simulator's (`evaluate.simulate.World`: a factor model of the whole of
ml-100k; users click an item they look at with probability σ(a + κ·z), look at position j with
probability 1 / (1 + j), add to cart and buy after a click). The service knows only the first
half of the events (imported into its store, an ALS model fitted on them) and learns from what
the shoppers do: each request is `POST /v1/recommend` (event time one second apart), each
click, add-to-cart and purchase a `POST /v1/events` naming the impression. Every policy faces
the same shoppers and the same coin flips (common random numbers). `drift`: at mid-run every
user's taste becomes another's. Each policy runs in a fresh server process on a fresh copy of
the store and model.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import stop, wait_healthy

from equilibra.data.columns import Columns as C
from equilibra.data.datasets import load_real
from equilibra.data.training import TrainingData
from equilibra.evaluate.simulate import SimConfig, World, _probability
from equilibra.pipeline.train import train
from equilibra.store import open_store
from equilibra.store.ingest import import_frames

KEY = "loop"
POLICIES = ("adaptive", "greedy", "egreedy:0.01", "egreedy:0.05", "egreedy:0.1")


def prepare(data_dir: Path, work: Path, seed: int) -> tuple[World, SimConfig, float]:
    events = load_real(data_dir, "ml-100k").events
    config = SimConfig(scenario="stationary", seed=seed)
    world = World.build(events, config)
    cut = float(np.quantile(events[C.timestamp].to_numpy(dtype=float), 0.5))
    past = events[events[C.timestamp].astype(float) <= cut]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with open_store(f"sqlite:///{work / 'shop.db'}") as store:
        import_frames(store, past, None)
    train(TrainingData(events=past), "als").publish(work / "model")
    return world, config, float(past[C.timestamp].astype(float).max()) + 3600.0


class Client:
    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: object) -> Any:
        return self.call("POST", path, json.dumps(body))

    def get(self, path: str) -> Any:
        return self.call("GET", path, None)

    def call(self, method: str, path: str, payload: str | None) -> Any:
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        self.connection.request(method, path, payload, headers)
        answer = self.connection.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{path}: {answer.status} {data[:200]!r}")
        return json.loads(data)


def run_policy(
    spec: str,
    scenario: str,
    world: World,
    config: SimConfig,
    start: float,
    work: Path,
    requests: int,
    port: int,
) -> dict[str, Any]:
    run = work / f"run-{spec.replace(':', '_')}-{scenario}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    shutil.copy(work / "shop.db", run / "shop.db")
    shutil.copytree(work / "model", run / "model")
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        "EQUILIBRA_DB": f"sqlite:///{run / 'shop.db'}",
        "EQUILIBRA_MODEL_DIR": str(run / "model"),
        "EQUILIBRA_ADMIN_KEY": KEY,
        "EQUILIBRA_POLICY": spec,
        "EQUILIBRA_ATTRIBUTION_WINDOW": "60",
    }
    command = [sys.executable, "-m", "equilibra.cli", "serve", "--port", str(port),
               "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env=env)
    try:
        wait_healthy(port, process)
        client = Client(port)
        # The same shoppers and coin flips for every policy.
        rng = np.random.default_rng(config.seed + 11)
        users = rng.choice(len(world.user_ids), size=requests, p=world.user_weights)
        coins = rng.random((requests, 3, 10))
        permutation = rng.permutation(len(world.user_ids))
        index = {str(item): i for i, item in enumerate(world.item_ids)}
        examine = 1.0 / (1.0 + np.arange(10))
        click_value = 1.0 + config.cart_rate * (2.0 + config.purchase_rate * 5.0)
        truth_users = world.truth_users
        reward = expected = 0.0
        explored = shown = 0
        latencies = []
        for t in range(requests):
            if scenario == "drift" and t == requests // 2:
                truth_users = truth_users[permutation]
            user = int(users[t])
            stamp = start + t  # event time, one second apart, after the known half
            started = time.perf_counter()
            answer = client.post(
                "/v1/recommend",
                {"user_id": str(world.user_ids[user]), "k": 10, "timestamp": stamp},
            )
            latencies.append(time.perf_counter() - started)
            items = [index[i["item_id"]] for i in answer["items"] if i["item_id"] in index]
            if not items:
                continue
            p = _probability(
                truth_users[user] @ world.truth_items[items].T, world.truth_scale, config
            )
            k = len(items)
            clicks = coins[t, 0, :k] < examine[:k] * p
            carts = clicks & (coins[t, 1, :k] < config.cart_rate)
            buys = carts & (coins[t, 2, :k] < config.purchase_rate)
            expected += float((examine[:k] * p).sum() * click_value)
            explored += sum(bool(i["explore"]) for i in answer["items"])
            shown += len(answer["items"])
            events = []
            for kind, hits, value in (("click", clicks, 1), ("add_to_cart", carts, 2),
                                      ("purchase", buys, 5)):  # fmt: skip
                for j in np.flatnonzero(hits):
                    events.append(
                        {
                            "user_id": str(world.user_ids[user]),
                            "item_id": str(world.item_ids[items[j]]),
                            "type": kind,
                            "timestamp": stamp,
                            "impression_id": answer["impression_id"],
                        }
                    )
                    reward += value
            if events:
                client.post("/v1/events", events)
        exploration = client.get("/v1/exploration")
    finally:
        stop(process)
    return {
        "policy": spec,
        "scenario": scenario,
        "seed": config.seed,
        "requests": requests,
        "reward_per_request": reward / requests,
        "expected_per_request": expected / requests,
        "explore_share": explored / max(shown, 1),
        "recommend_ms_median": 1000 * float(np.median(latencies)),
        "controller_history": len(exploration.get("history", [])),
        "exploration": exploration if spec == "adaptive" else None,
    }


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Closed loop over HTTP: simulated shoppers against `equilibra serve`",
        "",
        f"Made by `{command}`.",
        "",
        "| scenario | seed | policy | reward/request | expected reward/request | explore share | "
        "recommend ms (median) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['seed']} | {r['policy']} | {r['reward_per_request']:.4f} | "
            f"{r['expected_per_request']:.4f} | {r['explore_share']:.3f} | "
            f"{r['recommend_ms_median']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--scenario", action="append", choices=["stationary", "drift"])
    parser.add_argument("--policy", action="append")
    parser.add_argument("--work", type=Path, default=Path("/tmp/equilibra-closed-loop"))
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--out", type=Path, default=Path("docs/exploration/controller"))
    args = parser.parse_args()
    rows = []
    for seed in range(args.seeds):
        world, config, start = prepare(args.data_dir, args.work, seed)
        for scenario in args.scenario or ["stationary", "drift"]:
            for spec in args.policy or POLICIES:
                row = run_policy(
                    spec, scenario, world, config, start, args.work, args.requests, args.port
                )
                print(row, file=sys.stderr, flush=True)
                rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)
    for row in rows:  # what GET /v1/exploration answered at the end of each adaptive run
        state = row.pop("exploration")
        if state is not None:
            name = f"exploration-{row['scenario']}-seed{row['seed']}.json"
            (args.out / name).write_text(json.dumps(state, indent=1))
    (args.out / "closed_loop.json").write_text(
        json.dumps({"command": command, "rows": rows}, indent=1)
    )
    (args.out / "closed_loop.md").write_text(markdown(rows, command))


if __name__ == "__main__":
    main()
