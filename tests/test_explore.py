"""Slate policies: propensities are marginal probabilities, learning moves them, state persists."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from equilibra.errors import EquilibraError
from equilibra.explore import Candidates, FeedbackLedger, RewardConfig, parse_policy
from equilibra.explore.marginals import monte_carlo_marginals, stream_marginals, top_k_rows
from equilibra.explore.spec import load_policy, save_policy
from equilibra.explore.stats import ArmStats, LinearStats

EXACT = [
    "greedy",
    "egreedy:0.2",
    "egreedy:0.2,belief=lift",
    "ucb:1",
    "ucb:1,belief=lift",
    "gorse:0.2,0.1,pool_size=6",
    "uniform",
    "linucb:1",
    # the balance controller's policy: every stream in use (half the candidates are new)
    "adaptive:floor=0.2,start=0.3,new_age=0.5,new_cap=0.2,new_rate=0.05",
    "adaptive",
]
MONTE_CARLO = [
    "softmax:0.3,samples=4000",
    "thompson:samples=4000",
    "thompson:samples=4000,belief=lift",
    "thompson:draw=exact,samples=4000",
    "lints:0.3,samples=4000",
]
# What a service runs: conditional Monte Carlo at its default 32 draws.
DEFAULT_SAMPLES = [
    "softmax:0.3",
    "thompson",
    "thompson:belief=lift",
    "thompson:draw=exact",
    "thompson:draw=exact,belief=lift",
    "lints:0.3",
]


def candidates(n: int, seed: int = 0, dim: int = 4) -> Candidates:
    rng = np.random.default_rng(seed)
    return Candidates(
        items=np.array([f"i{i}" for i in range(n)]),
        scores=rng.normal(size=n),
        features=rng.normal(size=(n, dim)),
        popularity=rng.random(n),
        age=rng.random(n),
    )


def trained(spec: str, c: Candidates, seed: int = 1) -> object:
    """A policy with some feedback behind it, so its state is not just the prior."""
    policy = parse_policy(spec)
    rng = np.random.default_rng(seed)
    for _ in range(300):
        i = int(rng.integers(len(c)))
        policy.learn_one(c.items[i], float(rng.random() < 0.3), prior=0.05, features=c.features[i])
    return policy


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30),
    k=st.integers(1, 8),
    spec=st.sampled_from(EXACT),
    seed=st.integers(0, 10_000),
)
def test_exact_marginals_sum_to_one_per_position(n: int, k: int, spec: str, seed: int) -> None:
    c = candidates(n, seed)
    policy = trained(spec, c, seed)
    matrix = policy.marginals(c, k).matrix
    assert matrix.shape == (n, min(k, n))
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0, atol=1e-9)
    # An item appears at most once in a slate.
    assert np.all(matrix.sum(axis=1) <= 1 + 1e-9)
    assert np.all(matrix >= -1e-12)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 10),
    shares=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3),
    sizes=st.lists(st.integers(0, 14), min_size=2, max_size=2),
)
def test_stream_dp_matches_closed_form_when_pools_are_large(
    k: int, shares: list[float], sizes: list[int]
) -> None:
    total = sum(shares) + 1.0
    probs = np.array([1.0 / total, *[s / total for s in shares]])
    large = [k + 3] * (len(probs) - 1)
    from equilibra.explore.marginals import _streams_dp

    closed = stream_marginals(k, probs, large)
    dp = _streams_dp(k, probs, large)
    np.testing.assert_allclose(closed[0], dp[0], atol=1e-12)
    np.testing.assert_allclose(closed[1], dp[1], atol=1e-12)
    # With small pools (the DP path) each position still fills with probability one.
    pools = [sizes[i % 2] for i in range(len(probs) - 1)]
    exploit, pool = stream_marginals(k, probs, pools)
    np.testing.assert_allclose(exploit.sum(axis=0) + pool.sum(axis=0), 1.0, atol=1e-9)
    for s, size in enumerate(pools):
        assert pool[s].sum() <= size + 1e-9


def reference_streams(k: int, probs: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The slot-stream marginals by walking every state of draws taken per pool (the plain
    dynamic programme the vectorised one replaced)."""
    exploit, pool = np.zeros((k, k)), np.zeros((len(sizes), k))
    states = {(0,) * len(sizes): 1.0}
    for j in range(k):
        following: dict[tuple[int, ...], float] = {}
        for counts, mass in states.items():
            shares = {s: probs[s + 1] for s in range(len(sizes)) if counts[s] < sizes[s]}
            stay = 1.0 - sum(shares.values())
            exploit[j - sum(counts), j] += mass * stay
            following[counts] = following.get(counts, 0.0) + mass * stay
            for s, share in shares.items():
                pool[s, j] += mass * share
                bumped = tuple(c + (t == s) for t, c in enumerate(counts))
                following[bumped] = following.get(bumped, 0.0) + mass * share
        states = following
    return exploit, pool


