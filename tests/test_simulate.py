"""The simulator: reproducible, sane bookkeeping, every scenario, logs that `ope` can read."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from equilibra.evaluate.bandit_logs import evaluate_on_log, read_equilibra, write_impressions
from equilibra.evaluate.simulate import SCENARIOS, SimConfig, Simulator, World
from equilibra.explore import parse_policy


def config(scenario: str = "stationary", **overrides: object) -> SimConfig:
    values = dict(
        scenario=scenario,
        requests=600,
        slate_size=5,
        candidates=40,
        factors=8,
        new_item_slots=5,
        segments=3,
        curve_points=20,
        feedback_delay=10,
    )
    values.update(overrides)
    return SimConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def events(tiny_shop: object) -> pd.DataFrame:
    return tiny_shop.events  # type: ignore[attr-defined]


def test_same_seed_same_run(events: pd.DataFrame) -> None:
    cfg = config()
    first = Simulator(World.build(events, cfg), cfg).run(parse_policy("thompson"))
    second = Simulator(World.build(events, cfg), cfg).run(parse_policy("thompson"))
    summary = {k: v for k, v in first.summary.items() if k != "seconds"}
    assert summary == {k: v for k, v in second.summary.items() if k != "seconds"}
    other = config(seed=1)
    third = Simulator(World.build(events, other), other).run(parse_policy("thompson"))
    assert third.summary["reward"] != first.summary["reward"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_runs_with_sane_bookkeeping(events: pd.DataFrame, scenario: str) -> None:
    cfg = config(scenario)
    world = World.build(events, cfg)
    result = Simulator(world, cfg).run(parse_policy("egreedy:0.2"))
    curve = result.curve
    # The oracle ranks the same candidates by the truth: no policy beats it in expectation.
    assert np.all(np.diff(curve["cumulative_regret"]) >= -1e-9)
    assert curve["request"].iloc[-1] == cfg.requests
    s = result.summary
    assert 0 <= s["regret_share"] <= 1 and 0 < s["coverage"] <= 1
    assert s["explore_share"] == pytest.approx(0.2, abs=0.05)
    if scenario == "new_items":
        assert s["new_items_released"] > 0
    if scenario == "new_users":
        assert (~world.known_users).sum() > 0


def test_exploring_finds_new_items_greedy_never_shows(events: pd.DataFrame) -> None:
    cfg = config("new_items", requests=800)
    world = World.build(events, cfg)
    simulator = Simulator(world, cfg)
    greedy = simulator.run(parse_policy("greedy"))
    exploring = simulator.run(parse_policy("egreedy:0.3"))
    assert exploring.summary["new_items_clicked"] > greedy.summary["new_items_clicked"]
    assert exploring.summary["coverage"] > greedy.summary["coverage"]


def test_logged_impressions_evaluate_off_policy(events: pd.DataFrame, tmp_path: object) -> None:
    cfg = config(log_impressions=True)
    result = Simulator(World.build(events, cfg), cfg).run(parse_policy("uniform"))
    path = tmp_path / "impressions.csv"  # type: ignore[operator]
    write_impressions(result.impressions, path)
    log = read_equilibra(path)
    assert len(log) == cfg.requests * cfg.slate_size
    assert np.allclose(log.pscore, 1 / cfg.candidates)
    # Evaluating the logging policy itself: every weight is 1, IPS is the logged mean.
    same = evaluate_on_log(log, "uniform", n_boot=50)
    assert same.estimates["ips"].value == pytest.approx(log.reward.mean())
    greedy = evaluate_on_log(log, "greedy", n_boot=50)
    for name in ("ips", "snips", "dm", "dr"):
        assert np.isfinite(greedy.estimates[name].value)


def test_simulate_and_ope_commands(tmp_path: object) -> None:
    out = tmp_path / "sim.json"  # type: ignore[operator]
    logs = tmp_path / "log.csv"  # type: ignore[operator]
    plots = tmp_path / "plots"  # type: ignore[operator]
    done = run_cli(
        "simulate", "--scenario", "drift", "--policy", "egreedy:0.1", "--policy", "greedy",
        "--requests", "300", "--json", out, "--plots", plots, "--log", logs,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert [run["policy"] for run in report["runs"]] == ["egreedy:0.1", "greedy"]
    assert sorted(p.name for p in plots.iterdir()) == ["explore.png", "regret.png", "reward.png"]
    done = run_cli(
        "ope",
        "--logs",
        logs,
        "--format",
        "equilibra",
        "--policy",
        "thompson",
        "--n-boot",
        "50",
        "--json",
        tmp_path / "ope.json",
    )  # type: ignore[operator]
    assert done.returncode == 0, done.stderr
    estimates = json.loads((tmp_path / "ope.json").read_text())  # type: ignore[operator]
    assert estimates["rounds"] == 3000
    assert set(estimates["estimates"]) == {"ips", "snips", "dm", "dr"}
    for bad in (["--scenario", "meteor"], ["--policy", "bandit"], ["--requests", "0"]):
        done = (
            run_cli("simulate", *bad, "--requests", "10")
            if "--requests" not in bad
            else (run_cli("simulate", *bad))
        )
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.realdata
def test_ope_on_the_open_bandit_dataset(tmp_path: object) -> None:
    from conftest import dataset

    logs = dataset("obd", "random", "all", "all.csv")
    out = tmp_path / "ope.json"  # type: ignore[operator]
    done = run_cli("ope", "--logs", logs, "--policy", "uniform", "--n-boot", "50", "--json", out)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["rounds"] == 10_000
    # The random log's policy is uniform over 80 items: evaluating uniform is on-policy.
    assert report["estimates"]["ips"]["value"] == pytest.approx(0.0038)
    low, high = report["estimates"]["snips"]["ci"]
    assert low < 0.0038 < high
    done = run_cli("ope", "--logs", logs, "--format", "equilibra", "--policy", "greedy")
    assert done.returncode == 2 and "not an Equilibra impression log" in done.stderr
