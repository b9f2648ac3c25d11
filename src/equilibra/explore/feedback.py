"""From events to policy updates: reward values, and attribution of delayed feedback.

A shown item earns the configured value of each event on it that arrives within the attribution
window of its impression: by `impression_id` when the event carries one (and then only that
impression, open or not), else the user's latest open impression that showed the item. Nothing
reaches the policy until the window closes: then each shown item is learned once, with
everything it earned, and an item with no feedback counts as a non-click. Until then the
policy's state does not move, so repeated requests in one state are draws from one distribution
— the property that lets logged propensities be checked.

Open impressions live in the store (the impression log, reward still empty); after a restart
`FeedbackLedger.reopen` rebuilds the ledger from them and the events since.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from equilibra.data.columns import Columns as C
from equilibra.explore.slate import SlatePolicy

DEFAULT_WINDOW_S = 30 * 60.0
PINNED = "pin"  # the `policy` of an impression-log row a business rule put there
REWARD_TYPES = ("click", "view", "add_to_cart", "purchase")


@dataclass(frozen=True)
class RewardConfig:
    """Value of each event type on a shown item (`EQUILIBRA_REWARD`); `revenue` multiplies a
    purchase's `value`. The defaults are design.md's: click=1, add_to_cart=2, purchase=5.

    Policies learn a reward in [0, 1] on the scale of their priors, which are click
    probabilities: `scaled` divides by `cap`, by default the value of a click, and clips at 1 —
    so a policy learns "did the item earn at least a click's worth", while the log, the reports
    and off-policy evaluation keep the raw value."""

    click: float = 1.0
    view: float = 0.0
    add_to_cart: float = 2.0
    purchase: float = 5.0
    revenue: float = 0.0
    cap: float | None = None  # None: the value of a click

    def __post_init__(self) -> None:
        for name in (*REWARD_TYPES, "revenue"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: reward values must be finite and non-negative")
        if not math.isfinite(self.scale) or self.scale <= 0:
            raise ValueError("cap: must be positive and finite (or give clicks a positive value)")

    @classmethod
    def parse(cls, spec: str) -> RewardConfig:
        """`click=1,add_to_cart=2,purchase=5,revenue=0` (any subset; the rest keep defaults)."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, text = part.partition("=")
            name = name.strip()
            if not sep or name not in (*REWARD_TYPES, "revenue", "cap"):
                raise ValueError(
                    f"reward: expected name=value with names {', '.join(REWARD_TYPES)}, "
                    f"revenue, cap; got {part!r}"
                )
            try:
                values[name] = float(text)
            except ValueError:
                raise ValueError(f"reward {name}: {text.strip()!r} is not a number") from None
        return cls(**values)  # type: ignore[arg-type]

    @property
    def scale(self) -> float:
        return self.click if self.cap is None else self.cap

    def value(self, event_type: str, value: float | None = None) -> float:
        base = getattr(self, event_type) if event_type in REWARD_TYPES else 0.0
        if event_type == "purchase" and value is not None and np.isfinite(value):
            base += self.revenue * value
        return float(base)

    def scaled(self, total: float) -> float:
        return min(max(total / self.scale, 0.0), 1.0)


@dataclass
class PendingImpression:
    impression_id: str
    user_id: str
    timestamp: float
    segment: str
    # Tuples, not lists: thousands of open impressions stay for the attribution window, and a
    # tuple of strings or numbers drops out of the cyclic collector's walk (a list is walked at
    # every full collection, a 0.1 s stall per 300 k of them while serving).
    items: tuple[str, ...]
    priors: np.ndarray
    features: np.ndarray | None
    placement: str = ""
    exposure: np.ndarray | None = None  # per position; None: the ledger's default
    # Where each item sits in the stored log (1 = top), and whether the policy chose it (a
    # pinned item is shown and rewarded but teaches the policy nothing).
    positions: tuple[int, ...] | None = None
    learnable: np.ndarray | None = None
    explore: np.ndarray | None = None  # per item: an exploration choice
    info: Mapping[str, object] | None = None  # what the policy noted when it drew the slate
    variant: str | None = None  # the A/B test arm that served it (its policy learns from it)
    earned: np.ndarray = field(init=False)
    # The events already attributed to it, where it may be offered the same one twice (an
    # adopted impression: the store's events and the feedback bus overlap). None: not kept.
    seen: set[tuple[object, ...]] | None = field(init=False, default=None)
    # What happened on it, by event type (and `revenue`: purchase values): A/B test metrics.
    kinds: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.earned = np.zeros(len(self.items))
        if self.positions is None:
            self.positions = tuple(range(1, len(self.items) + 1))
        if self.learnable is None:
            self.learnable = np.ones(len(self.items), dtype=bool)
        if self.explore is None:
            self.explore = np.zeros(len(self.items), dtype=bool)


