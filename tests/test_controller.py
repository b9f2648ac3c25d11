"""The balance controller: change detection, the confidence sequence, budgets that are never
exceeded, exploration that falls when stable and rises after a change, the new-item exposure
guarantee, explore constraints, champion / challenger, persistence and the explanation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from equilibra.explore import Candidates, FeedbackLedger, parse_policy
from equilibra.explore.adaptive import Adaptive
from equilibra.explore.budget import Budget
from equilibra.explore.controller import _path_likelihood
from equilibra.explore.drift import FALL, RISE, PageHinkley
from equilibra.explore.sequential import RunningGain
from equilibra.explore.spec import load_policy, save_policy

# --- the change test ------------------------------------------------------------------------


def test_page_hinkley_is_quiet_on_a_stationary_stream_and_catches_a_drop() -> None:
    rng = np.random.default_rng(0)
    alarms = 0
    for _ in range(20):
        detector = PageHinkley()
        alarms += sum(detector.update(x) != 0 for x in rng.normal(1.0, 0.3, 2000))
    assert alarms <= 1  # 40,000 samples
    detector = PageHinkley()
    for x in rng.normal(1.0, 0.3, 500):
        assert detector.update(x) == 0 or True
    caught = next(
        (i for i, x in enumerate(rng.normal(0.7, 0.3, 1000)) if detector.update(x) == FALL),
        None,
    )
    assert caught is not None and caught < 100  # a 1 σ drop, caught in ≈ 12 / 0.5 samples


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.01, 100.0),
    shift=st.floats(-50.0, 50.0),
)
def test_page_hinkley_does_not_depend_on_the_units_of_the_stream(
    seed: int, scale: float, shift: float
) -> None:
    """Tolerance and threshold are in standard deviations: an affine change of the stream
    (a reward in cents instead of euros) gives the same alarms at the same samples."""
    rng = np.random.default_rng(seed)
    stream = np.concatenate([rng.normal(0, 1, 300), rng.normal(rng.choice([-1.5, 1.5]), 1, 300)])
    plain, moved = PageHinkley(), PageHinkley()
    a = [plain.update(float(x)) for x in stream]
    b = [moved.update(float(x * scale + shift)) for x in stream]
    assert a == b
    assert any(v in (RISE, FALL) for v in a)


def test_page_hinkley_state_round_trips() -> None:
    detector = PageHinkley()
    for x in np.random.default_rng(1).normal(size=100):
        detector.update(float(x))
    copy = PageHinkley.from_state(detector.state_dict())
    stream = np.random.default_rng(2).normal(size=200)
    assert [copy.update(float(x)) for x in stream] == [detector.update(float(x)) for x in stream]


# --- the confidence sequence --------------------------------------------------------------


def test_confidence_sequence_holds_at_every_time_at_once() -> None:
    """Looking after every sample, the lower bound of a mean-zero stream crosses zero in at
    most about α of the runs (a fixed-n interval checked this often would in most)."""
    rng = np.random.default_rng(0)
    crossed = 0
    runs = 200
    for _ in range(runs):
        gain = RunningGain(alpha=0.05)
        for x in rng.normal(0.0, 1.0, 1500):
            gain.update(float(x))
            if gain.n >= 20 and gain.lower() > 0:
                crossed += 1
                break
    assert crossed / runs <= 0.08
    gain = RunningGain(alpha=0.05)
    for x in rng.normal(0.3, 1.0, 1500):
        gain.update(float(x))
    assert gain.lower() > 0  # a real gain is found


def test_path_likelihood_accounts_for_dry_pools() -> None:
    probs = np.array([0.6, 0.3, 0.1])
    # pool 2 holds one item: after it is drawn its share goes to the exploit stream
    likelihood = _path_likelihood([2, 0, 1, 0], probs, [5, 1])
    assert likelihood == pytest.approx(np.cumprod([0.1, 0.7, 0.3, 0.7]))


# --- budgets --------------------------------------------------------------------------------


def test_budget_parses_and_rejects_bad_values() -> None:
    budget = Budget.parse("default=0.2,checkout=0,loss=0.05,period=600")
    assert budget.share_for("checkout") == 0.0 and budget.share_for("home") == 0.2
    assert budget.max_loss == 0.05 and budget.period == 600
    for bad in ("home=2", "loss=x", "period=0", "home"):
        with pytest.raises(ValueError):
            Budget.parse(bad)


def shop_candidates(
    rng: np.random.Generator, n: int = 30, placement: str = "home", t: float = 0.0
) -> Candidates:
    return Candidates(
        items=np.array([f"i{i}" for i in range(n)]),
        scores=rng.normal(size=n),
        age=np.where(np.arange(n) >= n - 5, 10.0, 1e9),  # the last five items are new
        placement=placement,
        segment=str(rng.integers(3)),
        timestamp=t,
    )


def run_shop(
    policy: Adaptive,
    requests: int,
    click: object,
    placements: tuple[str, ...] = ("home",),
    k: int = 5,
    seed: int = 0,
    start: float = 0.0,
) -> list[tuple[str, float, np.ndarray]]:
    """Requests one per second, feedback through the ledger (window 10 s)."""
    rng = np.random.default_rng(seed)
    ledger = FeedbackLedger(window_s=10.0, exposure=1.0 / (1.0 + np.arange(k)))
    shown = []
    for t in range(requests):
        now = start + t
        placement = placements[t % len(placements)]
        c = shop_candidates(rng, placement=placement, t=now)
        slate = policy.select(c, k, rng)
        impression = f"r{now}"
        ledger.record(
            impression,
            "u",
            now,
            c.items[slate.indices],
            np.full(len(slate), 0.05),
            segment=c.segment,
            placement=placement,
            explore=slate.explore_flags,
            info=slate.extras.get("controller"),
        )
        rank = np.empty(len(c), dtype=np.int64)
        rank[np.argsort(-c.scores)] = np.arange(len(c))
        for j, index in enumerate(slate.indices):
            p = click(int(index), now, int(rank[index]))  # type: ignore[operator]
            if rng.random() < p / (1.0 + j):
                ledger.observe("u", c.items[index], "click", now, impression_id=impression)
        ledger.settle(policy, now - 0.5)
        shown.append((placement, now, slate.explore_flags))
    return shown


@settings(max_examples=12, deadline=None)
@given(
    share=st.floats(0.0, 0.3),
    loss=st.floats(0.0, 0.2),
    seed=st.integers(0, 1000),
)
def test_budgets_are_never_exceeded(share: float, loss: float, seed: int) -> None:
    budget = Budget({"checkout": 0.0}, default_share=share, max_loss=loss, period=100.0)
    policy = Adaptive(start=0.3, floor=0.1, budget=budget)

    def charges_within() -> None:
        for placement, spend in policy.controller.spend.items():
            assert spend.explored <= budget.share_for(placement) * spend.slots + 1e-9
            assert spend.charged <= loss * spend.value + 1e-9

    rng = np.random.default_rng(seed)
    ledger = FeedbackLedger(window_s=5.0)
    for t in range(400):
        placement = ("home", "checkout")[t % 2]
        c = shop_candidates(rng, placement=placement, t=float(t))
        slate = policy.select(c, 5, rng)
        ledger.record(
            f"r{t}",
            "u",
            float(t),
            c.items[slate.indices],
            np.full(5, 0.05),
            segment=c.segment,
            placement=placement,
            explore=slate.explore_flags,
            info=slate.extras.get("controller"),
        )
        if rng.random() < 0.3:
            ledger.observe("u", c.items[slate.indices[0]], "click", float(t), impression_id=f"r{t}")
        ledger.settle(policy, t - 0.5)
        charges_within()
        if placement == "checkout":
            assert not slate.explore_flags.any()


def test_explore_constraints_are_respected() -> None:
    rng = np.random.default_rng(0)
    policy = Adaptive(start=0.5, floor=0.5, cap=0.5, new_cap=0.5)
    for t in range(300):
        c = shop_candidates(rng, t=float(t))
        c.explorable = np.arange(len(c)) % 2 == 0  # odd items: out of stock for exploration
        slate = policy.select(c, 5, rng)
        for entry, index in zip(slate.entries, slate.indices, strict=True):
            if entry.explore:
                assert index % 2 == 0


# --- the balance ----------------------------------------------------------------------------


def test_exploration_falls_when_stable_and_rises_after_a_drop() -> None:
    def click(index: int, now: float, rank: int) -> float:
        # The ranker's top items convert until t = 3000, then the best items are others.
        good = index < 8 if now < 3000 else index >= 20
        return 0.5 if good else 0.02

    policy = Adaptive(start=0.2, floor=0.01, new_rate=0.0)
    shown = run_shop(policy, 5000, click)
    share = np.array([flags.mean() for _, _, flags in shown])
    early, settled = share[:300].mean(), share[2500:3000].mean()
    after = share[3200:3700].mean()
    assert settled < 0.6 * early  # stable: it falls
    assert after > 1.5 * settled  # a drop: it rises …
    assert share[4500:].mean() < after  # … then falls again
    kinds = [h["kind"] for h in policy.controller.history]
    assert "drift" in kinds and "rate" in kinds


def test_new_items_get_exposure_until_their_interval_is_narrow() -> None:
    policy = Adaptive(start=0.01, floor=0.0, new_rate=0.05, new_width=0.2)
    shown = run_shop(policy, 1500, lambda index, now, rank: 0.05)
    assert set(policy.new_evidence) == {f"i{i}" for i in range(25, 30)}
    assert all(n >= 10 for n, _ in policy.new_evidence.values())
    early = np.mean([flags.mean() for _, _, flags in shown[:200]])
    late = np.mean([flags.mean() for _, _, flags in shown[-200:]])
    assert late < 0.5 * early  # owed exposure is paid, then stops


def test_champion_changes_only_on_evidence_and_is_recorded() -> None:
    # Exploring is worth more than exploiting here: the ranker's best ten are poor, whatever
    # the items (so learning about items cannot fix it).
    policy = Adaptive(start=0.05, floor=0.01, cap=0.6, new_rate=0.0, pool=20)
    run_shop(policy, 6000, lambda index, now, rank: 0.02 if rank < 10 else 0.4)
    changes = [h for h in policy.controller.history if h["kind"] == "champion"]
    assert changes and "won" in changes[0]["what"]
    assert policy.controller.arenas["home"].scale > 1
    # No difference between the streams: no champion change.
    still = Adaptive(start=0.05, floor=0.01, new_rate=0.0)
    run_shop(still, 3000, lambda index, now, rank: 0.1)
    assert not [h for h in still.controller.history if h["kind"] == "champion"]


def test_controller_state_persists_and_explains_itself(tmp_path: object) -> None:
    budget = Budget({"checkout": 0.0}, default_share=0.2)
    policy = Adaptive(budget=budget)
    run_shop(policy, 400, lambda index, now, rank: 0.1, placements=("home", "cart"))
    path = tmp_path / "policy.json"  # type: ignore[operator]
    save_policy(policy, path)
    restored = load_policy(path)
    assert isinstance(restored, Adaptive)
    assert restored.controller.state_dict() == policy.controller.state_dict()
    assert restored.new_evidence == policy.new_evidence
    explained = policy.controller.explain()
    segments = explained["segments"]
    assert {s["placement"] for s in segments} == {"home", "cart"}
    for segment in segments:
        assert 0 <= segment["exploration_rate"] <= 0.3
        assert segment["why"] and "impressions of evidence" in segment["why"]
        assert segment["budget_spent"]["shown_slots"] > 0
    assert set(explained["champions"]) == {"home", "cart"}
    assert explained["budget"]["max_share"]["checkout"] == 0.0


def test_adaptive_spec_and_defaults() -> None:
    policy = parse_policy("adaptive:floor=0.01,start=0.2,pool=10")
    assert isinstance(policy, Adaptive) and policy.spec == "adaptive:floor=0.01,start=0.2,pool=10"
    assert policy.controller.config.floor == 0.01 and policy.pool == 10
    assert not policy.pooled  # only new items' evidence is shared across segments
    assert math.isclose(policy.controller.config.start, 0.2)


def test_the_controller_values_outcomes_with_the_configured_reward_weights() -> None:
    """Multi-objective: what a slot earned is click, cart, purchase and revenue weighted as
    `EQUILIBRA_REWARD` says, delayed events included while the window is open."""
    from equilibra.explore import RewardConfig

    ledger = FeedbackLedger(RewardConfig(click=1, add_to_cart=2, purchase=5, revenue=0.1), 60.0)
    policy = Adaptive()
    ledger.record(
        "imp", "u", 0.0, ["a", "b"], np.full(2, 0.05), segment="s", placement="home",
        explore=[False, True], info={"new": []},
    )  # fmt: skip
    ledger.observe("u", "a", "click", 10.0)
    ledger.observe("u", "b", "click", 20.0)
    ledger.observe("u", "b", "purchase", 50.0, value=30.0)  # 5 + 0.1 · 30, 40 s later
    ledger.observe("u", "b", "purchase", 70.0, value=30.0)  # after the window: not counted
    closed = ledger.close_impressions(61.0)
    assert [o.explore for o in closed[0].outcomes] == [False, True]
    policy.learn_impression(closed[0])
    state = policy.controller.keys["home/s"]
    assert state.exploit_reward == pytest.approx(1.0)
    assert state.explore_reward == pytest.approx(1.0 + 5.0 + 3.0)


def test_reopened_impressions_keep_their_explore_flags() -> None:
    import pandas as pd

    rows = pd.DataFrame(
        {
            "impression_id": ["i1", "i1"],
            "timestamp": [0.0, 0.0],
            "user_id": ["u", "u"],
            "item_id": ["a", "b"],
            "position": [1, 2],
            "prior": [0.1, 0.1],
            "exposure": [1.0, 0.5],
            "policy": ["adaptive", "adaptive"],
            "explore": [False, True],
            "segment": ["s", "s"],
            "placement": ["home", "home"],
        }
    )
    events = pd.DataFrame(columns=["user_id", "item_id", "event_type", "timestamp"])
    ledger = FeedbackLedger(window_s=10.0)
    assert ledger.reopen(rows, events) == 1
    (closed,) = ledger.close_impressions(100.0)
    assert [o.explore for o in closed.outcomes] == [False, True]


def test_the_new_item_guarantee_slows_when_new_items_prove_poor() -> None:
    """New items that never convert: the guarantee is paid more slowly (every owed item
    still gets exposure), and the explanation says why."""
    policy = Adaptive(start=0.01, floor=0.0, new_rate=0.05, new_width=0.05)
    run_shop(policy, 1500, lambda index, now, rank: 0.0 if index >= 25 else 0.3)
    key = next(iter(policy.controller.keys))
    assert policy.controller.new_pace(key) < 0.5
    assert all(n > 0 for n, _ in policy.new_evidence.values())
    explained = policy.controller.explain()["segments"][0]["why"]
    assert "guarantee is paid at" in explained


# --- the exploit stream's prior strength ----------------------------------------------------


def run_users(policy: Adaptive, requests: int, personal: bool, seed: int = 0) -> None:
    """60 users, 40 items, one segment. `personal`: each user's click rates are their own
    shuffle of one set of values (every item averages the same over users) and the ranker knows
    them — an item's segment evidence says nothing, the personal prior everything. Otherwise
    items have their own rates the ranker does not know (its priors are noise)."""
    rng = np.random.default_rng(seed)
    n_users, n_items, k = 60, 40, 5
    levels = np.linspace(0.02, 0.4, n_items)
    truth = (
        np.array([rng.permutation(levels) for _ in range(n_users)])
        if personal
        else np.tile(rng.permutation(levels), (n_users, 1))
    )
    belief = truth if personal else rng.uniform(0.05, 0.3, size=(n_users, n_items))
    ledger = FeedbackLedger(window_s=10.0, exposure=1.0 / (1.0 + np.arange(k)))
    items = np.array([f"i{i}" for i in range(n_items)])
    for t in range(requests):
        user = int(rng.integers(n_users))
        c = Candidates(
            items=items, scores=belief[user], prior=belief[user], segment="s", timestamp=float(t)
        )
        slate = policy.select(c, k, rng)
        ledger.record(
            f"r{t}",
            str(user),
            float(t),
            items[slate.indices],
            belief[user][slate.indices],
            segment="s",
            explore=slate.explore_flags,
            info=slate.extras.get("controller"),
        )
        for j, index in enumerate(slate.indices):
            if rng.random() < truth[user, index] / (1.0 + j):
                ledger.observe(str(user), items[index], "click", float(t), impression_id=f"r{t}")
        ledger.settle(policy, t - 0.5)


def test_the_prior_strength_follows_what_predicts_the_rewards_order() -> None:
    personal = Adaptive(new_rate=0.0)
    run_users(personal, 4000, personal=True)
    assert personal.prior_strength > 20  # the ranker knows each user: trust it longer
    changes = [h for h in personal.controller.history if h["kind"] == "prior strength"]
    assert changes and "time-uniform lower bound" in changes[0]["what"]
    assert changes[-1]["measured"]["strength"] == personal.prior_strength
    explained = personal.explain()["exploit_estimate"]
    assert explained["prior_strength"] == personal.prior_strength and explained["tuned"]
    # Item-level truth the ranker cannot see: the segment's evidence wins, the prior is not
    # trusted longer.
    items = Adaptive(new_rate=0.0)
    run_users(items, 4000, personal=False)
    assert items.prior_strength <= 20


def test_the_prior_strength_judge_is_blind_to_a_strengths_overall_level() -> None:
    """Scores are the share of a slate's expected reward each item gets: two strengths that
    order every slate alike never differ, so no change can be decided between them."""
    from equilibra.explore.strength import StrengthJudge

    judge = StrengthJudge(strengths=(20.0, 80.0), champion=20.0, min_slates=1)
    rng = np.random.default_rng(1)
    for _ in range(500):
        base = rng.uniform(0.01, 0.3, 5)
        judge.compare(
            (rng.random(5) < base).astype(float), np.ones(5), np.column_stack([base, 2 * base])
        )
    assert judge.decide() is None
    n, mean, _, _ = judge.versus(80.0)
    assert n > 0 and mean == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(
    prior=st.floats(1e-6, 1 - 1e-6),
    rewards=st.floats(0.0, 50.0),
    extra=st.floats(0.0, 50.0),
)
def test_the_prior_strength_judges_means_are_each_strengths_beta_posterior(
    prior: float, rewards: float, extra: float
) -> None:
    from equilibra.explore.strength import StrengthJudge

    judge = StrengthJudge()
    counts = rewards + extra
    means = judge.means(np.array([prior]), np.array([rewards]), np.array([counts]))[0]
    for s, mean in zip(judge.strengths, means, strict=True):
        assert mean == pytest.approx((s * prior + rewards) / (s + counts))


def test_the_prior_strength_persists_and_can_be_fixed(tmp_path: object) -> None:
    policy = Adaptive(new_rate=0.0)
    run_users(policy, 1500, personal=True, seed=2)
    path = tmp_path / "policy.json"  # type: ignore[operator]
    save_policy(policy, path)
    restored = load_policy(path)
    assert isinstance(restored, Adaptive) and restored.strength is not None
    assert restored.prior_strength == policy.prior_strength
    assert restored.strength.state_dict() == policy.strength.state_dict()  # type: ignore[union-attr]
    fixed = parse_policy("adaptive:tune_strength=false,prior_strength=80")
    assert isinstance(fixed, Adaptive) and fixed.strength is None
    run_users(fixed, 300, personal=True)
    assert fixed.prior_strength == 80
    assert fixed.explain()["exploit_estimate"] == {"prior_strength": 80, "tuned": False}


def test_open_impressions_stay_out_of_the_cyclic_collectors_walk() -> None:
    """Thousands of impressions stay open for the attribution window; what each keeps (items,
    positions, the controller's note) must be untracked once collected, or every full
    collection walks them all (0.1 s stalls while serving at 200 requests/s)."""
    import gc

    policy = Adaptive()
    ledger = FeedbackLedger(window_s=3600.0)
    rng = np.random.default_rng(0)
    for t in range(5):
        c = shop_candidates(rng, t=float(t))
        slate = policy.select(c, 5, rng)
        ledger.record(
            f"r{t}", "u", float(t), c.items[slate.indices], np.full(len(slate), 0.05),
            segment=c.segment, explore=slate.explore_flags,
            info=slate.extras.get("controller"),
        )  # fmt: skip
    gc.collect()
    gc.collect()  # a container of tuples (the challengers' shares) is untracked a pass later

    def tracked(value: object) -> list[object]:
        if isinstance(value, dict):
            return [x for v in value.values() for x in tracked(v)]
        return [value] if gc.is_tracked(value) else []

    for pending in ledger._open.values():
        assert "predictions" in (pending.info or {})
        assert tracked(pending.info) == []
        assert not gc.is_tracked(pending.items) and not gc.is_tracked(pending.positions)
