"""Exploration policies over a slate: each returns K items with their marginal propensities.

Every policy keeps a posterior per (placement, segment, item) on the probability that showing
the item earns a reward, centred on the request's calibrated ranker score (`Policy.mean`; the
`lift` and `beta` beliefs are described there): with no feedback a policy exploits the ranker,
and feedback moves it away only as far as the evidence does. The linear policies add a ridge
model of the ranker's error over per-candidate features.

Two families by how the slate is drawn (see `marginals.py`):
- slot streams, exact propensities: `Greedy`, `EpsilonGreedy`, `UCB`, `LinUCB`, `GorseRatios`,
  `Uniform`;
- random scores, Monte-Carlo propensities with a stated error: `Softmax` (Plackett–Luce) and
  `Thompson` (independent scores: conditional Monte Carlo, 64 draws), `LinearThompson`
  (correlated scores: counted over draws).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from equilibra.explore.marginals import (
    Marginals,
    conditional_marginals,
    conditional_propensities,
    draw_streams,
    linear_conditional_marginals,
    stream_marginals,
)
from equilibra.explore.scores import BetaScores, GammaLiftScores, LocationScale, ScoreDistribution
from equilibra.explore.slate import Candidates, Slate, SlateEntry
from equilibra.explore.stats import ArmStats, LinearStats, beta_posterior

BELIEFS = ("lift", "beta")
ALL_ITEMS = "\x00all"  # the arm that pools a segment's evidence over every item
POOLED = "\x00pooled"  # the segment that pools a placement's evidence over every segment
EXPLORE_SHARE_MEMORY = 0.01  # weight of the newest slate in the running exploration share


@dataclass(frozen=True)
class Evidence:
    """Per candidate: the ranker's prior and the (discounted) rewards and exposure observed."""

    prior: np.ndarray
    rewards: np.ndarray
    counts: np.ndarray
    shared_lift: float = 1.0  # the segment's lift over all items (`lift` belief only)


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, best first."""
    if k >= len(values):
        return np.argsort(-values, kind="stable")
    part = np.argpartition(-values, k - 1)[:k]
    return part[np.argsort(-values[part], kind="stable")]


class Policy(ABC):
    """A stateful slate policy. Subclasses define how a slate is drawn and its marginals."""

    name: ClassVar[str] = "policy"

    def __init__(
        self,
        *,
        belief: str = "beta",
        prior_strength: float = 20.0,
        lift_strength: float = 2.0,
        base_rate: float = 0.05,
        discount: float = 1.0,
        by_segment: bool = True,
        pooled: bool = False,
        learn: bool = True,
    ) -> None:
        if belief not in BELIEFS:
            raise ValueError(f"belief: expected one of {', '.join(BELIEFS)}")
        if prior_strength <= 0 or lift_strength <= 0:
            raise ValueError("prior_strength, lift_strength: must be positive")
        if not 0 < base_rate < 1:
            raise ValueError("base_rate: must lie in (0, 1)")
        self.belief = belief
        self.prior_strength = prior_strength
        self.lift_strength = lift_strength
        self.base_rate = base_rate
        self.by_segment = by_segment
        # pooled: an item's evidence in the placement's other segments moves its prior (partial
        # pooling), so what one segment learns about an item reaches the others.
        self.pooled = pooled and by_segment
        # learn=false freezes the policy in its prior state (a fixed policy, e.g. to evaluate).
        self.learn = learn
        self.arms = ArmStats(discount)
        self.spec = self.name
        self._explore_share = 0.0
        # (candidates, statistics, their step, evidence) of the last request asked about
        self._evidence_memo: tuple[Candidates, ArmStats, tuple[float, ...], Evidence] | None = None

    # --- beliefs ------------------------------------------------------------------------------
    #
    # `lift`: the click rate of item i for user u is prior_ui × lift_i, with a Gamma
    # posterior on each item's lift (shape s + clicks, rate s + clicks the prior expected): the
    # ranker's personal ordering survives, and feedback corrects each item's level — a new item
    # the ranker underrates, a trend, an item gone stale; each item's lift is measured against
    # the segment's shared lift. `beta` (default): the classic Bernoulli bandit, a
    # Beta posterior per item whose prior mean is the request's prior (worth `prior_strength`
    # impressions); with enough impressions it forgets the personal prior.

    def _segment(self, segment: str) -> str:
        return segment if self.by_segment else ""

    def _key(self, segment: str, placement: str) -> str:
        """Statistics are kept per placement and (with `by_segment`) per user segment."""
        segment = self._segment(segment)
        return f"{placement}/{segment}" if placement else segment

    @staticmethod
    def _pool_key(placement: str) -> str:
        return f"{placement}/{POOLED}"

    def _evidence(self, c: Candidates) -> Evidence:
        """Everything the belief needs about the candidates, read from the statistics once per
        request and state (a slate asks for it to draw, and again for the exploit reference)."""
        state = (self.arms.step, self.base_rate, self.prior_strength)
        memo = self._evidence_memo
        if memo is not None and memo[0] is c and memo[1] is self.arms and memo[2] == state:
            return memo[3]
        evidence = self._read_evidence(c)
        self._evidence_memo = (c, self.arms, state, evidence)
        return evidence

    def _read_evidence(self, c: Candidates) -> Evidence:
        key = self._key(c.segment, c.placement)
        rewards, counts = self.arms.lookup(key, c.items)
        shared = 1.0
        if self.belief == "lift":
            # The segment's lift over all items: where the ranker's priors are miscalibrated as a
            # whole (the items it ranks first are those it overrates most), an item's own lift is
            # measured against this, not against 1 — else every shown item looks worse than the
            # unshown ones and the policy churns toward what the ranker rated lower.
            all_rewards, all_counts = self.arms.lookup(key, [ALL_ITEMS])
            shared = float((1.0 + all_rewards[0]) / (1.0 + all_counts[0]))
        prior = c.prior_or(self.base_rate)
        if self.pooled and self.belief == "beta":
            # The other segments' evidence, worth at most `prior_strength` impressions here.
            all_rewards, all_counts = self.arms.lookup(self._pool_key(c.placement), c.items)
            other_counts = np.maximum(all_counts - counts, 0.0)
            other_rewards = np.clip(all_rewards - rewards, 0.0, other_counts)
            s = self.prior_strength
            prior = np.clip((s * prior + other_rewards) / (s + other_counts), 1e-6, 1 - 1e-6)
        return Evidence(prior, rewards, counts, shared)

    def _beta(self, e: Evidence) -> tuple[np.ndarray, np.ndarray]:
        return beta_posterior(e.prior, e.rewards, e.counts, self.prior_strength)

    def _lift_shape(self, e: Evidence) -> tuple[np.ndarray, np.ndarray]:
        """Gamma (shape, rate) of each item's lift."""
        s = self.lift_strength
        return s * e.shared_lift + e.rewards, s + e.counts

    def _mean(self, e: Evidence) -> np.ndarray:
        if self.belief == "beta":
            alpha, beta = self._beta(e)
            return alpha / (alpha + beta)
        shape, rate = self._lift_shape(e)
        return np.minimum(e.prior * shape / rate, 1.0 - 1e-9)

    def _moments(self, e: Evidence) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of each candidate's reward rate."""
        if self.belief == "beta":
            alpha, beta = self._beta(e)
            n = alpha + beta
            mean = alpha / n
            return mean, np.sqrt(mean * (1 - mean) / n)  # the binomial standard error at n
        shape, rate = self._lift_shape(e)
        return self._mean(e), e.prior * np.sqrt(shape) / rate

    def mean(self, c: Candidates) -> np.ndarray:
        return self._mean(self._evidence(c))

    def sample(self, c: Candidates, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, len(c)) draws of the candidates' reward rates from the posterior."""
        e = self._evidence(c)
        if self.belief == "beta":
            alpha, beta = self._beta(e)
            return rng.beta(alpha, beta, size=(n, len(c)))
        shape, rate = self._lift_shape(e)
        return np.minimum(e.prior * rng.standard_gamma(shape, size=(n, len(c))) / rate, 1.0)

    # --- acting -------------------------------------------------------------------------------

    @abstractmethod
    def marginals(self, c: Candidates, k: int, rng: np.random.Generator | None = None) -> Marginals:
        """P(candidate i at position j) for every candidate and position, in the current state
        (`rng` drives the Monte-Carlo estimate where there is no closed form)."""

    @abstractmethod
    def select(
        self, c: Candidates, k: int, rng: np.random.Generator, propensities: bool = True
    ) -> Slate:
        """Draw one slate of min(k, len(c)) items (exact propensities cost nothing extra)."""

    @property
    def exploration_rate(self) -> float:
        """Share of shown slots that were exploration choices (running mean over recent slates)."""
        return self._explore_share

    def _record(self, explore: np.ndarray) -> None:
        share = float(explore.mean()) if len(explore) else 0.0
        self._explore_share += EXPLORE_SHARE_MEMORY * (share - self._explore_share)

    def _slate(
        self,
        c: Candidates,
        indices: np.ndarray,
        propensities: np.ndarray,
        explore: np.ndarray,
        reasons: list[str],
        errors: np.ndarray | None = None,
    ) -> Slate:
        self._record(explore)
        k = len(indices)
        errors = np.zeros(k) if errors is None else np.asarray(errors, dtype=np.float64)
        # Plain Python values: a slate is logged and serialised, and numpy scalars cost more.
        entries = [
            SlateEntry(item, j, score, propensity, flag, reason, error, prior)
            for j, (item, score, propensity, flag, reason, error, prior) in enumerate(
                zip(
                    c.items[indices].tolist(),
                    c.scores[indices].tolist(),
                    np.asarray(propensities, dtype=np.float64).tolist(),
                    np.asarray(explore, dtype=bool).tolist(),
                    reasons,
                    errors.tolist(),
                    c.prior_or(self.base_rate)[indices].tolist(),
                    strict=True,
                ),
                start=1,
            )
        ]
        return Slate(indices, entries, self.spec, self.exploration_rate)

    # --- learning -----------------------------------------------------------------------------

    def learn_one(
        self,
        item: object,
        reward: float,
        *,
        segment: str = "",
        prior: float | None = None,
        features: np.ndarray | None = None,
        exposure: float = 1.0,
        placement: str = "",
    ) -> None:
        """One shown item's outcome; `reward` is scaled to [0, 1] (see `feedback.RewardConfig`).

        `exposure` is the probability the user looked at the item's position (position bias):
        the item is charged that fraction of an impression, so low slots are not mistaken for
        bad items."""
        if not 0.0 <= reward <= 1.0:
            raise ValueError("reward: policies learn rewards scaled to [0, 1]")
        if not 0.0 < exposure <= 1.0:
            raise ValueError("exposure: must lie in (0, 1]")
        if not self.learn:
            return
        self._learn_features(reward, prior, features, exposure)
        if self.belief == "lift":
            # Charge the clicks the prior expected, so the lift is observed / expected.
            exposure *= self.base_rate if prior is None else prior
        key = self._key(segment, placement)
        self.arms.update(key, item, reward, exposure)
        if self.pooled:
            self.arms.update(self._pool_key(placement), item, reward, exposure, tick=False)
        if self.belief == "lift":
            self.arms.update(key, ALL_ITEMS, reward, exposure, tick=False)

    def _learn_features(
        self, reward: float, prior: float | None, features: np.ndarray | None, exposure: float
    ) -> None:
        """Where a policy also learns from the shown item's features (the linear ones)."""
        return None

    # --- persistence --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, object]:
        return {
            "spec": self.spec,
            "arms": self.arms.state_dict(),
            "explore_share": self._explore_share,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.arms = ArmStats.from_state(state["arms"])  # type: ignore[arg-type]
        self._explore_share = float(state.get("explore_share", 0.0))  # type: ignore[arg-type]

    def learned_state(self) -> dict[str, object]:
        """What learning alone changes (not what serving counts): equal on two replicas that
        learnt the same impressions in the same order."""
        return {"arms": self.arms.state_dict()}


# --- slot-stream policies: exact propensities ----------------------------------------------------


@dataclass(frozen=True)
class Pool:
    indices: np.ndarray
    share: float
    reason: str
    name: str = ""


@dataclass(frozen=True)
class StreamPlan:
    """One request's slot streams: the exploit ranking, the pools, and their marginals."""

    order: np.ndarray
    pools: list[Pool]
    flags: np.ndarray  # explore flag per exploit rank
    reasons: list[str]
    probs: np.ndarray  # share of each stream, exploit first
    sizes: list[int]  # size of each pool
    exploit: np.ndarray  # P(m-th exploit item at position j)
    pool: np.ndarray  # P(position j draws from pool s)


class SlotStreamPolicy(Policy):
    """Each slot exploits (next item of a fixed ranking) or draws uniformly from a pool."""

    @abstractmethod
    def _plan(self, c: Candidates, k: int) -> tuple[np.ndarray, list[Pool], np.ndarray, list[str]]:
        """(exploit ranking of k items, pools, explore flag and reason per exploit rank)."""

    def _streams(self, c: Candidates, k: int) -> StreamPlan:
        order, pools, flags, reasons = self._plan(c, k)
        pools = [p for p in pools if len(p.indices) > 0 and p.share > 0]
        probs = np.array([1.0 - sum(p.share for p in pools), *[p.share for p in pools]])
        sizes = [len(p.indices) for p in pools]
        exploit, pool = stream_marginals(k, probs, sizes)
        return StreamPlan(order, pools, flags, reasons, probs, sizes, exploit, pool)

    def marginals(self, c: Candidates, k: int, rng: np.random.Generator | None = None) -> Marginals:
        k = min(k, len(c))
        plan = self._streams(c, k)
        matrix = np.zeros((len(c), k))
        matrix[plan.order] = plan.exploit[: len(plan.order)]
        for s, p in enumerate(plan.pools):
            matrix[p.indices] += plan.pool[s] / len(p.indices)
        return Marginals(matrix)

    def select(
        self, c: Candidates, k: int, rng: np.random.Generator, propensities: bool = True
    ) -> Slate:
        k = min(k, len(c))
        plan = self._streams(c, k)
        order, pools, flags, reasons = plan.order, plan.pools, plan.flags, plan.reasons
        exploit, pool = plan.exploit, plan.pool
        streams = draw_streams(k, plan.probs, plan.sizes, rng)
        drawn = np.bincount(streams, minlength=len(pools) + 1)[1:]
        draws = [
            rng.choice(p.indices, size=int(n), replace=False) if n else p.indices[:0]
            for n, p in zip(drawn, pools, strict=True)
        ]
        taken = [0] * len(pools)
        indices = np.empty(k, dtype=np.int64)
        shown = np.empty(k)
        explore = np.empty(k, dtype=bool)
        slot_reasons: list[str] = []
        m = 0
        for j, s in enumerate(streams):
            if s == 0:
                indices[j] = order[m]
                shown[j] = exploit[m, j]
                explore[j] = flags[m]
                slot_reasons.append(reasons[m])
                m += 1
            else:
                p = pools[s - 1]
                indices[j] = draws[s - 1][taken[s - 1]]
                taken[s - 1] += 1
                shown[j] = pool[s - 1, j] / len(p.indices)
                explore[j] = True
                slot_reasons.append(p.reason)
        return self._annotate(
            c, self._slate(c, indices, shown, explore, slot_reasons), plan, streams
        )

    def _annotate(
        self, c: Candidates, slate: Slate, plan: StreamPlan, streams: np.ndarray
    ) -> Slate:
        """Where a policy notes how the slate was drawn (the balance controller does)."""
        return slate


class Greedy(SlotStreamPolicy):
    """The top k by posterior mean: no exploration (propensity 1 for every shown item)."""

    name = "greedy"

    def _plan(self, c: Candidates, k: int) -> tuple[np.ndarray, list[Pool], np.ndarray, list[str]]:
        order = _top(self.mean(c), k)
        return order, [], np.zeros(k, dtype=bool), ["exploit: best estimate"] * k


class EpsilonGreedy(SlotStreamPolicy):
    """Each slot explores with probability ε: a uniform pick among candidates outside the top k."""

    name = "egreedy"

    def __init__(self, epsilon: float = 0.1, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if not 0 <= epsilon <= 1:
            raise ValueError("epsilon: must lie in [0, 1]")
        self.epsilon = epsilon
        self.spec = f"egreedy:{epsilon:g}"

    @property
    def exploration_rate(self) -> float:
        return self.epsilon

    def _plan(self, c: Candidates, k: int) -> tuple[np.ndarray, list[Pool], np.ndarray, list[str]]:
        mean = self.mean(c)
        ranking = np.argsort(-mean, kind="stable")
        reason = f"explore: random pick (ε={self.epsilon:g})"
        return (
            ranking[:k],
            [Pool(ranking[k:], self.epsilon, reason)],
            np.zeros(k, dtype=bool),
            ["exploit: best estimate"] * k,
        )


class UCB(SlotStreamPolicy):
    """Optimism under uncertainty: rank by mean + c·sqrt(2 ln t)·(posterior std. deviation).

    UCB1's bonus with the posterior's spread in place of 1/sqrt(n) (rewards here are rare, and
    the unscaled bonus would dwarf a 1 % click rate). An item shown for its bonus rather than its
    mean is flagged as exploration.
    """

    name = "ucb"

    def __init__(self, c: float = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if c < 0:
            raise ValueError("c: must be non-negative")
        self.c = c
        self.spec = f"ucb:{c:g}"

    def _plan(self, c: Candidates, k: int) -> tuple[np.ndarray, list[Pool], np.ndarray, list[str]]:
        e = self._evidence(c)
        mean, spread = self._moments(e)
        bonus = self.c * np.sqrt(2 * np.log(self.arms.step + 2)) * spread
        order = _top(mean + bonus, k)
        greedy = set(_top(mean, k).tolist())
        flags = np.array([i not in greedy for i in order], dtype=bool)
        reasons = [
            f"explore: uncertain (evidence {e.counts[i]:.2g})" if flag else "exploit: best estimate"
            for i, flag in zip(order, flags, strict=True)
        ]
        return order, [], flags, reasons


class GorseRatios(SlotStreamPolicy):
    """Gorse's fixed explore ratios: inject popular and latest items into a fixed share of slots."""

    name = "gorse"

    def __init__(
        self, popular: float = 0.1, latest: float = 0.1, pool_size: int = 50, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if popular < 0 or latest < 0 or popular + latest > 1:
            raise ValueError("popular, latest: ratios must be non-negative and sum to at most 1")
        self.popular = popular
        self.latest = latest
        self.pool_size = pool_size
        self.spec = f"gorse:{popular:g},{latest:g}"

    @property
    def exploration_rate(self) -> float:
        return self.popular + self.latest

    def _plan(self, c: Candidates, k: int) -> tuple[np.ndarray, list[Pool], np.ndarray, list[str]]:
        if c.popularity is None or c.age is None:
            raise ValueError("popularity, age: Gorse-style injection needs both per candidate")
        ranking = np.argsort(-self.mean(c), kind="stable")
        rest = ranking[k:]
        popular = rest[np.argsort(-c.popularity[rest], kind="stable")][: self.pool_size]
        remaining = np.setdiff1d(rest, popular, assume_unique=True)
        latest = remaining[np.argsort(c.age[remaining], kind="stable")][: self.pool_size]
        pools = [
            Pool(popular, self.popular, "explore: popular injection"),
            Pool(latest, self.latest, "explore: latest injection"),
        ]
        return ranking[:k], pools, np.zeros(k, dtype=bool), ["exploit: best estimate"] * k


class Uniform(SlotStreamPolicy):
    """k items uniformly at random (the logging policy of the Open Bandit Dataset's `random`)."""

    name = "uniform"

    def marginals(self, c: Candidates, k: int, rng: np.random.Generator | None = None) -> Marginals:
        k = min(k, len(c))
        return Marginals(np.full((len(c), k), 1.0 / len(c)))

    def _plan(self, c: Candidates, k: int) -> tuple[np.ndarray, list[Pool], np.ndarray, list[str]]:
        raise NotImplementedError  # select() is overridden

    def select(
        self, c: Candidates, k: int, rng: np.random.Generator, propensities: bool = True
    ) -> Slate:
        k = min(k, len(c))
        indices = rng.choice(len(c), size=k, replace=False)
        return self._slate(
            c, indices, np.full(k, 1.0 / len(c)), np.ones(k, dtype=bool), ["explore: uniform"] * k
        )


class LinearMixin(Policy):
    """A ridge model of the ranker's error: reward ≈ prior + θᵀx over per-candidate features."""

    def __init__(self, *, ridge: float = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.ridge = ridge
        self.linear: LinearStats | None = None
        # (candidates, model, its update count, mean) of the last request asked about
        self._mean_memo: tuple[Candidates, LinearStats, int, np.ndarray] | None = None

    def _stats(self, dim: int) -> LinearStats:
        if self.linear is None:
            self.linear = LinearStats(dim, self.ridge, self.arms.discount)
        return self.linear

    def _linear_mean(self, c: Candidates) -> tuple[np.ndarray, np.ndarray, LinearStats]:
        if c.features is None:
            raise ValueError("features: linear policies need per-candidate feature vectors")
        linear = self._stats(c.features.shape[1])
        # One request asks several times (contenders, draws, reference); the answer only moves
        # when the model learns, so it is kept for the same candidates and model version.
        memo = self._mean_memo
        if memo is not None and memo[0] is c and memo[1] is linear and memo[2] == linear.updates:
            return memo[3], c.features, linear
        mean = c.prior_or(self.base_rate) + c.features @ linear.theta
        self._mean_memo = (c, linear, linear.updates, mean)
        return mean, c.features, linear

    def _learn_features(
        self, reward: float, prior: float | None, features: np.ndarray | None, exposure: float
    ) -> None:
        if features is None:
            # An outcome without features (an impression reopened from the store, which keeps
            # no feature vectors) still teaches the per-item statistics, not the linear model.
            return
        features = np.asarray(features, dtype=float)
        base = self.base_rate if prior is None else prior
        # reward ≈ exposure·(prior + θᵀx): regress reward/exposure with weight exposure.
        self._stats(len(features)).update(features, reward / exposure - base, weight=exposure)

    def state_dict(self) -> dict[str, object]:
        state = super().state_dict()
        state["linear"] = None if self.linear is None else self.linear.state_dict()
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        linear = state.get("linear")
        self.linear = None if linear is None else LinearStats.from_state(linear)  # type: ignore[arg-type]

    def learned_state(self) -> dict[str, object]:
        state = super().learned_state()
        state["linear"] = None if self.linear is None else self.linear.state_dict()
        return state


class LinUCB(LinearMixin, SlotStreamPolicy):
    """Rank by prior + θᵀx + α·sqrt(xᵀA⁻¹x): deterministic, so shown items have propensity 1."""

    name = "linucb"

    def __init__(self, alpha: float = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.alpha = alpha
        self.spec = f"linucb:{alpha:g}"

    def _plan(self, c: Candidates, k: int) -> tuple[np.ndarray, list[Pool], np.ndarray, list[str]]:
        mean, x, linear = self._linear_mean(c)
        order = _top(mean + self.alpha * linear.width(x), k)
        greedy = set(_top(mean, k).tolist())
        flags = np.array([i not in greedy for i in order], dtype=bool)
        reasons = ["explore: uncertain features" if f else "exploit: best estimate" for f in flags]
        return order, [], flags, reasons


# --- random-score policies: Monte-Carlo propensities ----------------------------------------------


def _tie_groups(mean: np.ndarray, features: np.ndarray) -> np.ndarray:
    """A label per candidate, shared by candidates whose scores are equal in every draw."""
    rows = np.column_stack([mean, features])
    order = np.lexsort(rows.T[::-1])
    same = np.r_[False, np.all(rows[order][1:] == rows[order][:-1], axis=1)]
    labels = np.empty(len(mean), dtype=np.int64)
    labels[order] = np.cumsum(~same) - 1
    return labels


def _top_random_ties(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the k largest values, best first, exact ties in random order."""
    return np.lexsort((rng.random(len(values)), -values))[:k]


class RandomScorePolicy(Policy):
    """The slate is the top k of one draw of random scores.

    Propensities are conditional (Rao–Blackwellised) Monte-Carlo estimates over `samples` draws
    beside the one the slate came from. A served slate's estimate includes that draw too, which
    makes it positive for every shown item and its inverse an unbiased importance weight (see
    `marginals.conditional_propensities`); `propensity_error` is its standard error."""

    conditional_samples = 32  # more precise than counting 1,000 draws (benchmarks/exploration.py)

    def __init__(self, samples: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if samples is not None and samples < 2:
            raise ValueError("samples: must be at least 2")
        self.samples = samples

    @property
    def n_samples(self) -> int:
        return self.samples or self.conditional_samples

    @abstractmethod
    def _distribution(self, c: Candidates) -> ScoreDistribution:
        """Each candidate's score distribution (independent across candidates)."""

    def _reference(self, c: Candidates) -> np.ndarray:
        """What the exploit slate ranks by: the posterior means."""
        return self.mean(c)

    def _draw(self, c: Candidates, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, len(c)) random scores, each row the scores of one possible slate."""
        return self._distribution(c).draw(rng, n)

    def marginals(self, c: Candidates, k: int, rng: np.random.Generator | None = None) -> Marginals:
        k = min(k, len(c))
        rng = rng or np.random.default_rng()
        dist = self._distribution(c)
        n = self.n_samples
        draws = dist.draw(rng, n)
        # Every candidate (off-policy evaluation): in blocks, to bound the (draws, k, rows) arrays.
        block = max(1, 2_000_000 // max(n * k, 1))
        parts = [
            conditional_marginals(draws, dist, k, np.arange(i, min(i + block, len(c))))
            for i in range(0, len(c), block)
        ]
        matrix = np.vstack([m.matrix for m in parts])
        # Each position holds exactly one item: dividing by the estimated column total (a ratio
        # estimate, like SNIPS) makes that hold exactly and shrinks the error further.
        matrix /= np.maximum(matrix.sum(axis=0, keepdims=True), 1e-300)
        return Marginals(matrix, max(m.error for m in parts))

    def select(
        self, c: Candidates, k: int, rng: np.random.Generator, propensities: bool = True
    ) -> Slate:
        """One slate; `propensities=False` skips the estimate (NaN in the slate), for
        simulations that do not log them."""
        k = min(k, len(c))
        dist = self._distribution(c)
        # One block of draws: the first is the slate, and all of them feed the estimate.
        draws = dist.draw(rng, 1 + (self.n_samples if propensities else 0))
        indices = _top(draws[0], k)
        if propensities:
            shown, errors = conditional_propensities(draws, dist, indices, np.arange(k))
        else:
            shown, errors = np.full(k, np.nan), np.full(k, np.nan)
        return self._served(c, indices, shown, errors, k)

    def _served(
        self, c: Candidates, indices: np.ndarray, shown: np.ndarray, errors: np.ndarray, k: int
    ) -> Slate:
        # Exploitation is what the posterior means rank in the top k — ties with the k-th
        # included, since the draw may order tied items either way.
        reference = self._reference(c)
        kth = reference[_top(reference, k)[-1]]
        explore = reference[indices] < kth
        reasons = [self._reason(bool(f)) for f in explore]
        return self._slate(c, indices, shown, explore, reasons, errors)

    def _reason(self, explore: bool) -> str:
        return "explore: sampled above its estimate" if explore else "exploit: best estimate"


class Softmax(RandomScorePolicy):
    """Plackett–Luce over the posterior means: weight ∝ mean^(1/τ); τ → 0 is greedy."""

    name = "softmax"

    def __init__(self, temperature: float = 0.2, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if temperature <= 0:
            raise ValueError("temperature: must be positive")
        self.temperature = temperature
        self.spec = f"softmax:{temperature:g}"

    def _distribution(self, c: Candidates) -> LocationScale:
        # Gumbel-top-k: adding Gumbel noise to log-weights and sorting draws a Plackett–Luce slate.
        log_weight = np.log(self.mean(c)) / self.temperature
        return LocationScale(log_weight, np.ones(len(c)), "gumbel")


class Thompson(RandomScorePolicy):
    """Thompson sampling per item and segment: rank by one draw from each posterior.

    `draw=gaussian` (default) draws from the normal with the posterior's mean and standard
    deviation (Gaussian Thompson sampling); `draw=exact` draws from the conjugate posterior
    itself (Beta, or Gamma lifts). Both have exact distribution functions, so both get
    conditional Monte-Carlo propensities."""

    name = "thompson"

    def __init__(self, draw: str = "gaussian", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if draw not in ("gaussian", "exact"):
            raise ValueError("draw: expected gaussian or exact")
        self.draw = draw

    def _distribution(self, c: Candidates) -> ScoreDistribution:
        e = self._evidence(c)
        if self.draw == "gaussian":
            mean, spread = self._moments(e)
            return LocationScale(mean, np.maximum(spread, 1e-12), "normal")
        if self.belief == "beta":
            return BetaScores(*self._beta(e))
        shape, rate = self._lift_shape(e)
        return GammaLiftScores(e.prior, shape, rate)


class LinearThompson(LinearMixin, RandomScorePolicy):
    """Linear Thompson sampling: θ̃ ~ N(θ̂, v²A⁻¹), rank by prior + θ̃ᵀx.

    The scores are correlated (one θ̃ for every candidate), so the propensities condition on
    each shown item's own direction (`marginals.linear_conditional_marginals`). Candidates with
    identical mean and features tie in every draw and are ordered at random among themselves."""

    name = "lints"

    def __init__(self, v: float = 0.1, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.v = v
        self.spec = f"lints:{v:g}"

    def _distribution(self, c: Candidates) -> ScoreDistribution:
        raise NotImplementedError("linear Thompson scores are correlated across candidates")

    def _reference(self, c: Candidates) -> np.ndarray:
        return self._linear_mean(c)[0]

    def _deviations(self, c: Candidates, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, d) draws of θ̃ - θ̂."""
        _, _, linear = self._linear_mean(c)
        root = np.linalg.cholesky(linear.a_inv + 1e-12 * np.eye(linear.dim))
        return self.v * rng.standard_normal((n, linear.dim)) @ root.T

    def _draw(self, c: Candidates, rng: np.random.Generator, n: int) -> np.ndarray:
        mean, x, _ = self._linear_mean(c)
        return mean[None, :] + self._deviations(c, rng, n) @ x.T

    def _contenders(self, c: Candidates, k: int) -> np.ndarray:
        """Candidates that can reach the top k: each score is normal with sd v·√(xᵀA⁻¹x), and an
        item whose +5 sd stays below the k-th best −5 sd gets there with chance < 3e-7 a draw."""
        mean, x, linear = self._linear_mean(c)
        if len(c) <= k:
            return np.arange(len(c))
        spread = self.v * np.sqrt(np.maximum(((x @ linear.a_inv) * x).sum(axis=1), 0))
        threshold = np.partition(mean - 5 * spread, len(c) - k)[len(c) - k]
        return np.flatnonzero(mean + 5 * spread >= threshold)

    def _conditional(
        self,
        c: Candidates,
        deviations: np.ndarray,
        keep: np.ndarray,
        rows: np.ndarray,
        k: int,
        positions: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Propensities of `rows` (indices into `keep`) among the kept candidates: at every
        position, or at one position each."""
        mean, x, linear = self._linear_mean(c)
        kept_mean, kept_x = mean[keep], x[keep]
        scores = kept_mean[None, :] + deviations @ kept_x.T
        covariance = self.v**2 * linear.a_inv
        groups = _tie_groups(kept_mean, kept_x)
        return linear_conditional_marginals(
            scores, kept_mean, kept_x, covariance, rows, k, groups, positions
        )

    def marginals(self, c: Candidates, k: int, rng: np.random.Generator | None = None) -> Marginals:
        k = min(k, len(c))
        rng = rng or np.random.default_rng()
        deviations = self._deviations(c, rng, self.n_samples)
        everyone = np.arange(len(c))
        block = max(1, 4_000_000 // max(self.n_samples * len(c), 1))
        parts = [
            self._conditional(c, deviations, everyone, everyone[i : i + block], k)
            for i in range(0, len(c), block)
        ]
        matrix = np.vstack([p for p, _ in parts])
        matrix /= np.maximum(matrix.sum(axis=0, keepdims=True), 1e-300)
        return Marginals(matrix, float(max(e.max() for _, e in parts)))

    def select(
        self, c: Candidates, k: int, rng: np.random.Generator, propensities: bool = True
    ) -> Slate:
        k = min(k, len(c))
        mean, x, _ = self._linear_mean(c)
        deviations = self._deviations(c, rng, 1 + (self.n_samples if propensities else 0))
        indices = _top_random_ties(mean + x @ deviations[0], k, rng)
        if not propensities:
            return self._served(c, indices, np.full(k, np.nan), np.full(k, np.nan), k)
        # The others that can matter: the contenders, and whatever was shown (in case the
        # screen was wrong, at < 3e-7 a draw).
        keep = np.union1d(self._contenders(c, k), indices)
        rows = np.searchsorted(keep, indices)
        shown, errors = self._conditional(c, deviations, keep, rows, k, np.arange(k))
        return self._served(c, indices, shown, errors, k)
