"""Training on Spark (`fit --engine spark`), on a real local[2] Spark: the cells, the cleaning
and the item-item similarities equal the local path's; ALS learns; the artifact is the one
`serve` loads; events come from Parquet, CSV or PostgreSQL over JDBC.

pyspark and Java are installed by scripts/setup.sh and scripts/spark.sh; without them these tests
skip locally and fail in CI, like the PostgreSQL ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import POSTGRES_URL, REQUIRE_POSTGRES, run_cli

from equilibra.data.cleaning import CleaningConfig, clean_events
from equilibra.data.interactions import EventWeights, Interactions
from equilibra.data.training import build_interactions
from equilibra.data.validate import validate_events, validate_items
from equilibra.errors import EquilibraError
from equilibra.models.neighbours import ItemKNN
from equilibra.pipeline.artifact import ModelArtifact
from equilibra.pipeline.spark.session import spark_available

pytestmark = pytest.mark.slow

T0 = 1_767_225_600.0  # 2026-01-01


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    missing = spark_available()
    if missing:
        if REQUIRE_POSTGRES:
            pytest.fail(missing)
        pytest.skip(missing)
    from equilibra.pipeline.spark.session import spark_session

    with spark_session("local[2]", "equilibra-tests") as session:
        yield session


@pytest.fixture(scope="module")
def shop_events(tiny_shop) -> pd.DataFrame:
    """The tiny shop plus what cleaning must remove: exact duplicates and a bot."""
    events = tiny_shop.events.copy()
    dupes = events.sample(40, random_state=1)
    bot = pd.DataFrame(
        {
            "user_id": "bot",
            "item_id": events["item_id"].sample(200, replace=True, random_state=2).to_numpy(),
            "event_type": "view",
            "timestamp": T0 + np.arange(200) * 0.5,
        }
    )
    return pd.concat([events, dupes, bot], ignore_index=True)


def aligned(spark_x: Interactions, local: Interactions, matrix: str) -> sp.csr_matrix:
    """`local`'s matrix in the Spark snapshot's row and column order."""
    rows = spark_x.users.to_dense(local.users.ids)
    cols = spark_x.items.to_dense(local.items.ids)
    assert (rows >= 0).all() and (cols >= 0).all()
    coo = sp.coo_matrix(getattr(local, matrix))
    return sp.csr_matrix(
        (coo.data.astype(np.float64), (rows[coo.row], cols[coo.col])), shape=spark_x.shape
    )


def test_cells_and_cleaning_equal_the_local_snapshot(spark, shop_events, tiny_shop):
    from equilibra.pipeline.spark.cells import build_cells

    frame = spark.createDataFrame(shop_events.assign(value=np.nan, event_id=None))
    built = build_cells(spark, frame, EventWeights(), tiny_shop.items)
    _, local_report = clean_events(shop_events, CleaningConfig())
    local = build_interactions(shop_events, tiny_shop.items)
    assert built.cleaning.duplicates == local_report.duplicates > 0
    assert built.cleaning.bot_users == local_report.bot_users == 1
    assert built.cleaning.events_out == local_report.events_out
    x = built.interactions
    assert x.shape == local.shape
    assert set(x.users.ids) == set(local.users.ids)
    for name in ("matrix", "last_seen", "type_flags"):
        difference = abs(aligned(x, local, name) - sp.csr_matrix(getattr(x, name), dtype=float))
        assert difference.max() < 1e-4, name
    assert x.reference_time == local.reference_time


def test_event_files_are_validated_like_imports(spark, tmp_path):
    from equilibra.pipeline.spark.sources import read_event_file

    rows = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "", "u4", "u5", "u6", "u7"],
            "item_id": ["a", "b", "c", "d", "e", "f", "g"],
            "event_type": ["view", " Purchase", "view", "teleport", "view", "rating", "click"],
            "timestamp": [
                "1767225600",
                "2026-01-01T10:00:00Z",
                "1767225600",
                "1767225600",
                "not a date",
                "1767225600",
                "1767225600.5",
            ],
            "value": ["", "", "", "", "", "", ""],
        }
    )
    path = tmp_path / "events.csv"
    rows.to_csv(path, index=False)
    read = read_event_file(spark, path, now=T0)
    valid = read.frame.toPandas().sort_values("user_id")
    assert list(valid["user_id"]) == ["u1", "u2", "u7"]
    assert list(valid["event_type"]) == ["view", "purchase", "click"]
    assert valid["timestamp"].tolist() == [T0, T0 + 36_000.0, T0 + 0.5]
    assert read.rejects == 4  # no user, an unknown type, no date, a rating without value


def test_item_similarities_equal_the_local_itemknn(spark, tiny_shop):
    from equilibra.pipeline.spark.cells import build_cells
    from equilibra.pipeline.spark.models import fit_spark_itemknn

    events = tiny_shop.events
    built = build_cells(spark, spark.createDataFrame(events.assign(value=np.nan, event_id=None)),
                        EventWeights(), tiny_shop.items)  # fmt: skip
    for params in ({"k": 1000}, {"k": 1000, "shrink": 5.0, "binary": True}):
        remote = fit_spark_itemknn(built.cells, built.interactions, params)
        local = ItemKNN(**params).fit(built.interactions)
        gap = abs(remote.similarity_.toarray() - local.similarity_.toarray()).max()
        assert gap < 1e-5, params
    # Cut to k neighbours: each item keeps its k largest (which of equal ones may differ).
    cut = fit_spark_itemknn(built.cells, built.interactions, {"k": 5})
    full = ItemKNN(k=1000).fit(built.interactions).similarity_.toarray()
    for item in range(0, cut.similarity_.shape[0], 7):
        kept = cut.similarity_[item].toarray().ravel()
        if kept.any():
            assert np.sort(kept[kept > 0]).min() >= np.sort(full[item])[-5] - 1e-6


def _hit_rate(artifact: ModelArtifact, x: Interactions, users: np.ndarray) -> float:
    """Share of `users` (dense in `x`) with one of their own items in the artifact's top 10."""
    dense = artifact.users.to_dense(x.users.to_external(users))
    recs, _ = artifact.model.recommend(dense, 10)
    hits = [
        len(set(artifact.items.to_external(row[row >= 0])) & set(x.items.to_external(
            x.matrix[u].indices))) > 0
        for u, row in zip(users, recs, strict=True)
    ]  # fmt: skip
    return float(np.mean(hits))


