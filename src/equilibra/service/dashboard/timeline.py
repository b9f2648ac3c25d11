"""What the dashboard plots over time, kept in memory by the serving process (since it started):

- `Sample`s on the wall clock every few seconds: requests/s, events/s, recommend latency, the
  model version, each placement and segment's exploration;
- `RewardBuckets` on the event clock: what closed impressions earned per arm (the service's
  policy, or an A/B test's variant) — click-through, conversion, revenue and reward per request;
- new items' exposure: how often each item was shown, from when.

Everything here is cheap to feed (an append, a few dict updates) because it is fed per request.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from equilibra.explore.feedback import ClosedImpression

SAMPLES_KEPT = 720  # one hour at one sample every 5 s
MAX_BUCKETS = 2_000  # per arm; the bucket width doubles beyond it
FIRST_WIDTH_S = 60.0
METRICS = ("ctr", "conversion", "revenue", "reward")


@dataclass(frozen=True)
class Sample:
    t: float
    requests_per_s: float
    events_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    model_version: int | None
    exploration: Mapping[str, float] = field(default_factory=dict)  # "placement/segment"


@dataclass
class Tally:
    """Closed impressions of one arm in one bucket."""

    impressions: int = 0
    clicked: int = 0
    converted: int = 0
    revenue: float = 0.0
    reward: float = 0.0

    def add(self, other: Tally) -> None:
        self.impressions += other.impressions
        self.clicked += other.clicked
        self.converted += other.converted
        self.revenue += other.revenue
        self.reward += other.reward

    def value(self, metric: str) -> float:
        n = self.impressions or 1
        return {
            "ctr": self.clicked / n,
            "conversion": self.converted / n,
            "revenue": self.revenue / n,
            "reward": self.reward / n,
        }[metric]


class RewardBuckets:
    """Per arm, tallies of closed impressions in event-time buckets. The width starts at a
    minute and doubles whenever an arm would hold more than MAX_BUCKETS, so a replay of months
    and a live hour both come out as a readable line."""

    def __init__(self, width_s: float = FIRST_WIDTH_S, max_buckets: int = MAX_BUCKETS):
        self.width = width_s
        self.max_buckets = max_buckets
        self.arms: dict[str, dict[int, Tally]] = {}
        self.totals: dict[str, Tally] = {}

    def add(self, arm: str, closed: ClosedImpression) -> None:
        kinds = closed.kinds
        one = Tally(
            impressions=1,
            clicked=int(kinds.get("click", 0) > 0),
            converted=int(kinds.get("purchase", 0) > 0),
            revenue=float(kinds.get("revenue", 0.0)),
            reward=closed.raw_reward,
        )
        buckets = self.arms.setdefault(arm, {})
        buckets.setdefault(int(closed.timestamp // self.width), Tally()).add(one)
        self.totals.setdefault(arm, Tally()).add(one)
        if len(buckets) > self.max_buckets:
            self._coarsen()

    def _coarsen(self) -> None:
        self.width *= 2
        for arm, buckets in self.arms.items():
            merged: dict[int, Tally] = {}
            for index, tally in buckets.items():
                merged.setdefault(index // 2, Tally()).add(tally)
            self.arms[arm] = merged

    def series(self, metric: str, points: int = 60) -> dict[str, list[tuple[float, float]]]:
        """Each arm's metric per bucket, merged down to about `points` buckets."""
        out: dict[str, list[tuple[float, float]]] = {}
        for arm, buckets in self.arms.items():
            if not buckets:
                continue
            first, last = min(buckets), max(buckets)
            group = max(1, -(-(last - first + 1) // points))
            merged: dict[int, Tally] = {}
            for index, tally in buckets.items():
                merged.setdefault((index - first) // group, Tally()).add(tally)
            out[arm] = [
                ((first + g * group) * self.width, merged[g].value(metric)) for g in sorted(merged)
            ]
        return out


class Timeline:
    def __init__(self, keep: int = SAMPLES_KEPT):
        self.samples: deque[Sample] = deque(maxlen=keep)
        self.rewards = RewardBuckets()
        self.exposure: Counter[str] = Counter()  # item -> times shown since the process started
        self._latencies: list[float] = []
        self._requests = 0
        self._last: tuple[float, int, int] | None = None  # (wall time, requests, events)
        self._lock = threading.Lock()

    # --- fed by the service -----------------------------------------------------------------------
    def request(self, seconds: float) -> None:
        """One recommend request took `seconds` (an append: this runs on every request)."""
        self._latencies.append(seconds)
        self._requests += 1

    def shown(self, items: Iterable[str]) -> None:
        self.exposure.update(items)

    def closed(self, arm: str, closed: ClosedImpression) -> None:
        with self._lock:
            self.rewards.add(arm, closed)

    def sample(
        self,
        now: float,
        events_total: int,
        model_version: int | None,
        exploration: Mapping[str, float],
    ) -> Sample:
        latencies, self._latencies = self._latencies, []
        requests = self._requests
        previous = self._last
        self._last = (now, requests, events_total)
        if previous is None or now <= previous[0]:
            rps = eps = 0.0
        else:
            elapsed = now - previous[0]
            rps = (requests - previous[1]) / elapsed
            eps = max(events_total - previous[2], 0) / elapsed
        p50 = p99 = None
        if latencies:
            p50, p99 = (float(q) * 1000 for q in np.quantile(latencies, [0.5, 0.99]))
        sample = Sample(now, rps, eps, p50, p99, model_version, dict(exploration))
        if previous is not None:  # the first sample has no interval to measure
            self.samples.append(sample)
        return sample

    # --- read by the pages ------------------------------------------------------------------------
    def reward_series(self, metric: str) -> dict[str, list[tuple[float, float]]]:
        with self._lock:
            return self.rewards.series(metric)

    def reward_totals(self) -> dict[str, Tally]:
        with self._lock:
            return {arm: Tally(**vars(t)) for arm, t in self.rewards.totals.items()}
