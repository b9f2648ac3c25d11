"""The impression log as design.md states it, written by the simulator and read by `ope`:
positions from 1, every shown item's propensity in (0, 1], its error stated, its inverse an
unbiased importance weight."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from equilibra.data.columns import IMPRESSION_COLUMNS
from equilibra.data.impressions import decode_candidates
from equilibra.evaluate.simulate import SimConfig, Simulator, World
from equilibra.explore import Candidates, parse_policy
from equilibra.explore.impressions import slate_rows

EXACT = ["greedy", "egreedy:0.2", "ucb:1", "gorse:0.1,0.1", "linucb:0.5", "uniform", "adaptive"]
RANDOM_SCORES = [
    "thompson",
    "thompson:draw=exact",
    "thompson:belief=lift,draw=exact",
    "softmax:0.2",
    "lints:0.05",
]


@pytest.fixture(scope="module")
def world_and_config(tiny_shop: object) -> tuple[World, SimConfig]:
    config = SimConfig(
        scenario="stationary",
        requests=400,
        slate_size=10,
        candidates=40,
        factors=8,
        segments=3,
        feedback_delay=10,
        log_impressions=True,
    )
    return World.build(tiny_shop.events, config), config  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec", EXACT + RANDOM_SCORES)
def test_every_shown_item_logs_a_positive_propensity(world_and_config, spec: str) -> None:
    """Before: `lints:0.05` logged 0 for ~7 % of rows (items tied in every draw were ordered
    one way when served and the other way when counted), `thompson:draw=exact` for rare
    explorations (counted over draws that never showed them)."""
    world, config = world_and_config
    result = Simulator(world, config).run(parse_policy(spec))
    log = pd.DataFrame(result.impressions)
    assert list(log.columns) == list(IMPRESSION_COLUMNS)
    assert len(log) == config.requests * config.slate_size
    assert log["position"].min() == 1 and log["position"].max() == config.slate_size
    assert (log["propensity"] > 0).all() and (log["propensity"] <= 1).all()
    assert (log["propensity_error"] >= 0).all()
    if spec in EXACT:
        assert (log["propensity_error"] == 0).all()
    else:
        assert (log["propensity_error"] > 0).mean() > 0.1
    # The reward is written back when the window closes: by the end, every row has one.
    assert log["reward"].notna().all()
    first = log[log["position"] == 1]
    assert (
        first["candidates"].notna().all()
        and log.loc[log["position"] > 1, "candidates"].isna().all()
    )
    logged = decode_candidates(first["candidates"].iloc[0])
    assert len(logged.items) == config.candidates and logged.prior is not None
    for column in ("prior", "score", "exposure", "reason", "segment", "policy"):
        assert log[column].notna().all(), column


def test_identical_linear_candidates_share_their_chances() -> None:
    """Two candidates with the same prior and features tie in every draw: the slate orders
    them at random, and each logs half of their joint chance — never 0."""
    rng = np.random.default_rng(3)
    n, k = 12, 4
    features = rng.normal(size=(n, 3))
    prior = rng.uniform(0.02, 0.2, n)
    features[7], prior[7] = features[2], prior[2]
    c = Candidates(items=np.arange(n), scores=prior, prior=prior, features=features)
    policy = parse_policy("lints:0.3")
    seen = {2: 0, 7: 0}
    logged: dict[int, list[float]] = {2: [], 7: []}
    for _ in range(3000):
        slate = policy.select(c, k, rng)
        for entry, index in zip(slate.entries, slate.indices, strict=True):
            assert entry.propensity > 0
            if index in seen and entry.position == 1:
                seen[index] += 1
                logged[index].append(entry.propensity)
    assert seen[2] > 50 and seen[7] > 50
    assert seen[2] == pytest.approx(seen[7], rel=0.25)
    assert np.mean(logged[2]) == pytest.approx(np.mean(logged[7]), rel=0.15)


@pytest.mark.parametrize("spec", RANDOM_SCORES)
def test_logged_inverse_propensities_are_unbiased_weights(spec: str) -> None:
    """E[1{i at j} / p̂] = 1 for every (item, position): weighted by how often each cell is
    shown, the mean inverse weight per position is 1."""
    rng = np.random.default_rng(11)
    n, k = 25, 4
    features = np.column_stack([rng.normal(size=(n, 3)), np.ones(n)])
    c = Candidates(items=np.arange(n), scores=rng.normal(size=n), features=features)
    policy = parse_policy(spec)
    for _ in range(300):
        i = int(rng.integers(n))
        policy.learn_one(i, float(rng.random() < 0.1), prior=0.05, features=features[i])
    draws = 4000
    weight = np.zeros((n, k))
    hits = np.zeros((n, k))
    for _ in range(draws):
        slate = policy.select(c, k, rng)
        for entry, index in zip(slate.entries, slate.indices, strict=True):
            weight[index, entry.position - 1] += 1.0 / entry.propensity
            hits[index, entry.position - 1] += 1
    frequency = hits / draws
    per_position = (frequency * weight / draws).sum(axis=0)
    np.testing.assert_allclose(per_position, 1.0, atol=0.05)


def test_slate_rows_follow_the_contract() -> None:
    c = Candidates(
        items=np.array(["a", "b", "c"]),
        scores=np.array([2.0, 1.0, 0.5]),
        segment="known",
        placement="home",
    )
    slate = parse_policy("egreedy:0.5").select(c, 2, np.random.default_rng(0))
    rows = slate_rows(
        slate,
        c,
        impression_id="imp",
        timestamp=100.0,
        user_id="u1",
        base_rate=0.05,
        model_version="7",
        exposure=[1.0, 0.5],
        context={"page": "front"},
    )
    assert [r["position"] for r in rows] == [1, 2]
    assert [r["exposure"] for r in rows] == [1.0, 0.5]
    assert rows[0]["placement"] == "home" and rows[0]["model_version"] == "7"
    assert rows[0]["context"] == '{"page": "front"}' and rows[1]["context"] is None
    assert all(r["reward"] is None for r in rows)
    assert decode_candidates(rows[0]["candidates"]).items.tolist() == ["a", "b", "c"]


def test_linear_thompson_without_features_shares_tied_places() -> None:
    """Candidates with no features and equal scores tie in every draw: each of g tied items
    holds each of their g places with chance 1/g, and every position's column sums to 1."""
    c = Candidates(
        items=np.array(list("abcd")),
        scores=np.array([1.0, 1.0, 1.0, 0.0]),
        features=np.zeros((4, 2)),
    )
    policy = parse_policy("lints:0.1")
    slate = policy.select(c, 3, np.random.default_rng(0))
    assert [e.propensity for e in slate.entries] == pytest.approx([1 / 3] * 3)
    matrix = policy.marginals(c, 3, np.random.default_rng(1)).matrix
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0)
    np.testing.assert_allclose(matrix[:3], 1 / 3)


