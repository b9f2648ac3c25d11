"""Off-policy estimators: what would a policy have earned on logs another policy produced?

Pure functions of arrays, one round per row (a shown slot, for slates):

- ``reward`` (n,): the logged reward;
- ``pscore`` (n,): the logging policy's probability of the logged action (at its position);
- ``target`` (n,): the evaluated policy's probability of that same action, in the same state;
- ``expected`` (n,): the evaluated policy's expected reward under a reward model (DM);
- ``q_logged`` (n,): the reward model's prediction for the logged action (DR).

`estimate` is the one path every caller takes (`equilibra ope`, the benchmarks, the OBP-style
`estimate_all` below): it checks the inputs, then reports IPS, SNIPS and, with a reward model,
DM and DR, each with a percentile-bootstrap interval. Rounds that belong together (the slots of
one impression) are resampled together: pass their `clusters`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, object]:
        return {"value": self.value, "ci": [self.low, self.high]}


class OPEInputError(ValueError):
    """A bad logged value: names the field and the first offending round (0-based)."""

    def __init__(self, field: str, message: str, row: int | None = None):
        where = "" if row is None else f" (round {row})"
        super().__init__(f"{field}: {message}{where}")
        self.field = field
        self.row = row


def _first(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) if len(bad) else None


def check_rounds(
    reward: np.ndarray,
    pscore: np.ndarray,
    target: np.ndarray | None = None,
    expected: np.ndarray | None = None,
    q_logged: np.ndarray | None = None,
) -> None:
    n = len(reward)
    arrays = {"pscore": pscore, "target": target, "expected": expected, "q_logged": q_logged}
    for name, values in arrays.items():
        if values is not None and len(values) != n:
            raise OPEInputError(
                name, "reward, pscore and the policy's values: must have the same length"
            )
    if n == 0:
        raise OPEInputError("reward", "no rounds to evaluate")
    if (row := _first(~np.isfinite(reward))) is not None:
        raise OPEInputError("reward", "must be a finite number", row)
    if (row := _first(~np.isfinite(pscore) | (pscore <= 0) | (pscore > 1))) is not None:
        raise OPEInputError(
            "pscore", f"logging propensities must lie in (0, 1], got {pscore[row]!r}", row
        )
    if (
        target is not None
        and (row := _first(~np.isfinite(target) | (target < 0) | (target > 1))) is not None
    ):
        raise OPEInputError("target", f"probabilities must lie in [0, 1], got {target[row]!r}", row)
    for name, values in (("expected", expected), ("q_logged", q_logged)):
        if values is not None and (row := _first(~np.isfinite(values))) is not None:
            raise OPEInputError(name, "reward-model predictions must be finite", row)


def importance_weights(target: np.ndarray, pscore: np.ndarray) -> np.ndarray:
    return target / pscore


def round_contributions(
    reward: np.ndarray,
    weight: np.ndarray,
    expected: np.ndarray | None = None,
    q_logged: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-round contributions whose means are IPS and, with a reward model, DM and DR."""
    rounds = {"ips": weight * reward}
    if expected is not None and q_logged is not None:
        rounds["dm"] = expected
        rounds["dr"] = expected + weight * (reward - q_logged)
    return rounds


