"""Spark ALS against implicit's ALS on the synthetic `retailrocket` preset, and fit time vs size.

    python benchmarks/spark_als.py [--scales 0.25,0.5,1,2] [--regs 0.01,0.05] \
        [--work /tmp/equilibra-spark] [--json docs/scale/spark_als.json]

At each size (the preset scaled in users, items and events), both fit the same training events
of the shop protocol of design.md (a global temporal cut; targets are carts and purchases of
items seen in training; carted/bought items excluded; the full catalogue ranked). implicit's
ALS fits the local snapshot (events already in memory); Spark (local[2], its JVM already
started) reads the training events from Parquet and runs `train_on_spark` through to factors on
the driver (its own validation, cleaning and cells). Spark's factors are then put in the local
snapshot's id order and scored by the same code. Both use factors 64, 15 iterations, alpha 10
and log weighting; the regularisation is each one's own (Spark's regParam is per cell, ALS-WR),
so `--regs` lists the Spark values to run. One run per size and model: the fits take minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from equilibra.data.split import global_temporal_split, test_truth
from equilibra.data.synthetic import generate_shop, preset
from equilibra.data.training import build_interactions
from equilibra.evaluate.offline import evaluate_model
from equilibra.evaluate.ope import ratio_bootstrap
from equilibra.models.factorization import ALS
from equilibra.pipeline.spark.models import SPARK_ALS_DEFAULTS

SETTINGS = {"factors": 64, "iterations": 15, "alpha": 10.0, "weighting": "log", "seed": 42}
IMPLICIT_REG = 0.05  # models.factorization.ALS's default


def scaled_shop(scale: float, seed: int = 42):  # type: ignore[no-untyped-def]
    base = preset("retailrocket")
    config = preset(
        "retailrocket",
        n_users=int(base.n_users * scale),
        n_items=int(base.n_items * scale),
        total_views=int(base.total_views * scale),
        total_carts=int(base.total_carts * scale),
        total_purchases=int(base.total_purchases * scale),
    )
    return generate_shop(config, seed=seed)


def in_local_order(model: ALS, artifact: Any, train: Any) -> ALS:
    """Spark's factors re-indexed into the local snapshot's users and items."""
    out = ALS(**SETTINGS)
    out.n_users_, out.n_items_ = train.shape
    users = artifact.users.to_dense(train.users.ids)
    items = artifact.items.to_dense(train.items.ids)
    out.user_factors_ = np.zeros((train.shape[0], model.factors), dtype=np.float32)
    out.item_factors_ = np.zeros((train.shape[1], model.factors), dtype=np.float32)
    out.user_factors_[users >= 0] = model.user_factors_[users[users >= 0]]
    out.item_factors_[items >= 0] = model.item_factors_[items[items >= 0]]
    return out


def _brief(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in ("users", "ndcg@10", "recall@20", "hitrate@10")}


def ratio_interval(ours: np.ndarray, theirs: np.ndarray) -> list[float]:
    """95 % paired bootstrap interval of mean(ours) / mean(theirs), resampling test users."""
    interval = ratio_bootstrap(ours, theirs, np.arange(len(ours)), n_boot=2000)
    return [round(interval.low, 3), round(interval.high, 3)]


def run_scale(scale: float, regs: list[float], work: Path, master: str) -> dict[str, Any]:
    """One size: implicit's ALS and Spark's on the same training events, timed and scored."""
    from equilibra.pipeline.spark.train import train_on_spark

    started = time.perf_counter()
    events = scaled_shop(scale).events
    generate_s = time.perf_counter() - started
    split = global_temporal_split(events)
    parquet = work / f"train-{scale}.parquet"
    split.train.to_parquet(parquet)
    started = time.perf_counter()
    train = build_interactions(split.train, None)
    local = ALS(**SETTINGS, regularization=IMPLICIT_REG).fit(train)
    implicit_s = time.perf_counter() - started
    truth = test_truth(train, split.test, exclude="converted")
    # Few test users cart or buy: the same lists scored against every test event as well
    # (views too), for a less noisy second reading.
    any_truth = test_truth(train, split.test.assign(event_type="purchase"), exclude="converted")
    reference = evaluate_model(local, train, truth, exclude="converted")
    reference_any = evaluate_model(local, train, any_truth, exclude="converted")
    rows: list[dict[str, Any]] = [
        {
            "model": "implicit ALS",
            "regularization": IMPLICIT_REG,
            "fit_seconds": round(implicit_s, 1),
            **reference.metrics,
            "any_event": _brief(reference_any.metrics),
        }
    ]
    print(json.dumps(rows[-1]), flush=True)
    for reg in regs:
        started = time.perf_counter()
        artifact = train_on_spark(
            "als", events=parquet, params={**SETTINGS, "regularization": reg}, master=master
        )
        spark_s = time.perf_counter() - started
        model = in_local_order(artifact.model, artifact, train)  # type: ignore[arg-type]
        result = evaluate_model(model, train, truth, exclude="converted")
        result_any = evaluate_model(model, train, any_truth, exclude="converted")
        rows.append(
            {
                "model": "Spark MLlib ALS",
                "regularization": reg,
                "fit_seconds": round(spark_s, 1),
                "spark_stages": artifact.info["engine"]["seconds"],
                "spark_users": artifact.info["data"]["users"],
                **result.metrics,
                "ndcg_ratio_ci": ratio_interval(result.per_user_ndcg, reference.per_user_ndcg),
                "any_event": {
                    **_brief(result_any.metrics),
                    "ndcg_ratio_ci": ratio_interval(
                        result_any.per_user_ndcg, reference_any.per_user_ndcg
                    ),
                },
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    base, base_any = rows[0]["ndcg@10"], rows[0]["any_event"]["ndcg@10"]
    for row in rows:
        row["ndcg_vs_implicit"] = round(row["ndcg@10"] / base, 3) if base else None
        row["any_event"]["ndcg_vs_implicit"] = (
            round(row["any_event"]["ndcg@10"] / base_any, 3) if base_any else None
        )
        row["fit_vs_implicit"] = round(row["fit_seconds"] / implicit_s, 2)
    return {
        "scale": scale,
        "events": len(events),
        "train_events": len(split.train),
        "generate_seconds": round(generate_s, 1),
        "snapshot": repr(train),
        "test_users": len(truth.users),
        "test_users_any_event": len(any_truth.users),
        "rows": rows,
    }


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [
        "# Spark MLlib ALS against implicit's ALS (synthetic `retailrocket` preset)",
        "",
        f"`{command}` — Spark {results['spark']} on `{results['master']}`, "
        f"{results['cores']} cores; settings {json.dumps(results['settings'])}; one run per "
        "size and model. Quality: the shop protocol (carts and purchases after the cut as "
        "targets); `any event`: every test event as a target (more users, less noise). "
        "Intervals: 95 % paired bootstrap over test users of NDCG(Spark) / NDCG(implicit).",
        "",
        "| size | train events | users × items | test users (any event) | implicit fit s "
        "| Spark fit s (cells + ALS) | Spark / implicit time | NDCG@10 implicit | NDCG@10 Spark "
        "| ratio [95 % CI] | any event: ratio [95 % CI] |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for size in sorted(results["scales"], key=lambda r: r["scale"]):
        implicit, *sparks = size["rows"]
        for spark in sparks:
            stages = spark["spark_stages"]
            ci = spark.get("ndcg_ratio_ci") or ["–", "–"]
            any_event = spark["any_event"]
            any_ci = any_event.get("ndcg_ratio_ci") or ["–", "–"]
            shape = size["snapshot"].split("(")[1].split(", nnz")[0]
            lines.append(
                f"| {size['scale']:g}× | {size['train_events']:,} | {shape} "
                f"| {size['test_users']:,} ({size['test_users_any_event']:,}) "
                f"| {implicit['fit_seconds']:.0f} | {spark['fit_seconds']:.0f} "
                f"({stages['cells']:.0f} + {stages['model']:.0f}) "
                f"| {spark['fit_vs_implicit']:.1f}× | {implicit['ndcg@10']:.4f} "
                f"| {spark['ndcg@10']:.4f} | {spark['ndcg_vs_implicit']} [{ci[0]}, {ci[1]}] "
                f"| {any_event['ndcg_vs_implicit']} [{any_ci[0]}, {any_ci[1]}] |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="0.25,0.5,1,2")
    parser.add_argument(
        "--regs",
        default=str(SPARK_ALS_DEFAULTS["regularization"]),
        help="Spark regParam values to run at every scale",
    )
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--work", type=Path, default=Path("/tmp/equilibra-spark"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="only render: merge the sizes of these --json results into --json/--markdown",
    )
    args = parser.parse_args()
    if args.merge:
        merged = [json.loads(path.read_text()) for path in args.merge]
        results = {**merged[0], "scales": [s for m in merged for s in m["scales"]]}
        _write(results, args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("EQUILIBRA_SPARK_DRIVER_MEMORY", "12g")
    from equilibra.pipeline.spark.session import spark_session

    started = time.perf_counter()
    with spark_session(args.master, "equilibra-benchmark") as spark:
        jvm_s = time.perf_counter() - started
        results: dict[str, Any] = {
            "master": args.master,
            "cores": os.cpu_count(),
            "spark": spark.version,
            "jvm_start_seconds": round(jvm_s, 1),
            "settings": SETTINGS,
        }
        regs = [float(r) for r in args.regs.split(",") if r]
        results["scales"] = []
        for scale in (float(s) for s in args.scales.split(",") if s):
            results["scales"].append(run_scale(scale, regs, args.work, args.master))
            if args.json:  # written after each size: the large ones take a long time
                args.json.write_text(json.dumps(results, indent=2) + "\n")
    _write(results, args)


def _write(results: dict[str, Any], args: argparse.Namespace) -> None:
    command = "python benchmarks/spark_als.py --scales " + ",".join(
        f"{s['scale']:g}" for s in sorted(results["scales"], key=lambda r: r["scale"])
    )
    text = markdown(results, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
