"""The SQL both backends share; each backend supplies its connection, placeholders and bulk path."""

from __future__ import annotations

import base64
import json
import threading
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from equilibra.data.columns import (
    EVENT_COLUMNS,
    IMPRESSION_COLUMNS,
    ITEM_COLUMNS,
    USER_COLUMNS,
    Columns,
    is_missing,
)
from equilibra.store.base import AppendResult, EventPage, ForgetResult, Store, StoreStats

C = Columns
SCHEMA_VERSION = 4
# Columns later schema versions added to a table, with their types: a store created by an older
# version gains them (ALTER TABLE … ADD COLUMN) when it is opened.
ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "impressions": (
        (C.placement, "TEXT"),
        (C.segment, "TEXT"),
        (C.model_version, "TEXT"),
        (C.score, "DOUBLE PRECISION"),
        (C.prior, "DOUBLE PRECISION"),
        (C.propensity_error, "DOUBLE PRECISION"),
        (C.reason, "TEXT"),
        (C.exposure, "DOUBLE PRECISION"),
        (C.candidates, "TEXT"),
        (C.variant, "TEXT"),
        (C.replica, "TEXT"),
    ),
}
FETCH_BLOCK = 200_000

# Column types are written so the same DDL is valid in SQLite and PostgreSQL.
TABLES: dict[str, str] = {
    "events": f"""
        {C.event_id} TEXT PRIMARY KEY,
        {C.user} TEXT NOT NULL,
        {C.item} TEXT NOT NULL,
        {C.event_type} TEXT NOT NULL,
        {C.timestamp} DOUBLE PRECISION NOT NULL,
        {C.value} DOUBLE PRECISION,
        {C.impression_id} TEXT,
        {C.context} TEXT""",
    "items": f"""
        {C.item} TEXT PRIMARY KEY,
        {C.title} TEXT,
        {C.description} TEXT,
        {C.categories} TEXT,
        {C.price} DOUBLE PRECISION,
        {C.available} BOOLEAN NOT NULL DEFAULT TRUE,
        {C.created_at} DOUBLE PRECISION,
        {C.attributes} TEXT""",
    "users": f"""
        {C.user} TEXT PRIMARY KEY,
        {C.attributes} TEXT""",
    "impressions": f"""
        {C.impression_id} TEXT NOT NULL,
        {C.position} INTEGER NOT NULL,
        {C.user} TEXT NOT NULL,
        {C.item} TEXT NOT NULL,
        {C.timestamp} DOUBLE PRECISION NOT NULL,
        {C.propensity} DOUBLE PRECISION NOT NULL,
        {C.policy} TEXT,
        {C.explore} BOOLEAN,
        {C.reward} DOUBLE PRECISION,
        {C.context} TEXT,
        {C.placement} TEXT,
        {C.segment} TEXT,
        {C.model_version} TEXT,
        {C.score} DOUBLE PRECISION,
        {C.prior} DOUBLE PRECISION,
        {C.propensity_error} DOUBLE PRECISION,
        {C.reason} TEXT,
        {C.exposure} DOUBLE PRECISION,
        {C.candidates} TEXT,
        {C.variant} TEXT,
        {C.replica} TEXT,
        PRIMARY KEY ({C.impression_id}, {C.position})""",
    "meta": "key TEXT PRIMARY KEY, value TEXT",
    # Online-state snapshots of a server (the policy's statistics, its clock): one per name.
    "snapshots": "name TEXT PRIMARY KEY, saved_at DOUBLE PRECISION NOT NULL, state TEXT NOT NULL",
}
INDEXES = (
    f"CREATE INDEX IF NOT EXISTS events_user ON events ({C.user})",
    f"CREATE INDEX IF NOT EXISTS events_time ON events ({C.timestamp})",
    f"CREATE INDEX IF NOT EXISTS impressions_user ON impressions ({C.user})",
    # Feedback finds its impression; the ledger and `ope` read impressions by time.
    f"CREATE INDEX IF NOT EXISTS events_impression ON events ({C.impression_id})",
    f"CREATE INDEX IF NOT EXISTS impressions_time ON impressions ({C.timestamp})",
)
SECONDARY_EVENT_INDEXES = ("events_user", "events_time", "events_impression")
TABLE_COLUMNS = {
    "events": EVENT_COLUMNS,
    "items": ITEM_COLUMNS,
    "users": USER_COLUMNS,
    "impressions": IMPRESSION_COLUMNS,
}
IMPRESSION_NUMBERS = (
    C.timestamp,
    C.score,
    C.prior,
    C.propensity,
    C.propensity_error,
    C.exposure,
    C.reward,
)
KEYS = {
    "events": (C.event_id,),
    "items": (C.item,),
    "users": (C.user,),
    "impressions": (C.impression_id, C.position),
}


