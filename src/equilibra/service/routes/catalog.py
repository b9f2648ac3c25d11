"""POST /v1/items, POST /v1/users (batch upserts) and DELETE /v1/users/{id} (forget a user)."""

from __future__ import annotations

import pandas as pd
from fastapi import APIRouter, Depends, Request

from equilibra.data.validate import validate_items, validate_users
from equilibra.service.auth import require_admin
from equilibra.service.routes._common import engine_of, reject
from equilibra.service.schemas import Forgotten, ItemIn, Upserted, UserIn

router = APIRouter(prefix="/v1", tags=["catalogue"], dependencies=[Depends(require_admin)])


def _records(rows: list[ItemIn] | list[UserIn]) -> pd.DataFrame:
    frame = pd.DataFrame([r.model_dump(exclude_none=True) for r in rows])
    frame.insert(0, "_row", range(len(rows)))
    return frame


@router.post("/items", response_model=Upserted, summary="Insert or update items")
def post_items(items: list[ItemIn], request: Request) -> Upserted:
    engine = engine_of(request)
    if not items:
        return Upserted(upserted=0)
    frame = _records(items)
    checked = validate_items(frame.drop(columns="_row").assign(source_row=frame["_row"]))
    if len(checked.rejects):
        raise reject("items", checked.rejects.rename(columns={"source_row": "_row"}))
    written = engine.store.upsert_items(checked.valid)
    engine.catalog.upsert_frame(checked.valid)
    return Upserted(upserted=written)


@router.post("/users", response_model=Upserted, summary="Insert or update users")
def post_users(users: list[UserIn], request: Request) -> Upserted:
    engine = engine_of(request)
    if not users:
        return Upserted(upserted=0)
    frame = _records(users)
    checked = validate_users(frame.drop(columns="_row").assign(source_row=frame["_row"]))
    if len(checked.rejects):
        raise reject("users", checked.rejects.rename(columns={"source_row": "_row"}))
    return Upserted(upserted=engine.store.upsert_users(checked.valid))


@router.delete("/users/{user_id}", response_model=Forgotten, summary="Forget a user")
def delete_user(user_id: str, request: Request) -> Forgotten:
    return Forgotten(**engine_of(request).forget(user_id))
