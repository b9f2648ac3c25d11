"""Behaviour analysis of an event log: funnel, activity, long tail, repeat purchases, sessions.

Pure functions of a canonical events frame (and optionally the item table); they return plain
dicts so the same numbers go to JSON, to the console and into the plotted report.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from equilibra.data.columns import Columns

C = Columns
SESSION_GAP_SECONDS = 30 * 60


def _share(part: float, whole: float) -> float | None:
    return round(float(part) / float(whole), 6) if whole else None


def _quantiles(values: pd.Series | np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return {}
    q = np.quantile(values, [0.5, 0.9, 0.99])
    return {
        "mean": round(float(values.mean()), 3),
        "median": float(q[0]),
        "p90": float(q[1]),
        "p99": float(q[2]),
        "max": float(values.max()),
    }


def gini(counts: np.ndarray) -> float:
    """0 when every item is equally popular, towards 1 when a few items take everything."""
    values = np.sort(np.asarray(counts, dtype=float))
    if len(values) == 0 or values.sum() == 0:
        return 0.0
    n = len(values)
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * values).sum()) / (n * values.sum()) - (n + 1) / n)


def funnel(events: pd.DataFrame) -> dict[str, Any]:
    counts = events[C.event_type].value_counts()
    views = int(counts.get("view", 0) + counts.get("click", 0))
    carts = int(counts.get("add_to_cart", 0))
    purchases = int(counts.get("purchase", 0))
    by_type = events.groupby(C.event_type)[C.user]
    users_with = {t: set(u) for t, u in by_type.unique().items()}
    viewers = users_with.get("view", set()) | users_with.get("click", set())
    carters = users_with.get("add_to_cart", set())
    buyers = users_with.get("purchase", set())
    # Pair level: of the (user, item) pairs viewed, how many were carted, then bought.
    kind = events[C.event_type]
    flags = pd.DataFrame(
        {
            C.user: events[C.user],
            C.item: events[C.item],
            "viewed": kind.isin(["view", "click"]),
            "carted": kind == "add_to_cart",
            "bought": kind == "purchase",
        }
    )
    per_pair = flags.groupby([C.user, C.item], sort=False)[["viewed", "carted", "bought"]].any()
    viewed, carted, bought = per_pair["viewed"], per_pair["carted"], per_pair["bought"]
    return {
        "events_by_type": {k: int(v) for k, v in counts.items()},
        "view_to_cart": _share(carts, views),
        "cart_to_purchase": _share(purchases, carts),
        "view_to_purchase": _share(purchases, views),
        "users": {
            "viewers": len(viewers),
            "carters": len(carters),
            "buyers": len(buyers),
            "viewer_to_carter": _share(len(viewers & carters), len(viewers)),
            "carter_to_buyer": _share(len(carters & buyers), len(carters)),
            "viewer_to_buyer": _share(len(viewers & buyers), len(viewers)),
        },
        "pairs": {
            "viewed": int(viewed.sum()),
            "viewed_then_carted": _share((viewed & carted).sum(), viewed.sum()),
            "carted_then_bought": _share((carted & bought).sum(), carted.sum()),
        },
    }


def activity(events: pd.DataFrame) -> dict[str, Any]:
    per_user = events.groupby(C.user).size()
    return {
        "users": len(per_user),
        "events_per_user": _quantiles(per_user),
        "share_users_one_event": _share((per_user == 1).sum(), len(per_user)),
        "share_users_under_5_events": _share((per_user < 5).sum(), len(per_user)),
    }


def popularity(events: pd.DataFrame) -> dict[str, Any]:
    per_item = events.groupby(C.item).size().sort_values(ascending=False)
    n = len(per_item)
    total = float(per_item.sum())
    top1 = max(1, round(n * 0.01))
    top20 = max(1, round(n * 0.20))
    return {
        "items": int(n),
        "events_per_item": _quantiles(per_item),
        "share_items_under_5_events": _share((per_item < 5).sum(), n),
        "share_items_one_event": _share((per_item == 1).sum(), n),
        "share_events_top_1pct_items": _share(per_item.iloc[:top1].sum(), total),
        "share_events_top_20pct_items": _share(per_item.iloc[:top20].sum(), total),
        "gini": round(gini(per_item.to_numpy()), 4),
    }


def repeat_purchases(events: pd.DataFrame) -> dict[str, Any]:
    buys = events[events[C.event_type] == "purchase"]
    if buys.empty:
        return {"buyers": 0, "repeat_buyer_rate": None, "repeat_item_rate": None}
    per_buyer = buys.groupby(C.user).size()
    per_pair = buys.groupby([C.user, C.item]).size()
    # Distinct purchase days per buyer: buying again on another day is a return purchase.
    days = (buys[C.timestamp] // 86_400).astype(np.int64)
    buy_days = buys.assign(day=days).groupby(C.user)["day"].nunique()
    return {
        "buyers": len(per_buyer),
        "purchases_per_buyer": _quantiles(per_buyer),
        "repeat_buyer_rate": _share((per_buyer > 1).sum(), len(per_buyer)),
        "repeat_buyer_other_day_rate": _share((buy_days > 1).sum(), len(buy_days)),
        "repeat_item_rate": _share((per_pair > 1).sum(), len(per_pair)),
    }


def sessionise(events: pd.DataFrame, gap: float = SESSION_GAP_SECONDS) -> pd.Series:
    """A session id per event: a new session starts after `gap` seconds of silence."""
    ordered = events.sort_values([C.user, C.timestamp], kind="stable")
    new_user = ordered[C.user].ne(ordered[C.user].shift())
    silent = ordered[C.timestamp].diff().fillna(np.inf) > gap
    session = (new_user | silent).cumsum()
    return session.reindex(events.index)


def sessions(events: pd.DataFrame, gap: float = SESSION_GAP_SECONDS) -> dict[str, Any]:
    frame = events.assign(session=sessionise(events, gap))
    frame["bought"] = frame[C.event_type] == "purchase"
    grouped = frame.groupby("session")
    length = grouped.size()
    duration = grouped[C.timestamp].max() - grouped[C.timestamp].min()
    has_buy = grouped["bought"].any()
    per_user = frame.groupby(C.user)["session"].nunique()
    return {
        "gap_minutes": gap / 60,
        "sessions": len(length),
        "events_per_session": _quantiles(length),
        "duration_seconds": _quantiles(duration),
        "sessions_per_user": _quantiles(per_user),
        "share_users_one_session": _share((per_user == 1).sum(), len(per_user)),
        "share_sessions_with_purchase": _share(has_buy.sum(), len(has_buy)),
    }


def categories(events: pd.DataFrame, items: pd.DataFrame | None, top: int = 10) -> dict[str, Any]:
    if items is None or items.empty or C.categories not in items:
        return {"known": False}
    first = items.set_index(C.item)[C.categories].dropna().astype(str).str.split("|").str[0]
    category = events[C.item].map(first)
    known = category.notna()
    by_events = category[known].value_counts().head(top)
    buys = events[C.event_type] == "purchase"
    by_buys = category[known & buys].value_counts().head(top)
    return {
        "known": True,
        "share_events_with_category": _share(known.sum(), len(events)),
        "distinct": int(category[known].nunique()),
        "top_by_events": {str(k): int(v) for k, v in by_events.items()},
        "top_by_purchases": {str(k): int(v) for k, v in by_buys.items()},
    }


def timeline(events: pd.DataFrame) -> dict[str, Any]:
    if events.empty:
        return {}
    start, end = float(events[C.timestamp].min()), float(events[C.timestamp].max())
    day = pd.to_datetime(events[C.timestamp], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    per_day = day.value_counts().sort_index()
    return {
        "start": pd.Timestamp(start, unit="s", tz="UTC").isoformat(),
        "end": pd.Timestamp(end, unit="s", tz="UTC").isoformat(),
        "days": round((end - start) / 86_400, 2),
        "events_per_day": {str(k): int(v) for k, v in per_day.items()},
    }


def analyse(events: pd.DataFrame, items: pd.DataFrame | None = None) -> dict[str, Any]:
    """Every section of the behaviour report for one event log."""
    return {
        "events": len(events),
        "users": int(events[C.user].nunique()),
        "items": int(events[C.item].nunique()),
        "timeline": timeline(events),
        "funnel": funnel(events),
        "activity": activity(events),
        "popularity": popularity(events),
        "repeat_purchases": repeat_purchases(events),
        "sessions": sessions(events),
        "categories": categories(events, items),
    }
