"""POST /v1/items, POST /v1/users (batch upserts) and DELETE /v1/users/{id} (forget a user)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
from fastapi import APIRouter, Depends, Request

from equilibra.data.validate import validate_items, validate_users
from equilibra.service.auth import require_admin
from equilibra.service.routes._common import engine_of, reject
from equilibra.service.schemas import Forgotten, ItemIn, Upserted, UserIn

router = APIRouter(prefix="/v1", tags=["catalogue"], dependencies=[Depends(require_admin)])


def _validated(
    what: str, rows: list[ItemIn] | list[UserIn], validate: Callable[[pd.DataFrame], Any]
) -> pd.DataFrame:
    """Rows checked as bulk import checks them; a 422 naming the first bad one."""
    frame = pd.DataFrame([r.model_dump(exclude_none=True) for r in rows])
    checked = validate(frame.assign(source_row=range(len(rows))))
    if len(checked.rejects):
        raise reject(what, checked.rejects.rename(columns={"source_row": "_row"}))
    return checked.valid  # type: ignore[no-any-return]


@router.post("/items", response_model=Upserted, summary="Insert or update items")
def post_items(items: list[ItemIn], request: Request) -> Upserted:
    engine = engine_of(request)
    if not items:
        return Upserted(upserted=0)
    valid = _validated("items", items, validate_items)
    return Upserted(upserted=engine.upsert_items(valid))


@router.post("/users", response_model=Upserted, summary="Insert or update users")
def post_users(users: list[UserIn], request: Request) -> Upserted:
    if not users:
        return Upserted(upserted=0)
    valid = _validated("users", users, validate_users)
    return Upserted(upserted=engine_of(request).store.upsert_users(valid))


@router.delete("/users/{user_id}", response_model=Forgotten, summary="Forget a user")
def delete_user(user_id: str, request: Request) -> Forgotten:
    return Forgotten(**engine_of(request).forget(user_id))
