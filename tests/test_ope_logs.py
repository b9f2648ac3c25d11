"""`equilibra ope` on Equilibra's own impression logs: validated, honest intervals, no look-ahead,
and right against the value a policy actually earns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from equilibra.evaluate.bandit_logs import (
    evaluate_on_log,
    log_from_frame,
    path_spreads,
    replay,
    resampled,
    write_impressions,
)
from equilibra.evaluate.ope import estimate
from equilibra.evaluate.simulate import SimConfig, Simulator, World
from equilibra.explore import parse_policy

CANDIDATES = '{"items":["a","b","c"],"scores":[3,2,1],"prior":[0.3,0.2,0.1]}'


def log_frame(impressions: int = 40, slots: int = 2, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(impressions):
        shown = rng.permutation(["a", "b", "c"])[:slots]
        for position, item in enumerate(shown, start=1):
            rows.append(
                {
                    "impression_id": f"imp{i}",
                    "timestamp": 1_767_000_000.0 + i,
                    "user_id": f"u{i % 7}",
                    "position": position,
                    "item_id": item,
                    "propensity": 1 / 3,
                    "reward": float(rng.random() < 0.3),
                    "candidates": CANDIDATES if position == 1 else None,
                }
            )
    return pd.DataFrame(rows)


def ope(tmp_path, frame: pd.DataFrame, *extra: str):
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "ope.json"
    done = run_cli(
        "ope", "--logs", path, "--format", "equilibra", "--policy", "greedy",
        "--n-boot", "50", "--json", out, *extra,
    )  # fmt: skip
    return done, (json.loads(out.read_text()) if done.returncode == 0 else None)


@pytest.mark.parametrize(
    ("column", "row", "value", "message"),
    [
        ("propensity", 3, 0.0, "line 5 (impression imp1, position 2): propensity 0.0 must lie"),
        ("propensity", 0, "x", "propensity 'x' must lie in (0, 1]"),
        (
            "reward",
            2,
            "lots",
            "line 4 (impression imp1, position 1): reward 'lots' is not a number",
        ),
        ("position", 1, 0, "position must be a whole number >= 1"),
        ("item_id", 0, "zzz", "item zzz is not among its impression's candidates"),
    ],
)
def test_a_bad_log_is_an_error_naming_its_row_and_field(tmp_path, column, row, value, message):
    """Before: a propensity of 0 went through a second, unchecked copy of the estimators and
    came out as SNIPS 0.0 with interval [0, 0]."""
    frame = log_frame().astype({column: object})
    frame.loc[row, column] = value
    done, _ = ope(tmp_path, frame)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_an_error_in_a_log_out_of_time_order_names_the_right_line(tmp_path):
    frame = log_frame(impressions=3)
    frame = frame.iloc[::-1].reset_index(drop=True)  # newest first
    frame.loc[5, "item_id"] = "zzz"  # line 7: the first slot of imp0, the earliest impression
    done, _ = ope(tmp_path, frame)
    assert done.returncode == 2
    assert "line 7 (impression imp0, position 1): item zzz" in done.stderr, done.stderr


def test_unreadable_candidates_and_open_impressions_are_counted_not_hidden(tmp_path):
    """Before: impressions whose candidates JSON did not parse were skipped silently."""
    frame = log_frame()
    frame.loc[frame["impression_id"] == "imp3", "candidates"] = '{"items": ["a", '
    frame.loc[frame["impression_id"] == "imp5", "reward"] = None  # its window is still open
    done, report = ope(tmp_path, frame)
    assert done.returncode == 0, done.stderr
    assert report["skipped"] == {
        "open_impressions": 1,
        "impressions_without_candidates": 1,
        "pinned_rows": 0,
    }
    assert report["impressions"] == 38 and report["rounds"] == 76
    assert "left out: 1 open impressions, 1 impressions without candidates" in done.stderr


def test_the_bootstrap_resamples_whole_impressions():
    """Slots of one impression share a user and a moment; here they share the reward outright.
    Resampling slots would treat 2 copies as 2 observations and shrink the interval by √2."""
    rng = np.random.default_rng(4)
    n, k = 3000, 4
    per_impression = (rng.random(n) < 0.2).astype(float)
    reward = np.repeat(per_impression, k)
    clusters = np.repeat(np.arange(n), k)
    ones = np.ones(n * k)
    together = estimate(reward, ones * 0.5, ones * 0.5, clusters=clusters, n_boot=400)["ips"]
    apart = estimate(reward, ones * 0.5, ones * 0.5, n_boot=400)["ips"]
    width = together.high - together.low
    assert width == pytest.approx(2 * (apart.high - apart.low), rel=0.25)
    # The honest width: that of the per-impression rewards.
    assert width == pytest.approx(2 * 1.96 * per_impression.std() / np.sqrt(n), rel=0.15)


def test_the_replay_never_looks_ahead():
    """Before: the reward model behind DM/DR and the base rate were fitted on the whole log."""
    frame = log_frame(impressions=200)
    frame["reward"] = (frame["timestamp"] >= frame["timestamp"].quantile(0.5)).astype(float)
    log = log_from_frame(frame, "test")
    policy = parse_policy("thompson")
    start_rate = policy.base_rate
    result = replay(log, policy, impressions_per_batch=50)
    first_batch = np.arange(100)  # 50 impressions × 2 slots
    assert np.all(result.q_logged[first_batch] == 0.0)  # nothing seen yet
    assert np.all(result.expected[first_batch] == 0.0)
    # The second batch knows only the first (all rewards 0 so far).
    assert np.all(result.q_logged[100:200] == 0.0)
    assert result.q_logged[-1] > 0.3
    assert start_rate == 0.05  # the first batch ran on the policy's own prior rate


def test_a_resampled_log_holds_whole_impressions_in_log_order():
    log = log_from_frame(log_frame(impressions=60, slots=2), "test")
    sample = resampled(log, np.random.default_rng(3))
    assert len(sample) == len(log) and len(np.unique(sample.impression)) == 60
    assert np.all(np.diff(sample.impression) >= 0)  # contiguous, in order
    starts = np.flatnonzero(np.r_[True, sample.impression[1:] != sample.impression[:-1]])
    drawn = [sample.describe(int(row)) for row in starts]
    assert len(set(drawn)) < 60  # with replacement: some impressions twice, some not at all
    for row in range(len(sample)):  # each row is a copy of one row of the log, candidates too
        original = next(r for r in range(len(log)) if log.describe(r) == sample.describe(row))
        assert sample.item[row] == log.item[original]
        assert sample.reward[row] == log.reward[original]
        assert list(sample.candidates(row).items) == list(log.candidates(original).items)


def test_the_path_interval_holds_the_one_replays_and_widens_for_a_learning_policy():
    """Thompson learns from the log, so which impressions a sample holds moves its path: the
    spread over resampled replays is the spread of the whole procedure."""
    frame = log_frame(impressions=300, slots=2, seed=1)
    frame["reward"] = ((frame["item_id"] == "c") & (np.arange(len(frame)) % 3 > 0)).astype(float)
    log = log_from_frame(frame, "test")
    one = evaluate_on_log(log, "thompson", n_boot=100, seed=0).estimates
    paths = evaluate_on_log(log, "thompson", n_boot=100, seed=0, paths=12).estimates
    spreads = path_spreads(log, "thompson", 12, seed=0)
    assert spreads["dr"] > 0 and spreads["snips"] > 0
    for name in ("snips", "dr"):
        assert paths[name].value == one[name].value
        assert paths[name].low <= one[name].low and paths[name].high >= one[name].high
        half = 1.959964 * spreads[name]
        assert paths[name].low <= paths[name].value - half + 1e-12
        assert paths[name].high >= paths[name].value + half - 1e-12


def test_ope_reads_the_impression_log_from_a_store(tmp_path, tiny_shop):
    from equilibra.store import open_store

    config = SimConfig(
        requests=300, slate_size=4, candidates=30, factors=8, segments=3, log_impressions=True
    )
    result = Simulator(World.build(tiny_shop.events, config), config).run(parse_policy("thompson"))
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    with open_store(url) as store:
        store.append_impressions(pd.DataFrame(result.impressions))
    csv = tmp_path / "log.csv"
    write_impressions(result.impressions, csv)
    reports = []
    for source in (["--db", url], ["--logs", csv]):
        out = tmp_path / "ope.json"
        done = run_cli(
            "ope", *source, "--format", "equilibra", "--policy", "egreedy:0.1",
            "--n-boot", "50", "--json", out,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        reports.append(json.loads(out.read_text()))
    assert reports[0]["rounds"] == reports[1]["rounds"] == 1200
    for name, stored in reports[0]["estimates"].items():
        from_file = reports[1]["estimates"][name]
        assert stored["value"] == pytest.approx(from_file["value"], rel=1e-9)
        assert stored["ci"] == pytest.approx(from_file["ci"], rel=1e-9)
    done = run_cli("ope", "--db", url, "--format", "obd", "--policy", "greedy")
    assert done.returncode == 2 and "--format equilibra" in done.stderr


END_TO_END = [
    (seed, target)
    for seed in (0, 1, 2)
    for target in ("egreedy:0.2,learn=false", "softmax:0.2,learn=false")
]


@pytest.fixture(scope="module")
def logged_worlds(tiny_shop):
    """Per seed: a world, and the log of a learning softmax:0.5 run through it."""
    worlds = {}
    for seed in sorted({seed for seed, _ in END_TO_END}):
        config = SimConfig(
            scenario="stationary",
            requests=3000,
            slate_size=5,
            candidates=40,
            factors=8,
            segments=3,
            feedback_delay=10,
            seed=seed,
            log_impressions=True,
        )
        simulator = Simulator(World.build(tiny_shop.events, config), config)
        logged = simulator.run(parse_policy("softmax:0.5"))
        worlds[seed] = (config, simulator, log_from_frame(pd.DataFrame(logged.impressions), "sim"))
    return worlds


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "target"), END_TO_END)
def test_off_policy_estimates_cover_what_the_policy_earns_on_policy(logged_worlds, seed, target):
    """A simulator log of a known learning policy (softmax:0.5), evaluated for a fixed one
    (frozen at its prior), lands within its interval of the value that policy earns per shown
    slot when it runs on the same world (same users, same arrivals, same responses)."""
    config, simulator, log = logged_worlds[seed]
    on_policy = simulator.run(parse_policy(target), log_propensities=False)
    value = on_policy.summary["expected_reward"] / (config.requests * config.slate_size)
    estimates = evaluate_on_log(log, target, n_boot=500, seed=seed).estimates
    print(
        f"seed {seed} {target}: on-policy {value:.4f}; "
        + "; ".join(f"{k} {e.value:.4f} [{e.low:.4f}, {e.high:.4f}]" for k, e in estimates.items())
    )
    for name in ("ips", "snips", "dr"):
        assert estimates[name].low <= value <= estimates[name].high, (name, value, estimates[name])
