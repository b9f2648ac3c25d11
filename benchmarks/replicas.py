"""Recommend and event throughput of two `equilibra serve` replicas against one, sharing one
PostgreSQL and one Redis, on the same machine.

    python benchmarks/replicas.py --db postgresql://equilibra:equilibra@127.0.0.1/equilibra_bench \
        [--work /tmp/equilibra-replicas] [--seconds 20] [--runs 3] [--out docs/scale]

The database's tables are emptied first: give a database of its own. Prepares the `demo` shop
(3,000 users, 1,500 items) imported into it and the default hybrid fitted from it, and starts
Debian's `redis-server` on a free port (no persistence). Then for 1 and 2 replicas
(`EQUILIBRA_POLICY=adaptive`, each its own `EQUILIBRA_REPLICA`), the load generator spreading
keep-alive connections over them in turn, as a round-robin balancer does:

- recommend (k = 20, one user in five a stranger, placement `home`), closed loop at 4, 16 and
  32 connections: throughput, p50, p99;
- recommend, open loop at a fixed rate both configurations sustain: p50, p99 at equal load;
- events: batches of 100 new views, closed loop at 4 connections: events/s.

Each measurement `--runs` times (the replicas restarted between configurations, not between
runs); medians. Everything shares the machine's cores: the replicas, PostgreSQL, Redis and the
load generator.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from serving import KEY, load, stop, summary, wait_healthy  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(work: Path, db: str) -> None:
    from equilibra.store import open_store

    work.mkdir(parents=True, exist_ok=True)
    # An empty shop: this benchmark's own database.
    with open_store(db) as store, store._lock:  # type: ignore[attr-defined]
        cur = store._conn.cursor()  # type: ignore[attr-defined]
        cur.execute("TRUNCATE events, items, users, impressions, snapshots")
        store._conn.commit()  # type: ignore[attr-defined]
    cli = [sys.executable, "-m", "equilibra.cli"]
    shop = work / "shop"
    if not (shop / "events.csv").exists():
        subprocess.run([*cli, "generate", "--preset", "demo", "--out", str(shop)], check=True)
    quiet = {"check": True, "stdout": subprocess.DEVNULL}
    subprocess.run([*cli, "import", "--db", db, "--events", str(shop / "events.csv"),
                    "--items", str(shop / "items.csv")], **quiet)  # type: ignore[call-overload]  # fmt: skip
    subprocess.run([*cli, "fit", "--db", db, "--algorithm", "hybrid", "--out",
                    str(work / "model")], **quiet)  # type: ignore[call-overload]  # fmt: skip


def request_files(work: Path, tag: str, seed: int) -> tuple[Path, Path]:
    import pandas as pd

    events = pd.read_csv(work / "shop" / "events.csv", usecols=["user_id", "item_id"], dtype=str)
    rng = np.random.default_rng(seed)
    users, items = events["user_id"].unique(), events["item_id"].unique()
    recommend = [
        {"method": "POST", "path": "/v1/recommend",
         "body": {"user_id": f"stranger-{tag}-{i}" if rng.random() < 0.2
                  else str(rng.choice(users)), "k": 20, "placement": "home"}}
        for i in range(5000)
    ]  # fmt: skip
    batches = [
        {"method": "POST", "path": "/v1/events",
         "body": [{"user_id": str(rng.choice(users)), "item_id": str(rng.choice(items)),
                   "type": "view", "event_id": f"replicas-{tag}-{b}-{j}"} for j in range(100)]}
        for b in range(3000)
    ]  # fmt: skip
    paths = (work / f"recommend-{tag}.jsonl", work / f"events-{tag}.jsonl")
    for path, rows in zip(paths, (recommend, batches), strict=True):
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return paths


def start_redis() -> tuple[subprocess.Popen[bytes], str, Path]:
    folder = Path(tempfile.mkdtemp(prefix="equilibra-redis-"))
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    return process, f"redis://127.0.0.1:{port}/0", folder


def start_replicas(n: int, db: str, redis: str, work: Path) -> tuple[list[Any], list[int]]:
    processes, ports = [], []
    for i in range(n):
        port = free_port()
        env = {
            **os.environ,
            "OPENBLAS_NUM_THREADS": "1",
            "EQUILIBRA_DB": db,
            "EQUILIBRA_REDIS": redis,
            "EQUILIBRA_MODEL_DIR": str(work / "model"),
            "EQUILIBRA_ADMIN_KEY": KEY,
            "EQUILIBRA_POLICY": "adaptive",
            "EQUILIBRA_REPLICA": f"r{i}",
        }
        command = [sys.executable, "-m", "equilibra.cli", "serve", "--port", str(port),
                   "--log-level", "warning"]  # fmt: skip
        processes.append(subprocess.Popen(command, env=env))
        ports.append(port)
        wait_healthy(port, processes[-1])  # one at a time: the first seeds Redis
    return processes, ports


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in runs[0] if isinstance(runs[0][k], int | float)]
    out = {k: round(statistics.median(r[k] for r in runs), 2) for k in keys}
    out["runs"] = len(runs)
    return out


def measure(
    ports: list[int], recommend: Path, events: Path, work: Path, seconds: float, runs: int,
    rate: float,
) -> dict[str, Any]:  # fmt: skip
    raw = work / "raw.json"

    def run(requests: Path, mode: str, concurrency: int = 1, rate: float = 1.0) -> dict:
        return summary(load(ports[0], requests, raw, mode, seconds, concurrency, rate, ports))

    result: dict[str, Any] = {}
    run(recommend, "closed", 8)  # warm-up
    for concurrency in (4, 16, 32):
        result[f"closed_c{concurrency}"] = median_of(
            [run(recommend, "closed", concurrency) for _ in range(runs)]
        )
        print(len(ports), concurrency, result[f"closed_c{concurrency}"], file=sys.stderr)
    result[f"open_{rate:g}"] = median_of([run(recommend, "open", rate=rate) for _ in range(runs)])
    batches = median_of([run(events, "closed", 4) for _ in range(runs)])
    batches["events_per_second"] = round(batches["per_second"] * 100, 0)
    result["events"] = batches
    print(len(ports), json.dumps(result), file=sys.stderr)
    return result


def markdown(results: dict[str, Any], command: str) -> str:
    one, two = results["replicas_1"], results["replicas_2"]
    rate = results["open_rate"]
    lines = [
        "# Two replicas against one (PostgreSQL + Redis, one machine)",
        "",
        f"`{command}` — {results['cores']} cores shared by the replicas, PostgreSQL, Redis and"
        " the load generator; the `demo` shop; medians of "
        f"{one['closed_c16']['runs']} runs of {results['seconds']:g} s.",
        "",
        "| load | 1 replica: req/s | p50 ms | p99 ms | 2 replicas: req/s | p50 ms | p99 ms "
        "| throughput 2 / 1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in [
        ("closed_c4", "closed loop, 4 connections"),
        ("closed_c16", "closed loop, 16 connections"),
        ("closed_c32", "closed loop, 32 connections"),
        (f"open_{rate:g}", f"open loop, {rate:g} req/s asked"),
    ]:
        a, b = one[key], two[key]
        lines.append(
            f"| {label} | {a['per_second']:.0f} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} "
            f"| {b['per_second']:.0f} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} "
            f"| {b['per_second'] / a['per_second']:.2f}× |"
        )
    a, b = one["events"], two["events"]
    lines.append(
        f"| events, batches of 100, 4 connections | {a['events_per_second']:.0f} ev/s "
        f"| {a['p50_ms']:.1f} | {a['p99_ms']:.1f} | {b['events_per_second']:.0f} ev/s "
        f"| {b['p50_ms']:.1f} | {b['p99_ms']:.1f} "
        f"| {b['events_per_second'] / a['events_per_second']:.2f}× |"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL database of its own")
    parser.add_argument("--work", type=Path, default=Path("/tmp/equilibra-replicas"))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="the open-loop rate")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    prepare(args.work, args.db)
    redis, redis_url, _ = start_redis()
    results: dict[str, Any] = {
        "cores": os.cpu_count(),
        "seconds": args.seconds,
        "open_rate": args.rate,
    }
    try:
        for n in (1, 2):
            recommend, events = request_files(args.work, f"n{n}", seed=n)
            processes, ports = start_replicas(n, args.db, redis_url, args.work)
            try:
                results[f"replicas_{n}"] = measure(
                    ports, recommend, events, args.work, args.seconds, args.runs, args.rate
                )
            finally:
                for process in processes:
                    stop(process)
    finally:
        redis.terminate()
    command = "python benchmarks/replicas.py " + " ".join(
        a if not a.startswith("postgresql://") else "--db-url-elided" for a in sys.argv[1:]
    )
    text = markdown(results, command.replace("--db --db-url-elided", "--db URL"))
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "replicas.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "replicas.md").write_text(text)


if __name__ == "__main__":
    main()