@dataclass(frozen=True)
class Outcome:
    """One shown item's feedback, ready to learn from (`position` counts from 1)."""

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
    learnable: bool = True  # False: not the policy's choice (e.g. pinned); not learned
    explore: bool = False


@dataclass(frozen=True)
class ClosedImpression:
    """An impression whose window closed, with every shown item's outcome: what a policy that
    learns from whole impressions (the balance controller) receives."""

    impression_id: str
    user_id: str
    timestamp: float
    segment: str
    placement: str
    outcomes: list[Outcome]
    info: Mapping[str, object] | None = None
    variant: str | None = None
    kinds: Mapping[str, float] = field(default_factory=dict)

    @property
    def raw_reward(self) -> float:
        return float(sum(o.raw_reward for o in self.outcomes))

    @property
    def key(self) -> str:
        return f"{self.placement}/{self.segment}" if self.placement else self.segment

    def to_json(self) -> dict[str, object]:
        """Plain JSON: what replicas pass each other so every policy learns it."""
        return {
            "impression_id": self.impression_id,
            "user_id": self.user_id,
            "timestamp": self.timestamp,
            "segment": self.segment,
            "placement": self.placement,
            "outcomes": [
                [
                    o.position,
                    o.item,
                    o.reward,
                    o.raw_reward,
                    o.segment,
                    o.prior,
                    None if o.features is None else np.asarray(o.features, dtype=float).tolist(),
                    o.exposure,
                    o.placement,
                    o.learnable,
                    o.explore,
                ]
                for o in self.outcomes
            ],
            "info": None if self.info is None else _plain_info(self.info),
            "variant": self.variant,
            "kinds": dict(self.kinds),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ClosedImpression:
        impression_id = str(data["impression_id"])
        rows: list[list[Any]] = list(data["outcomes"])  # type: ignore[call-overload]
        outcomes = [
            Outcome(
                impression_id,
                int(row[0]),
                str(row[1]),
                float(row[2]),
                float(row[3]),
                str(row[4]),
                float(row[5]),
                None if row[6] is None else np.asarray(row[6], dtype=float),
                float(row[7]),
                str(row[8]),
                bool(row[9]),
                bool(row[10]),
            )
            for row in rows
        ]
        info = data.get("info")
        variant = data.get("variant")
        return cls(
            impression_id,
            str(data["user_id"]),
            float(data["timestamp"]),  # type: ignore[arg-type]
            str(data["segment"]),
            str(data["placement"]),
            outcomes,
            None if info is None else dict(info),  # type: ignore[call-overload]
            None if variant is None else str(variant),
            {str(k): float(v) for k, v in dict(data.get("kinds") or {}).items()},  # type: ignore[call-overload]
        )


def teach(
    policy: SlatePolicy,
    closed: ClosedImpression,
    arms: Mapping[str, SlatePolicy] | None = None,
) -> None:
    """Teach a closed impression to the policy that served it: each learnable outcome, then
    (where it learns from whole impressions) the impression. An A/B test arm's impression
    teaches that arm's policy (`arms`, by variant) instead."""
    learner = policy
    if closed.variant is not None and arms is not None:
        learner = arms.get(closed.variant, policy)
    for outcome in closed.outcomes:
        if not outcome.learnable:
            continue
        learner.learn_one(
            outcome.item,
            outcome.reward,
            segment=outcome.segment,
            prior=outcome.prior,
            features=outcome.features,
            exposure=outcome.exposure,
            placement=outcome.placement,
        )
    learn_impression = getattr(learner, "learn_impression", None)
    if learn_impression is not None:
        learn_impression(closed)


class FeedbackLedger:
    """Open impressions waiting for feedback, closed in order of their window's end.

    O(1) per attributed event, O(log n) per impression recorded or closed."""

    def __init__(
        self,
        config: RewardConfig | None = None,
        window_s: float = DEFAULT_WINDOW_S,
        exposure: Sequence[float] | None = None,
    ):
        """`exposure[j]`: probability that position j + 1 is looked at (default: every one)."""
        if window_s < 0:
            raise ValueError("window_s: must be non-negative")
        self.config = config or RewardConfig()
        self.window_s = window_s
        self.exposure = _check_exposure(exposure)
        self._open: dict[str, PendingImpression] = {}
        self._by_user: dict[str, list[str]] = {}
        # (window end, arrival order, impression_id): closes in time order whatever the order
        # impressions were recorded in.
        self._due: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self.unattributed = 0
        self.late = 0  # events naming an impression whose window had already closed

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, impression_id: object) -> bool:
        """Is this impression open here?"""
        return impression_id in self._open

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
        exposure: Sequence[float] | None = None,
        positions: Sequence[int] | None = None,
        learnable: Sequence[bool] | None = None,
        explore: Sequence[bool] | None = None,
        info: Mapping[str, object] | None = None,
        variant: str | None = None,
    ) -> None:
        if impression_id in self._open:
            raise ValueError(f"impression_id: {impression_id!r} is already open")
        pending = PendingImpression(
            impression_id,
            str(user_id),
            float(timestamp),
            segment,
            tuple(str(i) for i in items),
            np.asarray(priors, dtype=float),
            None if features is None else np.asarray(features, dtype=float),
            placement,
            _check_exposure(exposure),
            None if positions is None else tuple(int(p) for p in positions),
            None if learnable is None else np.asarray(learnable, dtype=bool),
            None if explore is None else np.asarray(explore, dtype=bool),
            info,
            variant,
        )
        self._open[impression_id] = pending
        self._by_user.setdefault(pending.user_id, []).append(impression_id)
        heapq.heappush(
            self._due, (pending.timestamp + self.window_s, next(self._order), impression_id)
        )

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
        if impression_id:
            # The event says which impression it answers: that one or none, never another.
            pending = self._open.get(impression_id)
            if pending is None:
                self.late += 1
        else:
            # The latest impression (by its time, not by when it was recorded) that showed it.
            pending = None
            for candidate in self._by_user.get(str(user_id), []):
                shown = self._open[candidate]
                if (
                    item in shown.items
                    and shown.timestamp <= timestamp
                    and (pending is None or shown.timestamp > pending.timestamp)
                ):
                    pending = shown
        if (
            pending is None
            or item not in pending.items
            or not pending.timestamp <= timestamp <= pending.timestamp + self.window_s
        ):
            self.unattributed += 1
            return False
        if pending.seen is not None:
            key = (item, event_type, timestamp, value)
            if key in pending.seen:
                return False  # this very event was counted already
            pending.seen.add(key)
        pending.earned[pending.items.index(item)] += self.config.value(event_type, value)
        kinds = pending.kinds
        kinds[event_type] = kinds.get(event_type, 0.0) + 1.0
        if event_type == "purchase" and value is not None and math.isfinite(value):
            kinds["revenue"] = kinds.get("revenue", 0.0) + float(value)
        return True

    def close(self, now: float) -> list[Outcome]:
        """Close every impression whose window has ended; one outcome per shown item."""
        return [o for closed in self.close_impressions(now) for o in closed.outcomes]

    def close_impressions(self, now: float) -> list[ClosedImpression]:
        """Close every impression whose window has ended, in order of their window's end."""
        closed: list[ClosedImpression] = []
        while self._due and self._due[0][0] <= now:
            _, _, impression_id = heapq.heappop(self._due)
            pending = self._open.pop(impression_id, None)
            if pending is None:  # forgotten with its user
                continue
            users = self._by_user[pending.user_id]
            users.remove(impression_id)
            if not users:
                del self._by_user[pending.user_id]
            assert pending.positions is not None and pending.learnable is not None
            assert pending.explore is not None
            outcomes: list[Outcome] = []
            for index, item in enumerate(pending.items):
                raw = float(pending.earned[index])
                outcomes.append(
                    Outcome(
                        impression_id,
                        pending.positions[index],
                        item,
                        self.config.scaled(raw),
                        raw,
                        pending.segment,
                        float(pending.priors[index]),
                        None if pending.features is None else pending.features[index],
                        self._exposure(pending, index),
                        pending.placement,
                        bool(pending.learnable[index]),
                        bool(pending.explore[index]),
                    )
                )
            closed.append(
                ClosedImpression(
                    impression_id,
                    pending.user_id,
                    pending.timestamp,
                    pending.segment,
                    pending.placement,
                    outcomes,
                    pending.info,
                    pending.variant,
                    pending.kinds,
                )
            )
        return closed

    def forget_user(self, user_id: str) -> int:
        """Drop a forgotten user's open impressions (their rows are deleted with them)."""
        dropped = self._by_user.pop(str(user_id), [])
        for impression_id in dropped:
            self._open.pop(impression_id, None)
        # Their heap entries stay until due; `close` skips ids no longer open.
        return len(dropped)

    def _exposure(self, pending: PendingImpression, index: int) -> float:
        exposure = pending.exposure if pending.exposure is not None else self.exposure
        if exposure is None:
            return 1.0
        return float(exposure[min(index, len(exposure) - 1)])

    def settle(
        self,
        policy: SlatePolicy,
        now: float,
        arms: Mapping[str, SlatePolicy] | None = None,
        on_close: Callable[[ClosedImpression], None] | None = None,
    ) -> list[Outcome]:
        """Close what is due and teach the policy each outcome (and, where it learns from
        whole impressions, each closed impression). An impression an A/B test arm served
        teaches that arm's policy (`arms`, by variant) instead; `on_close` sees each one."""
        outcomes: list[Outcome] = []
        for closed in self.close_impressions(now):
            teach(policy, closed, arms)
            if on_close is not None:
                on_close(closed)
            outcomes += closed.outcomes
        return outcomes

    def adopt(self, impressions: pd.DataFrame, events: pd.DataFrame) -> int:
        """Take over another replica's open impressions (rows of the impression log), with
        every event since the earliest of them, attributed to them alone; an event offered
        again later (by the feedback bus) is not counted twice. -> impressions adopted."""
        staging = FeedbackLedger(self.config, self.window_s, self.exposure)
        fresh = impressions[~impressions[C.impression_id].astype(str).isin(self._open)]
        adopted = staging.reopen(fresh, events, remember=True)
        for impression_id, pending in staging._open.items():
            self._open[impression_id] = pending
            self._by_user.setdefault(pending.user_id, []).append(impression_id)
            due = pending.timestamp + self.window_s
            heapq.heappush(self._due, (due, next(self._order), impression_id))
        return adopted

    def reopen(
        self, impressions: pd.DataFrame, events: pd.DataFrame, remember: bool = False
    ) -> int:
        """Rebuild the open impressions after a restart, from the store.

        `impressions`: rows of the impression log whose reward is not written yet;
        `events`: every event since the earliest of them, in time order; `remember`: keep
        what each attributed (see `adopt`). Returns how many impressions were reopened."""
        if impressions.empty:
            return 0
        rows = impressions.sort_values([C.timestamp, C.impression_id, C.position], kind="stable")
        reopened = 0
        for impression_id, group in rows.groupby(C.impression_id, sort=False):
            if impression_id in self._open:
                continue
            first = group.iloc[0]
            priors = group[C.prior].to_numpy(dtype=float)
            exposure = group[C.exposure].to_numpy(dtype=float)
            policies = group[C.policy].astype(str).to_numpy() if C.policy in group else None
            self.record(
                str(impression_id),
                str(first[C.user]),
                float(first[C.timestamp]),
                group[C.item].astype(str).tolist(),
                np.where(np.isfinite(priors), priors, 0.5),
                segment=_text(first.get(C.segment)),
                placement=_text(first.get(C.placement)),
                exposure=None if np.isnan(exposure).all() else np.nan_to_num(exposure, nan=1.0),
                positions=group[C.position].astype(int).tolist(),
                learnable=None if policies is None else policies != PINNED,
                explore=group[C.explore].fillna(False).astype(bool).tolist()
                if C.explore in group
                else None,
                variant=_text(first.get(C.variant)) or None,
            )
            reopened += 1
            if remember:
                self._open[str(impression_id)].seen = set()
        ordered = events.sort_values(C.timestamp, kind="stable")
        has_impression = C.impression_id in ordered
        has_value = C.value in ordered
        for row in ordered.itertuples(index=False):
            record = row._asdict()
            impression = record.get(C.impression_id) if has_impression else None
            value = record.get(C.value) if has_value else None
            self.observe(
                str(record[C.user]),
                record[C.item],
                str(record[C.event_type]),
                float(record[C.timestamp]),
                None if value is None or pd.isna(value) else float(value),
                None if impression is None or pd.isna(impression) else str(impression),
            )
        return reopened


def outcome_rewards(outcomes: Sequence[Outcome]) -> pd.DataFrame:
    """What to write back onto the impression log: `impression_id, position, reward` (raw)."""
    return pd.DataFrame(
        {
            C.impression_id: [o.impression_id for o in outcomes],
            C.position: np.array([o.position for o in outcomes], dtype=np.int64),
            C.reward: np.array([o.raw_reward for o in outcomes], dtype=float),
        }
    )


def _check_exposure(exposure: Sequence[float] | None) -> np.ndarray | None:
    if exposure is None:
        return None
    array = np.asarray(exposure, dtype=float)
    if np.any(array <= 0) or np.any(array > 1) or not np.all(np.isfinite(array)):
        raise ValueError("exposure: probabilities must lie in (0, 1]")
    return array


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _plain_info(info: Mapping[str, object]) -> dict[str, object]:
    """A policy's note as JSON takes it: arrays (the prior strengths' predictions, kept as one
    array per open impression for its memory) become lists."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in info.items()}
