"""A shop simulator grounded on real data, for measuring exploration policies.

The hidden truth is a factor model fitted on a *whole* real dataset: user u clicks item i, when
she looks at it, with probability σ(a + κ·z_ui), z the standardised truth affinity, a and κ
calibrated to a target click rate. She looks at position j with probability 1 / (1 + j)^η
(position bias); a click may lead to add-to-cart and then to a purchase.

What the ranker knows is a second factor model fitted only on the first half of the data
(without the items and users the scenario keeps back): its scores, calibrated the same way,
are the candidates' priors. Policies see candidates and priors, never the truth.

Scenarios: `stationary`; `drift` (at mid-run every user's taste is replaced by another's);
`new_items` (a tenth of the catalogue, unknown to the ranker, arrives throughout the run);
`popularity_spike` (at a third of the run, items the ranker rates low become five times as
attractive); `new_users` (at mid-run, users the ranker has never seen make half the traffic).

Every run is reproducible from its seed. Reports cumulative reward, regret to the oracle (the
best slate from the same candidates under the truth), the exploration share over time,
catalogue coverage and the time a new item takes to its first click and first conversion.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.columns import Columns as C
from equilibra.errors import EquilibraError
from equilibra.evaluate.experiments import SplitTest
from equilibra.explore.feedback import FeedbackLedger, Outcome, RewardConfig
from equilibra.explore.impressions import slate_rows
from equilibra.explore.slate import Candidates, SlatePolicy

SCENARIOS = ("stationary", "drift", "new_items", "popularity_spike", "new_users")


@dataclass(frozen=True)
class SimConfig:
    scenario: str = "stationary"
    requests: int = 50_000
    slate_size: int = 10
    candidates: int = 100
    seed: int = 0
    factors: int = 32
    target_ctr: float = 0.04  # mean click probability of a candidate, looked at
    sharpness: float = 1.5  # κ: how strongly the truth affinity moves the click probability
    position_decay: float = 1.0  # η
    cart_rate: float = 0.3  # P(add to cart | click)
    purchase_rate: float = 0.4  # P(purchase | cart)
    feedback_delay: int = 50  # requests until an impression's attribution window closes
    new_item_share: float = 0.1
    new_item_slots: int = 20  # the newest arrivals join every candidate list
    spike_items: int = 20
    spike_boost: float = 5.0
    new_user_share: float = 0.2  # of users, kept back for the new-user wave
    segments: int = 8
    curve_points: int = 100
    log_impressions: bool = False

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise EquilibraError(
                f"scenario: unknown {self.scenario!r}; expected one of {', '.join(SCENARIOS)}"
            )
        if self.requests < 1 or self.slate_size < 1 or self.candidates < self.slate_size:
            raise EquilibraError("requests, slate_size, candidates: need candidates ≥ slate ≥ 1")


def _als_factors(matrix: sp.csr_matrix, factors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors, regularization=0.05, iterations=12, random_state=seed
        )
        confidence = matrix.copy().astype(np.float32)
        confidence.data = 1.0 + np.log1p(confidence.data) * 5.0
        model.fit(confidence, show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


@dataclass
class World:
    """The truth (hidden), the ranker's belief, and what changes when."""

    truth_users: np.ndarray
    truth_items: np.ndarray
    belief_users: np.ndarray  # zero rows for users the ranker has not seen
    belief_items: np.ndarray  # zero rows for items the ranker has not seen
    truth_scale: tuple[float, float]  # mean, std of truth affinities over candidate pairs
    belief_scale: tuple[float, float]
    user_weights: np.ndarray  # arrival probabilities
    known_users: np.ndarray  # bool
    new_items: np.ndarray  # item indices kept back, in release order
    popularity: np.ndarray  # training-half popularity
    segment_of: np.ndarray  # user → segment id
    item_ids: np.ndarray
    user_ids: np.ndarray

    @classmethod
    def build(cls, events: pd.DataFrame, config: SimConfig) -> World:
        rng = np.random.default_rng(config.seed)
        users, user_codes = np.unique(events[C.user].to_numpy(dtype=str), return_inverse=True)
        items, item_codes = np.unique(events[C.item].to_numpy(dtype=str), return_inverse=True)
        if len(users) < 10 or len(items) < config.candidates:
            raise EquilibraError(
                f"events: {len(users)} users and {len(items)} items are too few to simulate"
            )
        shape = (len(users), len(items))
        everything = sp.csr_matrix((np.ones(len(events)), (user_codes, item_codes)), shape=shape)
        truth_users, truth_items = _als_factors(everything, config.factors, config.seed)

        times = events[C.timestamp].to_numpy(dtype=float)
        early = times <= np.quantile(times, 0.5)
        popularity = np.bincount(item_codes[early], minlength=len(items)).astype(float)
        new_items = np.array([], dtype=np.int64)
        if config.scenario == "new_items":
            n_new = max(1, int(config.new_item_share * len(items)))
            # Items the truth likes somewhere, so finding them is worth something.
            new_items = rng.choice(len(items), size=n_new, replace=False)
        known_users = np.ones(len(users), dtype=bool)
        if config.scenario == "new_users":
            held = rng.choice(
                len(users), size=int(config.new_user_share * len(users)), replace=False
            )
            known_users[held] = False
        keep = early & known_users[user_codes] & ~np.isin(item_codes, new_items)
        belief_matrix = sp.csr_matrix(
            (np.ones(int(keep.sum())), (user_codes[keep], item_codes[keep])), shape=shape
        )
        belief_users, belief_items = _als_factors(belief_matrix, config.factors, config.seed + 1)
        belief_users[~known_users] = 0.0
        belief_items[new_items] = 0.0
        activity = np.bincount(user_codes, minlength=len(users)).astype(float)

        from sklearn.cluster import KMeans

        segments = KMeans(config.segments, n_init=3, random_state=config.seed).fit_predict(
            belief_users[known_users]
        )
        segment_of = np.full(len(users), -1)
        segment_of[known_users] = segments
        world = cls(
            truth_users,
            truth_items,
            belief_users,
            belief_items,
            (0.0, 1.0),
            (0.0, 1.0),
            activity / activity.sum(),
            known_users,
            new_items,
            popularity,
            segment_of,
            items,
            users,
        )
        # Calibrate on what policies will choose from: each user's top candidates by belief.
        sample = rng.choice(
            np.flatnonzero(known_users), size=min(200, known_users.sum()), replace=False
        )
        belief = (belief_users[sample] @ belief_items.T).astype(np.float64)
        belief[:, new_items] = -np.inf
        chosen = np.argpartition(-belief, config.candidates - 1, axis=1)[:, : config.candidates]
        truth = np.einsum("uf,ucf->uc", truth_users[sample], truth_items[chosen])
        world.truth_scale = _scale(truth)
        world.belief_scale = _scale(np.take_along_axis(belief, chosen, axis=1))
        return world