@settings(max_examples=80, deadline=None)
@given(
    k=st.integers(1, 10),
    shares=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3),
    sizes=st.lists(st.integers(0, 12), min_size=3, max_size=3),
)
def test_vectorised_stream_dp_matches_walking_every_state(
    k: int, shares: list[float], sizes: list[int]
) -> None:
    from equilibra.explore.marginals import _streams_dp

    total = sum(shares) + 1.0
    probs = np.array([1.0 / total, *[s / total for s in shares]])
    pools = sizes[: len(probs) - 1]
    fast = _streams_dp(k, probs, pools)
    slow = reference_streams(k, probs, pools)
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-12)
    np.testing.assert_allclose(fast[1], slow[1], atol=1e-12)


def empirical(policy: object, c: Candidates, k: int, draws: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(c), k))
    for _ in range(draws):
        slate = policy.select(c, k, rng, propensities=False)
        counts[slate.indices, np.arange(len(slate))] += 1
    return counts / draws


@pytest.mark.parametrize("spec", EXACT)
def test_exact_propensities_match_draw_frequencies(spec: str) -> None:
    c = candidates(12, seed=3)
    policy = trained(spec, c)
    k, draws = 4, 4000
    expected = policy.marginals(c, k).matrix
    observed = empirical(policy, c, k, draws)
    tolerance = 4.5 * np.sqrt(expected * (1 - expected) / draws) + 2e-3
    assert np.all(np.abs(observed - expected) <= tolerance)


@pytest.mark.parametrize("spec", MONTE_CARLO)
def test_monte_carlo_propensities_match_draw_frequencies(spec: str) -> None:
    c = candidates(10, seed=4)
    policy = trained(spec, c)
    k, draws = 3, 3000
    marginals = policy.marginals(c, k, np.random.default_rng(0))
    np.testing.assert_allclose(marginals.matrix.sum(axis=0), 1.0, atol=1e-9)
    assert 0 < marginals.error < 0.01
    observed = empirical(policy, c, k, draws)
    both = np.sqrt(1 / draws + 1 / policy.samples)
    tolerance = 4.5 * np.sqrt(marginals.matrix * (1 - marginals.matrix)) * both + 3e-3
    assert np.all(np.abs(observed - marginals.matrix) <= tolerance)


@pytest.mark.parametrize("spec", EXACT + MONTE_CARLO + DEFAULT_SAMPLES)
def test_slate_entries_carry_the_marginal_of_their_position(spec: str) -> None:
    c = candidates(40, seed=5)
    policy = trained(spec, c)
    slate = policy.select(c, 10, np.random.default_rng(1))
    assert len(slate) == 10 and len(set(slate.indices.tolist())) == 10
    matrix = policy.marginals(c, 10, np.random.default_rng(2)).matrix
    for entry, index in zip(slate.entries, slate.indices, strict=True):
        assert entry.item == c.items[index]
        assert entry.reason
        assert entry.propensity > 0 and 1 <= entry.position <= 10
        assert (entry.propensity_error == 0) == (spec in EXACT)
        assert entry.propensity == pytest.approx(
            matrix[index, entry.position - 1],
            abs=5 * entry.propensity_error + 0.02 * (spec not in EXACT) + 1e-9,
        )


