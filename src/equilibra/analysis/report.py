"""Writes the behaviour analysis as JSON, PNG figures and one HTML page that shows them."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from equilibra.analysis.behaviour import sessionise
from equilibra.data.columns import Columns

C = Columns


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_funnel(result: dict[str, Any], out: Path) -> Path:
    counts = result["funnel"]["events_by_type"]
    order = [
        t for t in ("view", "click", "favorite", "add_to_cart", "purchase", "rating") if t in counts
    ]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(order, [counts[t] for t in order], color="#4472c4")
    ax.set_yscale("log")
    ax.set_ylabel("events (log scale)")
    f = result["funnel"]
    ax.set_title(
        f"Funnel: view→cart {f['view_to_cart'] or 0:.2%}, "
        f"cart→purchase {f['cart_to_purchase'] or 0:.2%}"
    )
    ax.bar_label(bars, labels=[f"{counts[t]:,}" for t in order], fontsize=8)
    return _save(fig, out / "funnel.png")


def plot_long_tail(events: pd.DataFrame, out: Path) -> Path:
    per_item = np.sort(events.groupby(C.item).size().to_numpy())[::-1]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.loglog(np.arange(1, len(per_item) + 1), per_item, color="#c0504d")
    ax.set_xlabel("item rank")
    ax.set_ylabel("events")
    ax.set_title("Item popularity (long tail)")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, out / "popularity_long_tail.png")


def plot_activity(events: pd.DataFrame, out: Path) -> Path:
    per_user = events.groupby(C.user).size().to_numpy()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.unique(np.logspace(0, np.log10(max(per_user.max(), 2)), 40).astype(int))
    ax.hist(per_user, bins=bins, color="#9bbb59")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events per user")
    ax.set_ylabel("users")
    ax.set_title("User activity")
    return _save(fig, out / "user_activity.png")


def plot_sessions(events: pd.DataFrame, out: Path) -> Path:
    lengths = events.assign(session=sessionise(events)).groupby("session").size().to_numpy()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    top = int(min(lengths.max(), 60))
    ax.hist(np.minimum(lengths, top), bins=np.arange(1, top + 2) - 0.5, color="#8064a2")
    ax.set_yscale("log")
    ax.set_xlabel(f"events per session (30-min gap; last bin = {top}+)")
    ax.set_ylabel("sessions")
    ax.set_title("Session length")
    return _save(fig, out / "session_length.png")


def plot_daily(result: dict[str, Any], out: Path) -> Path | None:
    per_day = result["timeline"].get("events_per_day", {})
    if not per_day:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    days = pd.to_datetime(list(per_day))
    ax.plot(days, list(per_day.values()), marker=".", color="#4bacc6")
    ax.set_ylabel("events per day")
    ax.set_title("Activity over time")
    fig.autofmt_xdate()
    return _save(fig, out / "events_per_day.png")


def plot_categories(result: dict[str, Any], out: Path) -> Path | None:
    cats = result["categories"]
    if not cats.get("known") or not cats["top_by_events"]:
        return None
    names = list(cats["top_by_events"])[::-1]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.barh(names, [cats["top_by_events"][n] for n in names], color="#f79646")
    ax.set_xlabel("events")
    ax.set_title("Top categories")
    return _save(fig, out / "top_categories.png")


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The handful of numbers worth printing."""
    f, p, r, s = (
        result["funnel"],
        result["popularity"],
        result["repeat_purchases"],
        result["sessions"],
    )
    return {
        "events": result["events"],
        "users": result["users"],
        "items": result["items"],
        "days": result["timeline"].get("days"),
        "view_to_cart": f["view_to_cart"],
        "cart_to_purchase": f["cart_to_purchase"],
        "view_to_purchase": f["view_to_purchase"],
        "viewer_to_buyer": f["users"]["viewer_to_buyer"],
        "share_items_under_5_events": p["share_items_under_5_events"],
        "share_events_top_1pct_items": p["share_events_top_1pct_items"],
        "gini_items": p["gini"],
        "repeat_buyer_rate": r["repeat_buyer_rate"],
        "sessions": s["sessions"],
        "median_events_per_session": s["events_per_session"].get("median"),
        "share_users_one_session": s["share_users_one_session"],
    }


def write_report(
    result: dict[str, Any], events: pd.DataFrame, out: Path | str, title: str = "Behaviour analysis"
) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["json"] = out / "analysis.json"
    paths["json"].write_text(json.dumps(result, indent=2, default=str))
    figures = [
        plot_funnel(result, out),
        plot_long_tail(events, out),
        plot_activity(events, out),
        plot_sessions(events, out),
        plot_daily(result, out),
        plot_categories(result, out),
    ]
    figures = [f for f in figures if f is not None]
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in headline(result).items()
    )
    images = "".join(
        f'<figure><img src="{f.name}" alt="{f.stem}"><figcaption>{f.stem}</figcaption></figure>'
        for f in figures
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        "</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}th,td{padding:2px 10px;border-bottom:1px solid #ddd;"
        "text-align:left}figure{display:inline-block;margin:8px}img{width:520px}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><table>{rows}</table>{images}"
        "<h2>All numbers</h2><pre>"
        f"{html.escape(json.dumps(result, indent=2, default=str))}</pre></body></html>"
    )
    paths["html"] = out / "report.html"
    paths["html"].write_text(page)
    for figure in figures:
        paths[figure.stem] = figure
    return paths


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
