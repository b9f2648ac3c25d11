"""A/B tests: assignment by hash, the always-valid statistics, and a split run in the simulator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from equilibra.evaluate.experiments import (
    MIN_IMPRESSIONS,
    Experiment,
    SplitTest,
    Variant,
    assign,
    bucket,
)
from equilibra.explore.feedback import ClosedImpression
from equilibra.explore.spec import parse_policy


def two_arms(name: str = "t", shares: tuple[float, float] = (0.5, 0.5), metric: str = "reward"):
    return Experiment(
        name, [Variant("control", shares[0]), Variant("treatment", shares[1])], metric=metric
    )


def test_assignment_is_stable_follows_the_shares_and_differs_between_experiments() -> None:
    users = [f"u{i}" for i in range(20_000)]
    first = [assign("exp-a", u, [0.3, 0.7]) for u in users]
    assert first == [assign("exp-a", u, [0.3, 0.7]) for u in users]  # every request, every replica
    assert abs(np.mean(first) - 0.7) < 0.015
    other = np.array([bucket("exp-b", u) for u in users])
    same = np.array([bucket("exp-a", u) for u in users])
    assert abs(np.corrcoef(other, same)[0, 1]) < 0.03  # one test's split says nothing of another's
    assert same.min() >= 0.0 and same.max() < 1.0


@pytest.mark.parametrize(
    "variants, metric, field",
    [
        ([Variant("a", 1.0)], "reward", "variants"),
        ([Variant("a", 0.5), Variant("a", 0.5)], "reward", "variants"),
        ([Variant("a", 0.5), Variant("b", 0.6)], "reward", "variants"),
        ([Variant("a", 0.0), Variant("b", 1.0)], "reward", "variants[0].share"),
        ([Variant("a", 0.5), Variant("b", 0.5)], "ctr", "metric"),
    ],
)
def test_a_definition_that_cannot_run_names_its_field(variants, metric, field) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Experiment("t", variants, metric=metric)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.02, 0.3), st.floats(0.5, 1.5), st.floats(0.2, 0.8), st.integers(0, 2**31 - 1))
def test_the_difference_stream_estimates_the_difference_and_its_interval_covers_it(
    rate: float, lift: float, share: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    test = two_arms(shares=(1 - share, share))
    means = {"control": rate, "treatment": min(rate * lift, 1.0)}
    for _ in range(4000):
        arm = "treatment" if rng.random() < share else "control"
        test.record(arm, float(rng.random() < means[arm]))
    row = test.summary()["variants"][1]["vs_control"]
    low, high = row["interval"]
    truth = means["treatment"] - means["control"]
    assert low <= truth <= high or abs(row["difference"] - truth) < 3 * (high - low)
    assert low < row["difference"] < high


def test_the_difference_is_as_tight_as_the_two_arms_intervals_combined() -> None:
    """The difference stream is centred: its width comes from the metric's spread, not its level.
    Uncentred, a click rate near one half made it √2 times wider than the arms' own intervals."""
    rng = np.random.default_rng(3)
    test = two_arms()
    for _ in range(20_000):
        arm = "treatment" if rng.random() < 0.5 else "control"
        test.record(arm, float(rng.random() < 0.5))
    control, treatment = test.summary()["variants"]
    widths = [row["interval"][1] - row["interval"][0] for row in (control, treatment)]
    low, high = treatment["vs_control"]["interval"]
    assert high - low < 1.15 * float(np.hypot(*widths))


def test_a_and_a_tests_looked_at_often_rarely_declare_a_difference() -> None:
    """The benchmark runs 200 A/A tests in the simulator; here 100 on plain coin flips."""
    rng = np.random.default_rng(7)
    declared = 0
    for run in range(100):
        test = two_arms(f"aa-{run}")
        flips = rng.random(3000) < 0.1
        arms = rng.random(3000) < 0.5
        for t in range(3000):
            test.record("treatment" if arms[t] else "control", float(flips[t]))
            looked = (t + 1) % 100 == 0
            if looked and test.summary()["variants"][1]["vs_control"]["decision"] != "undecided":
                declared += 1
                break
    assert declared <= 10  # the level is 5 %; the benchmark's 200 runs measure it


