"""A/B tests of configurations: deterministic assignment and always-valid intervals.

**Assignment.** A user's variant is a hash of (experiment, user): the same on every request,
after a restart and on any replica, with no table to keep. The shares are the probabilities of
that draw.

**Statistics.** Each closed impression of the test adds its metric (the attributed reward, or
whether it earned a click, a cart, a purchase, or its revenue) to its variant. Each variant's
mean has a confidence sequence, and so has each variant's difference from the control (the
first variant). The difference is the mean of one stream over all of the test's impressions,

    z = (m − m̄) · [variant] / share_variant − (m − m̄) · [control] / share_control,

whose expectation is μ_variant − μ_control (m̄: the mean of the test's earlier impressions, a
control variate that removes the metric's level from the variance). The sequences are Robbins'
normal mixture with the empirical variance of the sums per user (`ClusteredMean`): valid at every
look at once, so a dashboard read every minute does not inflate false positives the way a fixed-n
test does. Users, the unit of assignment, are the unit of the variance: a user's impressions are
not independent (treated as independent, A/A tests in the simulator declared a difference in 19 %
of runs). The level is asymptotic (the variance is estimated).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from equilibra.explore.feedback import ClosedImpression
from equilibra.explore.sequential import mixture_radius
from equilibra.explore.slate import SlatePolicy

METRICS = ("reward", "click", "add_to_cart", "purchase", "revenue")
# Before this many impressions in each compared arm, no difference is declared: the variance
# estimate behind the interval is too rough (rare rewards make it zero at first).
MIN_IMPRESSIONS = 200
# Where the confidence sequences are tightest (Robbins' ρ): tests run for thousands.
TIGHT_AT = 2000


@dataclass
class ClusteredMean:
    """A running mean with a time-uniform confidence sequence whose variance is that of the
    sums per unit (the user: the unit of assignment).

    A user's impressions are not independent (the same person, the same variant), so the
    variance of a sum of impressions is Σ_u (s_u − n_u·mean)² over users, not the sum of
    squared deviations of impressions; with every unit seen once the two agree. The boundary is
    Robbins' normal mixture (`explore.sequential`) with this V_n. Sums per unit are kept in
    memory; a snapshot keeps only the totals, so after a restart a returning user's next
    impressions start a new unit (a slightly narrower interval than the truth).
    """

    alpha: float = 0.05
    tight_at: int = 2000
    n: int = 0
    total: float = 0.0
    sum_ss: float = 0.0  # Σ s_u²
    sum_sn: float = 0.0  # Σ s_u n_u
    sum_nn: float = 0.0  # Σ n_u²
    units: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def update(self, value: float, unit: str | None = None) -> None:
        key = unit if unit is not None else f"\x00{self.n}"  # no unit: its own
        s, c = self.units.get(key, (0.0, 0))
        s2, c2 = s + value, c + 1
        self.sum_ss += s2 * s2 - s * s
        self.sum_sn += s2 * c2 - s * c
        self.sum_nn += c2 * c2 - c * c
        self.units[key] = (s2, c2)
        self.n += 1
        self.total += value

    def variance_sum(self) -> float:
        """V_n = Σ_u (s_u − n_u·mean)²."""
        m = self.mean
        return max(self.sum_ss - 2 * m * self.sum_sn + m * m * self.sum_nn, 0.0)

    def radius(self) -> float:
        if self.n < 2:
            return math.inf
        total = self.variance_sum()
        if total <= 0:
            return 0.0
        return mixture_radius(total, total / self.n * self.tight_at, self.n, self.alpha)

    def state_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k != "units"}

    @classmethod
    def from_state(cls, state: Mapping[str, float]) -> ClusteredMean:
        return cls(**state)  # type: ignore[arg-type]


def prediction_interval(
    value: float, ci: Sequence[float], impression_rewards: Sequence[float], slots: float,
    horizon: int, z: float = 1.96,
) -> list[float]:  # fmt: skip
    """Where a value estimated off-policy (`value`, its interval `ci`, per shown slot) should
    fall once measured live over `horizon` impressions: each side of the estimate's interval
    widened by the live measurement's own sampling noise, whose spread is taken from the logged
    impressions' rewards (`impression_rewards`: one sum per impression, `slots` per impression).
    A confidence interval for the value ignores that noise, and covers a live run of the same
    size as the log only about 70 % of the time (benchmarks/experiments.py)."""
    rewards = np.asarray(impression_rewards, dtype=np.float64)
    if len(rewards) < 2 or horizon < 1:
        return [float(ci[0]), float(ci[1])]
    spread = float(rewards.std(ddof=1)) / slots
    live = z * spread / math.sqrt(horizon)
    low, high = float(ci[0]), float(ci[1])
    return [
        value - math.sqrt((value - low) ** 2 + live**2),
        value + math.sqrt((high - value) ** 2 + live**2),
    ]


def metric_value(metric: str, closed: ClosedImpression) -> float:
    """One impression's contribution to a test's metric."""
    if metric == "reward":
        return closed.raw_reward
    if metric == "revenue":
        return float(closed.kinds.get("revenue", 0.0))
    return 1.0 if closed.kinds.get(metric, 0.0) > 0 else 0.0


def bucket(experiment: str, user_id: str) -> float:
    """A user's position in [0, 1) for this experiment: uniform, stable, independent across
    experiments (so one test's split says nothing of another's)."""
    digest = hashlib.blake2b(f"{experiment}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign(experiment: str, user_id: str, shares: Sequence[float]) -> int:
    """The index of the user's variant, by the shares' cumulative sums (shares sum to 1)."""
    point = bucket(experiment, user_id)
    total = 0.0
    for index, share in enumerate(shares):
        total += share
        if point < total:
            return index
    return len(shares) - 1  # rounding: the last share ends at ~1.0


@dataclass
class Variant:
    name: str
    share: float
    policy: str | None = None  # a policy spec; None: the service's policy
    model_version: int | None = None  # None: the version being served
    rules: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ArmStats:
    """One variant's metric, and (for all but the control) its difference from the control."""

    mean: ClusteredMean
    gain: ClusteredMean | None  # the z stream above; None for the control

    def state_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.state_dict(),
            "gain": None if self.gain is None else self.gain.state_dict(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ArmStats:
        gain = state.get("gain")
        return cls(
            ClusteredMean.from_state(state["mean"]),
            None if gain is None else ClusteredMean.from_state(gain),
        )


@dataclass
class Experiment:
    """A test's definition, its state and its statistics (no policies: see `SplitTest`)."""

    name: str
    variants: list[Variant]
    metric: str = "reward"
    placement: str | None = None  # None: every placement
    alpha: float = 0.05
    started: float = field(default_factory=time.time)
    stopped: float | None = None
    promoted: str | None = None
    arms: list[ArmStats] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_definition(self.name, self.variants, self.metric)
        if not self.arms:
            self.arms = [
                ArmStats(
                    ClusteredMean(self.alpha, TIGHT_AT),
                    None if i == 0 else ClusteredMean(self.alpha, TIGHT_AT),
                )
                for i in range(len(self.variants))
            ]

    @property
    def running(self) -> bool:
        return self.stopped is None

    @property
    def shares(self) -> list[float]:
        return [v.share for v in self.variants]

    def applies_to(self, placement: str) -> bool:
        return self.running and (self.placement is None or self.placement == placement)

    def variant_of(self, user_id: str) -> Variant:
        return self.variants[assign(self.name, user_id, self.shares)]

    def key(self, variant: Variant) -> str:
        """What the impression log and the ledger call an arm: `experiment/variant`."""
        return f"{self.name}/{variant.name}"

    def record(self, variant_name: str, value: float, user_id: str | None = None) -> None:
        """One closed impression of `variant_name` with its metric value; `user_id`: the unit
        its variance is clustered by (None: the impression is its own unit)."""
        index = next(i for i, v in enumerate(self.variants) if v.name == variant_name)
        # Centred on the mean of the test's earlier impressions (known before this one, so the
        # stream stays a martingale difference): E[[v]/share_v] = E[[c]/share_c] = 1, so the
        # centre cancels from the expectation and leaves only the variance of the metric around
        # its mean, not its level. Uncentred, a click rate near 0.5 doubled the variance.
        seen = sum(arm.mean.n for arm in self.arms)
        centre = sum(arm.mean.total for arm in self.arms) / seen if seen else 0.0
        self.arms[index].mean.update(value, user_id)
        control = self.variants[0].share
        for other, arm in enumerate(self.arms[1:], start=1):
            assert arm.gain is not None
            share = self.variants[other].share
            if index == other:
                arm.gain.update((value - centre) / share, user_id)
            elif index == 0:
                arm.gain.update(-(value - centre) / control, user_id)
            else:
                arm.gain.update(0.0, user_id)

    def summary(self) -> dict[str, Any]:
        """Each variant's metric with its interval, and its difference from the control with
        the decision the interval allows (`better`, `worse` or `undecided`)."""
        control = self.arms[0].mean
        variants = []
        for variant, arm in zip(self.variants, self.arms, strict=True):
            row: dict[str, Any] = {
                "name": variant.name,
                "share": variant.share,
                "policy": variant.policy,
                "model_version": variant.model_version,
                "rules": variant.rules,
                "impressions": arm.mean.n,
                "mean": arm.mean.mean,
                "interval": _interval(arm.mean),
            }
            if arm.gain is not None:
                ready = min(arm.mean.n, control.n) >= MIN_IMPRESSIONS
                low, high = _interval(arm.gain)
                row["vs_control"] = {
                    "difference": arm.gain.mean,
                    "interval": [low, high],
                    "relative": arm.gain.mean / control.mean if control.mean > 0 else None,
                    "decision": _decision(low, high) if ready else "undecided",
                }
            variants.append(row)
        return {
            "name": self.name,
            "placement": self.placement,
            "metric": self.metric,
            "level": 1 - self.alpha,
            "interval_method": "Robbins normal-mixture confidence sequence (always valid)",
            "status": "running" if self.running else "stopped",
            "started": self.started,
            "stopped": self.stopped,
            "promoted": self.promoted,
            "variants": variants,
        }

    def state_dict(self) -> dict[str, Any]:
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["variants"] = [vars(v) for v in self.variants]
        state["arms"] = [a.state_dict() for a in self.arms]
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Experiment:
        return cls(
            **{
                **state,
                "variants": [Variant(**v) for v in state["variants"]],
                "arms": [ArmStats.from_state(a) for a in state["arms"]],
            }
        )


class SplitTest:
    """An experiment with a policy per variant: routes each user's request to their variant's
    policy, and feeds each closed impression to its variant's statistics. The simulator runs
    one as it runs a policy; the service keeps one per running test."""

    def __init__(
        self,
        experiment: Experiment,
        policies: Mapping[str, SlatePolicy],
        look_every: int | None = None,
        lifts: Mapping[str, float] | None = None,
    ):
        """`look_every` (benchmarks): how often (closed impressions) the decisions are read, as
        a person refreshing a dashboard would, the first decision kept; None: never (a server
        reads them when asked). `lifts` (simulation only):
        a variant's users click this many times as often, a known effect to detect."""
        missing = [v.name for v in experiment.variants if v.name not in policies]
        if missing:
            raise ValueError(f"policies: none for variants {', '.join(missing)}")
        self.experiment = experiment
        self.policies = dict(policies)
        self.look_every = look_every
        self.lifts = dict(lifts or {})
        self.closed = 0
        self.first_decision: dict[str, Any] | None = None

    @property
    def spec(self) -> str:
        return f"split:{self.experiment.name}"

    @property
    def arms(self) -> dict[str, SlatePolicy]:
        """Policies by the variant key the impressions carry."""
        return {self.experiment.key(v): self.policies[v.name] for v in self.experiment.variants}

    def route(self, user_id: str) -> tuple[str, SlatePolicy]:
        """-> (the variant key to log, the policy that serves this user)."""
        variant = self.experiment.variant_of(user_id)
        return self.experiment.key(variant), self.policies[variant.name]

    def lift(self, key: str) -> float:
        return self.lifts.get(key.split("/", 1)[-1], 1.0)

    def observe(self, closed: ClosedImpression) -> None:
        prefix = self.experiment.name + "/"
        if closed.variant is None or not closed.variant.startswith(prefix):
            return
        value = metric_value(self.experiment.metric, closed)
        self.experiment.record(closed.variant[len(prefix) :], value, closed.user_id)
        self.closed += 1
        if self.look_every and self.closed % self.look_every == 0:
            self._look()

    def _look(self) -> None:
        if self.first_decision is not None:
            return
        for row in self.experiment.summary()["variants"][1:]:
            decision = row["vs_control"]["decision"]
            if decision != "undecided":
                self.first_decision = {
                    "impressions": self.closed,
                    "variant": row["name"],
                    "decision": decision,
                }
                return


def check_definition(name: str, variants: Sequence[Variant], metric: str) -> None:
    """ValueError naming the field of what cannot be run."""
    if not name or "/" in name:
        raise ValueError("name: must be non-empty and without '/'")
    if len(variants) < 2:
        raise ValueError("variants: at least two (the first is the control)")
    names = [v.name for v in variants]
    if len(set(names)) != len(names) or any(not n or "/" in n for n in names):
        raise ValueError("variants: names must be distinct, non-empty and without '/'")
    for index, variant in enumerate(variants):
        if not (math.isfinite(variant.share) and 0 < variant.share <= 1):
            raise ValueError(f"variants[{index}].share: must be in (0, 1]")
    if abs(sum(v.share for v in variants) - 1.0) > 1e-6:
        raise ValueError("variants: the shares must sum to 1")
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")


def _interval(stat: ClusteredMean) -> list[float | None]:
    radius = stat.radius()
    if not math.isfinite(radius):
        return [None, None]
    return [stat.mean - radius, stat.mean + radius]


def _decision(low: float | None, high: float | None) -> str:
    if low is not None and low > 0:
        return "better"
    if high is not None and high < 0:
        return "worse"
    return "undecided"
