"""A/B tests in simulation: false positives of A/A tests looked at every 100 impressions, and how
fast a variant 10 % better is found.

    python benchmarks/experiments.py --data-dir ../shared/datasets [--aa-runs 200]
        [--requests 3000] [--ab-runs 200] [--ab-simulated 0] [--shop-users 0]
        [--preview-runs 0] [--preview-paths 0] [--only preview]
        [--out docs/experiments]

- **A/A in the simulator** (ml-100k world, stationary): two variants running the same policy
  (`egreedy:0.05`, one instance each), users split by hash, the metric `click` (an impression
  earned a click) read after every 100 closed impressions, as a person refreshing the dashboard
  would. A run "declares" when any look says better or worse. Beside it, the fixed-n 95 % z-test
  a hand-rolled dashboard shows, read at the same looks.
- **A/B on impression streams**: each impression a click with the A/A runs' measured rate p,
  the variant's with 1.1 p; the same statistics and looks. Detection rate, wrong-way decisions,
  and the median impressions to detection.
- **A/B in the simulator** (`--ab-simulated N`, slow): N runs where the variant's users click
  1.1 times as often (an effect injected in the simulator), as above.
- **A shop-sized population** (`--shop-users N`): the A/A and A/B runs again on a world built
  from the synthetic demo shop with N users. ml-100k's 943 users are few enough that which of
  them land in which arm moves the metric about as much as the lift itself.
- **The preview** (`--preview-runs N`): the service's launch preview in the simulator. The shop
  runs `egreedy:0.2` and logs its impressions; each variant policy is then estimated off-policy
  on that log (SNIPS and DR, 95 % bootstrap intervals, as `POST /v1/experiments` does), and then
  run live on the same world for as many requests. Coverage: how often the live reward per shown
  slot lies within the preview's interval. `--only preview` runs this part alone and merges it
  into the saved results. `--preview-paths R` also reports the interval that holds the learning
  path: R replays, each on the log resampled by impression (`evaluate_on_log`'s `paths`).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

from equilibra.evaluate.experiments import (
    Experiment,
    SplitTest,
    Variant,
    metric_value,
    prediction_interval,
)
from equilibra.evaluate.simulate import SimConfig, Simulator, World
from equilibra.explore.spec import parse_policy

POLICY = "egreedy:0.05"
LOOK = 100


class Looked(SplitTest):
    """A split test that also reads, at every look, the fixed-n z-test a hand-rolled dashboard
    shows: per-impression variance, 1.96 standard errors."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.naive_first: int | None = None
        self.naive = {"A": [0, 0.0, 0.0], "B": [0, 0.0, 0.0]}  # n, sum, sum of squares

    def count(self, arm: str, value: float) -> None:
        stats = self.naive[arm]
        stats[0] += 1
        stats[1] += value
        stats[2] += value * value

    def observe(self, closed: Any) -> None:
        self.count(closed.variant.split("/", 1)[1], metric_value("click", closed))
        super().observe(closed)

    def _look(self) -> None:
        super()._look()
        if self.naive_first is None and _naive_declares(self.naive["A"], self.naive["B"]):
            self.naive_first = self.closed


def _naive_declares(control: list[float], variant: list[float]) -> bool:
    if min(control[0], variant[0]) < 2:
        return False
    se2 = 0.0
    for n, total, squares in (control, variant):
        mean = total / n
        se2 += max(squares / n - mean * mean, 0.0) * n / (n - 1) / n
    difference = variant[1] / variant[0] - control[1] / control[0]
    return se2 > 0 and abs(difference) > 1.96 * math.sqrt(se2)


def two_arms(name: str) -> Experiment:
    return Experiment(name, [Variant("A", 0.5), Variant("B", 0.5)], metric="click")


