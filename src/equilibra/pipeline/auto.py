"""`equilibra fit --algorithm auto`: pick a model and its settings on a validation split.

The training data is split once more by the protocol of design.md (per-user temporal for rating
data, a global cut for shop logs); every candidate is fitted on the earlier part and scored by
NDCG@10 on the later part; then blends of the best few are tried, reusing their fitted models.
Whatever fits in the time budget is tried, cheapest and usually strongest first. The winner is
refitted on all the training data by the caller.
"""

from __future__ import annotations

import importlib.util
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from equilibra.data.split import test_truth
from equilibra.data.training import TrainingData, build_interactions, default_weights
from equilibra.evaluate.offline import evaluate_model
from equilibra.models.sessions import WHOLE_HISTORY
from equilibra.pipeline.registry import create_model
from equilibra.rank import Hybrid

Progress = Callable[[int, int, str], None]  # (done, total, label)


@dataclass
class Candidate:
    algorithm: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.algorithm == "hybrid":
            return (
                "hybrid("
                + " + ".join(
                    f"{c.get('weight', 1.0)}×{Candidate(c['algorithm'], c.get('params', {})).label}"
                    for c in self.params["components"]
                )
                + ")"
            )
        inner = ",".join(f"{k}={v}" for k, v in self.params.items() if k != "generators")
        if "generators" in self.params:
            inner += ",over=" + "+".join(g["algorithm"] for g in self.params["generators"])
        return f"{self.algorithm}({inner})"


def candidates(data: TrainingData, n_items: int) -> list[Candidate]:
    """The search space, in the order it is tried."""
    # EASE inverts an items × items matrix: ~30 s at 10k items here, minutes beyond.
    ease_items = min(n_items, 10_000)
    if data.is_rating_data:
        grid = [
            Candidate("ease", {"regularization": 250.0, "max_items": ease_items}),
            Candidate("itemknn", {"similarity": "cosine", "k": 100}),
            Candidate("itemknn", {"similarity": "bm25", "k": 200}),
            Candidate("userknn", {"similarity": "cosine", "k": 50}),
            Candidate("covisit", RATING_SEQUENCE),
            Candidate("vsknn", RATING_SESSIONS),
            Candidate("als", {"factors": 64, "regularization": 0.05, "iterations": 15}),
            Candidate("ease", {"regularization": 100.0, "max_items": ease_items}),
            Candidate("ease", {"regularization": 500.0, "max_items": ease_items}),
            Candidate("userknn", {"similarity": "cosine", "k": 100}),
            Candidate("als", {"factors": 128, "regularization": 0.1, "iterations": 15}),
            Candidate("itemknn", {"similarity": "asymmetric", "k": 100, "alpha": 0.3}),
            Candidate("popularity", {}),
        ]
    else:
        grid = [
            Candidate("recent", {}),
            Candidate("covisit", {"window": 10, "recent": 10}),
            Candidate("covisit", {"window": 5, "recent": 5}),
            Candidate("vsknn", {}),
            Candidate("sknn", {}),
            Candidate("als", {"factors": 64, "regularization": 0.05, "iterations": 15}),
            Candidate("itemknn", {"similarity": "cosine", "k": 100}),
            Candidate("itemknn", {"similarity": "bm25", "k": 200}),
            Candidate("popularity", {"half_life_days": 7.0}),
            Candidate("ease", {"regularization": 250.0, "max_items": ease_items}),
        ]
    generators = RATING_GENERATORS if data.is_rating_data else SHOP_GENERATORS
    grid += [
        Candidate("ranker", {"generators": generators, "classifier": "logistic"}),
        Candidate("ranker", {"generators": generators, "classifier": "gbdt"}),
    ]
    if not data.is_rating_data:
        # Session neighbours as a sixth generator: on the Taobao sample they add to the test
        # split and take from the inner one, so they are a candidate of their own.
        grid.append(
            Candidate("ranker", {"generators": SHOP_SESSION_GENERATORS, "classifier": "logistic"})
        )
    if data.items is not None and {"title", "description", "categories"} & set(data.items):
        grid.append(Candidate("content", {}))
    return grid + neural_candidates(data)


def neural_candidates(data: TrainingData) -> list[Candidate]:
    """The sequence models, last: the slowest to fit; only where the torch extra is installed."""
    if importlib.util.find_spec("torch") is None:
        return []
    sessions = RATING_SESSIONS if data.is_rating_data else {}
    return [
        Candidate("sasrec", {**sessions, "epochs": 60, "patience": 5, "learning_rate": 2e-3}),
        Candidate("gru4rec", sessions),
    ]


