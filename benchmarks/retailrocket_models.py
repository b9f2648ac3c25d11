"""Fit and batch-recommend at RetailRocket scale (synthetic preset), timed.

    python benchmarks/retailrocket_models.py [--events /tmp/equilibra-bench/events.csv] [--runs 3]

Builds the snapshot of the synthetic `retailrocket` shop (1,407,580 users × 235,061 items),
fits the default hybrid (recent items + session co-visitation + item-kNN) and each of its parts,
plus ALS, and
recommends the top 20 over the full catalogue for 10,000 users (excluding carted and bought
items). Also fits EASE on its bounded catalogue, to state what EASE costs here. Reports medians.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from equilibra.data.training import build_interactions, load_training_data
from equilibra.pipeline.registry import create_model


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events",
        type=Path,
        default=Path("/tmp/equilibra-bench/events.csv"),
        help="RetailRocket-format events (equilibra generate --preset "
        "retailrocket --format retailrocket)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--ease-items", type=int, default=8_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    data, load_s = timed(lambda: load_training_data(args.events, "retailrocket"))
    x, build_s = timed(lambda: build_interactions(data.events, None))
    rng = np.random.default_rng(0)
    users = np.sort(rng.choice(x.shape[0], args.users, replace=False))
    banned = x.converted()
    results: dict[str, object] = {
        "snapshot": repr(x),
        "load_seconds": round(load_s, 1),
        "build_seconds": round(build_s, 1),
    }
    specs = {
        "hybrid (default)": ("hybrid", {}),
        "recent": ("recent", {}),
        "covisit": ("covisit", {}),
        "als": ("als", {}),
        f"ease (max_items={args.ease_items})": ("ease", {"max_items": args.ease_items}),
    }
    for label, (name, params) in specs.items():
        fits, recs = [], []
        runs = args.runs if name not in ("ease", "als") else 1  # the slow ones once
        for _ in range(runs):
            model, fit_s = timed(lambda n=name, p=params: create_model(n, **p).fit(x))
            _, rec_s = timed(lambda m=model: m.recommend(users, 20, exclude=banned))
            fits.append(fit_s)
            recs.append(rec_s)
        results[label] = {
            "fit_seconds": [round(s, 1) for s in fits],
            "fit_median": round(statistics.median(fits), 1),
            "recommend_10k_seconds": [round(s, 2) for s in recs],
            "recommend_median": round(statistics.median(recs), 2),
        }
        print(label, results[label], flush=True)
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
