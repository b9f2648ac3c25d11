"""Session models side by side: GRU4Rec, SASRec, SKNN, V-SKNN, co-occurrence, popularity.

    python benchmarks/sessions.py --data-dir ../shared/datasets [--dataset taobao]
        [--dataset ml-latest-small] [--dataset synthetic] [--max-sessions 2000] [--seed 0]
        [--out docs/sessions]

Protocol (the session-rec one, Ludewig et al. 2021): events are cut at the 80th percentile of
their times; models train on the earlier part. The later part is cut into sessions (a user's
events with no gap over 30 min, consecutive repeats of an item collapsed; on ml-latest-small a
user's ratings after the cut are one sequence) holding only items seen in training. For each test
session, after each click, every method ranks 20 items given the clicks so far (the current item
itself excluded, since repeats are collapsed): HR@20 (the next click is among them) and MRR@20.
No method learns from the test clicks, so all see the same information.

GRU4Rec and SASRec are scored twice from one fit: with their repeat gate (the default; see
`models/neural.py`) and without it ("no repeat": the network's own softmax).

The baselines: popularity in the training part, and last-item co-occurrence (the items that most
often came right after the current one in a training session). Training time (wall clock, 2
cores) and milliseconds per prediction (one session, in-process) are reported beside them.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from equilibra.data.columns import Columns as C
from equilibra.data.datasets import load_real
from equilibra.data.interactions import Interactions
from equilibra.data.synthetic import generate_shop
from equilibra.models.sessions import (
    WHOLE_HISTORY,
    SessionRecommender,
    interaction_sessions,
    revisit_share,
    split_sessions,
)

K = 20
GAP_MINUTES = {"taobao": 30.0, "synthetic": 30.0, "ml-latest-small": WHOLE_HISTORY}


def load(name: str, data_dir: Path) -> pd.DataFrame:
    if name == "synthetic":
        return generate_shop("demo", seed=3).events
    return load_real(data_dir, name).events


class Popularity:
    name = "popularity"

    def __init__(self, train: Interactions):
        self.ranked = np.argsort(-train.item_popularity(), kind="stable")[: K + 1]

    def recommend_session(self, items: np.ndarray, k: int, banned: np.ndarray) -> np.ndarray:
        return self.ranked[~np.isin(self.ranked, banned)][:k]


class CoOccurrence:
    """Last-item co-occurrence over training sessions; popular items where it knows nothing."""

    name = "cooccurrence"

    def __init__(self, sessions: list[np.ndarray], popular: Popularity):
        self.next: dict[int, Counter[int]] = defaultdict(Counter)
        for s in sessions:
            for a, b in itertools.pairwise(s.tolist()):
                self.next[a][b] += 1
        self.popular = popular

    def recommend_session(self, items: np.ndarray, k: int, banned: np.ndarray) -> np.ndarray:
        last = int(items[-1])
        out = [i for i, _ in self.next[last].most_common(k + 1) if i not in banned][:k]
        for item in self.popular.recommend_session(items, k, banned):
            if len(out) >= k:
                break
            if item not in out:
                out.append(int(item))
        return np.array(out[:k])


def models(gap: float, seed: int) -> list[tuple[str, SessionRecommender]]:
    from equilibra.models.session_knn import SessionKNN, VectorSessionKNN

    found: list[tuple[str, SessionRecommender]] = [
        ("sknn", SessionKNN(k=100, sample_size=500, gap_minutes=gap)),
        ("vsknn", VectorSessionKNN(k=100, sample_size=500, gap_minutes=gap)),
    ]
    try:
        from equilibra.models.gru4rec import GRU4Rec
        from equilibra.models.sasrec import SASRec
    except ImportError:
        print("sessions: no torch, GRU4Rec and SASRec left out", file=sys.stderr)
        return found
    # Validation HR on a few hundred steps is noisy: SASRec gets more patience, more epochs.
    sasrec = {"gap_minutes": gap, "seed": seed, "epochs": 60, "patience": 5, "learning_rate": 2e-3}
    return [*found, ("gru4rec", GRU4Rec(gap_minutes=gap, seed=seed)), ("sasrec", SASRec(**sasrec))]


def test_sessions(
    future: pd.DataFrame, train: Interactions, gap: float, max_sessions: int, seed: int
) -> list[np.ndarray]:
    item = train.items.to_dense(future[C.item].astype(str).to_numpy())
    known = future[item >= 0]
    item = item[item >= 0]
    user = pd.factorize(known[C.user])[0]
    sessions = split_sessions(
        user.astype(np.int64), item.astype(np.int64),
        known[C.timestamp].to_numpy(np.float64), gap,
    )  # fmt: skip
    out = [session for session in sessions if len(session) >= 2]
    rng = np.random.default_rng(seed)
    if len(out) > max_sessions:
        out = [out[i] for i in sorted(rng.choice(len(out), max_sessions, replace=False))]
    return [s[:51] for s in out]  # at most 50 predictions per session


def evaluate(method: Any, sessions: list[np.ndarray]) -> dict[str, float]:
    hits, ranks, latency = [], [], []
    for session in sessions:
        for step in range(1, len(session)):
            prefix = session[:step]
            started = time.perf_counter()
            found = method.recommend_session(prefix, K, np.array([prefix[-1]]))
            if isinstance(found, tuple):
                found = found[0]
            latency.append(time.perf_counter() - started)
            where = np.flatnonzero(np.asarray(found) == session[step])
            hits.append(len(where) > 0)
            ranks.append(1.0 / (where[0] + 1) if len(where) else 0.0)
    return {
        "hr@20": round(float(np.mean(hits)), 4),
        "mrr@20": round(float(np.mean(ranks)), 4),
        "ms_median": round(1000 * float(np.median(latency)), 3),
        "ms_p99": round(1000 * float(np.quantile(latency, 0.99)), 3),
        "steps": len(hits),
    }


def spec_models(specs: list[str], gap: float, seed: int) -> list[tuple[str, SessionRecommender]]:
    """`--spec '["sasrec", {"fresh_epochs": 1}]'`: one model each, the benchmark's gap and seed."""
    from equilibra.models.registry import create_model, model_class

    found = []
    for text in specs:
        algorithm, params = json.loads(text)
        defaults: dict[str, Any] = {"gap_minutes": gap}
        if "seed" in inspect.signature(model_class(algorithm)).parameters:  # the neural ones
            defaults["seed"] = seed
        model = create_model(algorithm, **defaults, **params)
        found.append((f"{algorithm} {json.dumps(params)}", model))
    return found


