"""Estimators against synthetic logs whose true policy value is known."""

import numpy as np
import pytest

from equilibra.evaluate import ope

N_ACTIONS = 5
TRUE_P = np.array([0.05, 0.10, 0.20, 0.30, 0.50])  # click probability of each action


def logs(n, rng, logging=None):
    logging = np.full(N_ACTIONS, 1 / N_ACTIONS) if logging is None else logging
    action = rng.choice(N_ACTIONS, size=n, p=logging)
    reward = (rng.random(n) < TRUE_P[action]).astype(float)
    return reward, action, logging[action]


EVALUATED = np.array([0.05, 0.05, 0.1, 0.3, 0.5])
TRUTH = float(EVALUATED @ TRUE_P)


def test_estimators_are_unbiased_and_intervals_cover():
    rng = np.random.default_rng(0)
    logging = np.array([0.4, 0.3, 0.15, 0.1, 0.05])  # unlike the evaluated policy
    hits = {"ips": 0, "snips": 0, "dm": 0, "dr": 0}
    means = {k: [] for k in hits}
    reps = 120
    for rep in range(reps):
        reward, action, pscore = logs(3_000, rng, logging)
        dist = np.tile(EVALUATED, (len(action), 1))
        # A deliberately biased reward model: DR must correct it, DM cannot.
        model = np.tile(TRUE_P * 0.8 + 0.02, (len(action), 1))
        result = ope.estimate_all(reward, action, pscore, dist, model, n_boot=200, seed=rep)
        for name in hits:
            est = result[name]
            means[name].append(est.value)
            hits[name] += est.low <= TRUTH <= est.high
    for name in ("ips", "snips", "dr"):
        bias = np.mean(means[name]) - TRUTH
        spread = np.std(means[name]) / np.sqrt(reps)
        assert abs(bias) < 4 * spread + 1e-3, (name, bias)
        assert 0.88 <= hits[name] / reps <= 0.99, (name, hits[name] / reps)
    assert hits["dm"] / reps < 0.5  # the biased model's DM misses: the test can fail


def test_same_policy_ips_is_the_logged_mean():
    rng = np.random.default_rng(1)
    reward, action, pscore = logs(2_000, rng)
    dist = np.full((len(action), N_ACTIONS), 1 / N_ACTIONS)
    result = ope.estimate_all(reward, action, pscore, dist, n_boot=50)
    assert result["ips"].value == pytest.approx(reward.mean())
    assert result["snips"].value == pytest.approx(reward.mean())


def test_slate_estimators_recover_a_known_value():
    rng = np.random.default_rng(2)
    n, k = 20_000, 3
    position_bias = np.array([1.0, 0.6, 0.3])
    logging = np.full(N_ACTIONS, 1 / N_ACTIONS)
    items = rng.choice(N_ACTIONS, size=(n, k), p=logging)  # independent positions
    reward = (rng.random((n, k)) < TRUE_P[items] * position_bias).astype(float)
    evaluated = EVALUATED
    truth = float((evaluated @ TRUE_P) * position_bias.sum())
    iips = ope.independent_ips_rounds(reward, logging[items], evaluated[items])
    assert iips.mean() == pytest.approx(truth, rel=0.05)
    cascade_logged = np.cumprod(logging[items], axis=1)
    cascade_eval = np.cumprod(evaluated[items], axis=1)
    rips = ope.reward_interaction_ips_rounds(reward, cascade_logged, cascade_eval)
    assert rips.mean() == pytest.approx(truth, rel=0.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pscore": np.array([0.0, 0.5])}, "pscore"),
        ({"action": np.array([0, 7])}, "action"),
        ({"action_dist": np.array([[0.5, 0.4], [0.5, 0.5]])}, "action_dist"),
        ({"reward": np.array([1.0])}, "same length"),
    ],
)
def test_invalid_inputs_are_named(kwargs, message):
    args = {
        "reward": np.array([1.0, 0.0]),
        "action": np.array([0, 1]),
        "pscore": np.array([0.5, 0.5]),
        "action_dist": np.array([[0.5, 0.5], [0.5, 0.5]]),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ope.ips_rounds(**args)
