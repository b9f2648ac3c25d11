"""Business rules: boost, bury, exclude or pin items or whole categories, per placement, until
a time. Pure functions over scored candidates; the service holds the rule set (config file and
`/v1/rules`).

Boosts and buries multiply a candidate's score before the policy draws (so the propensities the
policy logs are those of the list shown); pins put an item at a fixed position after it (a pinned
item is shown with certainty: propensity 1, and the policy's slate fills the other positions in
its order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ACTIONS = ("boost", "bury", "exclude", "pin")


@dataclass(frozen=True)
class Rule:
    id: str
    action: str
    items: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    factor: float = 2.0  # boost: score × factor; bury: score ÷ factor
    position: int | None = None  # pin: 1 = the top slot
    placement: str | None = None  # only there (None: everywhere)
    until: float | None = None  # event time after which the rule lapses

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action: expected one of {', '.join(ACTIONS)}")
        if not self.items and not self.categories:
            raise ValueError("items, categories: a rule needs at least one of them")
        if self.factor <= 0:
            raise ValueError("factor: must be positive")
        if self.action == "pin":
            if self.position is None or self.position < 1:
                raise ValueError("position: a pin needs a position >= 1")
            if len(self.items) != 1 or self.categories:
                raise ValueError("items: a pin names exactly one item")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: what snapshots and the replicas' fleet log keep of a rule."""
        return {**asdict(self), "items": list(self.items), "categories": list(self.categories)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rule:
        fields = dict(data)
        for name in ("items", "categories"):
            fields[name] = tuple(str(v) for v in fields.get(name, ()))
        return cls(**fields)

    def applies(self, placement: str, now: float) -> bool:
        return (self.placement is None or self.placement == placement) and (
            self.until is None or now <= self.until
        )

    def matches(self, item: str, categories: Iterable[str]) -> bool:
        return item in self.items or bool(set(categories) & set(self.categories))


def apply_scores(
    items: Sequence[str],
    scores: np.ndarray,
    rules: Sequence[Rule],
    categories_of: Callable[[str], Iterable[str]],
    placement: str,
    now: float,
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """(scores after boosts and buries, keep mask after excludes, the rule that moved each)."""
    scores = np.asarray(scores, dtype=float).copy()
    keep = np.ones(len(items), dtype=bool)
    moved: list[str | None] = [None] * len(items)
    active = [r for r in rules if r.action != "pin" and r.applies(placement, now)]
    if not active:
        return scores, keep, moved
    # Scores may be negative; rules scale the distance above the list's minimum.
    floor = float(scores.min()) if len(scores) else 0.0
    for index, item in enumerate(items):
        categories = tuple(categories_of(item))
        for rule in active:
            if not rule.matches(item, categories):
                continue
            if rule.action == "exclude":
                keep[index] = False
            elif rule.action == "boost":
                scores[index] = floor + (scores[index] - floor + 1e-9) * rule.factor
            else:
                scores[index] = floor + (scores[index] - floor) / rule.factor
            moved[index] = rule.id
    return scores, keep, moved


def pins(rules: Sequence[Rule], placement: str, now: float, k: int) -> list[tuple[int, str, str]]:
    """(position, item, rule id) of the pins that apply, by position, within the first k."""
    found: dict[int, tuple[int, str, str]] = {}
    for rule in rules:
        if rule.action == "pin" and rule.applies(placement, now):
            assert rule.position is not None
            if rule.position <= k and rule.position not in found:
                found[rule.position] = (rule.position, rule.items[0], rule.id)
    return [found[p] for p in sorted(found)]
