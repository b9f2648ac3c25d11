"""What the service knows between retrains, updated by every event (`learn_one`).

Per user: the latest events (bounded) and the current session. Per item: an event count, a
trend score that decays with event time (half-life `trend_half_life_s`), when it was first
seen. Between items: co-visitation counts of consecutive items in a session, kept to the
strongest `covisit_per_item` neighbours. Everything is keyed by external ids (strings), so
items and users the model has never seen take part at once.

`InProcessState` is the default; `RedisState` (redis_state.py) shares the state between
replicas behind the same methods (`OnlineState`).
"""

from __future__ import annotations

import heapq
import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from equilibra.domain import CONVERSION_TYPES

# How much each event type says about interest, for trends and co-visitation.
EVENT_WEIGHT = {
    "view": 1.0,
    "click": 1.0,
    "favorite": 2.0,
    "add_to_cart": 3.0,
    "purchase": 4.0,
    "rating": 1.0,
}


@dataclass(frozen=True)
class Seen:
    item: str
    event_type: str
    timestamp: float


@dataclass
class UserState:
    history: deque[Seen]
    session_start: float = 0.0
    last_seen: float = float("-inf")
    converted: set[str] = field(default_factory=set)
    events: int = 0

    def session(self) -> list[Seen]:
        """The events of the current session, oldest first."""
        return [s for s in self.history if s.timestamp >= self.session_start]

    def recent_items(self, n: int, since: float = float("-inf")) -> list[str]:
        """The user's last n distinct items (seen at `since` or later), newest first."""
        out: list[str] = []
        for seen in reversed(self.history):
            if seen.timestamp < since:  # events may arrive out of order: skip, do not stop
                continue
            if seen.item not in out:
                out.append(seen.item)
                if len(out) == n:
                    break
        return out


@dataclass(frozen=True)
class ItemState:
    count: float
    trend: float  # decayed to the clock
    first_seen: float


class _Leaders:
    """The slots that may be among the best by some value: every slot whose value reached
    `threshold` (the `depth`-th best at the last scan). An update that raises a value calls
    `touch`, so the set stays a superset of the true top `depth` and a request sorts a few
    hundred slots instead of scanning the catalogue; a value that falls may stay in the set."""

    def __init__(self, min_depth: int):
        self.min_depth = min_depth
        self.slots: set[int] | None = None
        self.threshold = np.inf
        self.depth = 0
        # The set sorted best first, kept until a touch or a scan changes it: between events,
        # every request asks for the same leaders.
        self._order: np.ndarray | None = None

    def touch(self, slot: int, value: float) -> None:
        if self.slots is not None and value >= self.threshold:
            self.slots.add(slot)
            self._order = None

    def best(self, values: np.ndarray, n: int) -> np.ndarray:
        """The slots of the `n` largest `values`, best first."""
        if self.slots is None or n > self.depth or len(self.slots) > 8 * self.depth:
            self._scan(values, max(4 * n, self.min_depth))
        assert self.slots is not None
        if self._order is None:
            slots = np.fromiter(self.slots, dtype=np.int64, count=len(self.slots))
            self._order = slots[np.argsort(-values[slots], kind="stable")]
        return self._order[:n]

    def _scan(self, values: np.ndarray, depth: int) -> None:
        size = len(values)
        if depth < size:
            best = np.argpartition(-values, depth - 1)[:depth]
            self.threshold = float(values[best].min())
        else:
            best, self.threshold = np.arange(size), -np.inf
        self.depth = depth
        self.slots = set(best.tolist())
        self._order = None


