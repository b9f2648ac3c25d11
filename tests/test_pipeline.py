"""Training as a user runs it: from files or a store, into versioned model folders swapped
atomically; nothing dropped without being counted."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from equilibra.data.training import TrainingData
from equilibra.data.validate import validate_impressions, validate_items
from equilibra.errors import EquilibraError
from equilibra.pipeline.artifact import ModelArtifact, current, rollback, versions
from equilibra.pipeline.train import fit_artifact, train

NOW = 1_767_261_600.0


@pytest.fixture(scope="module")
def shop_files(tmp_path_factory, tiny_shop):
    return tiny_shop.write(tmp_path_factory.mktemp("shop"))


def test_fit_counts_item_and_user_rejects(shop_files, tmp_path):
    """Before: an item priced -3 was dropped and `fit` said "rejected_rows": 0."""
    items = pd.read_csv(shop_files["items"])
    items.loc[0, "price"] = -3
    items.loc[1, "attributes"] = "{not json"
    items.to_csv(tmp_path / "items.csv", index=False)
    users = pd.read_csv(shop_files["users"])
    users.loc[0, "user_id"] = ""
    users.to_csv(tmp_path / "users.csv", index=False)
    done = run_cli(
        "fit", "--events", shop_files["events"], "--items", tmp_path / "items.csv",
        "--users", tmp_path / "users.csv", "--algorithm", "popularity", "--out", tmp_path / "m",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rejects"] == {"events": 0, "items": 2, "users": 1}
    assert summary["rejected_rows"] == 3
    assert any("negative" in r for r in summary["reject_reasons"]["items"])
    assert any("attributes: not JSON" in r for r in summary["reject_reasons"]["items"])


def test_malformed_item_attributes_are_a_reject_with_a_reason():
    """Before: a malformed `attributes` cell raised JSONDecodeError: "internal error", exit 1."""
    items = pd.DataFrame(
        {"item_id": ["a", "b", "c"], "attributes": ['{"colour": "red"}', "{x", "[1]"]}
    )
    checked = validate_items(items, now=NOW)
    assert checked.valid["item_id"].tolist() == ["a"]
    reasons = checked.rejects["reason"].tolist()
    assert reasons[0].startswith("attributes: not JSON") and reasons[1] == (
        "attributes: expected a JSON object"
    )


def test_a_non_numeric_impression_reward_is_a_reject():
    """Before: `reward` went through to_numeric(errors="coerce"): "abc" became a missing reward."""
    shown = pd.DataFrame(
        {
            "impression_id": ["x", "x", "y", "z"],
            "position": [1, 2, 1, 1],
            "user_id": "u",
            "item_id": ["a", "b", "c", "d"],
            "timestamp": NOW - 5,
            "propensity": 0.5,
            "reward": ["1", "abc", None, "2"],
            "candidates": [None, None, None, '{"items": ['],
        }
    )
    checked = validate_impressions(shown, now=NOW)
    assert checked.valid["item_id"].tolist() == ["a", "c"]
    assert pd.isna(checked.valid["reward"].iloc[1])  # an open impression: no reward yet
    assert checked.rejects["reason"].tolist() == [
        "reward: is not a number",
        "candidates: is not JSON (Expecting value at character 11)",
    ]


def test_the_default_rejects_file_lies_beside_the_events_with_their_name(tmp_path):
    """Before: `sub/shop.v2.csv` put its rejects in `./shop.rejects.csv`."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "shop.v2.csv").write_text(
        "user_id,item_id,event_type,timestamp\nu,i,view,1767000000\nu,i,explode,1767000000\n"
    )
    done = run_cli("import", "--db", "sqlite:///x.db", "--events", "sub/shop.v2.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sub" / "shop.v2.rejects.csv").exists()
    assert not (tmp_path / "shop.rejects.csv").exists()


def test_auto_on_a_log_too_small_to_validate_falls_back_and_says_so(tmp_path):
    """Before: a 3-hour shop log made `fit --algorithm auto` die with "internal error:
    ValueError …", exit 1."""
    rng = np.random.default_rng(0)
    start = 1_767_000_000
    rows = []
    for user in range(300):  # visitors of one short session each, as a shop's first hours
        t = start + int(rng.integers(3 * 3600))
        for step in range(int(rng.integers(1, 4))):
            kind = rng.choice(["view", "add_to_cart"])
            rows.append((f"u{user}", f"i{rng.integers(50)}", kind, t + step))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    events.to_csv(tmp_path / "short.csv", index=False)
    done = run_cli("fit", "--events", tmp_path / "short.csv", "--out", tmp_path / "m")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["algorithm"] == "popularity" and "validation split" in summary["fallback"]
    assert "falling back to popularity" in done.stderr


def test_versions_are_published_atomically_kept_and_rolled_back(tiny_shop, tmp_path):
    data = TrainingData(events=tiny_shop.events, items=tiny_shop.items)
    artifact = fit_artifact(data, "popularity")
    root = tmp_path / "model"
    assert [artifact.publish(root, keep=3) for _ in range(4)] == [1, 2, 3, 4]
    assert versions(root) == [2, 3, 4] and current(root) == 4
    assert ModelArtifact.load(root).model_version == 4
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no leftovers
    assert rollback(root) == 3 and ModelArtifact.load(root).model_version == 3
    assert ModelArtifact.load(root, version=2).model_version == 2
    with pytest.raises(EquilibraError, match="not in"):
        rollback(root, 1)
    # The next publish continues the sequence from the newest, not from the current.
    assert artifact.publish(root, keep=3) == 5 and current(root) == 5
    # A version folder left half-written (a crash, an interrupted prune) keeps its number.
    (root / "v000006").mkdir()
    (root / "v000006" / "users.npy").write_bytes(b"")
    assert artifact.publish(root, keep=3) == 7 and 6 not in versions(root)


