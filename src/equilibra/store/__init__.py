"""Storage backends chosen by URL: `sqlite:///shop.db` (default) or `postgresql://…`."""

from __future__ import annotations

from equilibra.errors import EquilibraError
from equilibra.store.base import AppendResult, EventPage, ForgetResult, Store, StoreStats

__all__ = ["AppendResult", "EventPage", "ForgetResult", "Store", "StoreStats", "open_store"]


def open_store(url: str) -> Store:
    """Open (creating if needed) the store a URL names. A bare file path means SQLite."""
    if url.startswith(("postgresql://", "postgres://")):
        from equilibra.store.postgres import PostgresStore

        return PostgresStore(url)
    if url.startswith("sqlite:") or "://" not in url:
        from equilibra.store.sqlite import SqliteStore

        return SqliteStore(url)
    scheme = url.split("://", 1)[0]
    raise EquilibraError(f"db: unsupported scheme {scheme!r}; use sqlite:///FILE or postgresql://…")