def snips(reward: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    return float((weights * reward).sum() / total) if total > 0 else 0.0


def point_estimates(
    reward: np.ndarray,
    weight: np.ndarray,
    expected: np.ndarray | None = None,
    q_logged: np.ndarray | None = None,
) -> dict[str, float]:
    """IPS, SNIPS and (with a reward model) DM and DR as values, without intervals (for
    resampling studies that repeat an estimate many times)."""
    values = {
        name: float(r.mean())
        for name, r in round_contributions(reward, weight, expected, q_logged).items()
    }
    values["snips"] = snips(reward, weight)
    return values


def bootstrap(
    rounds: np.ndarray,
    statistic: Callable[[np.ndarray], float] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap over rounds; `statistic` maps a resample of row indices to a value."""
    rng = np.random.default_rng(seed)
    n = len(rounds)
    stat = statistic or (lambda idx: float(rounds[idx].mean()))
    value = stat(np.arange(n))
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(value), float(low), float(high))


def ratio_bootstrap(
    numerator: np.ndarray,
    denominator: np.ndarray,
    clusters: np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Estimate:
    """Σ numerator / Σ denominator with a percentile interval that resamples whole clusters.

    A cluster's rounds (an impression's slots) share a user and a moment, so their errors are
    correlated; resampling slots one by one would make the interval too narrow."""
    _, codes = np.unique(clusters, return_inverse=True)
    num = np.bincount(codes, weights=numerator)
    den = np.bincount(codes, weights=denominator)
    total = den.sum()
    value = float(num.sum() / total) if total > 0 else 0.0
    rng = np.random.default_rng(seed)
    m = len(num)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, m, m), minlength=m)
        d = counts @ den
        draws[b] = (counts @ num) / d if d > 0 else 0.0
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return Estimate(value, float(low), float(high))


def estimate(
    reward: np.ndarray,
    pscore: np.ndarray,
    target: np.ndarray,
    expected: np.ndarray | None = None,
    q_logged: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS, SNIPS and (with a reward model) DM and DR, each with a 95 % bootstrap interval.

    Values are per round (per shown slot); `clusters` (e.g. impression ids) are resampled whole.
    """
    reward = np.asarray(reward, dtype=float)
    pscore = np.asarray(pscore, dtype=float)
    target = np.asarray(target, dtype=float)
    check_rounds(reward, pscore, target, expected, q_logged)
    weight = importance_weights(target, pscore)
    groups = np.arange(len(reward)) if clusters is None else np.asarray(clusters)
    ones = np.ones(len(reward))
    out: dict[str, Estimate] = {}
    for name, contributions in round_contributions(reward, weight, expected, q_logged).items():
        out[name] = ratio_bootstrap(contributions, ones, groups, n_boot, seed=seed)
    out["snips"] = ratio_bootstrap(weight * reward, weight, groups, n_boot, seed=seed)
    return {name: out[name] for name in ("ips", "snips", "dm", "dr") if name in out}


# --- the Open Bandit Pipeline's layout: a policy's whole action distribution per round --------


def _check_action_dist(action: np.ndarray, action_dist: np.ndarray) -> None:
    if action_dist.ndim != 2 or action_dist.shape[0] != len(action):
        raise OPEInputError("action_dist", "expected shape (n_rounds, n_actions)")
    if np.any(action_dist < 0) or not np.allclose(action_dist.sum(axis=1), 1.0, atol=1e-6):
        raise OPEInputError("action_dist", "each row must be a probability distribution")
    if (row := _first((action < 0) | (action >= action_dist.shape[1]))) is not None:
        raise OPEInputError("action", "index outside action_dist's columns", row)


def _obp_arrays(
    reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    reward = np.asarray(reward, dtype=float)
    action = np.asarray(action, dtype=np.int64)
    pscore = np.asarray(pscore, dtype=float)
    action_dist = np.asarray(action_dist, dtype=float)
    if not len(reward) == len(action) == len(pscore):
        raise OPEInputError("reward, action, pscore", "must have the same length")
    check_rounds(reward, pscore)
    _check_action_dist(action, action_dist)
    return reward, action, pscore, action_dist


def ips_rounds(
    reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray
) -> np.ndarray:
    reward, action, pscore, action_dist = _obp_arrays(reward, action, pscore, action_dist)
    target = action_dist[np.arange(len(action)), action]
    return importance_weights(target, pscore) * reward


def estimate_all(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    estimated_rewards: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """`estimate` for OBP-shaped inputs (a reward model as (n_rounds, n_actions) predictions)."""
    reward, action, pscore, action_dist = _obp_arrays(reward, action, pscore, action_dist)
    rows = np.arange(len(action))
    expected = q_logged = None
    if estimated_rewards is not None:
        if estimated_rewards.shape != action_dist.shape:
            raise OPEInputError("estimated_rewards", "must have action_dist's shape")
        expected = (action_dist * estimated_rewards).sum(axis=1)
        q_logged = estimated_rewards[rows, action]
    return estimate(
        reward, pscore, action_dist[rows, action], expected, q_logged, n_boot=n_boot, seed=seed
    )


# --- slates ------------------------------------------------------------------------------------


def independent_ips_rounds(
    reward: np.ndarray, pscore: np.ndarray, evaluation_pscore: np.ndarray
) -> np.ndarray:
    """IIPS: each position weighted by its own marginal propensity ratio; summed per slate.

    Unbiased when the reward at a position depends only on the item shown there.
    """
    if reward.shape != pscore.shape or reward.shape != evaluation_pscore.shape:
        raise ValueError("reward, pscore, evaluation_pscore: must share (n_rounds, slate_size)")
    if np.any(pscore <= 0):
        raise ValueError("pscore: logging propensities must be positive")
    return (evaluation_pscore / pscore * reward).sum(axis=1)


def reward_interaction_ips_rounds(
    reward: np.ndarray, pscore_cascade: np.ndarray, evaluation_pscore_cascade: np.ndarray
) -> np.ndarray:
    """RIPS: position k weighted by the ratio of the joint propensities of positions 1..k.

    `*_cascade[:, k]` is the probability of the logged items at positions 1..k together
    (a cascade: the user looks from the top). Unbiased under the cascade assumption.
    """
    if reward.shape != pscore_cascade.shape or reward.shape != evaluation_pscore_cascade.shape:
        raise ValueError("reward and the cascade propensities: must share a shape")
    if np.any(pscore_cascade <= 0):
        raise ValueError("pscore_cascade: logging propensities must be positive")
    return (evaluation_pscore_cascade / pscore_cascade * reward).sum(axis=1)
