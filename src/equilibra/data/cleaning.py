"""Cleaning before training: duplicates, bots and outliers, minimum support.

Each step returns the kept events and counts what it removed and why, so a report can say exactly
what happened to the data. Nothing here mutates its input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from equilibra.data.columns import Columns

C = Columns


@dataclass(frozen=True)
class CleaningConfig:
    dedupe: bool = True
    # A user is a bot when sustained activity exceeds this many events per minute over their
    # active span (with at least `bot_min_events` events, so one quick double-click is not).
    bot_events_per_minute: float | None = 20.0
    bot_min_events: int = 50
    # A user is an outlier when their event count lies this many robust deviations (MAD of
    # log-counts) above the median. None turns the check off.
    outlier_mad: float | None = 10.0
    # Iterative minimum support (k-core): users and items with fewer events are removed.
    min_user_events: int = 1
    min_item_events: int = 1


@dataclass
class CleaningReport:
    events_in: int = 0
    duplicates: int = 0
    bot_users: int = 0
    bot_events: int = 0
    outlier_users: int = 0
    outlier_events: int = 0
    support_events: int = 0
    events_out: int = 0
    bots: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["bots"] = self.bots[:20]  # a sample; the full list can be large
        return out


def drop_duplicates(events: pd.DataFrame) -> pd.DataFrame:
    """The same event twice: same event_id, or same user, item, type and time."""
    if C.event_id in events and events[C.event_id].notna().all():
        return events.drop_duplicates(C.event_id)
    return events.drop_duplicates([C.user, C.item, C.event_type, C.timestamp])


def find_bots(events: pd.DataFrame, events_per_minute: float, min_events: int) -> pd.Index:
    """Users whose sustained event rate is beyond what a person browsing can do."""
    grouped = events.groupby(C.user, sort=False)[C.timestamp]
    stats = grouped.agg(["count", "min", "max"])
    minutes = ((stats["max"] - stats["min"]) / 60.0).clip(lower=1.0)
    rate = stats["count"] / minutes
    return stats.index[(stats["count"] >= min_events) & (rate > events_per_minute)]


def find_outliers(events: pd.DataFrame, mad_threshold: float) -> pd.Index:
    """Users with absurdly many events against the bulk (robust z-score on log counts)."""
    counts = events.groupby(C.user, sort=False).size()
    if len(counts) < 10:
        return counts.index[:0]
    logs = np.log1p(counts.to_numpy(dtype=float))
    median = np.median(logs)
    mad = np.median(np.abs(logs - median)) * 1.4826
    if mad == 0:
        mad = max(np.std(logs), 1e-9)
    return counts.index[(logs - median) / mad > mad_threshold]


def min_support(
    events: pd.DataFrame, min_user: int, min_item: int, max_rounds: int = 20
) -> pd.DataFrame:
    """Repeatedly drop users and items below their minimum until both hold (a k-core)."""
    if min_user <= 1 and min_item <= 1:
        return events
    for _ in range(max_rounds):
        before = len(events)
        if min_item > 1:
            counts = events[C.item].map(events[C.item].value_counts())
            events = events[counts.to_numpy() >= min_item]
        if min_user > 1:
            counts = events[C.user].map(events[C.user].value_counts())
            events = events[counts.to_numpy() >= min_user]
        if len(events) == before:
            break
    return events


def clean_events(
    events: pd.DataFrame, config: CleaningConfig | None = None
) -> tuple[pd.DataFrame, CleaningReport]:
    config = config or CleaningConfig()
    report = CleaningReport(events_in=len(events))
    if config.dedupe:
        deduped = drop_duplicates(events)
        report.duplicates = len(events) - len(deduped)
        events = deduped
    if config.bot_events_per_minute is not None:
        bots = find_bots(events, config.bot_events_per_minute, config.bot_min_events)
        is_bot = events[C.user].isin(bots)
        report.bot_users, report.bot_events = len(bots), int(is_bot.sum())
        report.bots = [str(b) for b in bots]
        events = events[~is_bot.to_numpy()]
    if config.outlier_mad is not None:
        outliers = find_outliers(events, config.outlier_mad)
        is_outlier = events[C.user].isin(outliers)
        report.outlier_users, report.outlier_events = len(outliers), int(is_outlier.sum())
        events = events[~is_outlier.to_numpy()]
    supported = min_support(events, config.min_user_events, config.min_item_events)
    report.support_events = len(events) - len(supported)
    report.events_out = len(supported)
    return supported, report
