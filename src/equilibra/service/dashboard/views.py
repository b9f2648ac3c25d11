"""What each dashboard page shows, as plain data and SVG strings: the templates only lay it out.

Numbers that the API also answers come from the same functions the API uses (`current_stats`,
`Engine.exploration`, `popular_items`, the experiments' summaries), so the page and the API agree.
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from equilibra.data.columns import Columns as C
from equilibra.data.columns import is_missing
from equilibra.errors import EquilibraError
from equilibra.pipeline.artifact import version_info, versions
from equilibra.service import pipeline
from equilibra.service.compose import compose
from equilibra.service.dashboard import charts
from equilibra.service.dashboard.background import Refreshing
from equilibra.service.dashboard.timeline import Sample
from equilibra.service.engine import Engine
from equilibra.service.offpolicy import estimates, recent_log

OPE_POLICIES = ("greedy", "egreedy:0.05", "egreedy:0.2", "thompson")
OPE_DAYS = 7.0
REWARD_CHARTS = (  # metric, title, axis
    ("ctr", "Click-through rate", "clicked / impressions"),
    ("conversion", "Conversion per impression", "purchased / impressions"),
    ("revenue", "Revenue per request", "revenue / impression"),
)
CONVERSION_TYPES = ("add_to_cart", "purchase")
TOP_DAYS = 30.0  # "most bought" looks back this far
HISTORY_SHOWN = 30  # a user's latest events on their page


# --- sampling: called every few seconds by the app ----------------------------------------------
def take_sample(engine: Engine, now: float | None = None) -> Sample:
    """One point of the overview's and the exploration page's lines."""
    segments = engine.exploration()["segments"]
    rates = {segment_key(s): float(s["exploration_rate"]) for s in segments}  # type: ignore[attr-defined]
    model = engine.model
    return engine.timeline.sample(
        time.time() if now is None else now,
        engine.counters.events,
        None if model is None else model.version,
        rates,
    )


def segment_key(segment: Mapping[str, Any]) -> str:
    """ "placement/segment", or the segment alone where there is no placement (the controller's
    own keys)."""
    placement = segment["placement"]
    return f"{placement}/{segment['segment']}" if placement else str(segment["segment"])


# --- overview -------------------------------------------------------------------------------------
def model_history(model_dir: Path, serving: int | None) -> list[dict[str, Any]]:
    """Each model version kept in the folder, newest first, from its metadata."""
    rows = []
    for version in reversed(versions(model_dir)):
        try:
            meta = version_info(model_dir, version)
        except (OSError, ValueError):
            continue
        saved = meta.get("saved_at")
        rows.append(
            {
                "version": version,
                "algorithm": meta.get("algorithm"),
                "n_users": meta.get("users"),
                "n_items": meta.get("items"),
                "saved": _when(saved) if isinstance(saved, int | float) else "",
                "serving": version == serving,
            }
        )
    return rows


def overview(engine: Engine, stats: Mapping[str, Any], trainer: Any) -> dict[str, Any]:
    samples = list(engine.timeline.samples)
    timeline = engine.timeline
    totals = timeline.reward_totals()
    rewards = [
        {
            "arm": arm,
            "impressions": t.impressions,
            "ctr": t.value("ctr"),
            "conversion": t.value("conversion"),
            "revenue": t.value("revenue"),
            "reward": t.value("reward"),
        }
        for arm, t in sorted(totals.items(), key=lambda kv: -kv[1].impressions)
    ]
    served = stats.get("model_version")
    return {
        "stats": stats,
        "policy": engine.policy.spec,
        "exploration_rate": engine.policy.exploration_rate,
        "uptime": _duration(time.time() - engine.started),
        "charts": {
            "traffic": charts.line_chart(
                "Requests and events per second",
                {
                    "recommend requests/s": [(s.t, s.requests_per_s) for s in samples],
                    "events/s": [(s.t, s.events_per_s) for s in samples],
                },
                "per second",
                empty="collecting: a point every few seconds",
            ),
            "latency": charts.line_chart(
                "Recommend latency (ms)",
                {
                    "p50": [(s.t, s.p50_ms) for s in samples if s.p50_ms is not None],
                    "p99": [(s.t, s.p99_ms) for s in samples if s.p99_ms is not None],
                },
                "ms",
                empty="no recommend requests yet",
            ),
            "model": charts.line_chart(
                "Model version served",
                {"version": [(s.t, s.model_version) for s in samples if s.model_version]},
                "version",
                empty="no model yet: serving popular and new items",
            ),
            **{
                metric: charts.line_chart(
                    f"{title}, per policy (event time)",
                    timeline.reward_series(metric),
                    axis,
                    empty="no impression has closed yet (attribution window)",
                )
                for metric, title, axis in REWARD_CHARTS
            },
        },
        "rewards": rewards,
        "models": model_history(Path(engine.settings.model_dir), served),
        "trainer": None
        if trainer is None
        else {"runs": trainer.runs, "running": trainer.running, "last_error": trainer.last_error},
    }


# --- exploration ----------------------------------------------------------------------------------
def off_policy(engine: Engine) -> dict[str, Any]:
    """What other settings would have earned on the recent log (SNIPS and DR with 95 % bootstrap
    intervals, per shown slot), beside what the logged policy earned."""
    try:
        logged = recent_log(engine, OPE_DAYS)
    except EquilibraError as exc:
        return {"error": str(exc), "rows": []}
    rows = []
    for spec, report in estimates(logged, ("logged", engine.policy.spec, *OPE_POLICIES)).items():
        if isinstance(report, str):
            rows.append({"policy": spec, "error": report})
            continue
        found: dict[str, Any] = report["estimates"]
        for name in ("snips", "dr", "on_policy"):
            if name in found:
                value, (low, high) = found[name]["value"], found[name]["ci"]
                rows.append(
                    {"policy": spec, "estimator": name, "value": value, "low": low, "high": high}
                )
    return {
        "rows": rows,
        "impressions": len(np.unique(logged.clusters)),
        "slots": len(logged),
        "days": OPE_DAYS,
    }


def exploration(engine: Engine, ope: Refreshing[dict[str, Any]]) -> dict[str, Any]:
    state = engine.exploration()  # what GET /v1/exploration answers
    samples = list(engine.timeline.samples)
    keys = sorted({k for s in samples for k in s.exploration})
    over_time = {k: [(s.t, s.exploration[k]) for s in samples if k in s.exploration] for k in keys}
    history = [
        {**h, "time_text": "" if h.get("time") is None else _when(float(h["time"]))}
        for h in state.get("history", [])  # type: ignore[attr-defined]
    ]
    steps: dict[str, list[tuple[float, float]]] = {}
    for change in history:
        epsilon = change.get("measured", {}).get("epsilon")
        if change.get("time") is not None and epsilon is not None:
            steps.setdefault(change["key"], []).append((float(change["time"]), float(epsilon)))
    now = engine.clock
    for segment in state.get("segments", []):  # type: ignore[attr-defined]
        key = segment_key(segment)
        if key in steps and math.isfinite(now):  # the rate holds until now
            steps[key].append((now, float(segment["exploration_rate"])))
    estimated = ope.get(wait_s=0.5)
    failed = ope.error
    if estimated is not None and "error" in estimated:  # e.g. no impression logged yet
        estimated, failed = None, str(estimated["error"])
    bands = []
    if estimated is not None:
        estimators = ["snips", "dr", "on_policy"]
        bands = [
            charts.Band(
                f"{r['policy']} · {r['estimator']}", r["value"], r["low"], r["high"],
                estimators.index(r["estimator"]),
            )
            for r in estimated["rows"]
            if "value" in r
        ]  # fmt: skip
    logged = next((b.value for b in bands if b.label.startswith("logged ·")), None)
    budget = state.get("budget")
    segments = [
        {**s, "budget_text": _budget_text(s.get("budget_spent"))}
        for s in state.get("segments", [])  # type: ignore[attr-defined]
    ]
    return {
        "state": state,
        "segments": segments,
        "history": list(reversed(history))[:60],
        "champions": state.get("champions", {}),
        "budget": _budget_config_text(budget),
        "ope": estimated,
        "ope_error": failed,
        "ope_busy": ope.busy and estimated is None and failed is None,
        "ope_when": None if ope.computed_at is None else _when(ope.computed_at),
        "charts": {
            "rates": charts.line_chart(
                "Exploration rate per placement/segment (wall time)",
                over_time,
                "rate",
                empty="collecting: a point every few seconds",
            ),
            "changes": charts.line_chart(
                "The controller's rate at each change (event time)",
                steps,
                "epsilon",
                empty="no change recorded yet",
                steps=True,
            ),
            "ope": charts.interval_chart(
                "Off-policy estimates: reward per shown item, 95 % intervals",
                bands,
                reference=logged,
                empty="computing…" if estimated is None else "no estimate: see below",
            ),
        },
    }


# --- catalogue ------------------------------------------------------------------------------------
def catalogue(engine: Engine, popular: list[Any]) -> dict[str, Any]:
    state, catalog = engine.state, engine.catalog
    clock = _now(engine)
    age_limit = state.config.new_item_age_s
    # One read serves both lists: the month's purchases and the new items' first conversions.
    events = engine.store.events_frame(
        since=clock - max(TOP_DAYS * 86_400.0, age_limit),
        types=list(CONVERSION_TYPES),
        columns=[C.item, C.event_type, C.timestamp],
    )
    items = events[C.item].astype(str).tolist()
    kinds = events[C.event_type].tolist()
    stamps = events[C.timestamp].tolist()
    top_since = clock - TOP_DAYS * 86_400.0
    top = Counter(
        item
        for item, kind, stamp in zip(items, kinds, stamps, strict=True)
        if kind == "purchase" and stamp >= top_since
    ).most_common(15)
    first_conversion: dict[str, float] = {}
    for item, stamp in zip(items, stamps, strict=True):
        if stamp >= clock - age_limit:
            first_conversion.setdefault(item, float(stamp))
    newest = state.newest(30, clock)
    exposure = engine.timeline.exposure
    rows = []
    waits = []  # first seen → first conversion, of the new items that converted
    for item, age in newest:
        seen = float(clock - age)
        converted = first_conversion.get(item)
        wait = None if converted is None or converted < seen else converted - seen
        if wait is not None:
            waits.append(wait)
        info = catalog.get(item)
        rows.append(
            {
                "item_id": item,
                "title": getattr(info, "title", None) or "",
                "age": _duration(age),
                "shown": exposure[item],
                "first_conversion": None if wait is None else _duration(wait),
            }
        )
    return {
        "popular": popular,
        "top": top,
        "new_items": rows,
        "new_converted": len(waits),
        "median_first_conversion": _duration(float(np.median(waits))) if waits else None,
        "new_age": _duration(age_limit),
        "charts": {
            "trending": charts.bar_chart(
                "Trending now (decayed event counts)",
                [(p.item_id, p.score) for p in popular],
            ),
            "top": charts.bar_chart(
                f"Most bought, last {TOP_DAYS:.0f} days",
                [(i, float(n)) for i, n in top],
                colour="#009e73",
            ),
            "new": charts.bar_chart(
                "New items: times shown since the service started",
                [(r["item_id"], float(r["shown"])) for r in rows[:15]],
                empty="no new item in the last " + _duration(age_limit),
                colour="#e69f00",
            ),
        },
    }


# --- one user -------------------------------------------------------------------------------------
def user_view(
    engine: Engine, user_id: str, k: int = 10, placement: str = "default"
) -> dict[str, Any]:
    events = engine.store.events_frame(users=[user_id])

    def title(item: str) -> str:
        return getattr(engine.catalog.get(item), "title", None) or ""

    history = [
        {"when": _when(float(stamp)), "item_id": str(item), "title": title(str(item)),
         "type": str(kind)}
        for item, kind, stamp in zip(
            events[C.item].tolist()[-HISTORY_SHOWN:],
            events[C.event_type].tolist()[-HISTORY_SHOWN:],
            events[C.timestamp].tolist()[-HISTORY_SHOWN:],
            strict=True,
        )
    ][::-1]  # fmt: skip
    kinds = Counter(events[C.event_type].astype(str).tolist())
    req = pipeline.Request(user_id=user_id, k=k, placement=placement, timestamp=_now(engine))
    # A copy of the policy draws, so that a look at the page charges no exploration budget
    # and moves no statistic; the list is what the user would be shown now, not logged.
    with engine.lock:
        arm = engine.arm_for(user_id, placement)
        policy = copy.deepcopy(engine.policy if arm is None else arm.policy)
    made = compose(engine, req, engine.settings.diversity, policy)
    shown = pipeline.respond(
        made.shown, None, made.version, made.policy.spec, made.policy.exploration_rate, None
    )
    for item in shown["items"]:
        item["title"] = title(item["item_id"])
    last = engine.store.impressions_frame(user_id=user_id)
    served = []
    if len(last):
        newest = last[last[C.impression_id] == last[C.impression_id].iloc[-1]]
        served = [
            {
                "position": int(row[C.position]),
                "item_id": str(row[C.item]),
                "title": title(str(row[C.item])),
                "score": float(row[C.score]),
                "propensity": float(row[C.propensity]),
                "explore": bool(row[C.explore]),
                "reason": str(row[C.reason]),
                "reward": None if is_missing(row[C.reward]) else float(row[C.reward]),
            }
            for _, row in newest.sort_values(C.position).iterrows()
        ]
    return {
        "user_id": user_id,
        "known": len(events) > 0 or engine.state.user(user_id) is not None,
        "segment": engine.segment(user_id),
        "events": len(events),
        "kinds": dict(kinds),
        "history": history,
        "recommendations": shown["items"],
        "policy": shown["policy"],
        "model_version": made.version,
        "experiment": None if arm is None else f"{arm.experiment} / {arm.variant}",
        "last_impression": served,
        "last_impression_id": None if not len(last) else str(last[C.impression_id].iloc[-1]),
        "impressions": int(last[C.impression_id].nunique()) if len(last) else 0,
        "chart": charts.bar_chart(
            "Next recommendations: propensity of each item at its position",
            [(i["item_id"], float(i["propensity"])) for i in shown["items"]],
            empty="nothing to recommend yet",
        ),
    }


def active_users(engine: Engine, n: int = 20) -> list[tuple[str, int]]:
    recent = engine.store.events_frame(since=_now(engine) - 86_400.0, columns=[C.user])
    return Counter(recent[C.user].astype(str).tolist()).most_common(n)


# --- behaviour analysis ---------------------------------------------------------------------------
def behaviour_report(engine: Engine, out: Path) -> dict[str, Any]:
    """`equilibra analyze` on the live store: the same analysis and figures, into `out`."""
    from equilibra.analysis import analyse
    from equilibra.analysis.report import headline, write_report
    from equilibra.data.cleaning import clean_events

    events = engine.store.events_frame()
    if events.empty:
        raise EquilibraError("the store holds no events yet")
    items = engine.store.items_frame()
    cleaned, cleaning = clean_events(events)
    result = analyse(cleaned, items)
    paths = write_report(result, cleaned, out, title="Behaviour analysis (live store)")
    figures = [name for name, path in paths.items() if path.suffix == ".png"]
    return {
        "headline": headline(result),
        "figures": figures,
        "removed_by_cleaning": cleaning.events_in - cleaning.events_out,
        "funnel": result["funnel"],
    }


# --- experiments ----------------------------------------------------------------------------------
def experiments(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pages = []
    for summary in summaries:
        variants = summary["variants"]
        control = variants[0]["mean"] if variants else None
        bands = [
            charts.Band(v["name"], v["mean"], *v["interval"])
            for v in variants
            if v["impressions"] > 0 and v["interval"][0] is not None
        ]
        preview = summary.get("preview") or {}
        previewed = []
        for v in variants:
            p = preview.get(v["name"]) if isinstance(preview, dict) else None
            dr = (p or {}).get("per_impression", {}).get("dr")
            if dr:
                previewed.append(charts.Band(f"{v['name']} (preview)", dr["value"], *dr["ci"]))
        pages.append(
            {
                **summary,
                "chart": charts.interval_chart(
                    f"{summary['name']}: {summary['metric']} per impression, always-valid "
                    f"{summary['level']:.0%} intervals",
                    bands,
                    reference=control if bands else None,
                    empty="no impression of this test has closed yet",
                ),
                "preview_chart": charts.interval_chart(
                    "Preview before launch (doubly robust, reward per impression)",
                    previewed,
                    empty="no preview: " + str(preview.get("error", "the log was empty")),
                ),
            }
        )
    return pages


# --- helpers
def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))


def _duration(seconds: float) -> str:
    seconds = max(float(seconds), 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7_200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


def _budget_text(spent: Mapping[str, Any] | None) -> list[str]:
    """The budget's two limits in words: the share of slots explored, the estimated loss."""
    if not spent:
        return []
    share, cap = spent.get("explore_share", 0.0), spent.get("max_share")
    loss, loss_cap = spent.get("loss_share", 0.0), spent.get("max_loss")
    return [
        f"explored {100 * share:.2f} % of {spent.get('shown_slots', 0):,} slots"
        + (f" (cap {100 * cap:.0f} %)" if cap is not None and cap < 1 else " (no cap)"),
        f"estimated loss {100 * loss:+.2f} % of the greedy value"
        + (f" (cap {100 * loss_cap:.1f} %)" if loss_cap is not None else " (no cap)"),
    ]


def _budget_config_text(budget: Any) -> str | None:
    """The configured budget in a sentence: the share caps per placement, the loss cap."""
    if not isinstance(budget, Mapping):
        return None
    shares = budget.get("max_share") or {}
    caps = ", ".join(f"{100 * float(v):.0f} % on {k}" for k, v in shares.items())
    loss = budget.get("max_loss")
    period = budget.get("period_s")
    return (
        f"explored slots at most {caps or '100 %'}; "
        + ("no cap on the estimated loss" if loss is None else f"estimated loss ≤ {loss:g}")
        + (f"; per period of {_duration(float(period))}" if period else "")
    )


def _now(engine: Engine) -> float:
    """The event clock, or the wall clock before the first event."""
    return engine.clock if math.isfinite(engine.clock) else time.time()
