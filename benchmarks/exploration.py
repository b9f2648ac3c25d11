"""Exploration benchmark: off-policy estimates on the Open Bandit Dataset, slate-selection cost,
and every policy (and the peers) through every simulator scenario, side by side.

    python benchmarks/exploration.py --data-dir ../shared/datasets --part obd --part timing \
        --part simulate --dataset ml-100k --requests 5000 --seeds 2 --jobs 2 \
        --out docs/exploration

Writes `results.json`, `exploration.md` (tables) and per-scenario PNG curves into `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import make_policy

from equilibra.evaluate.bandit_logs import evaluate_on_log, fit_reward_model, read_obd
from equilibra.evaluate.ope import bootstrap, estimate, point_estimates
from equilibra.evaluate.simulate import SCENARIOS, SimConfig, Simulator, World
from equilibra.explore import Candidates, parse_policy
from equilibra.explore.marginals import top_k_rows

EPSILONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
OURS = (
    "greedy",
    *(f"egreedy:{e:g}" for e in EPSILONS),
    "gorse:0.1,0.1",
    "ucb:1",
    "thompson",
    "softmax:0.2",
    "linucb:0.1",
    "lints:0.05",
)
PEERS = ("vw-epsilon:0.1", "vw-squarecb", "mab-ts")
OBD_POLICIES = (
    "uniform",
    "greedy",
    "egreedy:0.1",
    "egreedy:0.3",
    "ucb:1",
    "thompson",
    "softmax:0.2",
    "linucb:0.5",
    "gorse:0.1,0.1",
)
# Open Bandit Pipeline's published example (BTS evaluated from random logs, campaign all).
OBP_REFERENCE = {"dm": 0.157, "dr": 0.292, "ips": 0.311}


# --- Open Bandit Dataset ---


def bts_action_dist(bts: pd.DataFrame, n_items: int) -> np.ndarray:
    """The BTS policy's marginal per (item, position), averaged over the logged week: the
    frequency of each item at each position in the BTS log (its propensities change with the
    production posterior, so their time average is the static policy OBP's example evaluates)."""
    counts = np.zeros((n_items, 3))
    np.add.at(counts, (bts["item_id"].to_numpy(), bts["position"].to_numpy() - 1), 1.0)
    return counts / counts.sum(axis=0, keepdims=True)


def run_obd(data_dir: Path, runs: int, n_boot: int) -> dict[str, Any]:
    random_path = data_dir / "obd/random/all/all.csv"
    bts = pd.read_csv(data_dir / "obd/bts/all/all.csv", index_col=0)
    log = read_obd(random_path)
    truth = bootstrap(bts["click"].to_numpy(dtype=float), n_boot=n_boot)
    n_items = int(max(log.action.max(), bts["item_id"].max())) + 1
    dist = bts_action_dist(bts, n_items)
    target = dist[log.action, log.position]
    weight = target / log.pscore
    # OBP's example fits its reward model on the whole log it evaluates: so does this part.
    q = fit_reward_model(log)
    pairs = zip(log.position, log.item, strict=True)
    q_logged = np.array([q.predict(int(p), [i])[0] for p, i in pairs])
    by_position = [dist[:, p] @ q.predict(p, np.arange(n_items)) for p in range(3)]
    expected = np.array(by_position)[log.position]
    full = estimate(log.reward, log.pscore, target, expected, q_logged, n_boot=n_boot)
    # OBP's protocol: relative error |V̂ − V| / V over bootstrap resamples of the random log.
    rng = np.random.default_rng(0)
    errors: dict[str, list[float]] = {name: [] for name in ("ips", "snips", "dm", "dr")}
    for _ in range(runs):
        idx = rng.integers(0, len(log), len(log))
        values = point_estimates(log.reward[idx], weight[idx], expected[idx], q_logged[idx])
        for name, value in values.items():
            errors[name].append(abs(value - truth.value) / truth.value)
    policies = {}
    for spec in OBD_POLICIES:
        started = time.perf_counter()
        evaluation = evaluate_on_log(log, spec, n_boot=n_boot)
        policies[spec] = {
            **{k: v.as_dict() for k, v in evaluation.estimates.items()},
            "seconds": time.perf_counter() - started,
        }
        print(f"obd {spec}: {policies[spec]['snips']}", file=sys.stderr)
    return {
        "rounds": len(log),
        "bts_on_policy_ctr": truth.as_dict(),
        "random_logged_ctr": float(log.reward.mean()),
        "bts_from_random": {k: v.as_dict() for k, v in full.items()},
        "relative_error": {
            name: {"mean": float(np.mean(v)), "median": float(np.median(v))}
            for name, v in errors.items()
        },
        "obp_reference": OBP_REFERENCE,
        "runs": runs,
        "policies": policies,
    }


# --- off-policy evaluation of simulator logs against on-policy values ---

OPE_LOGGERS = ("softmax:0.5", "softmax:0.5,learn=false")
OPE_TARGETS = ("egreedy:0.2,learn=false", "softmax:0.2,learn=false")


def run_ope_simulation(seeds: int, requests: int) -> dict[str, Any]:
    """Logs of a learning and a frozen logger on the tiny synthetic shop, each evaluated for
    two fixed policies, against what those earn per shown slot on the same world."""
    from equilibra.data.synthetic import generate_shop
    from equilibra.evaluate.bandit_logs import log_from_frame

    events = generate_shop("tiny", seed=7).events
    rows = []
    for seed in range(seeds):
        config = SimConfig(
            scenario="stationary",
            requests=requests,
            slate_size=5,
            candidates=40,
            factors=8,
            segments=3,
            feedback_delay=10,
            seed=seed,
            log_impressions=True,
        )
        simulator = Simulator(World.build(events, config), config)
        slots = config.requests * config.slate_size
        values = {
            target: simulator.run(parse_policy(target), log_propensities=False).summary[
                "expected_reward"
            ]
            / slots
            for target in OPE_TARGETS
        }
        for logger in OPE_LOGGERS:
            logged = simulator.run(parse_policy(logger))
            log = log_from_frame(pd.DataFrame(logged.impressions), "simulation")
            for target in OPE_TARGETS:
                estimates = evaluate_on_log(log, target, n_boot=500, seed=seed).estimates
                rows.append(
                    {
                        "seed": seed,
                        "logger": logger,
                        "target": target,
                        "on_policy": values[target],
                        **{name: e.as_dict() for name, e in estimates.items()},
                    }
                )
                print(f"ope-sim {seed} {logger} → {target}: {rows[-1]}", file=sys.stderr)
    return {"seeds": seeds, "requests": requests, "rows": rows}


# --- cost of choosing a slate ---


def run_timing(repeats: int = 200) -> dict[str, Any]:
    """Median cost of one slate of 20 from 500, propensities included; for the Monte-Carlo
    policies also how far the logged propensities are from a 100,000-draw count."""
    rng = np.random.default_rng(0)
    n, k = 500, 20
    c = Candidates(
        items=np.array([f"item{i}" for i in range(n)]),
        scores=rng.normal(size=n),
        features=rng.normal(size=(n, 16)),
        popularity=rng.random(n),
        age=rng.random(n),
    )
    out = {}
    specs = (*OURS, "uniform", "thompson:draw=exact", "thompson:draw=exact,samples=256")
    for spec in specs:
        policy = parse_policy(spec)
        for _i in range(5000):  # a state with history: 5,000 outcomes over the candidates
            j = int(rng.integers(n))
            policy.learn_one(
                c.items[j], float(rng.random() < 0.05), prior=0.05, features=c.features[j]
            )
        random_scores = policy.name in {"softmax", "thompson", "lints"}
        times, slates = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            slate = policy.select(c, k, rng)
            times.append(time.perf_counter() - started)
            slates.append(slate)
        out[spec] = {
            "median_ms": 1000 * float(np.median(times)),
            "p90_ms": 1000 * float(np.quantile(times, 0.9)),
            "propensity_error": float(np.median([s.propensity_error for s in slates])),
        }
        if random_scores:
            out[spec]["relative_error"] = _propensity_accuracy(policy, c, k, slates[:20], rng)
        print(f"timing {spec}: {out[spec]}", file=sys.stderr)
    return out


def _propensity_accuracy(
    policy: Any, c: Candidates, k: int, slates: list[Any], rng: np.random.Generator
) -> float:
    """Median |logged − reference| / reference over the shown items of some slates, the
    reference counted over 100,000 draws of the policy's own scores."""
    counts = np.zeros((len(c), k))
    for _ in range(10):
        top = top_k_rows(policy._draw(c, rng, 10_000), k)
        np.add.at(counts, (top, np.arange(k)[None, :]), 1)
    reference = counts / 100_000
    errors = []
    for slate in slates:
        truth = reference[slate.indices, np.arange(len(slate))]
        logged = np.array([e.propensity for e in slate.entries])
        ok = truth > 0
        errors.extend(np.abs(logged[ok] - truth[ok]) / truth[ok])
    return float(np.median(errors))


# --- simulator ---


def simulate_task(task: tuple[str, str, int, int, tuple[str, ...], str]) -> list[dict[str, Any]]:
    data_dir, dataset, seed, requests, specs, scenario = task
    from equilibra.data.datasets import load_real

    events = load_real(Path(data_dir), dataset).events
    config = SimConfig(scenario=scenario, requests=requests, seed=seed)
    world = World.build(events, config)
    simulator = Simulator(world, config)
    rows = []
    for spec in specs:
        result = simulator.run(make_policy(spec), log_propensities=False)
        rows.append(
            {
                "dataset": dataset,
                "scenario": scenario,
                "seed": seed,
                "policy": spec,
                **result.summary,
                "curve": result.curve.to_dict(orient="list"),
            }
        )
        print(
            f"{dataset} {scenario} seed {seed} {spec}: {result.summary['reward_per_request']:.4f} "
            f"({result.seconds:.1f}s)",
            file=sys.stderr,
        )
    return rows


def run_simulation(
    data_dir: Path,
    datasets: list[str],
    requests: int,
    seeds: int,
    jobs: int,
    specs: tuple[str, ...],
    scenarios: tuple[str, ...] = SCENARIOS,
) -> list[dict[str, Any]]:
    tasks = [
        (str(data_dir), dataset, seed, requests, specs, scenario)
        for dataset in datasets
        for scenario in scenarios
        for seed in range(seeds)
    ]
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for part in pool.map(simulate_task, tasks):
            rows.extend(part)
    return rows


# --- report ---


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _spread(value: float) -> str:
    return f" ± {value:.3f}" if np.isfinite(value) else ""


def _ope_simulation_lines(ope: dict[str, Any]) -> list[str]:
    frame = pd.DataFrame(ope["rows"])
    lines = [
        "",
        "## Off-policy estimates of simulator logs against on-policy values",
        "",
        f"Tiny synthetic shop, stationary, {ope['requests']:,} requests of 5 from 40 candidates, "
        f"{ope['seeds']} seeds; each fixed target also run on the same world (same users and "
        "responses): its expected reward per shown slot is the value to cover.",
        "",
        "| logger | estimator | intervals covering the value | estimate / value, mean | min–max |",
        "|---|---|---:|---:|---:|",
    ]
    for logger, part in frame.groupby("logger", sort=False):
        for name in ("ips", "snips", "dr", "dm"):
            low = part[name].map(lambda e: e["ci"][0])
            high = part[name].map(lambda e: e["ci"][1])
            ratio = part[name].map(lambda e: e["value"]) / part["on_policy"]
            covered = int(((low <= part["on_policy"]) & (part["on_policy"] <= high)).sum())
            lines.append(
                f"| {logger} | {name} | {covered} / {len(part)} | {ratio.mean():.3f} | "
                f"{ratio.min():.3f}–{ratio.max():.3f} |"
            )
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Exploration benchmark", "", "Made by:", ""]
    lines += [f"- {part}: `{cmd}`" for part, cmd in results.get("commands", {}).items()]
    lines.append("")
    if "obd" in results:
        obd = results["obd"]
        truth = obd["bts_on_policy_ctr"]
        lines += [
            "## Open Bandit Dataset (campaign `all`, 10,000-round samples)",
            "",
            f"On-policy CTR of ZOZOTOWN's Bernoulli TS (the `bts` log): **{truth['value']:.5f}** "
            f"(95 % CI {truth['ci'][0]:.5f}–{truth['ci'][1]:.5f}); random log CTR "
            f"{obd['random_logged_ctr']:.5f}.",
            "",
            "Evaluating that BTS policy from the random log "
            f"(relative error over {obd['runs']} bootstrap resamples; OBP's published example "
            "in the last column):",
            "",
            "| estimator | estimate | 95 % CI | mean rel. error | median rel. error | OBP |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for name, est in obd["bts_from_random"].items():
            err = obd["relative_error"].get(name, {})
            lines.append(
                f"| {name} | {est['value']:.5f} | {est['ci'][0]:.5f}–{est['ci'][1]:.5f} | "
                f"{_fmt(err.get('mean'), 3)} | {_fmt(err.get('median'), 3)} | "
                f"{_fmt(obd['obp_reference'].get(name), 3)} |"
            )
        lines += [
            "",
            "Each Equilibra policy, learning as it replays the random log (estimated CTR):",
            "",
            "| policy | IPS | SNIPS | DM | DR | seconds |",
            "|---|---|---|---|---|---:|",
        ]
        for spec, est in obd["policies"].items():
            cells = [
                f"{est[n]['value']:.5f} [{est[n]['ci'][0]:.5f}, {est[n]['ci'][1]:.5f}]"
                for n in ("ips", "snips", "dm", "dr")
            ]
            lines.append(f"| {spec} | " + " | ".join(cells) + f" | {est['seconds']:.1f} |")
    if "ope_sim" in results:
        lines += _ope_simulation_lines(results["ope_sim"])
        lines.append("")
    if "timing" in results:
        lines += [
            "## Choosing a slate of 20 from 500 candidates (propensities included)",
            "",
            "| policy | median ms | p90 ms | stated propensity s.e. | "
            "median relative error vs 100k draws |",
            "|---|---:|---:|---:|---:|",
        ]
        for spec, t in results["timing"].items():
            lines.append(
                f"| {spec} | {t['median_ms']:.3f} | {t['p90_ms']:.3f} | "
                f"{_fmt(t['propensity_error'], 4)} | {_fmt(t.get('relative_error'), 3)} |"
            )
        lines.append("")
    if "simulate" in results:
        frame = pd.DataFrame(results["simulate"]).drop(columns=["curve"], errors="ignore")
        metrics = [
            "reward_per_request",
            "regret_share",
            "explore_share",
            "coverage",
            "new_items_clicked",
            "new_item_requests_to_first_click",
            "seconds",
        ]
        frame[metrics] = frame[metrics].apply(pd.to_numeric, errors="coerce")
        lines += [
            "## Simulator",
            "",
            "Mean ± standard deviation over seeds; reward is the raw value (click 1, cart 2, "
            "purchase 5) per request; regret share is the expected reward lost to the oracle "
            "over the same candidates.",
        ]
        for (dataset, scenario), part in frame.groupby(["dataset", "scenario"], sort=False):
            table = part.groupby("policy", sort=False)[metrics].mean()
            spread = part.groupby("policy", sort=False)[
                ["reward_per_request", "regret_share"]
            ].std()
            best = table["reward_per_request"].max()
            lines += [
                "",
                f"### {dataset} · {scenario} ({int(part['requests'].iloc[0]):,} requests, "
                f"{part['seed'].nunique()} seeds)",
                "",
                "| policy | reward/request | regret share | explore share | coverage | "
                "new items clicked | requests to a new item's first click | seconds |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for policy, row in table.iterrows():
                mark = "**" if row["reward_per_request"] == best else ""
                sd = spread.loc[policy]
                lines.append(
                    f"| {policy} | {mark}{row['reward_per_request']:.4f}{mark}"
                    f"{_spread(sd['reward_per_request'])} | "
                    f"{row['regret_share']:.3f}{_spread(sd['regret_share'])} | "
                    f"{row['explore_share']:.3f} | "
                    f"{row['coverage']:.3f} | {_fmt(row['new_items_clicked'], 3)} | "
                    f"{_fmt(row['new_item_requests_to_first_click'], 0)} | "
                    f"{row['seconds']:.1f} |"
                )
    return "\n".join(lines) + "\n"


def plot_simulation(rows: list[dict[str, Any]], out: Path) -> None:
    from equilibra.evaluate.sim_report import plot_runs
    from equilibra.evaluate.simulate import SimResult

    frame = pd.DataFrame(rows)
    for (dataset, scenario), part in frame[frame["seed"] == 0].groupby(["dataset", "scenario"]):
        results = [
            SimResult(r["policy"], {}, {}, pd.DataFrame(r["curve"]), 0.0)
            for _, r in part.iterrows()
            if r["policy"] in {"greedy", "egreedy:0.05", "egreedy:0.2", "thompson", "ucb:1",
                               "gorse:0.1,0.1", "linucb:0.1", "vw-squarecb", "mab-ts"}
        ]  # fmt: skip
        plot_runs(results, out / f"{dataset}-{scenario}", f"{scenario} · {dataset}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument(
        "--part", action="append", choices=["obd", "ope-sim", "timing", "simulate", "controller"]
    )
    parser.add_argument("--ope-seeds", type=int, default=8)
    parser.add_argument("--ope-requests", type=int, default=3000)
    parser.add_argument("--dataset", action="append")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100, help="OBD bootstrap runs")
    parser.add_argument("--n-boot", type=int, default=500)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--policy", action="append", help="only these specs (peers included)")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--out", type=Path, default=Path("docs/exploration"))
    args = parser.parse_args()
    parts = args.part or ["obd", "ope-sim", "timing", "simulate"]
    args.out.mkdir(parents=True, exist_ok=True)
    # Parts run separately land in one report: earlier parts are kept unless re-run.
    saved = args.out / "results.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
    command = "python benchmarks/exploration.py " + " ".join(sys.argv[1:])
    commands = results.setdefault("commands", {})
    for part in parts:
        if part == "simulate" and args.policy and commands.get(part):
            commands[part] = f"{commands[part]}`, then for some policies `{command}"
        else:
            commands[part] = command
    if "obd" in parts:
        results["obd"] = run_obd(args.data_dir, args.runs, args.n_boot)
    if "ope-sim" in parts:
        results["ope_sim"] = run_ope_simulation(args.ope_seeds, args.ope_requests)
    if "timing" in parts:
        results["timing"] = run_timing()
    if "controller" in parts:
        # The balance controller against every fixed setting: its own report (balance.py).
        from balance import SCENARIOS as ALL_SCENARIOS
        from balance import run_part

        run_part(
            args.data_dir,
            args.dataset or ["ml-100k"],
            args.scenario or list(ALL_SCENARIOS),
            max(args.seeds, 5),
            args.requests,
            args.jobs,
            not args.no_peers,
            args.out / "controller",
            ["simulate", "overhead"],
            "python " + " ".join(sys.argv),
        )
    if "simulate" in parts:
        specs = tuple(args.policy) if args.policy else OURS + (() if args.no_peers else PEERS)
        rows = run_simulation(
            args.data_dir,
            args.dataset or ["ml-100k"],
            args.requests,
            args.seeds,
            args.jobs,
            specs,
            tuple(args.scenario or SCENARIOS),
        )
        if not args.policy:  # the curves of a partial run would leave the others out
            plot_simulation(rows, args.out)
        # The curves are in the plots; the saved results keep the summaries only.
        fresh = [{k: v for k, v in row.items() if k != "curve"} for row in rows]
        # A run of some policies replaces their rows and keeps the others' (same settings).
        ran = {(r["dataset"], r["scenario"], r["seed"], r["policy"]) for r in fresh}
        kept = [
            r
            for r in results.get("simulate", [])
            if (r["dataset"], r["scenario"], r["seed"], r["policy"]) not in ran
            and r.get("requests") == args.requests
        ]
        order = {spec: i for i, spec in enumerate(OURS + PEERS)}
        results["simulate"] = sorted(kept + fresh, key=lambda r: order.get(r["policy"], len(order)))
    saved.write_text(json.dumps(results, default=float))
    report = markdown(results)
    (args.out / "exploration.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