@functools.cache
def world_events(data_dir: str, world: str) -> Any:
    """The events a simulated world is built from: a real dataset by name, or `shop-N`, the
    synthetic demo shop with N users (ml-100k has 943: which of them land in which arm then
    moves the metric about as much as a 10 % lift does)."""
    if world.startswith("shop-"):
        from equilibra.data.synthetic import generate_shop, preset

        return generate_shop(preset("demo", n_users=int(world[5:])), seed=1).events
    from equilibra.data.datasets import load_real

    return load_real(Path(data_dir), world).events


def simulated_run(task: tuple[str, int, int, float, str]) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    data_dir, seed, requests, lift, world = task
    with threadpool_limits(1):
        events = world_events(data_dir, world)
        config = SimConfig(scenario="stationary", requests=requests, seed=seed)
        split = Looked(
            two_arms(f"run-{seed}"),
            {"A": parse_policy(POLICY), "B": parse_policy(POLICY)},
            look_every=LOOK,
            lifts={"B": lift},
        )
        Simulator(World.build(events, config), config).run(split, log_propensities=False)
    rows = split.experiment.summary()["variants"]
    return {
        "seed": seed,
        "lift": lift,
        "first": split.first_decision,
        "naive_first": split.naive_first,
        "impressions": [r["impressions"] for r in rows],
        "means": [r["mean"] for r in rows],
    }


PREVIEWED = ("egreedy:0.05", "thompson", "greedy")
LOGGING = "egreedy:0.2"


def preview_run(task: tuple[str, int, int, int]) -> list[dict[str, Any]]:
    """`paths` ≥ 2: also the interval that holds the learning path (`evaluate_on_log`'s
    `paths`), reported beside the one replay's, on the same estimate."""
    import tempfile

    from threadpoolctl import threadpool_limits

    from equilibra.data.datasets import load_real
    from equilibra.evaluate.bandit_logs import (
        Z95,
        evaluate_on_log,
        path_spreads,
        read_equilibra,
        widened,
        write_impressions,
    )
    from equilibra.evaluate.ope import Estimate

    data_dir, seed, requests, paths = task
    rows = []
    with threadpool_limits(1):
        events = load_real(Path(data_dir), "ml-100k").events
        config = SimConfig(scenario="stationary", requests=requests, seed=seed)
        simulator = Simulator(World.build(events, config), config)
        logged = simulator.run(parse_policy(LOGGING), log_propensities=True)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "log.csv"
            write_impressions(logged.impressions, path)
            log = read_equilibra(path)
        _, per_impression = np.unique(log.clusters, return_inverse=True)
        sums = np.bincount(per_impression, weights=log.reward)
        for spec in PREVIEWED:
            preview = evaluate_on_log(log, spec, n_boot=200, seed=seed).as_dict()["estimates"]
            spreads = path_spreads(log, spec, paths, seed) if paths >= 2 else {}
            live = simulator.run(parse_policy(spec), log_propensities=False).summary
            per_slot = live["reward"] / (requests * config.slate_size)
            row: dict[str, Any] = {"seed": seed, "policy": spec, "live": per_slot}
            for name in ("snips", "dr"):
                low, high = preview[name]["ci"]  # type: ignore[index]
                value = preview[name]["value"]  # type: ignore[index]
                wide = prediction_interval(value, [low, high], sums, config.slate_size, requests)
                row[name] = {"value": value, "ci": [low, high], "prediction": wide,
                             "covered": bool(low <= per_slot <= high),
                             "predicted": bool(wide[0] <= per_slot <= wide[1])}  # fmt: skip
                if name in spreads:
                    path = widened(Estimate(value, low, high), Z95 * spreads[name])
                    path_ci = [path.low, path.high]
                    path_wide = prediction_interval(
                        value, path_ci, sums, config.slate_size, requests
                    )
                    row[name].update(
                        path_sd=spreads[name], path_ci=path_ci, path_prediction=path_wide,
                        path_covered=bool(path_ci[0] <= per_slot <= path_ci[1]),
                        path_predicted=bool(path_wide[0] <= per_slot <= path_wide[1]),
                    )  # fmt: skip
            rows.append(row)
    return rows


