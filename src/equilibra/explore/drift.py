"""Change detection on a reward stream: the two-sided Page–Hinkley test.

The balance controller feeds it one value per closed impression (the reward per looked-at
exploit slot: what the ranker's choices earn, unaffected by how much the policy explores) and
reacts to an alarm by exploring more and discounting the evidence gathered before the change.

Tolerance and threshold are in units of the stream's own standard deviation (estimated since
the last reset), so one setting fits a 1 % and a 30 % reward rate. The cumulative statistic
of a stationary stream drifts away from the alarm at `delta` σ per sample, so false alarms are
rare (for threshold λ, about one in exp(2·delta·λ) excursions); a shift of Δ σ is caught after
about λ / (Δ − delta) samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

RISE = 1
FALL = -1


@dataclass
class PageHinkley:
    delta: float = 0.5  # tolerance per sample, in standard deviations
    threshold: float = 12.0  # λ, in standard deviations
    min_samples: int = 12  # no alarm before this many samples since the last reset
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0  # Welford's sum of squared deviations
    up: float = 0.0  # Σ (x − mean − δσ): grows after a rise
    up_min: float = 0.0
    down: float = 0.0  # Σ (x − mean + δσ): falls after a drop
    down_max: float = 0.0

    def __post_init__(self) -> None:
        if self.delta < 0 or self.threshold <= 0 or self.min_samples < 2:
            raise ValueError("delta ≥ 0, threshold > 0 and min_samples ≥ 2 are required")

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def update(self, value: float) -> int:
        """Add one sample; RISE or FALL when a change is detected (the test then restarts on
        the new regime), else 0."""
        if not math.isfinite(value):
            raise ValueError("value: must be finite")
        self.n += 1
        step = value - self.mean
        self.mean += step / self.n
        self.m2 += step * (value - self.mean)
        sigma = max(self.std, 1e-9)
        self.up += value - self.mean - self.delta * sigma
        self.up_min = min(self.up_min, self.up)
        self.down += value - self.mean + self.delta * sigma
        self.down_max = max(self.down_max, self.down)
        if self.n < self.min_samples:
            return 0
        limit = self.threshold * sigma
        if self.up - self.up_min > limit:
            self.reset()
            return RISE
        if self.down_max - self.down > limit:
            self.reset()
            return FALL
        return 0

    def reset(self) -> None:
        self.n = 0
        self.mean = self.m2 = self.up = self.up_min = self.down = self.down_max = 0.0

    def state_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, float]) -> PageHinkley:
        return cls(**state)  # type: ignore[arg-type]


@dataclass
class BatchedDetector:
    """Page–Hinkley over batch means: one sample per `batch` impressions, the reward per
    looked-at slot of the batch. Single impressions' rewards are mostly zeros with a heavy tail
    (a purchase is worth five clicks); batch means are near normal, which the σ-scaled test
    assumes."""

    test: PageHinkley
    batch: int = 25
    reward: float = 0.0
    exposure: float = 0.0
    count: int = 0

    def update(self, reward: float, exposure: float) -> int:
        self.reward += reward
        self.exposure += exposure
        self.count += 1
        if self.count < self.batch:
            return 0
        sample = self.reward / self.exposure if self.exposure > 0 else 0.0
        self.reward = self.exposure = 0.0
        self.count = 0
        return self.test.update(sample)

    def state_dict(self) -> dict[str, object]:
        return {**asdict(self), "test": self.test.state_dict()}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> BatchedDetector:
        rest = {k: v for k, v in state.items() if k != "test"}
        return cls(PageHinkley.from_state(state["test"]), **rest)  # type: ignore[arg-type]