def test_spark_als_learns_and_its_artifact_serves(spark, tmp_path, tiny_shop):
    from fastapi.testclient import TestClient

    from equilibra.pipeline.spark.train import train_on_spark
    from equilibra.service.app import create_app
    from equilibra.service.settings import load_settings

    events = tmp_path / "events.parquet"
    tiny_shop.events.to_parquet(events)
    items = tmp_path / "items.csv"
    tiny_shop.items.to_csv(items, index=False)
    artifact = train_on_spark("als", events=events, items=items, master="local[2]",
                              params={"factors": 16, "iterations": 8})  # fmt: skip
    x = build_interactions(tiny_shop.events, tiny_shop.items)
    assert artifact.info["engine"]["name"] == "spark"
    assert artifact.model.user_factors_.shape == (x.shape[0], 16)
    # Fitted factors reproduce what users did far beyond the most popular items' reach.
    users = np.arange(min(150, x.shape[0]))
    popular = np.argsort(-x.item_popularity())[:10]
    popular_hits = np.mean([len(set(popular) & set(x.matrix[u].indices)) > 0 for u in users])
    assert _hit_rate(artifact, x, users) > popular_hits + 0.1
    artifact.publish(tmp_path / "model")
    settings = load_settings(None, environ={}, db=f"sqlite:///{tmp_path / 'shop.db'}",
                             model_dir=str(tmp_path / "model"), admin_key="k")  # fmt: skip
    with TestClient(create_app(settings, background=False)) as client:
        user, key = str(x.users.ids[0]), {"Authorization": "Bearer k"}
        answer = client.post("/v1/recommend", json={"user_id": user, "k": 5}, headers=key)
        assert answer.status_code == 200
        assert answer.json()["model_version"] == 1
        assert len(answer.json()["items"]) == 5
        similar = client.get(f"/v1/similar/{x.items.ids[0]}?k=3", headers=key)
        assert similar.status_code == 200 and len(similar.json()["items"]) == 3


def test_fit_from_postgres_over_jdbc_equals_fit_from_a_file(spark, tmp_path, tiny_shop):
    from equilibra.pipeline.spark.train import train_on_spark

    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("EQUILIBRA_TEST_POSTGRES is not set")
        pytest.skip("EQUILIBRA_TEST_POSTGRES not set")
    from conftest import _postgres_store

    store = _postgres_store()
    try:
        store.append_events(validate_events(tiny_shop.events).valid)
        store.upsert_items(validate_items(tiny_shop.items).valid)
    finally:
        store.close()
    from_db = train_on_spark("itemknn", db=POSTGRES_URL, master="local[2]")
    events = tmp_path / "events.csv"
    tiny_shop.events.to_csv(events, index=False)
    from_file = train_on_spark("itemknn", events=events, master="local[2]")
    assert (
        from_db.info["data"]["events"] == from_file.info["data"]["events"] == len(tiny_shop.events)
    )
    assert len(from_db.items) == len(tiny_shop.items) >= len(from_file.items)
    # The store lists every catalogue item; the file only those with events.
    a, db_model = from_file.model.similarity_.tocoo(), from_db.model
    place = from_db.items.to_dense(from_file.items.ids)
    moved = sp.csr_matrix((a.data, (place[a.row], place[a.col])), shape=db_model.similarity_.shape)
    assert abs(moved - db_model.similarity_).max() < 1e-5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algorithm", "auto"], "algorithm: --engine spark trains als or itemknn"),
        (["--algorithm", "ease"], "algorithm: --engine spark trains als or itemknn"),
        (["--algorithm", "als", "--format", "retailrocket"], "format: --engine spark reads"),
        (["--algorithm", "als", "--master", "nowhere"], "master: 'nowhere' is not a Spark"),
        (["--algorithm", "als", "--engine", "dask"], "engine: expected local or spark"),
    ],
)
def test_bad_spark_options_exit_2_with_one_line(tmp_path, tiny_shop, args, message):
    events = tmp_path / "events.csv"
    tiny_shop.events.head(50).to_csv(events, index=False)
    result = run_cli("fit", "--events", events, "--out", tmp_path / "m", "--engine", "spark",
                     *args)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_event_file_is_a_clear_error(spark, tmp_path):
    from equilibra.pipeline.spark.train import train_on_spark

    with pytest.raises(EquilibraError, match="does not exist"):
        train_on_spark("als", events=tmp_path / "nope.parquet", master="local[2]")