# What the learned ranker draws candidates from, by kind of data.
SHOP_GENERATORS = [
    {"algorithm": "recent", "params": {}},
    {"algorithm": "covisit", "params": {"window": 10, "recent": 10}},
    {"algorithm": "als", "params": {}},
    {"algorithm": "itemknn", "params": {"k": 100}},
    {"algorithm": "popularity", "params": {"half_life_days": 7.0}},
]
SHOP_SESSION_GENERATORS = [*SHOP_GENERATORS, {"algorithm": "vsknn", "params": {}}]
# Rating sessions are sparse in time (one sitting, then weeks away): the order of a user's
# ratings still says what they rate next, so transitions are counted across any gap.
RATING_SEQUENCE = {"window": 10, "recent": 10, "max_gap_hours": 10_000.0}
# For the same reason a session model reads a rater's whole history as one session.
RATING_SESSIONS = {"gap_minutes": WHOLE_HISTORY}
RATING_GENERATORS = [
    {"algorithm": "ease", "params": {"regularization": 250.0, "max_items": 10_000}},
    {"algorithm": "covisit", "params": RATING_SEQUENCE},
    {"algorithm": "userknn", "params": {"k": 50}},
    {"algorithm": "als", "params": {}},
    {"algorithm": "popularity", "params": {}},
    # The rater's whole history as a session: +0.003 NDCG@10 on ml-100k's inner split.
    {"algorithm": "vsknn", "params": RATING_SESSIONS},
]


BLEND_WEIGHTS = (0.25, 0.5, 1.0)


@dataclass
class SearchResult:
    best: Candidate
    scores: list[dict[str, Any]]
    protocol: dict[str, str]


def search(
    data: TrainingData, budget_seconds: float = 300.0, progress: Progress | None = None
) -> SearchResult:
    started = time.perf_counter()
    protocol = data.protocol
    split_name, exclude = protocol.split, protocol.exclude
    split = protocol.split_events(data.events)
    weights = default_weights(data)
    inner = build_interactions(split.train, data.items, weights)
    truth = test_truth(inner, split.test, exclude=exclude)
    if len(truth.users) == 0:
        raise ValueError(
            "auto: the validation split has no test user with a target; "
            "give more data or choose an --algorithm"
        )
    grid = candidates(data, inner.shape[1])
    total = len(grid) + len(BLEND_WEIGHTS) + len(BLEND_WEIGHTS) ** 2  # plus the blends
    fitted: list[tuple[Candidate, Any, float]] = []
    scores: list[dict[str, Any]] = []

    def record(candidate: Candidate, model: Any, fit_seconds: float) -> float:
        result = evaluate_model(model, inner, truth, exclude=exclude)
        ndcg = result.metrics["ndcg@10"]
        scores.append(
            {
                "candidate": candidate.label,
                "algorithm": candidate.algorithm,
                "params": candidate.params,
                "ndcg@10": round(ndcg, 5),
                "recall@20": round(result.metrics["recall@20"], 5),
                "fit_seconds": round(fit_seconds, 2),
            }
        )
        return ndcg

    for index, candidate in enumerate(grid):
        if time.perf_counter() - started > budget_seconds and fitted:
            break
        if progress:
            progress(index, total, candidate.label)
        t0 = time.perf_counter()
        try:
            model = create_model(candidate.algorithm, **candidate.params)
            if hasattr(model, "time_limit_seconds"):  # the neural ones: no epoch past the budget
                model.time_limit_seconds = max(budget_seconds - (t0 - started), 1.0)
            model.fit(inner, data.items, data.users)
        except (ValueError, MemoryError, ImportError) as exc:  # e.g. content without text
            scores.append({"candidate": candidate.label, "skipped": str(exc)})
            continue
        seconds = time.perf_counter() - t0
        ndcg = record(candidate, model, seconds)
        fitted.append((candidate, model, ndcg))

    # Blends of the best two or three, reusing the fitted models.
    ranked = sorted(fitted, key=lambda f: -f[2])
    distinct = []
    for entry in ranked:
        if entry[0].algorithm not in {d[0].algorithm for d in distinct}:
            distinct.append(entry)
    blends = []
    for size in (2, 3):
        if len(distinct) < size:
            continue
        top = distinct[:size]
        for extra in itertools.product(BLEND_WEIGHTS, repeat=size - 1):
            blends.append((top, (1.0, *extra)))
    done = len(grid)
    for top, weights_ in blends:
        if time.perf_counter() - started > budget_seconds:
            break
        components = [
            {"algorithm": c.algorithm, "params": c.params, "weight": w}
            for (c, _, _), w in zip(top, weights_, strict=True)
        ]
        candidate = Candidate("hybrid", {"components": components})
        if progress:
            progress(
                min(done, total - 1),
                total,
                "hybrid " + "+".join(f"{c['algorithm']}×{c['weight']}" for c in components),
            )
        done += 1
        blend = Hybrid(components)
        blend.models_ = [m for _, m, _ in top]
        blend.n_users_, blend.n_items_ = inner.shape
        ndcg = record(candidate, blend, 0.0)
        fitted.append((candidate, blend, ndcg))
    if progress:
        progress(total, total, "done")
    best = max(fitted, key=lambda f: f[2])[0] if fitted else Candidate("popularity")
    return SearchResult(
        best=best,
        scores=scores,
        protocol={
            "split": split_name,
            "exclude": exclude,
            "validation_users": str(len(truth.users)),
            "seconds": f"{time.perf_counter() - started:.1f}",
        },
    )


def best_score(result: SearchResult) -> float:
    values = [s["ndcg@10"] for s in result.scores if "ndcg@10" in s]
    return float(np.max(values)) if values else 0.0
