"""Offline accuracy: Equilibra's `--algorithm auto` against tuned peers, on one split.

    python benchmarks/offline.py --data-dir ../shared/datasets --dataset ml-100k [--budget 300]

Protocol (design.md): MovieLens — per user, the last 20 % of events by time are test, targets
are ratings >= 4, every training item of the user is excluded; Taobao — a global cut (last 14
days or last 20 % of the span, whichever is later), targets are carts and purchases, only items
the user already carted or bought are excluded. The full catalogue is ranked for every test user
with a training history.

Equilibra: `auto.search` picks a model on a validation split inside the training data (as
`equilibra fit --algorithm auto` does), the pick is refitted on all training data and scored once
on test. Peers, run side by side in this script on the same split, each tuned on the same inner
validation split over a small grid: implicit's ALS, BPR, CosineRecommender and BM25Recommender
(through implicit's own `recommend`), a dense EASE written here from the paper, popularity, and
for shop logs "the user's own recent views, then popular".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from equilibra.data.datasets import REAL_DATASETS, load_real
from equilibra.data.interactions import Interactions
from equilibra.data.split import Protocol, TestTruth, exclusion_matrix, test_truth
from equilibra.data.training import TrainingData, build_interactions, default_weights
from equilibra.evaluate.offline import score_lists as list_metrics
from equilibra.pipeline.auto import search
from equilibra.pipeline.registry import create_model

DATASETS = REAL_DATASETS


@dataclass
class Task:
    train: Interactions
    truth: TestTruth
    exclude: str


def make_task(
    events: pd.DataFrame, items: pd.DataFrame | None, protocol: Protocol, weights: Any
) -> tuple[Task, pd.DataFrame]:
    split = protocol.split_events(events)
    train = build_interactions(split.train, items, weights)
    truth = test_truth(train, split.test, exclude=protocol.exclude)
    return Task(train, truth, protocol.exclude), split.train


def score_lists(recs: np.ndarray, task: Task) -> dict[str, float]:
    """The same list metrics `equilibra evaluate` reports, for Equilibra and every peer."""
    return list_metrics(recs, task.train, task.truth)


# --- peers -------------------------------------------------------------------------------------


def implicit_lists(model: Any, task: Task, k: int = 20) -> np.ndarray:
    """implicit's own recommend, filtering what the protocol excludes."""
    banned = exclusion_matrix(task.train, task.exclude)
    filter_rows = (
        sp.csr_matrix(banned[task.truth.users], dtype=np.float32)
        if banned is not None
        else sp.csr_matrix((len(task.truth.users), task.train.shape[1]), dtype=np.float32)
    )
    ids, _ = model.recommend(
        task.truth.users, filter_rows, N=k, filter_already_liked_items=banned is not None
    )
    return np.asarray(ids, dtype=np.int64)


def fit_implicit(kind: str, params: dict[str, Any], train: Interactions) -> Any:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    matrix = sp.csr_matrix(train.matrix, dtype=np.float32)
    with threadpool_limits(1, "blas"):
        if kind == "implicit-als":
            model = AlternatingLeastSquares(random_state=42, **params)
        elif kind == "implicit-bpr":
            model = BayesianPersonalizedRanking(random_state=42, **params)
            matrix.data[:] = 1.0
        elif kind == "implicit-cosine":
            model = CosineRecommender(**params)
        else:
            model = BM25Recommender(**params)
        model.fit(matrix, show_progress=False)
    return model


class DenseEASE:
    """Steck (2019) over the full catalogue, as a user of numpy would write it."""

    def __init__(self, reg: float):
        self.reg = reg

    def fit(self, train: Interactions) -> DenseEASE:
        x = sp.csr_matrix(train.matrix, dtype=np.float64)
        x.data[:] = 1.0
        g = (x.T @ x).toarray()
        g[np.diag_indices_from(g)] += self.reg
        p = np.linalg.inv(g)
        self.b = p / (-np.diag(p))
        self.b[np.diag_indices_from(self.b)] = 0
        self.x = x
        return self

    def lists(self, task: Task, k: int = 20) -> np.ndarray:
        banned = exclusion_matrix(task.train, task.exclude)
        out = []
        for lo in range(0, len(task.truth.users), 1000):
            users = task.truth.users[lo : lo + 1000]
            scores = self.x[users] @ self.b
            if banned is not None:
                scores[banned[users].toarray()] = -np.inf
            out.append(np.argsort(-scores, axis=1)[:, :k])
        return np.vstack(out)


PEER_GRIDS: dict[str, list[dict[str, Any]]] = {
    "implicit-als": [
        {"factors": f, "regularization": r, "alpha": a, "iterations": 15}
        for f in (64, 128)
        for r in (0.01, 0.1)
        for a in (1.0, 10.0)
    ],
    "implicit-bpr": [
        {"factors": f, "learning_rate": lr, "iterations": 100}
        for f in (64, 128)
        for lr in (0.01, 0.05)
    ],
    "implicit-cosine": [{"K": k} for k in (50, 100, 200)],
    "implicit-bm25": [{"K": k} for k in (50, 100, 200)],
    "dense-ease": [{"reg": r} for r in (100.0, 250.0, 500.0)],
}
DENSE_EASE_MAX_ITEMS = 15_000  # 15k² float64 = 1.8 GB; beyond this a dense EASE cannot run here


def peer_lists(kind: str, params: dict[str, Any], task: Task) -> np.ndarray:
    if kind == "dense-ease":
        return DenseEASE(params["reg"]).fit(task.train).lists(task)
    if kind in ("popularity", "recent-then-popular"):
        model = create_model("popularity" if kind == "popularity" else "recent").fit(task.train)
        recs, _ = model.recommend(task.truth.users, 20, exclusion_matrix(task.train, task.exclude))
        return recs
    return implicit_lists(fit_implicit(kind, params, task.train), task)


