"""GET /v1/stats, GET /v1/exploration, GET /health, GET /metrics (the dashboard is at GET /)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import State

from equilibra.service.auth import require_read
from equilibra.service.routes._common import engine_of
from equilibra.service.schemas import StatsOut

router = APIRouter(tags=["status"])
STATS_TTL_S = 10.0


@router.get("/v1/stats", response_model=StatsOut, dependencies=[Depends(require_read)])
def stats(request: Request) -> StatsOut:
    return current_stats(request.app.state)


def current_stats(state: State) -> StatsOut:
    """What /v1/stats answers (the dashboard's overview shows the same numbers)."""
    engine = state.engine
    cached = getattr(state, "stats_cache", None)
    if cached is None or time.monotonic() - cached[0] > STATS_TTL_S:
        # Distinct users and items are counted by the store; cached: the count is not free.
        counted = engine.store.stats()
        cached = (time.monotonic(), counted)
        state.stats_cache = cached
    counted = cached[1]
    model = engine.model
    return StatsOut(
        events=engine.counters.events,
        users=max(counted.users, engine.state.known_users()),
        items=max(counted.items, len(engine.catalog)),
        impressions=engine.counters.impressions,
        model_version=None if model is None else model.version,
    )


@router.get("/v1/exploration", dependencies=[Depends(require_read)])
def exploration(request: Request) -> dict[str, object]:
    """How much the service explores, where and why: the balance controller's state under
    `EQUILIBRA_POLICY=adaptive` (per placement and segment the rate, the measurements behind
    it, the budget spent, the champion and the history of changes); for a fixed policy, the
    shares it explored; and how the policy learns (`learning`: alone, or with the replicas)."""
    engine = engine_of(request)
    return {**engine.exploration(), "learning": engine.learning()}


@router.get("/health")
def health(request: Request) -> dict[str, object]:
    engine = engine_of(request)
    model = engine.model
    return {
        "status": "ok",
        "model_loaded": model is not None,
        "model_version": None if model is None else model.version,
        "algorithm": None if model is None else model.algorithm,
        "events": engine.counters.events,
        "auth": "on" if engine.settings.admin_key else "off",
        "uptime_s": round(time.time() - engine.started, 1),
        "training": bool(getattr(request.app.state, "trainer", None))
        and request.app.state.trainer.running,
        # "redis" (shared by replicas; `degraded` while Redis does not answer) or "in-process".
        "online_state": "in-process" if engine.settings.redis is None else "redis",
        "degraded": bool(getattr(engine.state, "degraded", False)),
    }


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    engine = engine_of(request)
    m = request.app.state.metrics
    model = engine.model
    m.model_version.set(0 if model is None or model.version is None else model.version)
    # Rewards are counted where impressions close (the engine); the counter catches up here.
    m.rewards.inc(max(engine.counters.rewards - m.rewards_counted, 0))
    m.rewards_counted = max(engine.counters.rewards, m.rewards_counted)
    m.log_pending.set(engine.writer.pending)
    m.log_failed.set(engine.writer.failed)
    m.learnt.set(engine.counters.learnt_impressions)
    m.fleet_unsent.set(getattr(engine.fleet, "unsent", 0))
    m.adopted.set(engine.counters.adopted)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