def coverage(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len({r["seed"] for r in rows}), "policies": list(PREVIEWED)}
    for name in ("snips", "dr"):
        out[name] = {
            "covered_share": float(np.mean([r[name]["covered"] for r in rows])),
            "predicted_share": float(np.mean([r[name]["predicted"] for r in rows])),
            "by_policy": {
                spec: float(np.mean([r[name]["covered"] for r in rows if r["policy"] == spec]))
                for spec in PREVIEWED
            },
            "mean_abs_error": float(np.mean([abs(r[name]["value"] - r["live"]) for r in rows])),
            "mean_live": float(np.mean([r["live"] for r in rows])),
        }
        if all("path_covered" in r[name] for r in rows):
            by_policy = {
                s: float(np.mean([r[name]["path_predicted"] for r in rows if r["policy"] == s]))
                for s in PREVIEWED
            }
            out[name]["paths"] = {
                "covered_share": float(np.mean([r[name]["path_covered"] for r in rows])),
                "predicted_share": float(np.mean([r[name]["path_predicted"] for r in rows])),
                "predicted_by_policy": by_policy,
                "median_half_width": median_half_width(rows, name, "path_prediction"),
            }
        out[name]["median_half_width"] = median_half_width(rows, name, "prediction")
    return out


def median_half_width(rows: list[dict[str, Any]], name: str, interval: str) -> float:
    return float(np.median([(r[name][interval][1] - r[name][interval][0]) / 2 for r in rows]))