def rows_of(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """DataFrame -> DB-API rows with NaN/NA turned into NULL and numpy scalars into Python ones."""
    if len(frame) <= SMALL_FRAME:
        return list(zip(*(_python_values(frame[name]) for name in columns), strict=True))
    arrays = []
    for name in columns:
        column = frame[name]
        if pd.api.types.is_float_dtype(column):
            values = column.to_numpy(dtype=object)
            values[column.isna().to_numpy()] = None
        elif pd.api.types.is_bool_dtype(column):
            values = column.astype(bool).to_numpy(dtype=object)
        elif pd.api.types.is_integer_dtype(column):
            values = column.astype(object).where(column.notna(), None).to_numpy()
        else:
            values = column.astype(object).where(column.notna(), None).to_numpy()
        arrays.append(values.tolist() if isinstance(values, np.ndarray) else list(values))
    return list(zip(*arrays, strict=True))


# Up to this many rows, values are converted one by one: pandas' per-call cost would dominate.
SMALL_FRAME = 256


def _python_values(column: pd.Series) -> list[Any]:
    return [None if is_missing(v) else v for v in column.tolist()]


class SqlStore(Store):
    """Everything but the driver. Subclasses set `placeholder` and implement the hooks."""

    placeholder = "?"

    def __init__(self, url: str):
        self.url = url
        # One connection per store; the lock keeps a multi-threaded server's writes in order.
        self._lock = threading.RLock()
        self._conn = self._connect()
        self._create_schema()

    # --- hooks for the backend ----------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _bulk_insert_ignore(self, table: str, columns: Sequence[str], frame: pd.DataFrame) -> int:
        """Insert the frame's rows, skipping those whose key exists; return how many were new."""

    # --- schema -------------------------------------------------------------------------------
    def _create_schema(self) -> None:
        with self._lock:
            cur = self._conn.cursor()
            for table, columns in TABLES.items():
                cur.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
            for table, added in ADDED_COLUMNS.items():
                cur.execute(f"SELECT * FROM {table} WHERE 1 = 0")
                present = {d[0] for d in cur.description}
                for name, kind in added:
                    if name not in present:
                        self._add_column(cur, table, name, kind)
            for statement in INDEXES:
                cur.execute(statement)
            cur.execute(
                self._sql(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"
                ),
                ("schema_version", str(SCHEMA_VERSION)),
            )
            cur.execute(
                self._sql("UPDATE meta SET value = ? WHERE key = 'schema_version'"),
                (str(SCHEMA_VERSION),),
            )
            self._conn.commit()

    def _add_column(self, cur: Any, table: str, name: str, kind: str) -> None:
        """Add a column an older schema lacks (the PostgreSQL backend makes it race-free)."""
        cur.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def _sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute(self._sql(statement), tuple(params))
            return cur.fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor under the store's lock; committed when the block ends, rolled back on error."""
        with self._lock:
            try:
                yield self._conn.cursor()
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise

    def _frame(self, statement: str, params: Sequence[Any], columns: Sequence[str]) -> pd.DataFrame:
        """Fetch in blocks so a multi-million-row read never holds all rows as Python tuples."""
        blocks = []
        with self._lock:
            cur = self._conn.cursor()
            cur.execute(self._sql(statement), tuple(params))
            while rows := cur.fetchmany(FETCH_BLOCK):
                blocks.append(pd.DataFrame.from_records(rows, columns=list(columns)))
        if not blocks:
            return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
        return pd.concat(blocks, ignore_index=True) if len(blocks) > 1 else blocks[0]

    # --- writes -------------------------------------------------------------------------------
    def append_events(self, events: pd.DataFrame) -> AppendResult:
        return self._append("events", events)

    def append_impressions(self, impressions: pd.DataFrame) -> AppendResult:
        return self._append("impressions", impressions)

    def _append(self, table: str, frame: pd.DataFrame) -> AppendResult:
        if frame.empty:
            return AppendResult(0, 0)
        # Columns that are NULL throughout this chunk are left out: binding fewer parameters
        # per row is the cheapest speed-up SQLite's executemany has (~30 % at 5 of 8 columns).
        # Columns the frame does not have are NULL (the impression log's optional fields).
        present = [c for c in TABLE_COLUMNS[table] if c in frame]
        given = frame[present].notna().any()  # one pandas call for all the columns
        columns = [c for c in present if c in KEYS[table] or given[c]]
        with self._transaction():
            inserted = self._bulk_insert_ignore(table, columns, frame)
        return AppendResult(accepted=inserted, duplicates=len(frame) - inserted)

    def upsert_items(self, items: pd.DataFrame) -> int:
        return self._upsert("items", items)

    def upsert_users(self, users: pd.DataFrame) -> int:
        return self._upsert("users", users)

    def _upsert(self, table: str, frame: pd.DataFrame) -> int:
        if frame.empty:
            return 0
        columns = TABLE_COLUMNS[table]
        keys = KEYS[table]
        frame = frame.drop_duplicates(list(keys), keep="last")
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
        statement = self._sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        )
        rows = rows_of(frame, columns)
        with self._transaction() as cur:
            cur.executemany(statement, rows)
        return len(rows)

    def save_snapshot(self, name: str, state: str, saved_at: float) -> None:
        statement = self._sql(
            "INSERT INTO snapshots (name, saved_at, state) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET saved_at = excluded.saved_at, state = excluded.state"
        )
        with self._transaction() as cur:
            cur.execute(statement, (name, float(saved_at), state))

    def load_snapshot(self, name: str) -> tuple[str, float] | None:
        rows = self._query("SELECT state, saved_at FROM snapshots WHERE name = ?", (name,))
        return None if not rows else (str(rows[0][0]), float(rows[0][1]))

    def event_time_range(self) -> tuple[float | None, float | None]:
        ((low, high),) = self._query(f"SELECT MIN({C.timestamp}), MAX({C.timestamp}) FROM events")
        return (None if low is None else float(low), None if high is None else float(high))

    def existing_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        ids = list(dict.fromkeys(event_ids))
        for start in range(0, len(ids), 500):  # SQLite allows 999 parameters per statement
            block = ids[start : start + 500]
            rows = self._query(
                f"SELECT {C.event_id} FROM events WHERE {C.event_id} IN"
                f" ({', '.join('?' * len(block))})",
                block,
            )
            found.update(str(r[0]) for r in rows)
        return found

    def append_impression_rows(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """`append_impressions` for rows a server builds one request at a time (no frame)."""
        if not rows:
            return 0
        columns = IMPRESSION_COLUMNS
        statement = self._sql(
            f"INSERT INTO impressions ({', '.join(columns)}) VALUES"
            f" ({', '.join('?' * len(columns))}) ON CONFLICT ({C.impression_id}, {C.position})"
            " DO NOTHING"
        )
        values = [tuple(_plain(row.get(c)) for c in columns) for row in rows]
        with self._transaction() as cur:
            cur.executemany(statement, values)
        return len(values)

    def write_rewards(self, rewards: pd.DataFrame) -> int:
        """Set `reward` on (`impression_id`, `position`) rows; returns how many rows changed."""
        if rewards.empty:
            return 0
        statement = self._sql(
            f"UPDATE impressions SET {C.reward} = ?"
            f" WHERE {C.impression_id} = ? AND {C.position} = ?"
        )
        rows = rows_of(rewards, (C.reward, C.impression_id, C.position))
        changed = 0
        with self._transaction() as cur:
            for row in rows:  # executemany's rowcount is not portable across drivers
                cur.execute(statement, row)
                changed += max(cur.rowcount, 0)
        return changed

    def reassign_open_impressions(self, replica: str, to: str) -> list[str]:
        where = f"WHERE {C.replica} = ? AND {C.reward} IS NULL"
        with self._transaction() as cur:
            cur.execute(
                self._sql(f"SELECT DISTINCT {C.impression_id} FROM impressions {where}"), (replica,)
            )
            moved = sorted(str(row[0]) for row in cur.fetchall())
            cur.execute(self._sql(f"UPDATE impressions SET {C.replica} = ? {where}"), (to, replica))
        return moved

    def purge_before(self, timestamp: float) -> tuple[int, int]:
        """Delete events and impressions older than `timestamp` (a retention period)."""
        counts = []
        with self._transaction() as cur:
            for table in ("events", "impressions"):
                cur.execute(
                    self._sql(f"DELETE FROM {table} WHERE {C.timestamp} < ?"), (float(timestamp),)
                )
                counts.append(max(cur.rowcount, 0))
        return counts[0], counts[1]

    def forget_user(self, user_id: str) -> ForgetResult:
        counts = {}
        with self._transaction() as cur:
            for table in ("events", "impressions", "users"):
                cur.execute(self._sql(f"DELETE FROM {table} WHERE {C.user} = ?"), (user_id,))
                counts[table] = cur.rowcount
        return ForgetResult(
            events=counts["events"], impressions=counts["impressions"], profile=counts["users"]
        )

    # --- reads --------------------------------------------------------------------------------
    @staticmethod
    def _where(
        since: float | None,
        until: float | None,
        types: Iterable[str] | None,
        users: Iterable[str] | None = None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append(f"{C.timestamp} >= ?")
            params.append(float(since))
        if until is not None:
            clauses.append(f"{C.timestamp} < ?")
            params.append(float(until))
        for column, values in ((C.event_type, types), (C.user, users)):
            if values is not None:
                values = list(values)
                if not values:
                    clauses.append("1 = 0")
                else:
                    clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
                    params.extend(values)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def events_frame(
        self,
        since: float | None = None,
        until: float | None = None,
        types: Iterable[str] | None = None,
        users: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        where, params = self._where(since, until, types, users)
        wanted = list(EVENT_COLUMNS if columns is None else columns)
        unknown = set(wanted) - set(EVENT_COLUMNS)
        if unknown:
            raise ValueError(f"columns: unknown event column(s) {sorted(unknown)}")
        frame = self._frame(
            f"SELECT {', '.join(wanted)} FROM events{where} ORDER BY {C.timestamp}, {C.event_id}",
            params,
            wanted,
        )
        for name in (C.timestamp, C.value):
            if name in frame:
                frame[name] = pd.to_numeric(frame[name]).astype("float64")
        return frame

    def count_events(
        self,
        since: float | None = None,
        until: float | None = None,
        types: Iterable[str] | None = None,
    ) -> int:
        where, params = self._where(since, until, types)
        return int(self._query(f"SELECT COUNT(*) FROM events{where}", params)[0][0])

    def page_events(self, limit: int = 1000, cursor: str | None = None) -> EventPage:
        if limit <= 0:
            raise ValueError("limit: must be positive")
        params: list[Any] = []
        where = ""
        if cursor:
            last_ts, last_id = _decode_cursor(cursor)
            where = f" WHERE ({C.timestamp} > ?) OR ({C.timestamp} = ? AND {C.event_id} > ?)"
            params = [last_ts, last_ts, last_id]
        frame = self._frame(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events{where}"
            f" ORDER BY {C.timestamp}, {C.event_id} LIMIT {int(limit) + 1}",
            params,
            EVENT_COLUMNS,
        )
        more = len(frame) > limit
        frame = frame.iloc[:limit]
        token = None
        if more:
            last = frame.iloc[-1]
            token = _encode_cursor(float(last[C.timestamp]), str(last[C.event_id]))
        return EventPage(events=frame.reset_index(drop=True), next_cursor=token)

    def items_frame(self) -> pd.DataFrame:
        frame = self._frame(
            f"SELECT {', '.join(ITEM_COLUMNS)} FROM items ORDER BY {C.item}", (), ITEM_COLUMNS
        )
        frame[C.available] = frame[C.available].astype(bool)
        for name in (C.price, C.created_at):
            frame[name] = pd.to_numeric(frame[name]).astype("float64")
        return frame

    def users_frame(self) -> pd.DataFrame:
        return self._frame(
            f"SELECT {', '.join(USER_COLUMNS)} FROM users ORDER BY {C.user}", (), USER_COLUMNS
        )

    def impressions_frame(
        self,
        user_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        open_only: bool = False,
    ) -> pd.DataFrame:
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            (f"{C.user} = ?", None if user_id is None else str(user_id)),
            (f"{C.timestamp} >= ?", None if since is None else float(since)),
            (f"{C.timestamp} < ?", None if until is None else float(until)),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if open_only:
            clauses.append(f"{C.reward} IS NULL")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        frame = self._frame(
            f"SELECT {', '.join(IMPRESSION_COLUMNS)} FROM impressions{where}"
            f" ORDER BY {C.timestamp}, {C.impression_id}, {C.position}",
            params,
            IMPRESSION_COLUMNS,
        )
        for name in IMPRESSION_NUMBERS:
            frame[name] = pd.to_numeric(frame[name]).astype("float64")
        frame[C.position] = pd.to_numeric(frame[C.position]).astype("int64")
        frame[C.explore] = frame[C.explore].map(lambda v: None if pd.isna(v) else bool(v))
        return frame

    def stats(self) -> StoreStats:
        ((events,),) = self._query("SELECT COUNT(*) FROM events")
        ((users,),) = self._query(
            f"SELECT COUNT(*) FROM (SELECT {C.user} FROM events UNION SELECT {C.user} FROM users) u"
        )
        ((items,),) = self._query(
            f"SELECT COUNT(*) FROM (SELECT {C.item} FROM events UNION SELECT {C.item} FROM items) i"
        )
        ((impressions,),) = self._query(
            f"SELECT COUNT(DISTINCT {C.impression_id}) FROM impressions"
        )
        return StoreStats(
            events=int(events), users=int(users), items=int(items), impressions=int(impressions)
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _plain(value: Any) -> Any:
    """A value as the drivers take it: numpy scalars to Python, NaN to NULL."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _encode_cursor(timestamp: float, event_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([timestamp, event_id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        timestamp, event_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(timestamp), str(event_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("cursor: not a cursor returned by page_events") from exc
