"""The service under load, beside two references, with a RetailRocket-sized shop loaded.

    python benchmarks/serving.py [--work-dir /tmp/equilibra-serving] [--soak-seconds 600]
        [--out docs/service]

Prepares once (kept in --work-dir): the synthetic `retailrocket` preset (2.76 M events, 1.41 M
visitors, 235 k items) imported into SQLite, and the default hybrid (recent + co-visitation +
item-kNN) published as the model. Then, each server a separate process on loopback and the load
from `benchmarks/loadgen.py` in another:

- Equilibra (`equilibra serve`, `EQUILIBRA_POLICY=adaptive`), the ceiling (a fixed list on the
  same FastAPI + uvicorn stack) and the peer a team writes first (FastAPI around implicit's ALS):
  recommend latency at concurrency 1, 16 and 64 (closed loop) and at 200 requests/s (open loop);
- Equilibra only: the highest open-loop rate it sustains (500/s asked), events/s through batched
  `POST /v1/events`, latency around a model swap at 200 requests/s, and a soak of mixed reads
  and writes at 200 requests/s with the server's memory sampled. The soak runs on a fresh server
  with a short attribution window (`--soak-window`, 120 s): impressions then close and are
  learnt from during the soak, as they do at any time after a shop's first window, and the
  open impressions reach their bound (window × rate) early, so a plateau can be seen.

Requests: k = 20 for users drawn from the shop (one in five a stranger), placement `home`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
KEY = "bench-key"


def run(command: list[str], **kwargs: Any) -> None:
    print("$ " + " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True, **kwargs)


def prepare(work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    shop = work / "shop"
    db = f"sqlite:///{work / 'shop.db'}"
    timings: dict[str, Any] = {}
    if not (shop / "events.csv").exists():
        started = time.perf_counter()
        run([sys.executable, "-m", "equilibra.cli", "generate", "--preset", "retailrocket",
             "--out", str(shop)])  # fmt: skip
        timings["generate_s"] = round(time.perf_counter() - started, 1)
    if not (work / "shop.db").exists():
        started = time.perf_counter()
        run([sys.executable, "-m", "equilibra.cli", "import", "--db", db,
             "--events", str(shop / "events.csv"), "--items", str(shop / "items.csv")])  # fmt: skip
        timings["import_s"] = round(time.perf_counter() - started, 1)
    if not (work / "model" / "CURRENT").exists():
        started = time.perf_counter()
        run([sys.executable, "-m", "equilibra.cli", "fit", "--db", db, "--algorithm", "hybrid",
             "--out", str(work / "model")])  # fmt: skip
        timings["fit_s"] = round(time.perf_counter() - started, 1)
    return timings


def request_files(work: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Recommend requests, event batches, and a mixed stream for the soak (made once: the
    seed is fixed, so the files in --work-dir are what this would write again)."""
    import pandas as pd

    paths = (work / "recommend.jsonl", work / "events.jsonl", work / "mixed.jsonl")
    if all(path.exists() for path in paths):
        return paths
    events = pd.read_csv(work / "shop" / "events.csv", usecols=["user_id", "item_id"], dtype=str)
    rng = np.random.default_rng(seed)
    users = events["user_id"].unique()
    items = events["item_id"].unique()
    recommend = []
    for i in range(5000):
        user = f"stranger-{i}" if rng.random() < 0.2 else str(rng.choice(users))
        recommend.append(
            {"method": "POST", "path": "/v1/recommend",
             "body": {"user_id": user, "k": 20, "placement": "home"}}
        )  # fmt: skip
    batches = []
    for b in range(400):
        batch = [
            {"user_id": str(rng.choice(users)), "item_id": str(rng.choice(items)),
             "type": "view", "event_id": f"bench-{seed}-{b}-{j}"}
            for j in range(500)
        ]  # fmt: skip
        batches.append({"method": "POST", "path": "/v1/events", "body": batch})
    mixed = []
    for i in range(5000):
        if i % 5 == 4:
            mixed.append(
                {"method": "POST", "path": "/v1/events",
                 "body": [{"user_id": str(rng.choice(users)), "item_id": str(rng.choice(items)),
                           "type": "view", "event_id": f"soak-{i}-{j}"} for j in range(10)]}
            )  # fmt: skip
        else:
            mixed.append(recommend[i])
    for path, rows in zip(paths, (recommend, batches, mixed), strict=True):
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return paths


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 900) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                if answer.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"server on {port} not healthy in {timeout} s")