@pytest.mark.parametrize("belief", ["lift", "beta"])
def test_greedy_follows_the_prior_until_feedback_says_otherwise(belief: str) -> None:
    c = candidates(20, seed=6)
    policy = parse_policy(f"greedy:belief={belief}")
    first = policy.select(c, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(first.indices, np.argsort(-c.scores)[:3])
    assert np.all(first.propensities == 1.0) and not first.explore_flags.any()
    worst = int(np.argmin(c.scores))
    priors = c.prior_or(policy.base_rate)
    for _ in range(200):
        policy.learn_one(c.items[worst], 1.0, prior=float(priors[worst]))
        for best in first.indices:  # the top three disappoint
            policy.learn_one(c.items[best], 0.0, prior=float(priors[best]))
    after = policy.select(c, 3, np.random.default_rng(0)).indices.tolist()
    # Beta: 200 clicks put the item first. Lift: its lift is measured against the segment's
    # shared lift (raised by the same clicks), so it joins the top three.
    assert after[0] == worst if belief == "beta" else worst in after


def test_thompson_learns_per_segment() -> None:
    c = candidates(5, seed=8)
    policy = parse_policy("thompson:belief=lift")
    for _ in range(100):
        policy.learn_one("i0", 1.0, segment="new")
        policy.learn_one("i0", 0.0, segment="known")
    new = Candidates(c.items, c.scores, segment="new")
    known = Candidates(c.items, c.scores, segment="known")
    prior = float(new.prior_or(policy.base_rate)[0])
    # 100 clicks where the prior expected a few: the lift is large in one segment only.
    assert policy.mean(new)[0] > 5 * prior > prior / 2 > policy.mean(known)[0]


def test_ucb_flags_an_uncertain_item_as_exploration() -> None:
    c = candidates(6, seed=9)
    policy = parse_policy("ucb:3")
    for item in c.items[:5]:
        for _ in range(400):
            policy.learn_one(item, 0.05)
    slate = policy.select(c, 3, np.random.default_rng(0))
    assert 5 in slate.indices.tolist()
    assert slate.entries[slate.indices.tolist().index(5)].explore


@pytest.mark.parametrize("spec", EXACT + MONTE_CARLO)
def test_state_saves_and_restores(spec: str, tmp_path: object) -> None:
    c = candidates(15, seed=10)
    policy = trained(spec, c)
    path = tmp_path / "policy.json"  # type: ignore[operator]
    save_policy(policy, path)
    restored = load_policy(path)
    assert restored.spec == policy.spec
    np.testing.assert_allclose(
        restored.marginals(c, 4, np.random.default_rng(3)).matrix,
        policy.marginals(c, 4, np.random.default_rng(3)).matrix,
    )


def test_discounted_arm_forgets_old_rewards() -> None:
    stats = ArmStats(discount=0.9)
    stats.update("", "a", 1.0)
    for _ in range(10):
        stats.update("", "b", 0.0)
    rewards, counts = stats.lookup("", ["a", "b", "never"])
    assert rewards[0] == pytest.approx(0.9**10)
    assert counts[2] == 0 and rewards[2] == 0
    assert counts[1] == pytest.approx(sum(0.9**i for i in range(10)))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["home/known", "home/new", "pdp/known"]),
            st.text(min_size=1, max_size=6),
            st.floats(0, 1),
            st.floats(0.01, 1),
        ),
        max_size=60,
    ),
    st.sampled_from([1.0, 0.97]),
)
def test_arm_stats_survive_their_saved_state_exactly(
    updates: list[tuple[str, str, float, float]], discount: float
) -> None:
    stats = ArmStats(discount)
    for segment, item, reward, exposure in updates:
        stats.update(segment, item, reward, exposure)
    state = json.loads(json.dumps(stats.state_dict()))  # as a snapshot stores it
    restored = ArmStats.from_state(state)
    assert restored.step == stats.step and len(restored) == len(stats)
    for segment in ("home/known", "home/new", "pdp/known"):
        items = [*sorted({item for s, item, _, _ in updates if s == segment}), "never"]
        mine, theirs = stats.lookup(segment, items), restored.lookup(segment, items)
        for a, b in zip(mine, theirs, strict=True):
            assert a.tolist() == b.tolist()  # bit for bit
    assert restored.state_dict() == state  # the slots' layout does not show


def test_arm_stats_load_the_first_formats_per_arm_lists() -> None:
    first_format = {
        "discount": 1.0, "step": 3,
        "keys": [["home/known", "a"], ["home/new", "b"], ["home/known", "c"]],
        "reward": [1.0, 0.0, 0.5], "count": [2.0, 1.0, 1.0], "stamp": [1, 2, 3],
    }  # fmt: skip
    stats = ArmStats.from_state(first_format)
    rewards, counts = stats.lookup("home/known", ["c", "a", "b"])
    assert rewards.tolist() == [0.5, 1.0, 0.0] and counts.tolist() == [1.0, 2.0, 0.0]
    assert stats.lookup("home/new", ["b"])[1].tolist() == [1.0]


def test_linear_stats_match_the_direct_ridge_solution() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = x @ np.arange(5.0) + rng.normal(size=300) * 0.1
    stats = LinearStats(5, ridge=2.0)
    for row, target in zip(x, y, strict=True):
        stats.update(row, float(target))
    direct = np.linalg.solve(x.T @ x + 2.0 * np.eye(5), x.T @ y)
    np.testing.assert_allclose(stats.theta, direct, rtol=1e-8)
    gamma = 0.99
    discounted = LinearStats(5, ridge=2.0, discount=gamma)
    for row, target in zip(x, y, strict=True):
        discounted.update(row, float(target))
    w = gamma ** np.arange(299, -1, -1)
    a = (x * w[:, None]).T @ x + 2.0 * np.eye(5)
    # The ridge is restored every 256 updates, so it lies between its decayed and full value.
    assert np.allclose(discounted.theta, np.linalg.solve(a, (x * w[:, None]).T @ y), atol=0.05)