def test_nearly_parallel_linear_candidates_keep_both_orders() -> None:
    from equilibra.explore.marginals import linear_conditional_marginals

    rng = np.random.default_rng(0)
    x = np.array([[1.0, 0.5], [1.0, 0.5]])
    x[1] *= 1 + 1e-10
    mean = np.array([0.3, 0.3 + 1e-12])
    covariance = np.eye(2) * 0.01
    scores = mean + (rng.standard_normal((400, 2)) @ np.linalg.cholesky(covariance).T) @ x.T
    matrix, _ = linear_conditional_marginals(scores, mean, x, covariance, np.arange(2), 2)
    assert (matrix > 0.3).all()  # before: [[0, 1], [1, 0]], a shown item at propensity 0
    assert matrix[0, 0] == pytest.approx((scores[:, 0] > scores[:, 1]).mean(), abs=0.1)


def test_exact_thompson_with_priors_near_zero_never_ties() -> None:
    """Beta(2e-5, 20) draws are exactly 0.0 98 % of the time in floating point; the policy draws
    logits (exact even there), so such items still get distinct scores and honest chances."""
    c = Candidates(
        items=np.array(list("abcdef")),
        scores=np.zeros(6),
        prior=np.array([0.3, 0.2, 1e-6, 1e-6, 1e-6, 1e-6]),
    )
    policy = parse_policy("thompson:draw=exact")
    rng = np.random.default_rng(1)
    third = {i: 0 for i in range(2, 6)}
    for _ in range(800):
        slate = policy.select(c, 4, rng)
        assert all(e.propensity > 0 for e in slate.entries)
        third[int(slate.indices[2])] += 1
    assert min(third.values()) > 120  # the four tiny-prior items share the third place
    matrix = policy.marginals(c, 4, np.random.default_rng(2)).matrix
    np.testing.assert_allclose(matrix[2:, 2:], 0.25, atol=0.05)
