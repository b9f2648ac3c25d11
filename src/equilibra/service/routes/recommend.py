"""POST /v1/recommend: the request pipeline of design.md, stage by stage."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from equilibra.domain import ValidationError, parse_timestamp
from equilibra.service import pipeline
from equilibra.service.auth import require_read
from equilibra.service.compose import compose
from equilibra.service.routes._common import engine_of
from equilibra.service.schemas import RecommendIn, RecommendOut
from equilibra.service.settings import Settings

router = APIRouter(prefix="/v1", tags=["recommend"])


def _diversity(body: RecommendIn, settings: Settings) -> float:
    asked = (body.context or {}).get("diversity")
    if asked is None:
        return settings.diversity
    try:
        weight = float(asked)
    except (TypeError, ValueError):
        raise HTTPException(422, "context.diversity: expected a number in [0, 1]") from None
    if not 0.0 <= weight <= 1.0:
        raise HTTPException(422, f"context.diversity: {weight:g} is not in [0, 1]")
    return weight


@router.post(
    "/recommend",
    response_model=RecommendOut,
    dependencies=[Depends(require_read)],
    summary="A list for one user, each item with its propensity, and the impression logged",
)
async def recommend(body: RecommendIn, request: Request) -> JSONResponse:
    # `async` on purpose: the work is CPU-bound and waits on nothing (the impression log is
    # written behind it), so it runs on the event loop. As a plain `def` it ran in the thread
    # pool, where requests competing for the GIL served ~20 % fewer per second under load.
    engine = engine_of(request)
    settings = engine.settings
    if body.k > settings.max_k:
        raise HTTPException(422, f"k: at most {settings.max_k}, got {body.k}")
    try:
        stamp = time.time() if body.timestamp is None else parse_timestamp(body.timestamp)
    except ValidationError as exc:
        raise HTTPException(422, str(exc)) from None
    req = pipeline.Request(
        user_id=str(body.user_id),
        k=body.k,
        placement=body.placement,
        context=body.context,
        exclude=body.exclude,
        filters=body.filters,
        timestamp=stamp,
    )
    engine.advance(stamp)
    made = compose(engine, req, _diversity(body, settings))
    policy, arm, version = made.policy, made.arm, made.version
    served_by = None if arm is None else (arm.experiment, arm.variant)
    if made.slate is None or made.candidates is None:
        # Nothing to show yet (an empty shop): an empty list, no impression.
        return JSONResponse(
            pipeline.respond([], None, version, policy.spec, policy.exploration_rate, served_by)
        )
    shown, slate, candidates = made.shown, made.slate, made.candidates
    impression_id = engine.new_impression_id()
    rows = pipeline.log_rows(
        shown, slate, candidates, req, impression_id, made.base_rate, version,
        None if arm is None else arm.key, settings.replica,
    )  # fmt: skip
    engine.record(impression_id, req.user_id, stamp, slate, candidates, rows, arm)
    metrics = request.app.state.metrics
    metrics.impressions.labels(req.placement).inc()
    explored = sum(s.explore for s in shown)
    metrics.slots.labels(req.placement, "true").inc(explored)
    metrics.slots.labels(req.placement, "false").inc(len(shown) - explored)
    metrics.exploration.set(engine.policy.exploration_rate)
    # Built to RecommendOut's shape by `respond` (tested against the schema), so FastAPI's
    # second validation pass, and the thread hop it takes for it, are skipped.
    return JSONResponse(
        pipeline.respond(
            shown, impression_id, version, policy.spec, policy.exploration_rate, served_by
        )
    )