def test_ledger_attributes_delayed_feedback_within_the_window() -> None:
    config = RewardConfig(click=1, view=0, add_to_cart=2, purchase=5, revenue=0.1, cap=10)
    ledger = FeedbackLedger(config, window_s=60)
    ledger.record("imp1", "u1", 100.0, ["a", "b", "c"], priors=np.full(3, 0.1), segment="s")
    ledger.record("imp2", "u2", 110.0, ["a", "d"], priors=np.full(2, 0.1))
    assert ledger.observe("u1", "b", "click", 120.0, impression_id="imp1")
    assert ledger.observe("u1", "b", "purchase", 130.0, value=20.0)  # found through the user
    assert not ledger.observe("u1", "zzz", "click", 130.0)  # never shown
    assert not ledger.observe("u2", "d", "click", 500.0)  # after the window
    assert ledger.close(150.0) == []  # nothing is due yet: the policy does not move
    policy = parse_policy("thompson:belief=lift")
    outcomes = ledger.settle(policy, 165.0)
    assert [(o.item, o.raw_reward) for o in outcomes] == [("a", 0.0), ("b", 8.0), ("c", 0.0)]
    assert outcomes[1].reward == pytest.approx(0.8) and outcomes[1].segment == "s"
    assert len(ledger) == 1 and ledger.unattributed == 2
    assert [o.item for o in ledger.settle(policy, 1000.0)] == ["a", "d"]
    rewards, counts = policy.arms.lookup("s", ["b"])
    # The lift belief charges each impression the clicks its prior (0.1) expected.
    assert rewards[0] == pytest.approx(0.8) and counts[0] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bandit", "unknown name"),
        ("egreedy:lots", "expected a number"),
        ("egreedy:1.5", "epsilon"),
        ("gorse:0.7,0.7", "ratios"),
        ("greedy:0.1", "unexpected argument"),
        ("thompson:colour=3", "colour"),
    ],
)
def test_bad_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(EquilibraError, match=message):
        parse_policy(spec)


def test_linear_policies_need_features() -> None:
    c = Candidates(items=np.arange(5), scores=np.arange(5.0))
    with pytest.raises(ValueError, match="features"):
        parse_policy("linucb").select(c, 2, np.random.default_rng(0))


def test_statistics_are_kept_per_placement() -> None:
    c = candidates(4, seed=11)
    policy = parse_policy("greedy")
    for _ in range(50):
        policy.learn_one("i3", 1.0, placement="cart")
    home = Candidates(c.items, c.scores, placement="home")
    cart = Candidates(c.items, c.scores, placement="cart")
    assert policy.mean(cart)[3] > 0.5 > policy.mean(home)[3]


def test_conditional_monte_carlo_matches_counting_and_the_served_diagonal() -> None:
    from equilibra.explore.marginals import conditional_marginals, conditional_propensities
    from equilibra.explore.scores import LocationScale

    rng = np.random.default_rng(11)
    n, k = 7, 3
    dist = LocationScale(rng.normal(size=n), rng.uniform(0.3, 1.5, size=n), "normal")
    counted = monte_carlo_marginals(lambda m: dist.draw(rng, m), n, k, 200_000)
    draws = dist.draw(rng, 2_000)
    estimate = conditional_marginals(draws, dist, k)
    tolerance = 4.5 * np.hypot(estimate.error, np.sqrt(0.25 / 200_000))
    assert np.all(np.abs(estimate.matrix - counted.matrix) <= tolerance)
    # Rao–Blackwellisation: less spread than counting with the same draws.
    assert estimate.error < np.sqrt((counted.matrix * (1 - counted.matrix)).max() / 2_000)
    assert (estimate.matrix > 0).all()
    # The served path (one position per item) is the same number, from the same draws.
    rows, positions = np.array([4, 0, 6]), np.array([0, 1, 2])
    diagonal, _ = conditional_propensities(draws, dist, rows, positions)
    np.testing.assert_allclose(diagonal, estimate.matrix[rows, positions], atol=1e-12)


def test_linear_thompson_counts_only_candidates_that_can_reach_the_slate() -> None:
    c = candidates(60, seed=8)
    policy = trained("lints:0.05", c)
    keep = policy._contenders(c, 5)
    assert keep is not None and 5 <= len(keep) < len(c)
    # Nobody outside the contenders ever reaches the slate in many draws.
    top = top_k_rows(policy._draw(c, np.random.default_rng(3), 20_000), 5)
    assert set(np.unique(top).tolist()) <= set(keep.tolist())
