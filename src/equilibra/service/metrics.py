"""Prometheus metrics of one service instance (its own registry: tests run several apps)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.latency = Histogram(
            "equilibra_request_seconds",
            "Request latency by route",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events = Counter("equilibra_events_ingested_total", "Events stored", registry=r)
        self.duplicates = Counter(
            "equilibra_events_duplicate_total", "Events already stored (retries)", registry=r
        )
        self.impressions = Counter(
            "equilibra_impressions_total",
            "Impressions served and logged",
            ["placement"],
            registry=r,
        )
        self.slots = Counter(
            "equilibra_shown_items_total", "Items shown", ["placement", "explore"], registry=r
        )
        self.rewards = Counter(
            "equilibra_rewarded_items_total", "Shown items that earned a reward", registry=r
        )
        self.rewards_counted = 0  # the engine's reward count at the last scrape
        self.exploration = Gauge(
            "equilibra_exploration_share", "Running share of exploratory slots", registry=r
        )
        self.model_version = Gauge(
            "equilibra_model_version", "Model version served (0: none)", registry=r
        )
        self.gc_pause = Histogram(
            "equilibra_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector, by generation",
            ["generation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.log_pending = Gauge(
            "equilibra_impression_log_pending", "Impression writes queued, not yet written",
            registry=r,
        )  # fmt: skip
        self.learnt = Gauge(
            "equilibra_policy_learnt_impressions",
            "Closed impressions the policy has learnt (every replica's, among replicas)",
            registry=r,
        )
        self.fleet_unsent = Gauge(
            "equilibra_fleet_unsent_entries",
            "Fleet log entries applied here while Redis was down, not yet appended",
            registry=r,
        )
        self.adopted = Gauge(
            "equilibra_impressions_adopted",
            "Open impressions adopted from replicas that did not come back",
            registry=r,
        )
        self.log_failed = Gauge(
            "equilibra_impression_log_failed", "Impression writes given up on after retries",
            registry=r,
        )  # fmt: skip


class GcTimer:
    """A `gc.callbacks` hook that times each collection: a full one over a large heap stalls
    every request in flight, and is otherwise invisible."""

    def __init__(self, histogram: Histogram):
        self.histogram = histogram
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.histogram.labels(str(info["generation"])).observe(
                time.perf_counter() - self.started
            )
