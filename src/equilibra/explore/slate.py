"""What a policy receives (scored candidates for one request) and what it returns (a slate).

A policy never scores items: the ranker's scores arrive in `Candidates`, optionally with a
calibrated reward probability (`prior`), per-candidate feature vectors for the linear policies,
and the popularity / age columns the reference (Gorse-style) policy injects from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.special import expit


def _as_1d(name: str, values: object, n: int, dtype: type = float) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.shape != (n,):
        raise ValueError(f"{name}: expected {n} values, got shape {array.shape}")
    if dtype is float and not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: must be finite")
    return array


def score_to_prior(scores: np.ndarray, base_rate: float) -> np.ndarray:
    """A reward probability from uncalibrated scores: logistic around `base_rate`.

    The mean candidate gets `base_rate`; one standard deviation of score moves the log-odds by
    one. Monotone in the score, so greedy on the prior is greedy on the score.
    """
    mean = float(scores.mean())
    spread = float(scores.std())
    z = (scores - mean) * (1.0 / spread) if spread > 0 else np.zeros(len(scores))
    prior = expit(z + np.log(base_rate / (1.0 - base_rate)))
    np.minimum(prior, 1 - 1e-6, out=prior)
    return np.maximum(prior, 1e-6, out=prior)


@dataclass
class Candidates:
    """Scored candidates for one request."""

    items: np.ndarray
    scores: np.ndarray
    prior: np.ndarray | None = None
    features: np.ndarray | None = None
    segment: str = ""
    popularity: np.ndarray | None = None
    age: np.ndarray | None = None
    user_features: np.ndarray | None = None  # the request's user/context vector
    placement: str = ""  # where the slate is shown (home, product page, cart …)
    timestamp: float | None = None  # the request's time (event time), for budgets and clocks
    # May the policy explore this candidate (in stock, margin, brand rules)? None: all may.
    explorable: np.ndarray | None = None
    _prior_memo: tuple[float, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.items = np.asarray(self.items)
        if self.items.ndim != 1 or len(self.items) == 0:
            raise ValueError("items: expected a non-empty 1-d array of candidate ids")
        n = len(self.items)
        self.scores = _as_1d("scores", self.scores, n)
        if self.prior is not None:
            self.prior = _as_1d("prior", self.prior, n)
            if np.any(self.prior <= 0) or np.any(self.prior >= 1):
                raise ValueError("prior: reward probabilities must lie strictly in (0, 1)")
        if self.features is not None:
            self.features = np.asarray(self.features, dtype=float)
            if self.features.ndim != 2 or self.features.shape[0] != n:
                raise ValueError(f"features: expected shape ({n}, d)")
        if self.popularity is not None:
            self.popularity = _as_1d("popularity", self.popularity, n)
        if self.age is not None:
            self.age = _as_1d("age", self.age, n)
        if self.explorable is not None:
            self.explorable = _as_1d("explorable", self.explorable, n, dtype=bool)
        if self.user_features is not None:
            self.user_features = np.asarray(self.user_features, dtype=float).ravel()

    def __len__(self) -> int:
        return len(self.items)

    def prior_or(self, base_rate: float) -> np.ndarray:
        """The calibrated priors, or the scores mapped onto `base_rate` (computed once)."""
        if self.prior is not None:
            return self.prior
        memo = self._prior_memo
        if memo is None or memo[0] != base_rate:
            memo = self._prior_memo = (base_rate, score_to_prior(self.scores, base_rate))
        return memo[1]


@dataclass(frozen=True)
class SlateEntry:
    """One shown item. `position` counts from 1 (the top slot), as the impression log does."""

    item: object
    position: int
    score: float
    propensity: float
    explore: bool
    reason: str
    # Standard error of `propensity`: 0 where it is exact, the Monte-Carlo error otherwise.
    propensity_error: float = 0.0
    prior: float | None = None  # the calibrated reward probability the policy started from

    def as_dict(self) -> dict[str, object]:
        item = self.item.item() if isinstance(self.item, np.generic) else self.item
        return {
            "item_id": item,
            "position": self.position,
            "score": self.score,
            "prior": self.prior,
            "propensity": self.propensity,
            "propensity_error": self.propensity_error,
            "explore": self.explore,
            "reason": self.reason,
        }


@dataclass
class Slate:
    """The shown items in position order, each with its marginal propensity at that position."""

    indices: np.ndarray
    entries: list[SlateEntry]
    policy: str
    exploration_rate: float
    extras: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def propensities(self) -> np.ndarray:
        return np.array([e.propensity for e in self.entries])

    @property
    def propensity_errors(self) -> np.ndarray:
        return np.array([e.propensity_error for e in self.entries])

    @property
    def propensity_error(self) -> float:
        """The largest standard error among the shown items (0 when all are exact)."""
        return float(max((e.propensity_error for e in self.entries), default=0.0))

    @property
    def explore_flags(self) -> np.ndarray:
        return np.array([e.explore for e in self.entries], dtype=bool)


class SlatePolicy(Protocol):
    """What the simulator and the service need of a policy: Equilibra's `Policy`, or a peer
    library behind an adapter (benchmarks/peers.py)."""

    spec: str

    def select(
        self, c: Candidates, k: int, rng: np.random.Generator, propensities: bool = True
    ) -> Slate: ...

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
    ) -> None: ...