def test_readers_never_see_half_a_version(tiny_shop, tmp_path):
    """A reader loading in a loop while versions are published always gets a whole one."""
    data = TrainingData(events=tiny_shop.events, items=tiny_shop.items)
    artifact = fit_artifact(data, "popularity")
    root = tmp_path / "model"
    artifact.publish(root)
    errors: list[BaseException] = []
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                loaded = ModelArtifact.load(root)
                seen.add(int(loaded.model_version))
                assert len(loaded.recommend(["nobody"], 3)) == 3
            except BaseException as exc:  # collected, re-raised by the assert below
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(8):
        artifact.publish(root, keep=2)
    stop.set()
    reader.join()
    assert not errors, errors[0]
    assert len(seen) >= 2


def test_fit_from_a_store_and_recommend_shows_the_version(shop_files, tmp_path):
    db = f"sqlite:///{tmp_path / 'shop.db'}"
    done = run_cli(
        "import", "--db", db, "--events", shop_files["events"], "--items", shop_files["items"]
    )
    assert done.returncode == 0, done.stderr
    for expected in (1, 2):
        done = run_cli("fit", "--db", db, "--algorithm", "itemknn", "--out", tmp_path / "m")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["model_version"] == expected
    (tmp_path / "users.txt").write_text("u1\n")
    done = run_cli(
        "recommend", "--model", tmp_path / "m", "--users", tmp_path / "users.txt",
        "--out", tmp_path / "recs.csv",
    )  # fmt: skip
    assert done.returncode == 0 and json.loads(done.stdout)["model_version"] == 2
    done = run_cli("rollback", "--model", tmp_path / "m")
    assert done.returncode == 0 and json.loads(done.stdout)["model_version"] == 1
    done = run_cli("fit", "--db", db, "--events", shop_files["events"], "--out", tmp_path / "m")
    assert done.returncode == 2 and "exactly one of --events FILE or --db URL" in done.stderr


def test_unavailable_items_are_never_recommended(tiny_shop, tmp_path):
    items = tiny_shop.items.copy()
    popular = tiny_shop.events["item_id"].value_counts().index[:5].tolist()
    items["available"] = ~items["item_id"].isin(popular)
    data = TrainingData(events=tiny_shop.events, items=items)
    for algorithm in ("popularity", "itemknn", "als"):
        artifact = fit_artifact(data, algorithm)
        users = [*tiny_shop.events["user_id"].drop_duplicates().head(50).tolist(), "stranger"]
        recs = artifact.recommend(users, 10, exclude="none")
        assert len(recs) == 51 * 10
        assert not set(recs["item_id"]) & set(popular), algorithm
    root = Path(tmp_path / "m")
    artifact.publish(root)
    assert not set(ModelArtifact.load(root).recommend(users, 10)["item_id"]) & set(popular)


def test_train_without_auto_fits_the_named_model(tiny_shop):
    data = TrainingData(events=tiny_shop.events, items=tiny_shop.items)
    artifact = train(data, "popularity", {"half_life_days": 3.0})
    assert artifact.model.name == "popularity" and "auto" not in artifact.info


def test_evaluate_reports_the_cold_slice_diversity_and_rating_errors(shop_files, tmp_path):
    """Before: cold users were counted, not scored; diversity was never computed (no item
    vectors were passed); RMSE/MAE existed as functions that nothing reported."""
    done = run_cli(
        "evaluate", "--events", shop_files["events"], "--items", shop_files["items"],
        "--algorithm", "itemknn", "--json", tmp_path / "shop.json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "shop.json").read_text())
    assert 0 < report["diversity@10"] <= 1 and report["diversity_basis"] == "categories"
    cold = report["cold"]
    assert report["cold_test_users"] > 0 and cold["users"] > 0
    assert 0 <= cold["ndcg@10"] <= 1 and 0 <= cold["recall@20"] <= 1
    assert "ratings" not in report

    rng = np.random.default_rng(5)
    users, items = 60, 40
    taste = rng.normal(0, 0.8, (users, 1)) + rng.normal(0, 0.8, (1, items))  # biases
    taste = taste + 0.5 * rng.normal(size=(users, 2)) @ rng.normal(size=(2, items))
    who, what = rng.integers(users, size=3000), rng.integers(items, size=3000)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in who],
            "item_id": [f"i{i}" for i in what],
            "event_type": "rating",
            "timestamp": 1_700_000_000 + 3600 * np.arange(3000),
            "value": np.round(np.clip(3 + taste[who, what], 1, 5)),
        }
    )
    frame.drop_duplicates(["user_id", "item_id"]).to_csv(tmp_path / "ratings.csv", index=False)
    done = run_cli(
        "evaluate", "--events", tmp_path / "ratings.csv", "--algorithm", "popularity",
        "--json", tmp_path / "ratings.json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ratings = json.loads((tmp_path / "ratings.json").read_text())["ratings"]
    assert ratings["rated"] > 100
    assert 0 < ratings["mae"] <= ratings["rmse"] < ratings["rmse_of_global_mean"]
