"""Bearer keys (design.md): writes need the admin key; reads take the read key or the admin key.
401 without a key, 403 with a wrong one. With no admin key configured the service is open (and
says so at start and in /health)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from equilibra.service.settings import Settings

bearer = HTTPBearer(auto_error=False, description="the admin key, or the read key for reads")


# The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its
# thread pool, and each such hop cost about a millisecond of a recommend request here.


async def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _check(given: HTTPAuthorizationCredentials | None, accepted: list[str | None]) -> None:
    keys = [k for k in accepted if k]
    if not keys:
        return
    if given is None or not given.credentials:
        raise HTTPException(
            401, "authorization: a Bearer key is required", {"WWW-Authenticate": "Bearer"}
        )
    if not any(hmac.compare_digest(given.credentials, k) for k in keys):
        raise HTTPException(403, "authorization: this key may not do that")


SettingsDep = Annotated[Settings, Depends(_settings)]
KeyDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def require_admin(settings: SettingsDep, given: KeyDep) -> None:
    if settings.admin_key:
        _check(given, [settings.admin_key])


async def require_read(settings: SettingsDep, given: KeyDep) -> None:
    if settings.admin_key or settings.read_key:
        _check(given, [settings.admin_key, settings.read_key])