class ItemCounters:
    """Per-item counts, decayed trends and first-seen times in growable arrays.

    A trend decays by the same factor for every item, so it is kept as the time-free key
    log(trend) + λ·t (t the time of its last update): the ranking by key is the ranking by
    trend at any moment. Keys only rise, so "trending now" and "newest" are kept as leader sets
    (`_Leaders`) that updates join."""

    # The leader sets are kept at least this deep (4 n for larger asks).
    leader_depth = 256

    def __init__(self, half_life_s: float):
        self.rate = math.log(2.0) / half_life_s
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.count = np.zeros(1024)
        self.key = np.full(1024, -np.inf)
        self.first_seen = np.full(1024, np.inf)
        self._trending = _Leaders(self.leader_depth)
        self._newest = _Leaders(self.leader_depth)  # by first-seen time, latest first

    def __len__(self) -> int:
        return len(self.ids)

    def slot(self, item: str) -> int:
        slot = self.index.get(item)
        if slot is None:
            slot = self.index[item] = len(self.ids)
            self.ids.append(item)
            if slot >= len(self.count):
                grow = len(self.count)
                self.count = np.concatenate([self.count, np.zeros(grow)])
                self.key = np.concatenate([self.key, np.full(grow, -np.inf)])
                self.first_seen = np.concatenate([self.first_seen, np.full(grow, np.inf)])
        return slot

    def add(self, item: str, weight: float, timestamp: float) -> None:
        slot = self.slot(item)
        self.count[slot] += 1
        now = self.rate * timestamp
        self.key[slot] = np.logaddexp(self.key[slot], math.log(weight) + now)
        self._trending.touch(slot, self.key[slot])
        if timestamp < self.first_seen[slot]:
            self.first_seen[slot] = timestamp
            self._newest.touch(slot, timestamp)  # only a new slot's time can rise (from inf)

    def trend(self, slots: np.ndarray, at: float) -> np.ndarray:
        return np.exp(self.key[slots] - self.rate * at)

    def top(self, n: int, at: float) -> list[tuple[str, float]]:
        size = len(self.ids)
        if size == 0 or n <= 0:
            return []
        self._trending.min_depth = self.leader_depth
        best = self._trending.best(self.key[:size], min(n, size))
        values = self.trend(best, at)
        return [
            (self.ids[i], float(v)) for i, v in zip(best.tolist(), values.tolist(), strict=True)
        ]

    def newest(self, n: int, at: float, max_age: float) -> list[tuple[str, float]]:
        size = len(self.ids)
        if size == 0 or n <= 0:
            return []
        self._newest.min_depth = self.leader_depth
        # Every slot below `size` has a time: a slot is made only by `add`, which sets it.
        latest = self._newest.best(self.first_seen[:size], min(n, size))
        age = at - self.first_seen[latest]
        keep = age <= max_age
        return [
            (self.ids[i], float(a))
            for i, a in zip(latest[keep].tolist(), age[keep].tolist(), strict=True)
        ]


@dataclass(frozen=True)
class OnlineConfig:
    history: int = 100  # events kept per user
    session_gap_s: float = 30 * 60.0  # a pause this long starts a new session
    trend_half_life_s: float = 24 * 3600.0
    covisit_window: int = 3  # each event is linked to the user's previous n items
    covisit_per_item: int = 50
    new_item_age_s: float = 7 * 24 * 3600.0


class OnlineState(Protocol):
    """What the service reads and writes; `InProcessState` and `RedisState` (redis_state.py)
    implement it and pass one conformance suite (tests/test_online_state.py)."""

    config: OnlineConfig

    def learn_one(self, user_id: str, item_id: str, event_type: str, timestamp: float) -> None: ...
    def learn_many(self, events: Iterable[tuple[str, str, str, float]]) -> None: ...
    def forget_user(self, user_id: str) -> bool: ...
    def user(self, user_id: str) -> UserState | None: ...
    def known_users(self) -> int: ...
    def neighbours(self, items: Iterable[str], n: int) -> list[tuple[str, float]]: ...
    def trending(self, n: int, now: float | None = None) -> list[tuple[str, float]]: ...
    def newest(self, n: int, now: float | None = None) -> list[tuple[str, float]]: ...
    def item(self, item_id: str) -> ItemState | None: ...
    def item_stats(self, items: list[str]) -> tuple[np.ndarray, np.ndarray]: ...
    def n_items(self) -> int: ...


