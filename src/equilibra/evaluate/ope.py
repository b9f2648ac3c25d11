"""Off-policy estimators: what would a policy have earned on logs another policy produced?

Pure functions of arrays, in the layout of Open Bandit Pipeline (one round per row):

- ``reward`` (n,): the logged reward;
- ``action`` (n,): the logged action (dense item index);
- ``pscore`` (n,): the logging policy's probability of that action (at that position);
- ``action_dist`` (n, n_actions): the evaluated policy's probabilities in the same state;
- ``estimated_rewards`` (n, n_actions): a reward model's predictions (DM, DR).

Each estimator returns per-round contributions, so an estimate is their mean and a bootstrap
interval resamples rounds. Slate variants take (n_rounds, slate_size) arrays.
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


def _check(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray | None = None,
) -> None:
    n = len(reward)
    if not (len(action) == len(pscore) == n):
        raise ValueError("reward, action, pscore: must have the same length")
    if n == 0:
        raise ValueError("reward: no rounds to evaluate")
    if np.any(pscore <= 0) or np.any(pscore > 1) or not np.all(np.isfinite(pscore)):
        raise ValueError("pscore: logging propensities must lie in (0, 1]")
    if action_dist is not None:
        if action_dist.ndim != 2 or action_dist.shape[0] != n:
            raise ValueError("action_dist: expected shape (n_rounds, n_actions)")
        if np.any(action_dist < 0) or not np.allclose(action_dist.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("action_dist: each row must be a probability distribution")
        if np.any(action < 0) or np.any(action >= action_dist.shape[1]):
            raise ValueError("action: index outside action_dist's columns")


def importance_weights(
    action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray
) -> np.ndarray:
    return action_dist[np.arange(len(action)), action] / pscore


def ips_rounds(
    reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray
) -> np.ndarray:
    _check(reward, action, pscore, action_dist)
    return importance_weights(action, pscore, action_dist) * reward


def dm_rounds(estimated_rewards: np.ndarray, action_dist: np.ndarray) -> np.ndarray:
    if estimated_rewards.shape != action_dist.shape:
        raise ValueError("estimated_rewards: must have action_dist's shape")
    return (action_dist * estimated_rewards).sum(axis=1)


def dr_rounds(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    estimated_rewards: np.ndarray,
) -> np.ndarray:
    _check(reward, action, pscore, action_dist)
    rows = np.arange(len(action))
    correction = importance_weights(action, pscore, action_dist) * (
        reward - estimated_rewards[rows, action]
    )
    return dm_rounds(estimated_rewards, action_dist) + correction


def snips(reward: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    return float((weights * reward).sum() / total) if total > 0 else 0.0


def replay_rounds(
    reward: np.ndarray, action: np.ndarray, action_dist: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rounds where the evaluated policy's most likely action is the logged one."""
    matched = np.argmax(action_dist, axis=1) == action
    return reward, matched


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


def estimate_all(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    estimated_rewards: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS, SNIPS, and (with a reward model) DM and DR, each with a 95 % bootstrap interval."""
    reward = np.asarray(reward, dtype=float)
    action = np.asarray(action, dtype=np.int64)
    pscore = np.asarray(pscore, dtype=float)
    action_dist = np.asarray(action_dist, dtype=float)
    weights = importance_weights(action, pscore, action_dist)
    out = {
        "ips": bootstrap(ips_rounds(reward, action, pscore, action_dist), n_boot=n_boot, seed=seed),
        "snips": bootstrap(
            reward, lambda idx: snips(reward[idx], weights[idx]), n_boot=n_boot, seed=seed
        ),
    }
    if estimated_rewards is not None:
        out["dm"] = bootstrap(dm_rounds(estimated_rewards, action_dist), n_boot=n_boot, seed=seed)
        out["dr"] = bootstrap(
            dr_rounds(reward, action, pscore, action_dist, estimated_rewards),
            n_boot=n_boot,
            seed=seed,
        )
    matched_reward, matched = replay_rounds(reward, action, action_dist)
    if matched.any():
        out["replay"] = bootstrap(
            matched_reward,
            lambda idx: (
                float(matched_reward[idx][matched[idx]].mean()) if matched[idx].any() else 0.0
            ),
            n_boot=n_boot,
            seed=seed,
        )
    return out


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
