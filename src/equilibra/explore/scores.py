"""Distributions of the random scores a slate is the top k of, one per candidate.

A random-score policy (Thompson sampling, softmax) draws every candidate's score independently;
knowing each candidate's distribution function lets its propensities be computed by conditional
Monte Carlo (`marginals.conditional_propensities`). Each distribution gives draws, the CDF and the
survival function (the difference of two CDF values far in the upper tail loses every digit;
the difference of two survival values keeps them).

Draws are float64: in float32, two of 500 candidates tie in about one slate in 300, and a tie is
an event of probability 0 that the propensities cannot account for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.special import betainc, betaln, gammainc, gammaincc, ndtr


class ScoreDistribution(Protocol):
    def __len__(self) -> int: ...

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, len) independent draws of every candidate's score."""

    def cdf(self, items: np.ndarray, x: np.ndarray) -> np.ndarray:
        """P(score of items[t] <= x[..., t])."""

    def sf(self, items: np.ndarray, x: np.ndarray) -> np.ndarray:
        """P(score of items[t] > x[..., t])."""


@dataclass(frozen=True)
class LocationScale:
    """location + scale × standard noise: `normal` (Gaussian Thompson) or `gumbel` (softmax)."""

    location: np.ndarray
    scale: np.ndarray
    noise: str

    def __len__(self) -> int:
        return len(self.location)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        shape = (n, len(self.location))
        if self.noise == "normal":
            scores = rng.standard_normal(shape)
        else:  # Gumbel(0, 1) = -log(Exp(1))
            scores = rng.standard_exponential(shape)
            np.maximum(scores, np.finfo(np.float64).tiny, out=scores)  # a 0 would rank first
            np.log(scores, out=scores)
            np.negative(scores, out=scores)
        scores *= self.scale
        scores += self.location
        return scores

    def _z(self, items: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (x - self.location[items]) / self.scale[items]

    def cdf(self, items: np.ndarray, x: np.ndarray) -> np.ndarray:
        z = self._z(items, x)
        return ndtr(z) if self.noise == "normal" else np.exp(-np.exp(-z))

    def sf(self, items: np.ndarray, x: np.ndarray) -> np.ndarray:
        z = self._z(items, x)
        return ndtr(-z) if self.noise == "normal" else -np.expm1(-np.exp(-z))


def _log_gamma_draws(rng: np.random.Generator, shape: np.ndarray, n: int) -> np.ndarray:
    """log G for G ~ Gamma(shape), (n, len) draws, exact even where G itself underflows:
    G_a = G_(a+1) · U^(1/a) (Marsaglia and Tsang's boost), taken in logs."""
    boosted = rng.standard_gamma(shape + 1.0, size=(n, len(shape)))
    uniform = rng.random((n, len(shape)))
    np.maximum(uniform, np.finfo(np.float64).tiny, out=uniform)
    return np.log(boosted) + np.log(uniform) / shape


def _incomplete_beta(a: np.ndarray, b: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    """I_x(a, b) from log x, also where x underflows: there I_x(a, b) = x^a / (a·B(a, b)) ·
    (1 + O(x)), taken in logs."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        tail = np.exp(a * log_x - np.log(a) - betaln(a, b))
    return np.where(log_x < -700.0, tail, betainc(a, b, np.exp(np.maximum(log_x, -745.0))))


@dataclass(frozen=True)
class BetaScores:
    """Beta(alpha, beta) per candidate: exact Thompson sampling of a Bernoulli reward.

    Scores are draws of logit X = log G_α − log G_β (X = G_α / (G_α + G_β)), the same ranking
    as X: with α or β small (a prior near 0 or 1) most draws of X itself are exactly 0 or 1 in
    floating point, and equal scores are ties the propensities cannot account for; logits stay
    distinct. The CDF and survival function take the logit scale too."""

    alpha: np.ndarray
    beta: np.ndarray

    def __len__(self) -> int:
        return len(self.alpha)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return _log_gamma_draws(rng, self.alpha, n) - _log_gamma_draws(rng, self.beta, n)

    def _both_tails(self, items: np.ndarray, logit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(X <= x), P(X > x)), each from its own side: I_x(α, β) and I_(1-x)(β, α), with
        log x and log(1 - x) taken exactly from the logit. Where the mass sits within 1e-300 of
        0 (or 1), 1 - x (or x) rounds to 1 and that side's value is wrong; the smaller of the
        two is always right, so each is replaced by 1 - the other where it is the larger."""
        a, b = self.alpha[items], self.beta[items]
        below = _incomplete_beta(a, b, -np.logaddexp(0.0, -logit))
        above = _incomplete_beta(b, a, -np.logaddexp(0.0, logit))
        return np.where(below <= above, below, 1.0 - above), np.where(
            above <= below, above, 1.0 - below
        )

    def cdf(self, items: np.ndarray, logit: np.ndarray) -> np.ndarray:
        return self._both_tails(items, logit)[0]

    def sf(self, items: np.ndarray, logit: np.ndarray) -> np.ndarray:
        return self._both_tails(items, logit)[1]


@dataclass(frozen=True)
class GammaLiftScores:
    """prior × G / rate with G ~ Gamma(shape): Thompson sampling of each item's lift.

    Unclipped: a rate above 1 only matters for the ranking, which clipping would turn into ties.
    """

    prior: np.ndarray
    shape: np.ndarray
    rate: np.ndarray

    def __len__(self) -> int:
        return len(self.prior)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.prior * rng.standard_gamma(self.shape, size=(n, len(self.prior))) / self.rate

    def _g(self, items: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0.0) * self.rate[items] / self.prior[items]

    def cdf(self, items: np.ndarray, x: np.ndarray) -> np.ndarray:
        return gammainc(self.shape[items], self._g(items, x))

    def sf(self, items: np.ndarray, x: np.ndarray) -> np.ndarray:
        return gammaincc(self.shape[items], self._g(items, x))


def interval_mass(
    dist: ScoreDistribution, items: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """P(lower < score <= upper) per item (`items` indexes the last axis), accurate in either
    tail: below the median by CDF values, above it by survival values (the small, precise ones).
    """
    lower, upper = np.broadcast_arrays(np.asarray(lower, dtype=float), upper)
    index = np.broadcast_to(np.asarray(items), lower.shape)
    low_cdf = dist.cdf(index, lower)
    mass = np.empty(lower.shape)
    upper_tail = low_cdf > 0.5
    below = ~upper_tail
    mass[below] = dist.cdf(index[below], upper[below]) - low_cdf[below]
    mass[upper_tail] = dist.sf(index[upper_tail], lower[upper_tail]) - dist.sf(
        index[upper_tail], upper[upper_tail]
    )
    return np.clip(mass, 0.0, 1.0, out=mass)