def tune_peer(kind: str, inner: Task, outer: Task) -> dict[str, Any]:
    grid = PEER_GRIDS.get(kind, [{}])
    best, best_ndcg = grid[0], -1.0
    if len(grid) > 1:
        for params in grid:
            ndcg = score_lists(peer_lists(kind, params, inner), inner)["ndcg@10"]
            if ndcg > best_ndcg:
                best, best_ndcg = params, ndcg
    started = time.perf_counter()
    recs = peer_lists(kind, best, outer)
    seconds = time.perf_counter() - started
    return {
        "name": kind,
        "params": best,
        **score_lists(recs, outer),
        "fit_and_recommend_seconds": round(seconds, 2),
    }


# --- main --------------------------------------------------------------------------------------


def run(data_dir: Path, dataset: str, budget: float) -> dict[str, Any]:
    data = load_real(data_dir, dataset)
    protocol = data.protocol
    weights = default_weights(data)
    outer, train_events = make_task(data.events, data.items, protocol, weights)
    inner, _ = make_task(train_events, data.items, protocol, weights)
    rows = []
    print(
        f"{dataset}: {outer.train} · test users {len(outer.truth.users)} · targets "
        f"{outer.truth.relevant.nnz} · inner test users {len(inner.truth.users)}",
        file=sys.stderr,
    )

    started = time.perf_counter()
    result = search(TrainingData(events=train_events, items=data.items), budget)
    search_seconds = time.perf_counter() - started
    model = create_model(result.best.algorithm, **result.best.params)
    t0 = time.perf_counter()
    model.fit(outer.train, data.items)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    recs, _ = model.recommend(outer.truth.users, 20, exclusion_matrix(outer.train, outer.exclude))
    rec_seconds = time.perf_counter() - t0
    rows.append(
        {
            "name": "equilibra-auto",
            "params": result.best.label,
            **score_lists(recs, outer),
            "fit_seconds": round(fit_seconds, 2),
            "recommend_seconds": round(rec_seconds, 2),
            "search_seconds": round(search_seconds, 1),
        }
    )
    if hasattr(model, "feature_importance_"):
        rows[-1]["feature_importance"] = model.feature_importance_
    print(f"  equilibra-auto: {rows[-1]['ndcg@10']:.4f} ({result.best.label})", file=sys.stderr)

    peers = ["implicit-als", "implicit-bpr", "implicit-cosine", "implicit-bm25", "popularity"]
    if outer.train.shape[1] <= DENSE_EASE_MAX_ITEMS:
        peers.append("dense-ease")
    if not protocol.rating_data:
        peers.append("recent-then-popular")
    for kind in peers:
        row = tune_peer(kind, inner, outer)
        rows.append(row)
        print(f"  {kind}: {row['ndcg@10']:.4f} {row['params']}", file=sys.stderr)
    best_peer = max((r for r in rows if r["name"] != "equilibra-auto"), key=lambda r: r["ndcg@10"])
    return {
        "dataset": dataset,
        "train": repr(outer.train),
        "test_users": len(outer.truth.users),
        "split": protocol.split,
        "exclude": outer.exclude,
        "rows": rows,
        "best_peer": best_peer["name"],
        "ratio_to_best_peer": round(rows[0]["ndcg@10"] / max(best_peer["ndcg@10"], 1e-12), 3),
        "validation": result.scores,
        "dense_ease": "run"
        if "dense-ease" in peers
        else f"not run: {outer.train.shape[1]:,} items needs a {outer.train.shape[1]:,}² matrix",
    }


def markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = ["# Offline benchmark", "", "```bash", command, "```", ""]
    for res in results:
        lines += [
            f"## {res['dataset']}",
            "",
            f"{res['train']}; {res['test_users']} test users; {res['split']} split; "
            f"exclude {res['exclude']}. Equilibra / best peer ({res['best_peer']}) = "
            f"**{res['ratio_to_best_peer']}** on NDCG@10. Dense EASE: {res['dense_ease']}.",
            "",
            "| model | NDCG@10 | Recall@20 | HitRate@10 | MAP@10 | coverage@10 | "
            "seconds | chosen settings |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in res["rows"]:
            seconds = row.get("fit_and_recommend_seconds") or (
                f"fit {row.get('fit_seconds')}, rec {row.get('recommend_seconds')}"
            )
            lines.append(
                f"| {row['name']} | {row['ndcg@10']:.4f} | {row['recall@20']:.4f} | "
                f"{row['hitrate@10']:.4f} | {row['map@10']:.4f} | "
                f"{row['coverage@10']:.3f} | {seconds} | `{row['params']}` |"
            )
        importance = res["rows"][0].get("feature_importance")
        if importance:
            top = sorted(importance.items(), key=lambda kv: -kv[1])
            lines += [
                "",
                "Learned-ranker feature importance (permutation, average precision "
                "drop): " + ", ".join(f"{k} {v:.4f}" for k, v in top),
            ]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    # implicit warns that its kNN converts COO to CSR internally: noise, not a problem here.
    warnings.filterwarnings("ignore", message="Method expects CSR input")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS))
    parser.add_argument("--budget", type=float, default=300.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    results = [run(args.data_dir, name, args.budget) for name in (args.dataset or sorted(DATASETS))]
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)
    if args.markdown:
        command = (
            "python benchmarks/offline.py --data-dir ../shared/datasets "
            + " ".join(f"--dataset {r['dataset']}" for r in results)
            + f" --budget {args.budget:g}"
        )
        args.markdown.write_text(markdown(results, command))


if __name__ == "__main__":
    main()
