"""From events to policy updates: reward values, and attribution of delayed feedback.

A shown item earns the configured value of each event on it that arrives within the attribution
window of its impression (by `impression_id`, or else the user's latest open impression that
showed the item). Nothing reaches the policy until the window closes: then each shown item is
learned once, with everything it earned, and an item with no feedback counts as a non-click.
Until then the policy's state does not move, so repeated requests in one state are draws from
one distribution — the property that lets logged propensities be checked.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from equilibra.explore.slate import SlatePolicy

DEFAULT_WINDOW_S = 30 * 60.0


@dataclass(frozen=True)
class RewardConfig:
    """Value of each event type on a shown item; `revenue` multiplies a purchase's `value`."""

    click: float = 1.0
    view: float = 1.0
    add_to_cart: float = 2.0
    purchase: float = 5.0
    revenue: float = 0.0
    # Rewards are scaled into [0, 1] by this cap for the Beta-based policies.
    cap: float = 8.0

    def __post_init__(self) -> None:
        for name in ("click", "view", "add_to_cart", "purchase", "revenue"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: reward values must be non-negative")
        if self.cap <= 0:
            raise ValueError("cap: must be positive")

    def value(self, event_type: str, value: float | None = None) -> float:
        base = getattr(self, event_type, 0.0) if event_type in self._typed else 0.0
        if event_type == "purchase" and value is not None and np.isfinite(value):
            base += self.revenue * value
        return float(base)

    def scaled(self, total: float) -> float:
        return min(max(total / self.cap, 0.0), 1.0)

    _typed = frozenset({"click", "view", "add_to_cart", "purchase"})


@dataclass
class PendingImpression:
    impression_id: str
    user_id: str
    timestamp: float
    segment: str
    items: list[str]
    priors: np.ndarray
    features: np.ndarray | None
    placement: str = ""
    earned: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.earned = np.zeros(len(self.items))


@dataclass(frozen=True)
class Outcome:
    """One shown item's feedback, ready to learn from."""

    impression_id: str
    position: int
    item: str
    reward: float  # scaled to [0, 1]
    raw_reward: float
    segment: str
    prior: float
    features: np.ndarray | None
    exposure: float = 1.0
    placement: str = ""


class FeedbackLedger:
    """Open impressions waiting for feedback, closed in time order. O(1) per event."""

    def __init__(
        self,
        config: RewardConfig | None = None,
        window_s: float = DEFAULT_WINDOW_S,
        exposure: Sequence[float] | None = None,
    ):
        """`exposure[j]`: probability that position j is looked at (default: every position)."""
        if window_s < 0:
            raise ValueError("window_s: must be non-negative")
        self.config = config or RewardConfig()
        self.window_s = window_s
        self.exposure = None if exposure is None else np.asarray(exposure, dtype=float)
        if self.exposure is not None and (np.any(self.exposure <= 0) or np.any(self.exposure > 1)):
            raise ValueError("exposure: probabilities must lie in (0, 1]")
        self._open: OrderedDict[str, PendingImpression] = OrderedDict()
        self._by_user: dict[str, list[str]] = {}
        self.unattributed = 0

    def __len__(self) -> int:
        return len(self._open)

    def record(
        self,
        impression_id: str,
        user_id: str,
        timestamp: float,
        items: Sequence[object],
        priors: np.ndarray,
        features: np.ndarray | None = None,
        segment: str = "",
        placement: str = "",
    ) -> None:
        if impression_id in self._open:
            raise ValueError(f"impression_id: {impression_id!r} is already open")
        pending = PendingImpression(
            impression_id,
            str(user_id),
            float(timestamp),
            segment,
            [str(i) for i in items],
            np.asarray(priors, dtype=float),
            None if features is None else np.asarray(features, dtype=float),
            placement,
        )
        self._open[impression_id] = pending
        self._by_user.setdefault(pending.user_id, []).append(impression_id)

    def observe(
        self,
        user_id: str,
        item_id: object,
        event_type: str,
        timestamp: float,
        value: float | None = None,
        impression_id: str | None = None,
    ) -> bool:
        """Attribute one event; False when no open impression showed the item (not an error:
        the event is stored as usual, it just earns no policy reward)."""
        item = str(item_id)
        pending = self._open.get(impression_id) if impression_id else None
        if pending is None:
            for candidate in reversed(self._by_user.get(str(user_id), [])):
                shown = self._open.get(candidate)
                if shown is not None and item in shown.items:
                    pending = shown
                    break
        if pending is None or item not in pending.items or timestamp < pending.timestamp:
            self.unattributed += 1
            return False
        if timestamp > pending.timestamp + self.window_s:
            self.unattributed += 1
            return False
        pending.earned[pending.items.index(item)] += self.config.value(event_type, value)
        return True

    def close(self, now: float) -> list[Outcome]:
        """Close every impression whose window has ended; one outcome per shown item."""
        outcomes: list[Outcome] = []
        while self._open:
            impression_id, pending = next(iter(self._open.items()))
            if pending.timestamp + self.window_s > now:
                break
            self._open.popitem(last=False)
            users = self._by_user[pending.user_id]
            users.remove(impression_id)
            if not users:
                del self._by_user[pending.user_id]
            for position, item in enumerate(pending.items):
                raw = float(pending.earned[position])
                outcomes.append(
                    Outcome(
                        impression_id,
                        position,
                        item,
                        self.config.scaled(raw),
                        raw,
                        pending.segment,
                        float(pending.priors[position]),
                        None if pending.features is None else pending.features[position],
                        self._exposure(position),
                        pending.placement,
                    )
                )
        return outcomes

    def _exposure(self, position: int) -> float:
        if self.exposure is None:
            return 1.0
        return float(self.exposure[min(position, len(self.exposure) - 1)])

    def settle(self, policy: SlatePolicy, now: float) -> list[Outcome]:
        """Close what is due and teach the policy each outcome."""
        outcomes = self.close(now)
        for outcome in outcomes:
            policy.learn_one(
                outcome.item,
                outcome.reward,
                segment=outcome.segment,
                prior=outcome.prior,
                features=outcome.features,
                exposure=outcome.exposure,
                placement=outcome.placement,
            )
        return outcomes