def stream_run(seed: int, rate: float, lift: float, impressions: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    split = Looked(two_arms(f"stream-{seed}"), {"A": _Inert(), "B": _Inert()}, look_every=LOOK)
    arms = rng.random(impressions) < 0.5
    clicks = rng.random(impressions) < np.where(arms, rate * lift, rate)
    experiment = split.experiment
    for t in range(impressions):
        arm = "B" if arms[t] else "A"
        experiment.record(arm, float(clicks[t]))
        split.count(arm, float(clicks[t]))
        split.closed += 1
        if split.closed % LOOK == 0:
            split._look()
        if split.first_decision is not None and split.naive_first is not None:
            break
    return {"seed": seed, "first": split.first_decision, "naive_first": split.naive_first}


class _Inert:
    """A stand-in policy: the stream runs never serve."""

    spec = "none"


def declared(runs: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(runs)
    ours = [r["first"] for r in runs if r["first"] is not None]
    naive = [r["naive_first"] for r in runs if r["naive_first"] is not None]
    better = [f for f in ours if f["decision"] == "better"]
    return {
        "runs": n,
        "declared": len(ours),
        "declared_share": len(ours) / n,
        "better": len(better),
        "worse": len(ours) - len(better),
        "median_impressions_to_detection": statistics.median(f["impressions"] for f in better)
        if better
        else None,
        "naive_declared_share": len(naive) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--aa-runs", type=int, default=200)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--ab-runs", type=int, default=200)
    parser.add_argument("--ab-impressions", type=int, default=400_000)
    parser.add_argument("--ab-simulated", type=int, default=0)
    parser.add_argument("--shop-users", type=int, default=0)
    parser.add_argument("--ab-requests", type=int, default=60_000)
    parser.add_argument("--preview-runs", type=int, default=0)
    parser.add_argument("--preview-paths", type=int, default=0)
    parser.add_argument("--only", choices=["preview"])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/experiments"))
    args = parser.parse_args()
    command = "python benchmarks/experiments.py " + " ".join(sys.argv[1:])
    results: dict[str, Any] = {"command": command, "policy": POLICY, "look_every": LOOK}
    saved = args.out / "experiments.json"
    if args.only == "preview":
        results = json.loads(saved.read_text())
        results["preview_command"] = command
    else:
        run_tests(args, results)
    if args.preview_runs:
        with Pool(args.processes) as pool:
            tasks = [(str(args.data_dir), 900 + s, args.requests, args.preview_paths)
                     for s in range(args.preview_runs)]  # fmt: skip
            rows = [row for run in pool.map(preview_run, tasks) for row in run]
        results["preview"] = {**coverage(rows), "requests": args.requests, "logging": LOGGING,
                              "paths": args.preview_paths}  # fmt: skip
        print("preview", results["preview"], file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(results, indent=1))
    (args.out / "experiments.md").write_text(markdown(results))
    print(markdown(results))


def run_tests(args: argparse.Namespace, results: dict[str, Any]) -> None:
    with Pool(args.processes) as pool:
        tasks = [(str(args.data_dir), seed, args.requests, 1.0, "ml-100k")
                 for seed in range(args.aa_runs)]  # fmt: skip
        aa = pool.map(simulated_run, tasks)
    rate = float(np.mean([m for r in aa for m in r["means"]]))
    results["aa_simulator"] = {**declared(aa), "requests": args.requests, "click_rate": rate}
    print("A/A", results["aa_simulator"], file=sys.stderr)
    ab = [stream_run(seed, rate, 1.1, args.ab_impressions) for seed in range(args.ab_runs)]
    results["ab_stream"] = {**declared(ab), "rate": rate, "lift": 1.1}
    results["ab_impressions"] = args.ab_impressions
    aa_stream = [stream_run(10_000 + s, rate, 1.0, 20_000) for s in range(args.ab_runs)]
    results["aa_stream"] = {**declared(aa_stream), "rate": rate, "impressions": 20_000}
    print("A/B stream", results["ab_stream"], file=sys.stderr)
    if args.ab_simulated:
        with Pool(args.processes) as pool:
            tasks = [(str(args.data_dir), 500 + s, args.ab_requests, 1.1, "ml-100k")
                     for s in range(args.ab_simulated)]  # fmt: skip
            simulated = pool.map(simulated_run, tasks)
        results["ab_simulator"] = {**declared(simulated), "requests": args.ab_requests}
        print("A/B simulator", results["ab_simulator"], file=sys.stderr)
    if args.shop_users:
        world = f"shop-{args.shop_users}"
        with Pool(args.processes) as pool:
            aa_tasks = [(str(args.data_dir), seed, args.requests, 1.0, world)
                        for seed in range(args.aa_runs)]  # fmt: skip
            ab_tasks = [(str(args.data_dir), 500 + s, args.ab_requests, 1.1, world)
                        for s in range(args.ab_simulated)]  # fmt: skip
            shop_aa, shop_ab = pool.map(simulated_run, aa_tasks), pool.map(simulated_run, ab_tasks)
        rate = float(np.mean([m for r in shop_aa for m in r["means"]]))
        results["shop"] = {
            "users": args.shop_users,
            "aa": {**declared(shop_aa), "requests": args.requests, "click_rate": rate},
            "ab": {**declared(shop_ab), "requests": args.ab_requests} if shop_ab else None,
        }
        print("shop", results["shop"], file=sys.stderr)


def markdown(results: dict[str, Any]) -> str:
    def share(x: float) -> str:
        return f"{100 * x:.1f} %"

    aa, ab, aas = results["aa_simulator"], results["ab_stream"], results["aa_stream"]
    lines = [
        "# A/B tests in simulation",
        "",
        f"Made by `{results['command']}`. Decisions are read every {results['look_every']} closed"
        " impressions; a run declares when any look says better or worse. The level is 95 %.",
        "",
        "| test | runs | impressions per run | declared (ours: confidence sequence) | "
        "declared (fixed-n z-test, same looks) | median impressions to detection |",
        "|---|---:|---:|---:|---:|---:|",
        f"| A/A in the simulator (ml-100k, `{results['policy']}` in both arms, metric `click`) "
        f"| {aa['runs']} | {aa['requests']:,} | {share(aa['declared_share'])} | "
        f"{share(aa['naive_declared_share'])} | — |",
        f"| A/A on click streams (rate {aas['rate']:.4f}) | {aas['runs']} | "
        f"{aas['impressions']:,} | {share(aas['declared_share'])} | "
        f"{share(aas['naive_declared_share'])} | — |",
        f"| A/B on click streams, variant 10 % better | {ab['runs']} | up to "
        f"{results.get('ab_impressions', 400_000):,} | {share(ab['declared_share'])} "
        f"({ab['worse']} the wrong way) | {share(ab['naive_declared_share'])} | "
        f"{int(ab['median_impressions_to_detection']):,} |"
        if ab["median_impressions_to_detection"] is not None
        else f"| A/B on click streams | {ab['runs']} | | {share(ab['declared_share'])} | | — |",
    ]
    if "ab_simulator" in results:
        s = results["ab_simulator"]
        median = s["median_impressions_to_detection"]
        lines.append(
            f"| A/B in the simulator, the variant's users click 1.1× as often | {s['runs']} | "
            f"{s['requests']:,} requests | {share(s['declared_share'])} ({s['worse']} the wrong "
            f"way) | {share(s['naive_declared_share'])} | "
            f"{'—' if median is None else f'{int(median):,}'} |"
        )
    if results.get("shop"):
        shop = results["shop"]
        aa_shop, ab_shop = shop["aa"], shop["ab"]
        world = f"the synthetic shop, {shop['users']:,} users"
        lines.append(
            f"| A/A in the simulator ({world}, metric `click`, rate {aa_shop['click_rate']:.4f}) "
            f"| {aa_shop['runs']} | {aa_shop['requests']:,} | {share(aa_shop['declared_share'])} "
            f"| {share(aa_shop['naive_declared_share'])} | — |"
        )
        if ab_shop:
            median = ab_shop["median_impressions_to_detection"]
            lines.append(
                f"| A/B in the simulator ({world}), the variant's users click 1.1× as often | "
                f"{ab_shop['runs']} | {ab_shop['requests']:,} requests | "
                f"{share(ab_shop['declared_share'])} ({ab_shop['worse']} the wrong way) | "
                f"{share(ab_shop['naive_declared_share'])} | "
                f"{'—' if median is None else f'{int(median):,}'} |"
            )
    if "preview" in results:
        v = results["preview"]
        lines += [
            "",
            f"**The preview** (`{results.get('preview_command', results['command'])}`):"
            f" {v['runs']} runs of {v['requests']:,} requests on ml-100k; the shop logs"
            f" `{v['logging']}`, each of {', '.join(f'`{p}`' for p in v['policies'])} is"
            " estimated off-policy on that log, then run live on the same world.",
            "",
            "| estimator | live value within the 95 % confidence interval | within the 95 %"
            " prediction interval | confidence interval, by policy | mean abs. error (live mean) |",
            "|---|---:|---:|---|---:|",
        ]
        for name in ("snips", "dr"):
            e = v[name]
            by = ", ".join(f"{k} {share(x)}" for k, x in e["by_policy"].items())
            lines.append(
                f"| {name.upper()} | {share(e['covered_share'])} | "
                f"{share(e['predicted_share'])} | {by} | "
                f"{e['mean_abs_error']:.4f} ({e['mean_live']:.4f}) |"
            )
        if all("paths" in v[name] for name in ("snips", "dr")):
            lines += [
                "",
                f"With the learning path in the interval (`--preview-paths {v['paths']}`: the"
                " replay bootstrapped whole on logs resampled by impression):",
                "",
                "| estimator | within the confidence interval | within the prediction interval"
                " | prediction interval, by policy | median half-width (one replay's) |",
                "|---|---:|---:|---|---:|",
            ]
            for name in ("snips", "dr"):
                e = v[name]["paths"]
                by = ", ".join(f"{k} {share(x)}" for k, x in e["predicted_by_policy"].items())
                lines.append(
                    f"| {name.upper()} | {share(e['covered_share'])} | "
                    f"{share(e['predicted_share'])} | {by} | {e['median_half_width']:.4f} "
                    f"({v[name]['median_half_width']:.4f}) |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