def start(kind: str, work: Path, port: int, window: float | None = None) -> subprocess.Popen[bytes]:
    """`window`: Equilibra's attribution window in seconds (the service's default if None)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    if kind == "equilibra":
        env.update(
            EQUILIBRA_DB=f"sqlite:///{work / 'shop.db'}",
            EQUILIBRA_MODEL_DIR=str(work / "model"),
            EQUILIBRA_ADMIN_KEY=KEY,
            EQUILIBRA_POLICY="adaptive",
        )
        if window is not None:
            env["EQUILIBRA_ATTRIBUTION_WINDOW"] = f"{window:g}"
        command = [sys.executable, "-m", "equilibra.cli", "serve", "--port", str(port),
                   "--log-level", "warning"]  # fmt: skip
    elif kind == "ceiling":
        command = [sys.executable, str(HERE / "serving_refs.py"), "ceiling", "--port", str(port)]
    else:
        command = [sys.executable, str(HERE / "serving_refs.py"), "implicit", "--port", str(port),
                   "--db", f"sqlite:///{work / 'shop.db'}"]  # fmt: skip
    return subprocess.Popen(command, env=env)


def load(
    port: int, requests: Path, out: Path, mode: str, seconds: float, concurrency: int = 1,
    rate: float = 200.0, ports: list[int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """`ports`: spread the connections over these replicas (loadgen's --ports)."""
    spread = ["--ports", ",".join(map(str, ports))] if ports else []
    command = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port), *spread,
               "--mode", mode,
               "--seconds", str(seconds), "--concurrency", str(concurrency), "--rate", str(rate),
               "--requests", str(requests), "--out", str(out), "--key", KEY]  # fmt: skip
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def summary(raw: dict[str, Any], since: float = 0.0, until: float = 1e18) -> dict[str, Any]:
    """Latency percentiles and the throughput achieved: requests over the time from the first
    start to the last answer (an overloaded server's backlog stretches it past the run)."""
    first = raw["started"][0] if raw["started"] else 0.0
    started = np.asarray(raw["started"]) - first
    pick = (started >= since) & (started < until)
    latency = np.asarray(raw["latency_ms"])[pick]
    status = np.asarray(raw["status"])[pick]
    if len(latency) == 0:
        return {"requests": 0}
    span = float((started[pick] + latency / 1000).max() - started[pick].min())
    return {
        "requests": len(latency),
        "per_second": round(len(latency) / max(span, 1e-9), 1),
        "p50_ms": round(float(np.percentile(latency, 50)), 2),
        "p99_ms": round(float(np.percentile(latency, 99)), 2),
        "errors": int((status >= 500).sum()),
        "non_200": int((status != 200).sum()),
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/equilibra-serving"))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=Path("docs/service"))
    parser.add_argument("--swap-rate", type=float, default=100.0)
    parser.add_argument("--soak-rate", type=float, default=200.0)
    parser.add_argument("--soak-window", type=float, default=120.0)
    parser.add_argument("--only", action="append", choices=["equilibra", "ceiling", "implicit"])
    args = parser.parse_args()
    work = args.work_dir
    results: dict[str, Any] = {"prepare": prepare(work)}
    recommend, events, mixed = request_files(work)
    raw = work / "raw.json"
    for kind, port in (("equilibra", 8100), ("ceiling", 8101), ("implicit", 8102)):
        if args.only and kind not in args.only:
            continue
        if kind == "equilibra":  # the server writes into the store: start from the prepared one
            fresh_store(work)
        process = start(kind, work, port)
        system: dict[str, Any] = {"startup_s": round(wait_healthy(port, process), 1)}
        system["rss_after_start_mib"] = rss_mib(process.pid)
        load(port, recommend, raw, "closed", 5, concurrency=4)  # warm-up
        for concurrency in (1, 16, 64):
            system[f"closed_c{concurrency}"] = summary(
                load(port, recommend, raw, "closed", args.seconds, concurrency)
            )
            print(kind, concurrency, system[f"closed_c{concurrency}"], file=sys.stderr)
        for rate in (100, 200, 500):
            system[f"open_{rate}"] = summary(
                load(port, recommend, raw, "open", args.seconds, rate=rate)
            )
            print(kind, f"open {rate}", system[f"open_{rate}"], file=sys.stderr)
        if kind == "equilibra":
            batches = load(port, events, raw, "closed", args.seconds, concurrency=4)
            system["events"] = summary(batches)
            system["events"]["events_per_second"] = round(system["events"]["per_second"] * 500, 0)
            system["swap"] = swap(port, recommend, raw, work, args.swap_rate)
            system["swap"]["rate"] = args.swap_rate
            system["rss_at_end_mib"] = rss_mib(process.pid)
            stop(process)
            fresh_store(work)
            process = start(kind, work, port, window=args.soak_window)
            wait_healthy(port, process)
            system["soak"] = soak(port, mixed, raw, process.pid, args.soak_seconds, args.soak_rate)
            system["soak"].update(rate=args.soak_rate, window_s=args.soak_window)
        system.setdefault("rss_at_end_mib", rss_mib(process.pid))
        stop(process)
        results[kind] = system
        print(kind, json.dumps(system), file=sys.stderr)
    command = "python benchmarks/serving.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "serving.json"
    if args.only and saved.exists():
        results = {**json.loads(saved.read_text()), **results}
    saved.write_text(json.dumps(results, indent=1))
    (args.out / "serving.md").write_text(markdown(results, command.strip()))
    print(markdown(results, command.strip()))


def swap(port: int, recommend: Path, raw: Path, work: Path, rate: float) -> dict[str, Any]:
    """`rate` requests/s for 40 s; at 10 s a new model version is trained and published by a
    separate process on the same 2 cores (the server's watcher loads it and swaps it in)."""
    import threading

    def publish() -> None:
        time.sleep(10)
        subprocess.run(
            [sys.executable, "-m", "equilibra.cli", "fit", "--db", f"sqlite:///{work / 'shop.db'}",
             "--algorithm", "hybrid", "--out", str(work / "model")],
            check=True, capture_output=True,
        )  # fmt: skip

    before = served_version(port)
    publisher = threading.Thread(target=publish)
    publisher.start()
    result = load(port, recommend, raw, "open", 40, rate=rate)
    publisher.join()
    deadline = time.perf_counter() + 60
    while served_version(port) == before and time.perf_counter() < deadline:
        time.sleep(1)  # the fit may finish after the load: wait for the watcher
    return {
        "versions": [before, served_version(port)],
        "whole": summary(result),
        "first_10s": summary(result, 0, 10),
        "after_10s": summary(result, 10, 40),
    }


def served_version(port: int) -> int | None:
    ask = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/stats", headers={"Authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(ask, timeout=10) as answer:
        return json.loads(answer.read())["model_version"]  # type: ignore[no-any-return]


def fresh_store(work: Path) -> None:
    """The prepared store, as `prepare` left it (the server writes into its copy)."""
    pristine = work / "shop.pristine.db"
    for stale in ("shop.db-wal", "shop.db-shm"):  # a WAL of the last run would corrupt it
        (work / stale).unlink(missing_ok=True)
    if pristine.exists():
        shutil.copy(pristine, work / "shop.db")
    else:
        shutil.copy(work / "shop.db", pristine)


def by_path(raw: dict[str, Any], stream: Path, rate: float) -> dict[str, dict[str, Any]]:
    """An open-loop run's summary per route: request i went out at i / rate and was the
    stream's line i (modulo its length)."""
    paths = [json.loads(line)["path"] for line in stream.read_text().splitlines()]
    started = np.asarray(raw["started"])
    index = np.round((started - started.min()) * rate).astype(int) % len(paths)
    kinds = np.asarray(paths)[index]
    out = {}
    for path in sorted(set(paths)):
        pick = kinds == path
        out[path] = summary({key: np.asarray(raw[key])[pick].tolist()
                             for key in ("started", "latency_ms", "status")})  # fmt: skip
    return out


def soak(
    port: int, mixed: Path, raw: Path, pid: int, seconds: float, rate: float
) -> dict[str, Any]:
    import threading

    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        began = time.perf_counter()
        while not done.wait(10):
            samples.append((round(time.perf_counter() - began), rss_mib(pid)))

    sampler = threading.Thread(target=sample)
    sampler.start()
    result = load(port, mixed, raw, "open", seconds, rate=rate)
    done.set()
    sampler.join()
    return {"load": summary(result), "by_path": by_path(result, mixed, rate), "rss_mib": samples}


def _row(name: str, s: dict[str, Any]) -> str:
    if not s or not s.get("requests"):
        return f"| {name} | – | – | – | – |"
    return f"| {name} | {s['per_second']:,} | {s['p50_ms']} | {s['p99_ms']} | {s['errors']} |"


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [
        "# Serving benchmark (RetailRocket-sized synthetic shop)",
        "",
        f"Made by `{command}` (setup in `benchmarks/serving.py`). One server process and the load",
        "generator on the same 2-core machine, over loopback.",
        "",
    ]
    for kind, label in (
        ("equilibra", "Equilibra (`equilibra serve`, hybrid model, `adaptive` policy)"),
        ("ceiling", "Ceiling: a fixed list on the same FastAPI + uvicorn stack"),
        ("implicit", "Peer: FastAPI around implicit's ALS"),
    ):
        system = results.get(kind)
        if not system:
            continue
        lines += [
            f"## {label}",
            "",
            f"Started in {system['startup_s']} s, {system['rss_after_start_mib']} MiB after "
            f"start, {system['rss_at_end_mib']} MiB at the end.",
            "",
            "| load | requests/s | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, name in (
            ("closed_c1", "concurrency 1"),
            ("closed_c16", "concurrency 16"),
            ("closed_c64", "concurrency 64"),
            ("open_100", "100 requests/s asked (open loop)"),
            ("open_200", "200 requests/s asked (open loop)"),
            ("open_500", "500 requests/s asked (open loop)"),
        ):
            if key in system:
                lines.append(_row(name, system[key]))
        if "events" in system:
            e = system["events"]
            lines.append(
                f"| `POST /v1/events`, 500 per batch, concurrency 4 | {e['per_second']} batches = "
                f"**{e['events_per_second']:,.0f} events/s** | {e['p50_ms']} | {e['p99_ms']} | "
                f"{e['errors']} |"
            )
        if "swap" in system:
            rate = system["swap"].get("rate", 200)
            versions = system["swap"].get("versions")
            for key, name in (("first_10s", "before the swap (0–10 s)"),
                              ("after_10s", "retrain and swap (10–40 s)")):  # fmt: skip
                lines.append(_row(f"{rate:g} requests/s asked, {name}", system["swap"][key]))
            if versions:
                lines.append(f"| (model version {versions[0]} → {versions[1]}) | | | | |")
        if "soak" in system:
            s = system["soak"]
            lines.append(
                _row(
                    f"soak at {s.get('rate', 200):g} requests/s asked, mixed 4:1 reads:writes, "
                    f"{s['load']['requests']:,} requests",
                    s["load"],
                )
            )
            for path, part in s.get("by_path", {}).items():
                lines.append(_row(f"… of which `{path}`", part))
            rss = [m for _, m in s["rss_mib"]]
            if rss:
                lines += [
                    "",
                    f"Soak memory (RSS, MiB, every 10 s): first {rss[0]}, max {max(rss)}, "
                    f"last {rss[-1]}; at half time {rss[len(rss) // 2]}. The soak ran on a fresh "
                    f"server with a {s.get('window_s', 1800):g} s attribution window.",
                ]
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
