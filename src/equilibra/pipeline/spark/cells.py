"""Spark jobs from validated events to the user × item cells every model trains on.

The same steps, in the same order and with the same defaults, as the local path
(`data.cleaning.clean_events`, then `Interactions.from_frame`): duplicates, bots, outliers, the
weights per event type (and the time decay), then one row per (user, item) with its summed weight,
latest time and the bit flags of the types seen. Dense ids are assigned by Spark (sorted ids,
`zipWithIndex`); the cells come back to the driver as an `Interactions` without an event log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from equilibra.data.cleaning import CleaningConfig, CleaningReport
from equilibra.data.columns import Columns
from equilibra.data.interactions import EventWeights, IdMap, Interactions
from equilibra.domain import EVENT_TYPE_CODE, EventType
from equilibra.errors import EquilibraError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

C = Columns
DAY = 86_400.0


@dataclass
class SparkCells:
    """The cells in Spark (`u`, `i` dense ids, `weight`, `latest`, `flags`) and on the driver."""

    cells: DataFrame
    interactions: Interactions
    cleaning: CleaningReport
    events: int


def clean(events: DataFrame, config: CleaningConfig) -> tuple[DataFrame, CleaningReport]:
    """`clean_events` as Spark jobs; the report counts what each step removed."""
    from pyspark.sql import functions as F

    report = CleaningReport(events_in=events.count())
    if config.dedupe:
        # As drop_duplicates: by event_id when every event has one, else by its content.
        all_ids = events.where(F.col(C.event_id).isNull()).limit(1).count() == 0
        keys = [C.event_id] if all_ids else [C.user, C.item, C.event_type, C.timestamp]
        events = events.dropDuplicates(keys).cache()
        report.duplicates = report.events_in - events.count()
    if config.bot_events_per_minute is not None:
        stats = events.groupBy(C.user).agg(
            F.count("*").alias("n"), F.min(C.timestamp).alias("lo"), F.max(C.timestamp).alias("hi")
        )
        minutes = F.greatest((F.col("hi") - F.col("lo")) / 60.0, F.lit(1.0))
        bots = stats.where(
            (F.col("n") >= config.bot_min_events)
            & (F.col("n") / minutes > config.bot_events_per_minute)
        ).select(C.user, "n")
        found = bots.collect()
        report.bot_users = len(found)
        report.bot_events = int(sum(row["n"] for row in found))
        report.bots = [str(row[C.user]) for row in found[:20]]
        if found:
            events = events.join(F.broadcast(bots.select(C.user)), C.user, "left_anti").cache()
    if config.outlier_mad is not None:
        counts = events.groupBy(C.user).agg(F.log1p(F.count("*").cast("double")).alias("x"))
        summary = counts.agg(
            F.count("*").alias("users"),
            F.expr("percentile(x, 0.5)").alias("median"),
            F.stddev_pop("x").alias("std"),
        ).collect()[0]
        if summary["users"] >= 10:
            median = float(summary["median"])
            mad = float(counts.agg(F.expr(f"percentile(abs(x - {median!r}), 0.5)")).collect()[0][0])
            mad = mad * 1.4826 if mad > 0 else max(float(summary["std"] or 0.0), 1e-9)
            outliers = counts.where((F.col("x") - median) / mad > config.outlier_mad)
            flagged = outliers.select(C.user, F.round(F.expm1("x")).alias("n")).collect()
            report.outlier_users = len(flagged)
            report.outlier_events = int(sum(row["n"] for row in flagged))
            if flagged:
                events = events.join(
                    F.broadcast(outliers.select(C.user)), C.user, "left_anti"
                ).cache()
    if config.min_user_events > 1 or config.min_item_events > 1:
        # The CLI never asks for it (its default is 1); a library caller gets a clear no.
        raise EquilibraError("cleaning: a minimum support (k-core) is not implemented on Spark")
    report.events_out = events.count()
    return events, report


def _weight(weights: EventWeights, reference: float) -> object:
    """Each event's weight: its type's weight (a rating's own value where weights.rating is
    None), halved every `half_life_days` of age before `reference`."""
    from pyspark.sql import functions as F

    expr = F.lit(0.0)
    for name, code in EVENT_TYPE_CODE.items():
        fixed = getattr(weights, name)
        if name == EventType.RATING.value and fixed is None:
            chosen = F.coalesce(F.col(C.value), F.lit(0.0))
        else:
            chosen = F.lit(float(fixed))
        expr = F.when(F.col("code") == code, chosen).otherwise(expr)
    if weights.half_life_days:
        age_days = F.greatest(F.lit(reference) - F.col(C.timestamp), F.lit(0.0)) / DAY
        expr = expr * F.pow(F.lit(0.5), age_days / weights.half_life_days)
    return expr


def _index(spark: SparkSession, ids: DataFrame, column: str, name: str) -> tuple[DataFrame, IdMap]:
    """Dense ids 0..n-1 in sorted id order, assigned in Spark; the id map for the driver."""
    sorted_ids = ids.select(column).distinct().orderBy(column)
    indexed = sorted_ids.rdd.map(lambda row: row[0]).zipWithIndex()
    table = spark.createDataFrame(indexed, schema=f"{column} string, {name} int").cache()
    ordered = table.orderBy(name).select(column).toPandas()[column].to_numpy(dtype=object)
    return table, IdMap(ordered)


def build_cells(
    spark: SparkSession,
    events: DataFrame,
    weights: EventWeights,
    catalogue: pd.DataFrame | None = None,
    cleaning: CleaningConfig | None = None,
) -> SparkCells:
    """Clean, weigh and sum `events` into cells; every catalogue item gets a column."""
    from pyspark.sql import functions as F

    cleaned, report = clean(events, cleaning or CleaningConfig())
    reference = float(cleaned.agg(F.max(C.timestamp)).collect()[0][0])
    codes = F.create_map(*[x for n, c in EVENT_TYPE_CODE.items() for x in (F.lit(n), F.lit(c))])
    coded = cleaned.withColumn("code", codes[F.col(C.event_type)])
    user_table, users = _index(spark, coded, C.user, "u")
    item_ids = coded.select(C.item)
    if catalogue is not None and len(catalogue):
        listed = spark.createDataFrame(
            pd.DataFrame({C.item: catalogue[C.item].astype(str).to_numpy()})
        )
        item_ids = item_ids.unionByName(listed)
    item_table, items = _index(spark, item_ids, C.item, "i")
    cells = (
        coded.join(user_table, C.user)
        .join(item_table, C.item)
        .withColumn("w", _weight(weights, reference))  # type: ignore[arg-type]
        .groupBy("u", "i")
        .agg(
            F.sum("w").cast("float").alias("weight"),
            F.max(C.timestamp).alias("latest"),
            F.bit_or(F.expr("shiftleft(1, code)")).cast("int").alias("flags"),
        )
        .cache()
    )
    local = cells.toPandas()
    interactions = Interactions.from_cells(
        local["u"].to_numpy(np.int64),
        local["i"].to_numpy(np.int64),
        local["weight"].to_numpy(np.float32),
        local["latest"].to_numpy(np.float64),
        local["flags"].to_numpy(np.uint8),
        users,
        items,
        weights,
        reference,
    )
    return SparkCells(
        cells=cells, interactions=interactions, cleaning=report, events=report.events_out
    )
