"""PostgreSQL backend (psycopg 3): COPY into a staging table, then insert what is new."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from equilibra.errors import EquilibraError
from equilibra.store.sql import KEYS, SqlStore


class PostgresStore(SqlStore):
    placeholder = "%s"

    def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError as exc:  # an optional extra
            raise EquilibraError(
                "db: PostgreSQL needs psycopg; pip install 'equilibra[postgres]'"
            ) from exc
        url = self.url.replace("postgres://", "postgresql://", 1)
        try:
            return psycopg.connect(url)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
            raise EquilibraError(f"db: cannot connect to PostgreSQL: {first}") from exc

    def _add_column(self, cur: Any, table: str, name: str, kind: str) -> None:
        # Two processes opening an old store at once must not both fail on the second ALTER.
        cur.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind}")

    def _bulk_insert_ignore(self, table: str, columns: Sequence[str], frame: pd.DataFrame) -> int:
        names = ", ".join(columns)
        staging = f"_incoming_{table}"
        cur = self._conn.cursor()
        # LIKE copies the columns but not the key, so duplicates can land in staging first.
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table})")
        cur.execute(f"TRUNCATE {staging}")
        # One CSV block per chunk: pandas writes it in C, ~5x faster than COPY row by row.
        # In COPY's CSV format an unquoted empty field is NULL (ids are never empty).
        block = frame[list(columns)].to_csv(header=False, index=False)
        with cur.copy(f"COPY {staging} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(block)
        cur.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging}"
            f" ON CONFLICT ({', '.join(KEYS[table])}) DO NOTHING"
        )
        return cur.rowcount
