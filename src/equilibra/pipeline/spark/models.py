"""Models trained by Spark jobs, returned as the same Recommender classes a local fit makes.

- `als`: Spark MLlib's implicit-feedback ALS on the cells (log-weighted like the local ALS);
  its factors fill `models.factorization.ALS`, so serving, fold-in and similar items are shared.
- `itemknn`: cosine item-item similarity from co-occurrence: a self-join of the cells on the user,
  summed per item pair, cut to each item's `k` best neighbours in Spark; it fills
  `models.neighbours.ItemKNN`.

Spark's ALS scales the regularisation by each user's and item's number of cells (ALS-WR), and its
confidence is 1 + alpha·r where implicit's is alpha·r; `regularization` here is Spark's regParam.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from equilibra.data.interactions import Interactions
from equilibra.errors import EquilibraError
from equilibra.models.base import Recommender, popularity_fallback
from equilibra.models.factorization import ALS
from equilibra.models.neighbours import ItemKNN

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SPARK_ALGORITHMS = ("als", "itemknn")
# Spark's regParam is per cell (ALS-WR), so it is much smaller than implicit's 0.05 for the
# same effect. 0.001 beat implicit at ¼ and ½ of the retailrocket preset and reached 0.94 of
# its NDCG at full size (docs/scale.md); no other value was measured at full size.
SPARK_ALS_DEFAULTS: dict[str, Any] = {"regularization": 0.001}


def _factors(frame: DataFrame, count: int, rank: int) -> np.ndarray:
    """Spark's (id, features) rows as a dense (count, rank) float32 matrix; ids it never saw
    (a catalogue item nobody touched) stay zero."""
    local = frame.toPandas()
    out = np.zeros((count, rank), dtype=np.float32)
    if len(local):
        out[local["id"].to_numpy(np.int64)] = np.stack(local["features"].to_numpy())
    return out


def fit_spark_als(cells: DataFrame, interactions: Interactions, params: dict[str, Any]) -> ALS:
    from pyspark.ml.recommendation import ALS as SparkALS
    from pyspark.sql import functions as F

    model = ALS(**{**SPARK_ALS_DEFAULTS, **params})
    if model.weighting not in ("log", "none"):
        raise EquilibraError("params: weighting on Spark is log or none")
    rating = F.log1p("weight") if model.weighting == "log" else F.col("weight")
    data = cells.select("u", "i", rating.cast("float").alias("r"))
    fitted = SparkALS(
        rank=model.factors,
        maxIter=model.iterations,
        regParam=model.regularization,
        alpha=model.alpha,
        implicitPrefs=True,
        userCol="u",
        itemCol="i",
        ratingCol="r",
        seed=model.seed,
        checkpointInterval=5,
    ).fit(data)
    model.n_users_, model.n_items_ = interactions.shape
    model.user_factors_ = _factors(fitted.userFactors, interactions.shape[0], model.factors)
    model.item_factors_ = _factors(fitted.itemFactors, interactions.shape[1], model.factors)
    return model


def fit_spark_itemknn(
    cells: DataFrame, interactions: Interactions, params: dict[str, Any]
) -> ItemKNN:
    """Cosine over the cells' weights (or presence, `binary`), damped by n / (n + shrink) for
    pairs seen together by n users, `k` neighbours per item."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    model = ItemKNN(**params)
    if model.similarity != "cosine":
        raise EquilibraError("params: itemknn on Spark computes cosine similarity")
    value = F.lit(1.0) if model.binary else F.col("weight").cast("double")
    x = cells.select("u", "i", value.alias("v")).cache()
    norms = x.groupBy("i").agg(F.sqrt(F.sum(F.col("v") * F.col("v"))).alias("norm"))
    a, b = x.alias("a"), x.alias("b")
    pairs = (
        a.join(b, F.col("a.u") == F.col("b.u"))
        .where(F.col("a.i") != F.col("b.i"))
        .groupBy(F.col("a.i").alias("i"), F.col("b.i").alias("j"))
        .agg(F.sum(F.col("a.v") * F.col("b.v")).alias("dot"), F.count("*").alias("n"))
    )
    sim = (
        pairs.join(norms, "i")
        .join(norms.select(F.col("i").alias("j"), F.col("norm").alias("norm_j")), "j")
        .withColumn("s", F.col("dot") / (F.col("norm") * F.col("norm_j")))
    )
    if model.shrink:
        sim = sim.withColumn("s", F.col("s") * F.col("n") / (F.col("n") + model.shrink))
    best = Window.partitionBy("i").orderBy(F.col("s").desc(), F.col("j"))
    kept = (
        sim.where(F.col("s") != 0)
        .withColumn("rank", F.row_number().over(best))
        .where(F.col("rank") <= model.k)
        .select("i", "j", F.col("s").cast("float").alias("s"))
        .toPandas()
    )
    n_items = interactions.shape[1]
    model.n_users_, model.n_items_ = interactions.shape
    model.similarity_ = sp.csr_matrix(
        (kept["s"].to_numpy(np.float32), (kept["i"].to_numpy(), kept["j"].to_numpy())),
        shape=(n_items, n_items),
    )
    model.user_items_ = sp.csr_matrix(interactions.matrix, dtype=np.float32, copy=True)
    if model.binary:
        model.user_items_.data[:] = 1.0
    model.fallback_ = popularity_fallback(interactions)
    x.unpersist()
    return model


def fit_on_spark(
    algorithm: str, cells: DataFrame, interactions: Interactions, params: dict[str, Any]
) -> Recommender:
    if algorithm not in SPARK_ALGORITHMS:
        raise EquilibraError(
            f"algorithm: Spark trains {' or '.join(SPARK_ALGORITHMS)}, not {algorithm!r}"
        )
    try:
        if algorithm == "als":
            return fit_spark_als(cells, interactions, params)
        return fit_spark_itemknn(cells, interactions, params)
    except TypeError as exc:
        raise EquilibraError(f"params: {exc}") from None
