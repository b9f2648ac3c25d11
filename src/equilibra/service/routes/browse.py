"""GET /v1/similar/{item_id} and GET /v1/popular: lists that do not depend on a user."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from equilibra.service.auth import require_read
from equilibra.service.engine import Engine
from equilibra.service.routes._common import engine_of
from equilibra.service.schemas import ListOut, ScoredItem

router = APIRouter(prefix="/v1", tags=["browse"], dependencies=[Depends(require_read)])
K = Query(10, ge=1, le=500, description="how many items")


@router.get("/similar/{item_id}", response_model=ListOut, summary="Items like this one")
def similar(item_id: str, request: Request, k: int = K) -> ListOut:
    engine = engine_of(request)
    model = engine.model
    scores: dict[str, float] = {}
    reasons: dict[str, str] = {}
    # Seen right after this item online; and the model's neighbours of it.
    for other, value in engine.state.neighbours([item_id], k):
        scores[other] = scores.get(other, 0.0) + value
        reasons.setdefault(other, "often viewed together")
    if model is not None:
        found = model.similar(item_id, k)
        top = max((v for _, v in found), default=1.0) or 1.0
        best = max(scores.values(), default=1.0)
        for other, value in found:
            scores[other] = scores.get(other, 0.0) + best * value / top
            reasons.setdefault(other, "similar by what shoppers do")
    ranked = sorted(
        (i for i in scores if i != item_id and engine.catalog.available(i)),
        key=lambda i: -scores[i],
    )[:k]
    return ListOut(
        items=[ScoredItem(item_id=i, score=round(scores[i], 6), reason=reasons[i]) for i in ranked]
    )


@router.get("/popular", response_model=ListOut, summary="Trending items, by category if asked")
def popular(
    request: Request,
    k: int = K,
    category: str | None = Query(None, description="only items of this category"),
) -> ListOut:
    return ListOut(items=popular_items(engine_of(request), k, category))


def popular_items(engine: Engine, k: int, category: str | None = None) -> list[ScoredItem]:
    """Trending available items (what /v1/popular answers; the dashboard shows the same)."""
    wanted = engine.catalog.in_category(category) if category is not None else None
    pool = engine.state.trending(max(10 * k, 200) if wanted is not None else k * 2)
    if engine.model is not None and len(pool) < k:
        pool += engine.model.cold
    seen: set[str] = set()
    out = []
    for item, score in pool:
        if item in seen or not engine.catalog.available(item):
            continue
        if wanted is not None and item not in wanted:
            continue
        seen.add(item)
        out.append(
            ScoredItem(
                item_id=item,
                score=round(float(score), 6),
                reason=f"trending in {category}" if category else "trending",
            )
        )
        if len(out) == k:
            break
    return out