class InProcessState:
    """Online state in this process's memory, safe to use from several threads."""

    def __init__(self, config: OnlineConfig | None = None):
        self.config = config or OnlineConfig()
        self._lock = threading.RLock()
        self._users: dict[str, UserState] = {}
        self._items = ItemCounters(self.config.trend_half_life_s)
        self._covisit: dict[str, dict[str, float]] = {}
        self.clock = float("-inf")  # the latest event time learnt
        self.events = 0

    # --- learning -------------------------------------------------------------------------------
    def learn_one(self, user_id: str, item_id: str, event_type: str, timestamp: float) -> None:
        """One event: the user's history and session, the item's counters, co-visitation."""
        weight = EVENT_WEIGHT.get(event_type, 1.0)
        with self._lock:
            self.events += 1
            self.clock = max(self.clock, timestamp)
            user = self._users.get(user_id)
            if user is None:
                user = self._users[user_id] = UserState(deque(maxlen=self.config.history))
            if timestamp - user.last_seen > self.config.session_gap_s:
                user.session_start = timestamp
            # Co-visits count within a session only: the items of this one before this event.
            previous = user.recent_items(self.config.covisit_window, since=user.session_start)
            user.history.append(Seen(item_id, event_type, timestamp))
            user.last_seen = max(user.last_seen, timestamp)
            user.events += 1
            if event_type in CONVERSION_TYPES:
                user.converted.add(item_id)
            self._items.add(item_id, weight, timestamp)
            for distance, other in enumerate(previous, start=1):
                if other != item_id:
                    self._link(other, item_id, weight / distance)
                    self._link(item_id, other, 0.5 * weight / distance)

    def _link(self, source: str, target: str, weight: float) -> None:
        row = self._covisit.setdefault(source, {})
        row[target] = row.get(target, 0.0) + weight
        if len(row) > 2 * self.config.covisit_per_item:  # prune: keep the strongest
            kept = heapq.nlargest(self.config.covisit_per_item, row.items(), key=lambda kv: kv[1])
            self._covisit[source] = dict(kept)

    def learn_many(self, events: Iterable[tuple[str, str, str, float]]) -> None:
        """Events (user, item, type, timestamp) in order."""
        for user_id, item_id, event_type, timestamp in events:
            self.learn_one(user_id, item_id, event_type, timestamp)

    def forget_user(self, user_id: str) -> bool:
        """Drop the user's history and session (item counters are aggregates: they stay)."""
        with self._lock:
            return self._users.pop(user_id, None) is not None

    # --- reading --------------------------------------------------------------------------------
    def user(self, user_id: str) -> UserState | None:
        with self._lock:
            return self._users.get(user_id)

    def known_users(self) -> int:
        with self._lock:
            return len(self._users)

    def neighbours(self, items: Iterable[str], n: int) -> list[tuple[str, float]]:
        """Items most often seen right after (or before) these, by summed weight, best first.
        Items earlier in `items` weigh more (pass the newest first)."""
        with self._lock:
            scores: dict[str, float] = {}
            for rank, item in enumerate(items):
                weight = 1.0 / (1 + rank) ** 2  # the last item says most
                for other, value in self._covisit.get(item, {}).items():
                    scores[other] = scores.get(other, 0.0) + weight * value
        return heapq.nlargest(n, scores.items(), key=lambda kv: kv[1])

    def trending(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        """The items with the highest decayed trend score at `now` (default: the clock)."""
        with self._lock:
            return self._items.top(n, self.clock if now is None else now)

    def newest(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        """Items first seen within `new_item_age_s`, newest first, with their age in seconds."""
        with self._lock:
            at = self.clock if now is None else now
            return self._items.newest(n, at, self.config.new_item_age_s)

    def item(self, item_id: str) -> ItemState | None:
        with self._lock:
            slot = self._items.index.get(item_id)
            if slot is None:
                return None
            trend = float(self._items.trend(np.array([slot]), self.clock)[0])
            return ItemState(
                float(self._items.count[slot]), trend, float(self._items.first_seen[slot])
            )

    def item_stats(self, items: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(`item_counts`, `first_seen`) of the items in one pass."""
        with self._lock:
            index = self._items.index
            slots = np.fromiter((index.get(i, -1) for i in items), dtype=np.int64, count=len(items))
            seen = slots >= 0
            at = np.maximum(slots, 0)
            return (
                np.where(seen, self._items.count[at], 0.0),
                np.where(seen, self._items.first_seen[at], np.inf),
            )

    def item_counts(self, items: Iterable[str]) -> np.ndarray:
        """Events per item (0 for items never seen), in the order given."""
        with self._lock:
            index = self._items.index
            slots = np.array([index.get(i, -1) for i in items], dtype=np.int64)
            return np.where(slots >= 0, self._items.count[np.maximum(slots, 0)], 0.0)

    def first_seen(self, items: Iterable[str]) -> np.ndarray:
        """When each item was first seen (inf for items never seen), in the order given."""
        with self._lock:
            index = self._items.index
            slots = np.array([index.get(i, -1) for i in items], dtype=np.int64)
            return np.where(slots >= 0, self._items.first_seen[np.maximum(slots, 0)], np.inf)

    def n_items(self) -> int:
        with self._lock:
            return len(self._items)
