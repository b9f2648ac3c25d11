"""Exploration budgets: the most a placement may explore, and the most exploration may cost.

Both are hard limits, enforced before a slate is drawn and deterministic in the controller's
state, so the slate's propensities stay exact:

- `max_share`: the share of shown slots in a placement that may be exploratory, within each
  period. A request may explore only if, even when every one of its slots explored, the
  period's share would stay within the limit (`checkout=0` never explores at checkout).
- `max_loss`: the estimated reward exploration may cost per period, as a share of what the
  greedy policy is estimated to earn in it. Each exploratory slot is charged, when it is
  shown, what the exploit stream earns per looked-at slot (the worst case: the explored item
  earns nothing); when its window closes the charge is reduced by what it earned. A request
  may explore only if the period's charges plus its worst case (every slot explored) stay
  within the limit, so the estimate never exceeds the budget, whatever the draws.

`EQUILIBRA_EXPLORE_BUDGET`: `default=0.25,checkout=0,loss=0.05,period=3600` — placement
names with their share (`default` for the rest), `loss` (omit for no loss budget) and
`period` (seconds of event time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_PLACEMENT = "default"


@dataclass(frozen=True)
class Budget:
    shares: Mapping[str, float] = field(default_factory=dict)
    default_share: float = 1.0
    max_loss: float | None = None
    period: float = 3600.0

    def __post_init__(self) -> None:
        for name, share in {**self.shares, DEFAULT_PLACEMENT: self.default_share}.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"budget {name}: an exploration share must lie in [0, 1]")
        if self.max_loss is not None and not 0.0 <= self.max_loss <= 1.0:
            raise ValueError("budget loss: must lie in [0, 1] (a share of the greedy value)")
        if not (math.isfinite(self.period) and self.period > 0):
            raise ValueError("budget period: must be a positive number of seconds")

    @classmethod
    def parse(cls, spec: str) -> Budget:
        shares: dict[str, float] = {}
        default = 1.0
        loss: float | None = None
        period = 3600.0
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, text = part.partition("=")
            name = name.strip()
            if not sep or not name:
                raise ValueError(f"budget: expected name=value, got {part!r}")
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"budget {name}: {text.strip()!r} is not a number") from None
            if name == "loss":
                loss = value
            elif name == "period":
                period = value
            elif name == DEFAULT_PLACEMENT:
                default = value
            else:
                shares[name] = value
        return cls(shares, default, loss, period)

    def share_for(self, placement: str) -> float:
        return self.shares.get(placement or DEFAULT_PLACEMENT, self.default_share)

    def describe(self) -> dict[str, object]:
        return {
            "max_share": {DEFAULT_PLACEMENT: self.default_share, **self.shares},
            "max_loss": self.max_loss,
            "period_s": self.period,
        }


@dataclass
class PlacementSpend:
    """One placement's use of its budget in the current period."""

    period_start: float = -math.inf
    slots: int = 0
    explored: int = 0
    charged: float = 0.0  # estimated loss charged to exploration
    value: float = 0.0  # the greedy policy's estimated value of the slots shown

    def roll(self, now: float, period: float) -> None:
        """A new period starts when `now` leaves the current one."""
        if now >= self.period_start + period or now < self.period_start:
            start = math.floor(now / period) * period if math.isfinite(now) else 0.0
            self.period_start, self.slots, self.explored = start, 0, 0
            self.charged = self.value = 0.0

    def share_allows(self, k: int, max_share: float) -> bool:
        return self.explored + k <= max_share * (self.slots + k) + 1e-9

    def loss_allows(self, slate_value: float, max_loss: float | None) -> bool:
        """The worst case of a slate that explores every slot is losing its whole value."""
        if max_loss is None:
            return True
        return self.charged + slate_value <= max_loss * (self.value + slate_value) + 1e-12

    def as_dict(self, budget: Budget, placement: str) -> dict[str, object]:
        share = self.explored / self.slots if self.slots else 0.0
        return {
            "period_start": self.period_start if math.isfinite(self.period_start) else None,
            "shown_slots": self.slots,
            "explored_slots": self.explored,
            "explore_share": share,
            "max_share": budget.share_for(placement),
            "estimated_loss": self.charged,
            "estimated_greedy_value": self.value,
            "loss_share": self.charged / self.value if self.value > 0 else 0.0,
            "max_loss": budget.max_loss,
        }
