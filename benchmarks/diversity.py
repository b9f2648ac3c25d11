"""What diversity costs in accuracy: MMR re-ranking at several weights on the Taobao sample.

    python benchmarks/diversity.py --data-dir ../shared/datasets [--algorithm als]

design.md's shop protocol (a global temporal cut; targets are carts and purchases; carted and
bought items excluded). The model ranks its top 100 for every test user; MMR over the items'
categories (`rank/diversity.py`, as the service's `EQUILIBRA_DIVERSITY` does) re-orders them at
each weight λ; NDCG@10, Recall@20 and intra-list diversity@10 (cosine distance of category
vectors) of the re-ordered lists.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from equilibra.data.datasets import load_real
from equilibra.data.split import exclusion_matrix, test_truth
from equilibra.data.training import build_interactions, default_weights
from equilibra.evaluate.offline import score_lists
from equilibra.models.popularity import item_categories
from equilibra.pipeline.registry import create_model
from equilibra.rank.diversity import mmr_order

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
DEPTH = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--algorithm", default="als")
    parser.add_argument("--out", type=Path, default=Path("docs/service"))
    args = parser.parse_args()
    data = load_real(args.data_dir, "taobao")
    protocol = data.protocol
    split = protocol.split_events(data.events)
    train = build_interactions(split.train, data.items, default_weights(data))
    truth = test_truth(train, split.test, exclude=protocol.exclude)
    model = create_model(args.algorithm).fit(train, data.items)
    top, scores = model.recommend(
        truth.users, DEPTH, exclude=exclusion_matrix(train, protocol.exclude)
    )
    categories, _ = item_categories(train, data.items)
    rows = []
    for weight in WEIGHTS:
        started = time.perf_counter()
        reordered = np.full((len(top), 20), -1, dtype=np.int64)
        for u in range(len(top)):
            valid = top[u] >= 0
            items, values = top[u][valid], scores[u][valid]
            order = mmr_order(values, categories[items], weight, 20)
            picked = items[order][:20]
            reordered[u, : len(picked)] = picked
        metrics = score_lists(reordered, train, truth, item_vectors=categories)
        rows.append(
            {
                "weight": weight,
                "ndcg@10": metrics["ndcg@10"],
                "recall@20": metrics["recall@20"],
                "diversity@10": metrics["diversity@10"],
                "coverage@10": metrics["coverage@10"],
                "ms_per_list": 1000 * (time.perf_counter() - started) / max(len(top), 1),
            }
        )
        print(rows[-1], file=sys.stderr)
    command = "python benchmarks/diversity.py " + " ".join(sys.argv[1:])
    lines = [
        "# Diversity against accuracy (Taobao sample)",
        "",
        f"Made by `{command.strip()}`: `{args.algorithm}`'s top {DEPTH} per test user "
        f"({len(top):,} users), re-ordered by MMR over item categories.",
        "",
        "| MMR weight λ | NDCG@10 | Recall@20 | intra-list diversity@10 | coverage@10 |"
        " ms per list |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['weight']:.1f} | {r['ndcg@10']:.4f} | {r['recall@20']:.4f} | "
        f"{r['diversity@10']:.3f} | {r['coverage@10']:.3f} | {r['ms_per_list']:.2f} |"
        for r in rows
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diversity.json").write_text(json.dumps(rows, indent=1))
    (args.out / "diversity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
