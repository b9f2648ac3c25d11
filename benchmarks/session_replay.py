"""Is the service session-aware? Replay held-out sessions through it, click by click.

    python benchmarks/session_replay.py --data-dir ../shared/datasets [--dataset taobao]
        [--dataset synthetic] [--algorithm auto] [--budget 60] [--max-sessions 600]

Protocol: events are split by time (the last 20 % of the span is test). A model is trained on the
earlier part and the service starts on a store holding it; the later part is cut into sessions
(a user's events with no gap over 30 min; consecutive repeats of one item collapsed). Each test
session's events are posted to `POST /v1/events` one by one, in time order, and after each one
`POST /v1/recommend` asks for 20 items (greedy policy, `exclude: none`): a hit when the session's
next item is among them. HR@20 and MRR@20 over all such steps.

The baseline, run on the same steps with the same information: last-item co-occurrence — for
the session's last item, the items that most often came right after it in any session, counted
over the training part and updated online with every replayed event; popular items where it
knows nothing. Like the service, it never shows an item the catalogue marks unavailable (the
synthetic shop has 2.6 % of them, and 2.7 % of its test events are on them: the service cannot
hit those, and a baseline that could would not be a shop's).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from equilibra.data.columns import Columns as C
from equilibra.data.datasets import load_real
from equilibra.data.synthetic import generate_shop
from equilibra.data.training import TrainingData
from equilibra.pipeline.train import train
from equilibra.service.app import create_app
from equilibra.service.settings import load_settings
from equilibra.store import open_store
from equilibra.store.ingest import import_frames

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

GAP_S = 30 * 60.0
K = 20
KEY = {"Authorization": "Bearer bench"}


def sessions_of(events: pd.DataFrame) -> list[pd.DataFrame]:
    ordered = events.sort_values([C.user, C.timestamp], kind="stable")
    new_user = ordered[C.user].ne(ordered[C.user].shift())
    gap = ordered[C.timestamp].diff().fillna(np.inf) > GAP_S
    session = (new_user | gap).cumsum()
    repeat = ordered[C.item].eq(ordered[C.item].shift()) & ~(new_user | gap)
    ordered = ordered[~repeat].assign(_session=session[~repeat])
    return [s for _, s in ordered.groupby("_session", sort=False) if len(s) >= 2]


class CoOccurrence:
    """Last-item co-occurrence, counted over sessions and updated as events arrive."""

    def __init__(
        self, train_sessions: list[pd.DataFrame], popular: list[str], unavailable: set[str]
    ):
        self.next: dict[str, Counter[str]] = defaultdict(Counter)
        self.unavailable = unavailable
        for s in train_sessions:
            items = s[C.item].astype(str).tolist()
            for a, b in itertools.pairwise(items):
                self.next[a][b] += 1
        self.popular = popular

    def learn(self, previous: str | None, item: str) -> None:
        if previous is not None and previous != item:
            self.next[previous][item] += 1

    def recommend(self, last: str, k: int) -> list[str]:
        ranked = self.next[last].most_common(k + len(self.unavailable))
        out = [i for i, _ in ranked if i not in self.unavailable][:k]
        for item in self.popular:
            if len(out) >= k:
                break
            if item not in out:
                out.append(item)
        return out[:k]


def load(name: str, data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if name == "synthetic":
        shop = generate_shop("demo", seed=3)
        return shop.events, shop.items
    data = load_real(data_dir, name)
    return data.events, data.items


def replay(
    name: str, data_dir: Path, algorithm: str, budget: float, max_sessions: int, work: Path
) -> dict[str, Any]:
    events, items = load(name, data_dir)
    start, end = float(events[C.timestamp].min()), float(events[C.timestamp].max())
    cut = start + 0.8 * (end - start)
    past, future = events[events[C.timestamp] < cut], events[events[C.timestamp] >= cut]
    work.mkdir(parents=True, exist_ok=True)
    # A fresh store and model folder every run: the replay posts the test events into the store,
    # and a store left from an earlier run would hand them to the online state at start.
    for stale in (f"{name}.db", f"{name}.db-wal", f"{name}.db-shm"):
        (work / stale).unlink(missing_ok=True)
    shutil.rmtree(work / f"{name}-model", ignore_errors=True)
    db = f"sqlite:///{work / f'{name}.db'}"
    with open_store(db) as store:
        import_frames(store, past, items)
    started = time.perf_counter()
    model = train(TrainingData(events=past, items=items), algorithm, budget=budget)
    fit_seconds = time.perf_counter() - started
    model.publish(work / f"{name}-model")
    test = sessions_of(future)
    rng = np.random.default_rng(0)
    if len(test) > max_sessions:
        test = [test[i] for i in sorted(rng.choice(len(test), max_sessions, replace=False))]
    # A shop shows no unavailable item: neither does the baseline.
    unavailable = (
        set(items.loc[~items["available"].astype(bool), C.item].astype(str))
        if items is not None and "available" in items
        else set()
    )
    counts = past[C.item].astype(str).value_counts()
    popular = [i for i in counts.index[: K + len(unavailable)] if i not in unavailable][:K]
    baseline = CoOccurrence(sessions_of(past), popular, unavailable)
    settings = load_settings(
        None,
        environ={},
        db=db,
        model_dir=str(work / f"{name}-model"),
        admin_key="bench",
        policy="greedy",
        replay_days=10_000,
    )
    hits = {"service": [], "cooccurrence": []}
    ranks = {"service": [], "cooccurrence": []}
    latencies = []
    with TestClient(create_app(settings, background=False)) as client:
        for session in test:
            rows = session[[C.user, C.item, C.event_type, C.timestamp]].itertuples(index=False)
            steps = list(rows)
            for position, (user, item, kind, stamp) in enumerate(steps[:-1]):
                user, item = str(user), str(item)
                event = {
                    "user_id": user,
                    "item_id": item,
                    "type": str(kind),
                    "timestamp": float(stamp),
                }
                client.post("/v1/events", json=[event], headers=KEY)
                previous = str(steps[position - 1][1]) if position else None
                baseline.learn(previous, item)
                t0 = time.perf_counter()
                answer = client.post(
                    "/v1/recommend",
                    json={"user_id": user, "k": K, "exclude": "none", "timestamp": float(stamp)},
                    headers=KEY,
                ).json()
                latencies.append(time.perf_counter() - t0)
                target = str(steps[position + 1][1])
                lists = {
                    "service": [i["item_id"] for i in answer["items"]],
                    "cooccurrence": baseline.recommend(item, K),
                }
                for method, shown in lists.items():
                    hit = target in shown
                    hits[method].append(hit)
                    ranks[method].append(1.0 / (shown.index(target) + 1) if hit else 0.0)
            last = steps[-1]
            client.post(
                "/v1/events",
                json=[{"user_id": str(last[0]), "item_id": str(last[1]), "type": str(last[2]),
                       "timestamp": float(last[3])}],
                headers=KEY,
            )  # fmt: skip
            baseline.learn(str(steps[-2][1]), str(last[1]))
    result = {
        "dataset": name,
        "algorithm": model.model.name,
        "model": model.info.get("auto", {}).get("chosen", algorithm),
        "fit_seconds": round(fit_seconds, 1),
        "train_events": len(past),
        "test_sessions": len(test),
        "steps": len(hits["service"]),
        "recommend_ms_median": round(1000 * float(np.median(latencies)), 2),
        "recommend_ms_p99": round(1000 * float(np.quantile(latencies, 0.99)), 2),
    }
    for method in hits:
        result[f"{method}_hr@20"] = round(float(np.mean(hits[method])), 4)
        result[f"{method}_mrr@20"] = round(float(np.mean(ranks[method])), 4)
    return result


def markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Session replay: is the service session-aware?",
        "",
        f"Made by `{command}` (protocol in `benchmarks/session_replay.py`).",
        "",
        "| dataset | model | test sessions | steps | service HR@20 | co-occurrence HR@20 |"
        " service MRR@20 | co-occurrence MRR@20 | recommend ms (median / p99, in-process) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['dataset']} | `{r['model']}` | {r['test_sessions']:,} | {r['steps']:,} | "
            f"**{r['service_hr@20']:.4f}** | {r['cooccurrence_hr@20']:.4f} | "
            f"{r['service_mrr@20']:.4f} | {r['cooccurrence_mrr@20']:.4f} | "
            f"{r['recommend_ms_median']} / {r['recommend_ms_p99']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--dataset", action="append", choices=["taobao", "synthetic"])
    parser.add_argument("--algorithm", default="auto")
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--max-sessions", type=int, default=600)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/equilibra-replay"))
    parser.add_argument("--out", type=Path, default=Path("docs/service"))
    args = parser.parse_args()
    results = []
    for name in args.dataset or ["taobao", "synthetic"]:
        results.append(
            replay(
                name, args.data_dir, args.algorithm, args.budget, args.max_sessions, args.work_dir
            )
        )
        print(json.dumps(results[-1]), file=sys.stderr)
    command = "python benchmarks/session_replay.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "session_replay.json").write_text(json.dumps(results, indent=1))
    report = markdown(results, command.strip())
    (args.out / "session_replay.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
