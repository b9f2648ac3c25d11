"""Who may look: the dashboard is behind the read key (or the admin key), never open.

A person signs in once with a form; the browser then holds a cookie with an HMAC of the key
(not the key), so changing the key signs everyone out. Scripts send the key as a Bearer token,
as they do for the API. With no key configured, a key is made at start and logged: an open API
is the operator's choice, an open dashboard would be a default nobody chose.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

COOKIE = "equilibra_dashboard"


def session_token(key: str) -> str:
    return hmac.new(key.encode(), b"equilibra dashboard session", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Access:
    keys: tuple[str, ...]
    generated: bool = False  # no key was configured: this one was made at start

    @classmethod
    def of(cls, read_key: str | None, admin_key: str | None) -> Access:
        keys = tuple(k for k in (read_key, admin_key) if k)
        if keys:
            return cls(keys)
        return cls((secrets.token_urlsafe(16),), generated=True)

    def key_ok(self, given: str | None) -> bool:
        return bool(given) and any(hmac.compare_digest(given, k) for k in self.keys)  # type: ignore[arg-type]

    def cookie_ok(self, given: str | None) -> bool:
        return bool(given) and any(
            hmac.compare_digest(given, session_token(k))
            for k in self.keys  # type: ignore[arg-type]
        )

    def allows(self, authorization: str | None, cookie: str | None) -> bool:
        if authorization and authorization.lower().startswith("bearer "):
            return self.key_ok(authorization[7:].strip())
        return self.cookie_ok(cookie)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