def test_a_clear_difference_is_declared_and_none_before_the_minimum() -> None:
    test = two_arms()
    rng = np.random.default_rng(1)
    for t in range(6000):
        arm = "treatment" if t % 2 else "control"
        test.record(arm, float(rng.random() < (0.3 if arm == "treatment" else 0.1)))
        if t + 1 < 2 * MIN_IMPRESSIONS - 2:
            assert test.summary()["variants"][1]["vs_control"]["decision"] == "undecided"
    summary = test.summary()
    assert summary["variants"][1]["vs_control"]["decision"] == "better"
    assert summary["variants"][1]["vs_control"]["relative"] == pytest.approx(2.0, rel=0.25)
    again = Experiment.from_state(test.state_dict())
    assert again.summary() == summary


def closed(variant: str | None, kinds: dict[str, float]) -> ClosedImpression:
    return ClosedImpression("i", "u", 0.0, "", "", [], None, variant, kinds)


@pytest.mark.parametrize(
    "metric, expected", [("click", 1.0), ("purchase", 0.0), ("revenue", 0.0), ("add_to_cart", 1.0)]
)
def test_split_tests_take_each_closed_impression_of_their_own_arms(metric, expected) -> None:
    test = two_arms(metric=metric)
    split = SplitTest(
        test, {"control": parse_policy("greedy"), "treatment": parse_policy("greedy")}
    )
    split.observe(closed("t/treatment", {"click": 2.0, "add_to_cart": 1.0}))
    split.observe(closed("other/treatment", {"click": 1.0}))  # another test's impression
    split.observe(closed(None, {"click": 1.0}))  # served outside any test
    rows = test.summary()["variants"]
    assert [r["impressions"] for r in rows] == [0, 1]
    assert rows[1]["mean"] == expected


def test_a_split_run_in_the_simulator_routes_users_and_learning_to_their_arm(tiny_shop) -> None:
    from equilibra.evaluate.simulate import SimConfig, Simulator, World

    config = SimConfig(
        scenario="stationary", requests=1500, seed=2, factors=8, candidates=30, slate_size=5,
        feedback_delay=10,
    )  # fmt: skip
    world = World.build(tiny_shop.events, config)
    arms = {"control": parse_policy("egreedy:0.1"), "treatment": parse_policy("thompson")}
    split = SplitTest(two_arms("sim"), arms, lifts={"treatment": 1.5})
    result = Simulator(world, config).run(split)
    rows = result.summary["experiment"]["variants"]
    assert sum(r["impressions"] for r in rows) == 1500
    users = {str(u) for u in range(len(world.user_ids))}
    expected = sum(1 for u in users if split.experiment.variant_of(u).name == "treatment")
    assert 0.35 < expected / len(users) < 0.65
    assert rows[1]["mean"] > rows[0]["mean"]  # a 1.5x click lift (and a different policy)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.floats(0, 5)), min_size=2, max_size=60))
def test_the_clustered_variance_is_that_of_the_sums_per_unit(pairs) -> None:
    from equilibra.evaluate.experiments import ClusteredMean

    clustered, single = ClusteredMean(), ClusteredMean()
    for unit, value in pairs:
        clustered.update(value, f"user-{unit}")
        single.update(value)  # each impression its own unit
    values = np.array([v for _, v in pairs])
    mean = values.mean()
    assert single.variance_sum() == pytest.approx(((values - mean) ** 2).sum(), abs=1e-6)
    sums = {}
    for unit, value in pairs:
        total, count = sums.get(unit, (0.0, 0))
        sums[unit] = (total + value, count + 1)
    expected = sum((s - c * mean) ** 2 for s, c in sums.values())
    assert clustered.variance_sum() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert clustered.mean == pytest.approx(mean)


def test_the_prediction_interval_adds_the_live_runs_noise() -> None:
    from equilibra.evaluate.experiments import prediction_interval

    ci = [0.10, 0.14]
    assert prediction_interval(0.12, ci, [1.0, 1.0, 1.0], 10, 100) == pytest.approx(ci)
    noisy = [0.0, 3.0, 1.0, 0.0, 2.0]
    short = prediction_interval(0.12, ci, noisy, 10, 100)
    long = prediction_interval(0.12, ci, noisy, 10, 100_000)
    assert short[0] < long[0] < ci[0] and ci[1] < long[1] < short[1]
    assert long == pytest.approx(ci, abs=1e-3)  # a long live run: the estimate's noise only