def run(
    name: str,
    data_dir: Path,
    max_sessions: int,
    seed: int,
    describe_only: bool = False,
    specs: list[str] | None = None,
) -> dict[str, Any]:
    events = load(name, data_dir)
    cut = float(events[C.timestamp].quantile(0.8))
    past, future = events[events[C.timestamp] < cut], events[events[C.timestamp] >= cut]
    train = Interactions.from_frame(past)
    gap = GAP_MINUTES[name]
    test = test_sessions(future, train, gap, max_sessions, seed)
    described = {
        "dataset": name,
        "train_events": len(past),
        "test_sessions": len(test),
        "steps": sum(len(t) - 1 for t in test),
        "revisit_share": round(revisit_share(test), 4),
    }
    if describe_only:
        return described
    popular = Popularity(train)
    train_sessions = interaction_sessions(train, gap)
    baseline = CoOccurrence(list(train_sessions), popular)
    rows: dict[str, dict[str, Any]] = {}
    for method in (popular, baseline):
        rows[method.name] = evaluate(method, test) | {"fit_seconds": 0.0}
        print(name, method.name, rows[method.name], file=sys.stderr)
    for label, model in spec_models(specs, gap, seed) if specs else models(gap, seed):
        started = time.perf_counter()
        model.fit(train)
        fit_seconds = time.perf_counter() - started
        rows[label] = evaluate(model, test) | {"fit_seconds": round(fit_seconds, 1)}
        if hasattr(model, "history_"):
            rows[label]["epochs"] = len(model.history_)
        print(name, label, rows[label], file=sys.stderr)
        if getattr(model, "repeat", False):
            # The same network without its repeat gate: its own softmax, what a plain port gives.
            model.repeat = False
            bare = f"{label} (no repeat)"
            rows[bare] = evaluate(model, test) | {"fit_seconds": rows[label]["fit_seconds"]}
            rows[bare]["epochs"] = rows[label]["epochs"]
            print(name, bare, rows[bare], file=sys.stderr)
    return described | {"train_sessions": len(train_sessions), "methods": rows}


def markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Session models side by side",
        "",
        f"Made by `{command}` (protocol in `benchmarks/sessions.py`). Bold: the best HR@20.",
        "",
        "| dataset | method | HR@20 | MRR@20 | fit s | ms / prediction (median / p99) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        best = max(m["hr@20"] for m in r["methods"].values())
        for method, m in r["methods"].items():
            hr = f"**{m['hr@20']:.4f}**" if m["hr@20"] == best else f"{m['hr@20']:.4f}"
            epochs = f" ({m['epochs']} epochs)" if "epochs" in m else ""
            lines.append(
                f"| {r['dataset']} ({r['test_sessions']:,} sessions, "
                f"{next(iter(r['methods'].values()))['steps']:,} steps) | {method} | {hr} | "
                f"{m['mrr@20']:.4f} | {m['fit_seconds']}{epochs} | "
                f"{m['ms_median']} / {m['ms_p99']} |"
            )
    lines += [
        "",
        "Revisits: the share of steps whose next click was already clicked earlier in the same",
        "session (the current item excluded). Neighbour methods score those items directly.",
        "",
        "| dataset | steps | revisit share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {r['dataset']} | {r['steps']:,} | {r['revisit_share']:.1%} |" for r in results]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument(
        "--dataset", action="append", choices=["taobao", "ml-latest-small", "synthetic"]
    )
    parser.add_argument("--max-sessions", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/sessions"))
    parser.add_argument(
        "--describe-only", action="store_true", help="print the test sessions' make-up, fit nothing"
    )
    parser.add_argument(
        "--spec",
        action="append",
        help='instead of the standard models, JSON ["algorithm", {params}]; prints, writes nothing',
    )
    args = parser.parse_args()
    results = [
        run(name, args.data_dir, args.max_sessions, args.seed, args.describe_only, args.spec)
        for name in args.dataset or ["taobao", "ml-latest-small", "synthetic"]
    ]
    if args.describe_only or args.spec:
        print(json.dumps(results, indent=1))
        return
    command = "python benchmarks/sessions.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sessions.json").write_text(json.dumps(results, indent=1) + "\n")
    report = markdown(results, command.strip())
    (args.out / "sessions.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
