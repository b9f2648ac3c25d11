"""Events into a Spark DataFrame of canonical columns: from Parquet or CSV, or from a store.

Files are validated by Spark itself with the rules of `data.validate` that matter for training
(ids present, a known event type, a parseable timestamp in range, a rating with its value); each
rejected row is counted under the first reason it fails. A store's events were validated when they
were stored: PostgreSQL is read in parallel over JDBC, partitioned on the timestamp column;
SQLite, a single local file, through the store itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from equilibra.data.columns import Columns
from equilibra.domain import DEFAULT_RULES, EVENT_TYPES, EventType
from equilibra.errors import EquilibraError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

C = Columns
CANONICAL = (C.user, C.item, C.event_type, C.timestamp, C.value, C.event_id)


@dataclass
class SparkEvents:
    frame: DataFrame  # user_id, item_id, event_type, timestamp (float seconds), value, event_id
    source: str
    rejects: int = 0
    reject_reasons: list[str] = field(default_factory=list)


def read_event_file(spark: SparkSession, path: Path, now: float | None = None) -> SparkEvents:
    """A canonical event file (or a folder of Parquet parts), validated."""
    if not path.exists():
        raise EquilibraError(f"events: {path} does not exist")
    name = path.name.lower()
    if path.is_dir() or name.endswith(".parquet"):
        raw = spark.read.parquet(str(path))
    elif name.endswith((".csv", ".csv.gz")):
        raw = spark.read.csv(str(path), header=True, inferSchema=False)
    else:
        raise EquilibraError(f"events: Spark reads Parquet or CSV, not {path.name}")
    missing = [c for c in (C.user, C.item, C.event_type, C.timestamp) if c not in raw.columns]
    if missing:
        raise EquilibraError(f"events: {path} lacks column(s) {', '.join(missing)}")
    return validate(raw, str(path), now)


def _seconds(column: object, dtype: str) -> object:
    """Unix seconds from a numeric, timestamp or text (Unix seconds or ISO-8601) column."""
    from pyspark.sql import functions as F

    if dtype.startswith(("timestamp", "date")):
        return F.unix_micros(F.col(column).cast("timestamp")) / 1e6  # type: ignore[arg-type]
    if dtype != "string":
        return F.col(column).try_cast("double")  # type: ignore[arg-type]
    text = F.trim(F.col(column))  # type: ignore[arg-type]
    as_number = text.try_cast("double")
    as_date = F.unix_micros(F.try_to_timestamp(text)) / 1e6
    return F.when(as_number.isNotNull(), as_number).otherwise(as_date)


def validate(raw: DataFrame, source: str, now: float | None = None) -> SparkEvents:
    from pyspark.sql import functions as F

    types = dict(raw.dtypes)
    user = F.trim(F.col(C.user).cast("string"))
    item = F.trim(F.col(C.item).cast("string"))
    kind = F.lower(F.trim(F.col(C.event_type).cast("string")))
    seconds = _seconds(C.timestamp, types[C.timestamp])
    raw_value = F.trim(F.col(C.value).cast("string")) if C.value in types else F.lit(None)
    value = raw_value.try_cast("double")
    unreadable_value = value.isNull() & raw_value.isNotNull() & (raw_value != "")
    event_id = (
        F.col(C.event_id).cast("string") if C.event_id in types else F.lit(None).cast("string")
    )
    latest = (now if now is not None else time.time()) + DEFAULT_RULES.max_future_seconds
    reason = (
        F.when(user.isNull() | (user == ""), f"{C.user}: is missing")
        .when(item.isNull() | (item == ""), f"{C.item}: is missing")
        .when(~kind.isin(*EVENT_TYPES) | kind.isNull(), f"{C.event_type}: unknown type")
        .when(seconds.isNull() | F.isnan(seconds), f"{C.timestamp}: cannot parse")  # type: ignore[arg-type]
        .when(seconds > latest, f"{C.timestamp}: lies too far in the future")
        .when(seconds < DEFAULT_RULES.min_timestamp, f"{C.timestamp}: is before 1980")
        .when(unreadable_value, f"{C.value}: is not a number")
        .when(
            (kind == EventType.RATING.value)
            & (
                value.isNull()
                | (value < DEFAULT_RULES.rating_min)
                | (value > DEFAULT_RULES.rating_max)
            ),
            f"{C.value}: a rating needs a value in "
            f"[{DEFAULT_RULES.rating_min:g}, {DEFAULT_RULES.rating_max:g}]",
        )
    )
    checked = raw.select(
        user.alias(C.user),
        item.alias(C.item),
        kind.alias(C.event_type),
        seconds.alias(C.timestamp),  # type: ignore[attr-defined]
        value.alias(C.value),
        event_id.alias(C.event_id),
        reason.alias("reason"),
    ).cache()
    counts = checked.where(F.col("reason").isNotNull()).groupBy("reason").count().collect()
    valid = checked.where(F.col("reason").isNull()).drop("reason")
    return SparkEvents(
        frame=valid,
        source=source,
        rejects=int(sum(row["count"] for row in counts)),
        reject_reasons=[row["reason"] for row in sorted(counts, key=lambda r: -r["count"])[:3]],
    )


def jdbc_options(url: str) -> dict[str, str]:
    """`postgresql://user:pw@host:port/db` as Spark's JDBC options."""
    parts = urlparse(url)
    if not parts.hostname or not parts.path.strip("/"):
        raise EquilibraError(f"db: {url} needs a host and a database name for JDBC")
    options = {
        "url": f"jdbc:postgresql://{parts.hostname}:{parts.port or 5432}/{parts.path.strip('/')}",
        "driver": "org.postgresql.Driver",
    }
    if parts.username:
        options["user"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    if parts.query:
        options["url"] += f"?{parts.query}"
    return options


def read_store_events(spark: SparkSession, url: str) -> SparkEvents:
    if url.startswith(("postgresql://", "postgres://")):
        return _read_postgres(spark, url)
    from equilibra.store import open_store

    with open_store(url) as store:
        frame = store.events_frame(columns=CANONICAL)
    if frame.empty:
        raise EquilibraError(f"db: {url} holds no events to train on")
    return SparkEvents(frame=spark.createDataFrame(frame), source=url)


def _read_postgres(spark: SparkSession, url: str) -> SparkEvents:
    options = jdbc_options(url)
    try:
        bounds = (
            spark.read.format("jdbc")
            .options(**options)
            .option(
                "query",
                f"SELECT MIN({C.timestamp}) AS lo, MAX({C.timestamp}) AS hi, COUNT(*) AS n "
                "FROM events",
            )
            .load()
            .collect()[0]
        )
    except Exception as exc:  # py4j wraps the JDBC error; its first line says what failed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EquilibraError(f"db: Spark could not read {options['url']}: {first}") from None
    if not bounds["n"]:
        raise EquilibraError(f"db: {url} holds no events to train on")
    partitions = max(1, int(spark.sparkContext.defaultParallelism))
    frame = (
        spark.read.format("jdbc")
        .options(**options)
        .option("dbtable", f"(SELECT {', '.join(CANONICAL)} FROM events) AS canonical")
        .option("partitionColumn", C.timestamp)
        # Bounds are whole numbers for Spark; they only split the range, never filter it.
        .option("lowerBound", str(math.floor(float(bounds["lo"]))))
        .option("upperBound", str(math.ceil(float(bounds["hi"])) + 1))
        .option("numPartitions", str(partitions))
        .option("fetchsize", "20000")
        .load()
    )
    return SparkEvents(frame=frame, source=url)
