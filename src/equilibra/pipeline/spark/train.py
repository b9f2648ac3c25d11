"""`equilibra fit --engine spark`: events → Spark jobs → the artifact `serve` loads."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from equilibra.data.interactions import EventWeights
from equilibra.domain import EventType
from equilibra.errors import EquilibraError
from equilibra.pipeline.artifact import ModelArtifact
from equilibra.pipeline.spark.cells import build_cells
from equilibra.pipeline.spark.models import SPARK_ALGORITHMS, fit_on_spark
from equilibra.pipeline.spark.session import DEFAULT_MASTER, spark_session
from equilibra.pipeline.spark.sources import SparkEvents, read_event_file, read_store_events

Step = Callable[[str], None]


def _catalogue(
    db: str | None, items: Path | None, users: Path | None
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The item and user tables: small enough for the driver, read by the usual code."""
    if db is not None:
        from equilibra.store import open_store

        with open_store(db) as store:
            item_frame, user_frame = store.items_frame(), store.users_frame()
        return (item_frame if len(item_frame) else None), (user_frame if len(user_frame) else None)
    from equilibra.data.formats import read_items, read_users
    from equilibra.data.validate import validate_items, validate_users

    item_frame = validate_items(read_items(items, "canonical")).valid if items else None
    user_frame = validate_users(read_users(users, "canonical")).valid if users else None
    return item_frame, user_frame


def _is_rating_data(events: SparkEvents) -> bool:
    """As `data.split.is_rating_data`: mostly explicit ratings."""
    from pyspark.sql import functions as F

    is_rating = (F.col("event_type") == EventType.RATING.value).cast("double")
    share = events.frame.agg(F.avg(is_rating)).collect()[0][0]
    return bool(share is not None and share > 0.5)


def train_on_spark(
    algorithm: str,
    events: Path | None = None,
    db: str | None = None,
    items: Path | None = None,
    users: Path | None = None,
    params: dict[str, Any] | None = None,
    master: str = DEFAULT_MASTER,
    step: Step | None = None,
    info: dict[str, Any] | None = None,
) -> ModelArtifact:
    """Fit `algorithm` (als or itemknn) on Spark from an event file or a store."""
    if algorithm not in SPARK_ALGORITHMS:
        raise EquilibraError(
            f"algorithm: --engine spark trains {' or '.join(SPARK_ALGORITHMS)}, not "
            f"{algorithm!r} (auto searches on one machine: drop --engine spark)"
        )
    if (events is None) == (db is None):
        raise EquilibraError("fit: give exactly one of --events FILE or --db URL")
    say = step or (lambda _label: None)
    seconds: dict[str, float] = {}
    item_frame, user_frame = _catalogue(db, items, users)
    with spark_session(master) as spark:
        started = time.perf_counter()
        say("reading events")
        source = read_store_events(spark, db) if db else read_event_file(spark, events)  # type: ignore[arg-type]
        say("cleaning and building cells")
        rating_data = _is_rating_data(source)
        # default_weights: ratings weigh their value, shop events their commitment.
        built = build_cells(spark, source.frame, EventWeights(), item_frame)
        seconds["cells"] = time.perf_counter() - started
        say(f"training {algorithm} on Spark")
        started = time.perf_counter()
        model = fit_on_spark(algorithm, built.cells, built.interactions, dict(params or {}))
        seconds["model"] = time.perf_counter() - started
        built.cells.unpersist()
        parallelism = spark.sparkContext.defaultParallelism
    x = built.interactions
    summary = {
        "data": {
            "events": built.events,
            "users": x.shape[0],
            "items": x.shape[1],
            "rejected_rows": source.rejects,
            "rejects": {"events": source.rejects, "items": 0, "users": 0},
            "reject_reasons": {"events": source.reject_reasons} if source.reject_reasons else {},
            "rating_data": rating_data,
            "cleaning": built.cleaning.as_dict(),
        },
        "engine": {
            "name": "spark",
            "master": master,
            "parallelism": parallelism,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
        },
    }
    return ModelArtifact.from_training(
        model, x, {**summary, **(info or {})}, item_frame, user_frame
    )
