"""`equilibra evaluate`: the offline protocol of design.md on one dataset, end to end."""

from __future__ import annotations

import time
from typing import Any

from equilibra.data.split import test_truth
from equilibra.data.training import TrainingData, build_interactions, default_weights
from equilibra.evaluate.offline import (
    cold_user_metrics,
    diversity_vectors,
    evaluate_model,
    rating_errors,
)
from equilibra.pipeline.registry import create_model


def evaluate_split(
    data: TrainingData,
    algorithm: str,
    params: dict[str, Any] | None = None,
    exclude: str | None = None,
    budget: float = 120.0,
) -> dict[str, Any]:
    """`equilibra evaluate`: the whole protocol on one dataset, as one JSON-ready report."""
    protocol = data.protocol
    exclude = exclude or protocol.exclude
    split = protocol.split_events(data.events)
    chosen, chosen_params = algorithm, dict(params or {})
    if algorithm == "auto":
        from equilibra.pipeline.auto import search

        best = search(TrainingData(events=split.train, items=data.items), budget).best
        chosen, chosen_params = best.algorithm, best.params
    train = build_interactions(split.train, data.items, default_weights(data))
    truth = test_truth(train, split.test, exclude=exclude)
    if len(truth.users) == 0:
        raise ValueError("evaluate: no test user has a target; give more data")
    started = time.perf_counter()
    model = create_model(chosen, **chosen_params).fit(train, data.items)
    fit_seconds = time.perf_counter() - started
    vectors, basis = diversity_vectors(train, data.items)
    result = evaluate_model(model, train, truth, exclude=exclude, item_vectors=vectors)
    report: dict[str, Any] = {
        "algorithm": chosen,
        "params": chosen_params,
        "split": protocol.split,
        "exclude": exclude,
        "fit_seconds": round(fit_seconds, 2),
        **result.as_dict(),
        "diversity_basis": basis,
        "cold_test_users": len(truth.cold_users),
        "cold": cold_user_metrics(train, split.test, data.items),
    }
    if protocol.rating_data:
        report["ratings"] = {
            "predictor": "baseline μ + b_u + b_i",
            **rating_errors(split.train, split.test),
        }
    return report
