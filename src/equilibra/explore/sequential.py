"""A running mean with a time-uniform lower confidence bound (a confidence sequence).

The champion / challenger test looks at its estimate after every impression, so a fixed-n
interval would be wrong: checked often enough, it crosses zero by chance. Robbins' normal
mixture boundary (Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", 2021, eq. (14)) holds at every n at once: with S_n the
sum of the centred increments and V_n their variance, P(∃n: S_n ≥ u(V_n)) ≤ α for

    u(V) = sqrt(2 (V + ρ) · log( sqrt((V + ρ) / ρ) / α )),

ρ > 0 tuning where the bound is tightest (here: at `tight_at` samples). V_n is the empirical
variance (the sub-Gaussian variance proxy is not known), so the level is asymptotic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def mixture_radius(total: float, rho: float, n: int, alpha: float) -> float:
    """u(V_n) / n: the half-width around the mean after n samples whose variance sum is
    `total` (V_n), with the boundary tightest where V = `rho`."""
    bound = math.sqrt(2 * (total + rho) * math.log(math.sqrt((total + rho) / rho) / alpha))
    return bound / n


@dataclass
class RunningGain:
    alpha: float = 0.05
    tight_at: int = 500
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, value: float) -> None:
        self.n += 1
        step = value - self.mean
        self.mean += step / self.n
        self.m2 += step * (value - self.mean)

    def radius(self) -> float:
        """Half-width of the time-uniform interval around the mean (inf before 2 samples)."""
        if self.n < 2:
            return math.inf
        variance = self.m2 / (self.n - 1)
        if variance <= 0:
            return 0.0
        return mixture_radius(variance * self.n, variance * self.tight_at, self.n, self.alpha)

    def lower(self) -> float:
        return self.mean - self.radius()

    def upper(self) -> float:
        return self.mean + self.radius()

    def state_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, float]) -> RunningGain:
        return cls(**state)  # type: ignore[arg-type]


def finite_or_none(value: float) -> float | None:
    """A number as JSON can carry it: infinity (a bound before enough samples, a period not yet
    begun) becomes null."""
    return value if math.isfinite(value) else None
