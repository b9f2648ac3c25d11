"""Score given model specs on `benchmarks/offline.py`'s split: inner (auto's validation) and test.

    python benchmarks/offline_specs.py --data-dir ../shared/datasets --dataset ml-100k \\
        --spec '["ranker", {"generators": "rating-without-sessions", "classifier": "logistic"}]'

A spot check beside the full benchmark: what one configuration scores on the inner split that
`auto` chooses on and on the test split it is reported on, without the search. `generators` may
name a preset: `rating`, `shop`, `shop-sessions` (auto's lists) or `rating-without-sessions`,
`shop-without-sessions` (the same without the session models).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from offline import DATASETS, make_task, score_lists

from equilibra.data.datasets import load_real
from equilibra.data.split import exclusion_matrix
from equilibra.data.training import default_weights
from equilibra.pipeline.auto import RATING_GENERATORS, SHOP_GENERATORS, SHOP_SESSION_GENERATORS
from equilibra.pipeline.registry import create_model

SESSION_MODELS = {"sknn", "vsknn", "gru4rec", "sasrec"}
PRESETS = {
    "rating": RATING_GENERATORS,
    "shop": SHOP_GENERATORS,
    "shop-sessions": SHOP_SESSION_GENERATORS,
    "rating-without-sessions": [
        g for g in RATING_GENERATORS if g["algorithm"] not in SESSION_MODELS
    ],
    "shop-without-sessions": [g for g in SHOP_GENERATORS if g["algorithm"] not in SESSION_MODELS],
}


def resolve(params: dict[str, Any]) -> dict[str, Any]:
    generators = params.get("generators")
    if isinstance(generators, str):
        if generators not in PRESETS:
            raise SystemExit(f"spec: unknown generators preset {generators!r}")
        params = {**params, "generators": PRESETS[generators]}
    return params


def main() -> None:
    warnings.filterwarnings("ignore", message="Method expects CSR input")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument(
        "--spec", action="append", required=True, help='JSON ["algorithm", {params}]'
    )
    args = parser.parse_args()
    data = load_real(args.data_dir, args.dataset)
    weights = default_weights(data)
    outer, train_events = make_task(data.events, data.items, data.protocol, weights)
    inner, _ = make_task(train_events, data.items, data.protocol, weights)
    for text in args.spec:
        algorithm, params = json.loads(text)
        row: dict[str, Any] = {"dataset": args.dataset, "spec": [algorithm, params]}
        for name, task in (("inner", inner), ("test", outer)):
            started = time.perf_counter()
            model = create_model(algorithm, **resolve(params)).fit(task.train, data.items)
            exclude = exclusion_matrix(task.train, task.exclude)
            recs, _ = model.recommend(task.truth.users, 20, exclude)
            scores = score_lists(recs, task)
            row[name] = {
                "ndcg@10": round(scores["ndcg@10"], 4),
                "recall@20": round(scores["recall@20"], 4),
                "seconds": round(time.perf_counter() - started, 1),
            }
        print(json.dumps(row), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