def _scale(scores: np.ndarray) -> tuple[float, float]:
    return float(scores.mean()), float(scores.std() or 1.0)


def _probability(scores: np.ndarray, scale: tuple[float, float], config: SimConfig) -> np.ndarray:
    z = (scores - scale[0]) / scale[1]
    base = np.log(config.target_ctr / (1 - config.target_ctr))
    return 1.0 / (1.0 + np.exp(-(base + config.sharpness * z)))


@dataclass
class SimResult:
    policy: str
    config: dict[str, Any]
    summary: dict[str, float | None]
    curve: pd.DataFrame
    seconds: float
    impressions: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "config": self.config,
            "summary": self.summary,
            "seconds": self.seconds,
            "curve": self.curve.to_dict(orient="list"),
        }


class Simulator:
    """Runs one policy through one scenario of a world."""

    def __init__(self, world: World, config: SimConfig, rewards: RewardConfig | None = None):
        """`rewards` values what users do: the reported and logged reward (design.md's default,
        click=1, add_to_cart=2, purchase=5). Policies learn it scaled to "at least a click",
        the scale the ranker's click-probability priors are on."""
        self.world = world
        self.config = config
        self.rewards = rewards or RewardConfig()
        # Expected raw reward of a click, given the funnel after it.
        self.click_value = self.rewards.click + config.cart_rate * (
            self.rewards.add_to_cart + config.purchase_rate * self.rewards.purchase
        )
        self.examine = 1.0 / (1.0 + np.arange(config.slate_size)) ** config.position_decay
        # The ranker's candidate lists do not depend on the policy: built once per world.
        self.top, self.popular = self._candidate_lists()

    def _candidate_lists(self) -> tuple[np.ndarray, np.ndarray]:
        """Per user, the ranker's top candidates among items it knows; and the popular list
        (what users unknown to the ranker get)."""
        w, c = self.world, self.config
        n_known = c.candidates - (c.new_item_slots if c.scenario == "new_items" else 0)
        top = np.empty((len(w.user_ids), n_known), dtype=np.int64)
        items = w.belief_items.astype(np.float32)
        for start in range(0, len(w.user_ids), 256):  # blocks: bounded memory on big catalogues
            scores = w.belief_users[start : start + 256].astype(np.float32) @ items.T
            scores[:, w.new_items] = -np.inf
            top[start : start + 256] = np.argpartition(-scores, n_known - 1, axis=1)[:, :n_known]
        popular_scores = w.popularity.copy()
        popular_scores[w.new_items] = -np.inf
        popular = np.argsort(-popular_scores, kind="stable")[:n_known]
        return top, popular

    def run(
        self, policy: SlatePolicy | SplitTest, log_propensities: bool | None = None
    ) -> SimResult:
        w, c = self.world, self.config
        # Two streams: the world's (arrivals, responses, changes) consumes the same numbers
        # whatever the policy does, so policies compared on one seed face the same users and
        # the same coin flips (common random numbers); the policy draws from its own.
        rng = np.random.default_rng(c.seed + 1000)
        policy_rng = np.random.default_rng(c.seed + 2000)
        started = time.perf_counter()
        top, popular = self.top, self.popular
        truth_users = w.truth_users.copy()
        truth_bias = np.zeros(len(w.item_ids))
        popular_scores = np.log1p(w.popularity[popular])
        belief_popular_prior = _probability(popular_scores, _scale(popular_scores), c)
        release = np.linspace(0, c.requests * 0.9, num=len(w.new_items)).astype(int)
        released_at = np.full(len(w.item_ids), -1)
        first_click = np.full(len(w.item_ids), -1)
        first_purchase = np.full(len(w.item_ids), -1)
        ledger = FeedbackLedger(
            self.rewards, window_s=float(c.feedback_delay), exposure=self.examine
        )
        shown_count = np.zeros(len(w.item_ids), dtype=np.int64)
        spike = np.array([], dtype=np.int64)
        new_users = np.flatnonzero(~w.known_users)
        known_weights = w.user_weights * w.known_users
        known_weights /= known_weights.sum()
        every = max(1, c.requests // c.curve_points)
        rows: list[dict[str, float]] = []
        totals = {"reward": 0.0, "expected": 0.0, "oracle": 0.0, "explore": 0.0, "slots": 0.0}
        window = {"explore": 0.0, "slots": 0.0, "expected": 0.0, "oracle": 0.0}
        impressions: list[dict[str, object]] = []
        logged: dict[tuple[str, int], dict[str, object]] = {}  # rows waiting for their reward
        log = c.log_impressions if log_propensities is None else log_propensities

        def write_back(outcomes: list[Outcome]) -> None:
            for outcome in outcomes:
                row = logged.pop((outcome.impression_id, outcome.position), None)
                if row is not None:
                    row[C.reward] = outcome.raw_reward

        split = policy if isinstance(policy, SplitTest) else None
        # In an A/B test every impression has its arm: the default learner is never used.
        learner = policy if split is None else next(iter(split.policies.values()))
        arms = None if split is None else split.arms

        def settle(now: float) -> list[Outcome]:
            observe = None if split is None else split.observe
            return ledger.settle(learner, now, arms=arms, on_close=observe)  # type: ignore[arg-type]

        next_release = 0
        users = rng.choice(len(w.user_ids), size=c.requests, p=known_weights)
        for t in range(c.requests):
            # --- the world changes ---
            while next_release < len(release) and release[next_release] <= t:
                released_at[w.new_items[next_release]] = t
                next_release += 1
            if c.scenario == "drift" and t == c.requests // 2:
                truth_users = truth_users[rng.permutation(len(truth_users))]
            if c.scenario == "popularity_spike" and t == c.requests // 3:
                spike = self._spike_items(top)
                truth_bias[spike] = np.log(c.spike_boost)
            user = int(users[t])
            if c.scenario == "new_users" and t >= c.requests // 2 and rng.random() < 0.5:
                user = int(rng.choice(new_users))

            # --- the request: candidates and the ranker's priors ---
            if w.known_users[user]:
                base = top[user]
                prior = _probability(
                    w.belief_users[user] @ w.belief_items[base].T, w.belief_scale, c
                )
            else:
                base = popular
                prior = belief_popular_prior
            if c.scenario == "new_items" and next_release > 0:
                fresh = w.new_items[max(0, next_release - c.new_item_slots) : next_release]
                base = np.concatenate([base, fresh])
                # The ranker knows nothing about a new item: it gets the list's median prior.
                prior = np.concatenate([prior, np.full(len(fresh), np.median(prior))])
            candidates = Candidates(
                items=base,
                scores=prior,
                prior=np.clip(prior, 1e-6, 1 - 1e-6),
                features=self._features(user, base),
                segment=str(w.segment_of[user]) if w.known_users[user] else "new",
                popularity=w.popularity[base],
                age=np.where(released_at[base] >= 0, t - released_at[base], 1e9),
                user_features=np.append(w.belief_users[user], 1.0),
                timestamp=float(t),
            )

            # --- the policy acts (in an A/B test, the user's variant's); the user responds ---
            variant, acting = split.route(str(user)) if split is not None else (None, policy)
            slate = acting.select(candidates, c.slate_size, policy_rng, propensities=log)
            shown = base[slate.indices]
            k = len(shown)
            # The truth over every candidate: the shown items' click rates and the oracle's.
            all_truth = _probability(truth_users[user] @ w.truth_items[base].T, w.truth_scale, c)
            all_truth = 1.0 / (1.0 + (1.0 / all_truth - 1.0) * np.exp(-truth_bias[base]))
            p_click = all_truth[slate.indices]
            if split is not None and variant is not None:  # an injected A/B effect
                p_click = np.minimum(p_click * split.lift(variant), 1.0)
            clicks = rng.random(k) < self.examine[:k] * p_click
            carts = clicks & (rng.random(k) < c.cart_rate)
            purchases = carts & (rng.random(k) < c.purchase_rate)
            impression = f"sim-{t}"
            ledger.record(
                impression,
                str(user),
                float(t),
                shown,
                candidates.prior[slate.indices],  # type: ignore[index]
                None if candidates.features is None else candidates.features[slate.indices],
                candidates.segment,
                explore=slate.explore_flags,
                info=slate.extras.get("controller"),  # type: ignore[arg-type]
                variant=variant,
            )
            earned = np.zeros(k)
            for kind, hits in (("click", clicks), ("add_to_cart", carts), ("purchase", purchases)):
                for j in np.flatnonzero(hits):
                    ledger.observe(str(user), shown[j], kind, float(t), impression_id=impression)
                    earned[j] += self.rewards.value(kind)
            if log:
                for row in slate_rows(
                    slate,
                    candidates,
                    impression_id=impression,
                    timestamp=float(t),
                    user_id=str(user),
                    base_rate=getattr(acting, "base_rate", 0.05),
                    exposure=self.examine,
                    variant=variant,
                ):
                    impressions.append(row)
                    logged[(impression, int(row[C.position]))] = row  # type: ignore[call-overload]
            write_back(settle(float(t) - 0.5))

            # --- bookkeeping ---
            expected = float((self.examine[:k] * p_click).sum() * self.click_value)
            best = np.sort(all_truth)[::-1][:k]
            oracle = float((self.examine[:k] * best).sum() * self.click_value)
            totals["reward"] += float(earned.sum())
            totals["expected"] += expected
            totals["oracle"] += oracle
            explore = float(slate.explore_flags.sum())
            totals["explore"] += explore
            totals["slots"] += k
            window["explore"] += explore
            window["slots"] += k
            window["expected"] += expected
            window["oracle"] += oracle
            shown_count[shown] += 1
            for j in np.flatnonzero(clicks):
                if first_click[shown[j]] < 0:
                    first_click[shown[j]] = t
            for j in np.flatnonzero(purchases):
                if first_purchase[shown[j]] < 0:
                    first_purchase[shown[j]] = t
            if (t + 1) % every == 0 or t + 1 == c.requests:
                rows.append(
                    {
                        "request": t + 1,
                        "cumulative_reward": totals["reward"],
                        "cumulative_expected": totals["expected"],
                        "cumulative_regret": totals["oracle"] - totals["expected"],
                        "explore_share": window["explore"] / max(window["slots"], 1),
                        "window_reward": window["expected"] / every,
                        "window_oracle": window["oracle"] / every,
                    }
                )
                window = dict.fromkeys(window, 0.0)
        # The run ends: every window closes (the last impressions' rewards are written too).
        write_back(settle(float("inf")))
        seconds = time.perf_counter() - started
        summary = self._summary(totals, shown_count, released_at, first_click, first_purchase)
        summary["seconds"] = seconds
        if split is not None:
            summary["experiment"] = split.experiment.summary()
        return SimResult(policy.spec, asdict(c), summary, pd.DataFrame(rows), seconds, impressions)

    def _spike_items(self, top: np.ndarray) -> np.ndarray:
        """Items often among candidates but ranked low by the ranker: a trend it cannot see."""
        rng = np.random.default_rng(self.config.seed + 7)
        counts = np.bincount(top.ravel(), minlength=len(self.world.item_ids))
        pool = np.argsort(-counts)[: max(self.config.spike_items * 10, 100)]
        low = pool[np.argsort(self.world.popularity[pool])][: self.config.spike_items * 3]
        return rng.choice(low, size=min(self.config.spike_items, len(low)), replace=False)

    def _features(self, user: int, items: np.ndarray) -> np.ndarray:
        """What a linear policy sees: the ranker's user ⊙ item factors, a bias, a novelty flag."""
        w = self.world
        interaction = w.belief_users[user][None, :] * w.belief_items[items]
        novelty = (np.abs(w.belief_items[items]).sum(axis=1) == 0).astype(float)
        return np.column_stack([interaction, np.ones(len(items)), novelty])

    def _summary(
        self,
        totals: dict[str, float],
        shown_count: np.ndarray,
        released_at: np.ndarray,
        first_click: np.ndarray,
        first_purchase: np.ndarray,
    ) -> dict[str, float | None]:
        c = self.config
        new = self.world.new_items
        released = new[released_at[new] >= 0]

        def median_delay(first: np.ndarray) -> float | None:
            # None (JSON null) where no new item was released or none converted.
            hit = released[first[released] >= 0]
            return float(np.median(first[hit] - released_at[hit])) if len(hit) else None

        return {
            "requests": float(c.requests),
            "reward": totals["reward"],
            "reward_per_request": totals["reward"] / c.requests,
            "expected_reward": totals["expected"],
            "oracle_reward": totals["oracle"],
            "regret": totals["oracle"] - totals["expected"],
            "regret_share": (totals["oracle"] - totals["expected"]) / max(totals["oracle"], 1e-12),
            "explore_share": totals["explore"] / max(totals["slots"], 1.0),
            "coverage": float((shown_count > 0).mean()),
            "new_items_released": float(len(released)),
            "new_items_clicked": float((first_click[released] >= 0).mean())
            if len(released)
            else 0.0,
            "new_item_requests_to_first_click": median_delay(first_click),
            "new_item_requests_to_first_purchase": median_delay(first_purchase),
        }
