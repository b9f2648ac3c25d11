"""SQLite backend: the embedded default (one file, WAL mode)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from equilibra.errors import EquilibraError
from equilibra.store.sql import INDEXES, SECONDARY_EVENT_INDEXES, SqlStore, rows_of

CACHE_KIB = 64 * 1024
BULK_CACHE_KIB = 256 * 1024


def sqlite_path(url: str) -> str:
    """`sqlite:///rel.db` -> `rel.db`, `sqlite:////abs.db` -> `/abs.db`, `sqlite://` -> memory."""
    rest = url[len("sqlite:") :] if url.startswith("sqlite:") else url
    if rest in ("", "//", "///:memory:", "//:memory:", ":memory:"):
        return ":memory:"
    if rest.startswith("///"):
        return rest[3:]
    if rest.startswith("//"):
        raise EquilibraError(
            f"db: {url!r} is not a SQLite URL; use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    return rest


class SqliteStore(SqlStore):
    placeholder = "?"

    def _connect(self) -> Any:
        path = sqlite_path(self.url)
        if path != ":memory:":
            parent = Path(path).expanduser().resolve().parent
            if not parent.is_dir():
                raise EquilibraError(f"db: folder {parent} does not exist")
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        # WAL lets readers (the server) keep reading while an import writes.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        # Appending to the events table with its secondary indexes in place costs ~40 % more
        # than building them once at the end; the primary key stays, so dedupe is unaffected.
        # A larger page cache keeps more of the primary-key B-tree in memory while random ids land.
        with self._lock:
            for name in SECONDARY_EVENT_INDEXES:
                self._conn.execute(f"DROP INDEX IF EXISTS {name}")
            self._conn.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
            self._conn.commit()
        try:
            yield
        finally:
            with self._lock:
                for statement in INDEXES:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                self._conn.commit()

    def _add_column(self, cur: Any, table: str, name: str, kind: str) -> None:
        try:
            cur.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        except sqlite3.OperationalError as exc:  # another process added it first
            if "duplicate column" not in str(exc):
                raise

    def _bulk_insert_ignore(self, table: str, columns: Sequence[str], frame: pd.DataFrame) -> int:
        before = self._conn.total_changes
        self._conn.executemany(
            f"INSERT OR IGNORE INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})",
            rows_of(frame, columns),
        )
        return self._conn.total_changes - before
