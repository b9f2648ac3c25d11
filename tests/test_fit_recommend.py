"""The batch contract of design.md: fit → model directory → recommend CSV; evaluate; auto."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from equilibra.data.training import TrainingData
from equilibra.pipeline.artifact import ModelArtifact
from equilibra.pipeline.auto import search
from equilibra.pipeline.train import fit_artifact

cli = run_cli


@pytest.fixture(scope="module")
def shop_files(tmp_path_factory, tiny_shop):
    folder = tmp_path_factory.mktemp("shop")
    return tiny_shop.write(folder)


def test_fit_and_recommend_follow_the_contract(shop_files, tmp_path, tiny_shop):
    fitted = cli(
        "fit",
        "--events",
        shop_files["events"],
        "--items",
        shop_files["items"],
        "--algorithm",
        "itemknn",
        "--params",
        '{"k": 20}',
        "--out",
        tmp_path / "model",
    )
    assert fitted.returncode == 0, fitted.stderr
    assert json.loads(fitted.stdout)["algorithm"] == "itemknn"
    events = tiny_shop.events
    known = events["user_id"].drop_duplicates().head(5).tolist()
    (tmp_path / "users.csv").write_text("user_id\n" + "\n".join([*known, "stranger"]) + "\n")
    for exclude in ("interacted", "converted", "none"):
        out = tmp_path / f"recs-{exclude}.csv"
        result = cli(
            "recommend",
            "--model",
            tmp_path / "model",
            "--users",
            tmp_path / "users.csv",
            "--k",
            7,
            "--out",
            out,
            "--exclude",
            exclude,
        )
        assert result.returncode == 0, result.stderr
        recs = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
        assert list(recs.columns) == ["user_id", "rank", "item_id", "score"]
        assert set(recs["user_id"]) == set(known) | {"stranger"}
        ranks = recs.groupby("user_id")["rank"].apply(list)
        assert all(r == list(range(1, 8)) for r in ranks)
        seen = events.groupby("user_id")["item_id"].apply(set)
        converted = (
            events[events.event_type.isin(["add_to_cart", "purchase"])]
            .groupby("user_id")["item_id"]
            .apply(set)
        )
        for user in known:
            shown = set(recs.loc[recs.user_id == user, "item_id"])
            if exclude == "interacted":
                assert not shown & seen[user]
            if exclude == "converted":
                assert not shown & converted.get(user, set())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "--events", "e.csv", "--out", "m", "--algorithm", "magic"], "unknown 'magic'"),
        (
            ["fit", "--events", "e.csv", "--out", "m", "--algorithm", "als", "--params", "{oops"],
            "params: not JSON",
        ),
        (
            [
                "fit",
                "--events",
                "e.csv",
                "--out",
                "m",
                "--algorithm",
                "als",
                "--params",
                '{"nope": 1}',
            ],
            "params:",
        ),
        (
            ["recommend", "--model", "nowhere", "--users", "e.csv", "--out", "r.csv"],
            "not a model directory",
        ),
        (
            [
                "recommend",
                "--model",
                "nowhere",
                "--users",
                "e.csv",
                "--out",
                "r.csv",
                "--exclude",
                "all",
            ],
            "exclude",
        ),
    ],
)
def test_bad_fit_and_recommend_input_exits_2(tmp_path, args, message):
    (tmp_path / "e.csv").write_text("user_id,item_id,event_type,timestamp\nu,i,view,1767000000\n")
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_artifact_round_trip_answers_the_same(tiny_shop, tmp_path):
    data = TrainingData(events=tiny_shop.events, items=tiny_shop.items)
    artifact = fit_artifact(data, "covisit")
    users = tiny_shop.events["user_id"].unique()[:20]
    before = artifact.recommend(users, 5, "converted")
    after = ModelArtifact.load(artifact.save(tmp_path / "m")).recommend(users, 5, "converted")
    pd.testing.assert_frame_equal(before, after)


def test_auto_search_scores_candidates_and_blends(tiny_shop):
    data = TrainingData(events=tiny_shop.events, items=tiny_shop.items)
    seen = []
    result = search(data, budget_seconds=60, progress=lambda d, t, label: seen.append(label))
    scored = [s for s in result.scores if "ndcg@10" in s]
    assert len(scored) >= 5 and any(s["algorithm"] == "hybrid" for s in scored)
    best = max(s["ndcg@10"] for s in scored)
    assert best > 0 and result.protocol["split"] == "global"
    assert seen[-1] == "done"
    # The session models compete too (the neural ones where the torch extra is installed).
    tried = {s["algorithm"] for s in scored}
    assert {"sknn", "vsknn"} <= tried
    if importlib.util.find_spec("torch") is not None:
        assert {"sasrec", "gru4rec"} <= tried


def test_evaluate_prints_metrics_and_writes_json(shop_files, tmp_path):
    result = cli(
        "evaluate",
        "--events",
        shop_files["events"],
        "--algorithm",
        "recent",
        "--json",
        tmp_path / "eval.json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    for key in ("ndcg@10", "recall@20", "hitrate@10", "map@10", "coverage@10", "novelty@10"):
        assert 0 <= report[key] <= (1 if key != "novelty@10" else 100)
    assert report["split"] == "global" and report["exclude"] == "converted"


def test_learned_ranker_fits_explains_and_round_trips(tmp_path):
    from equilibra.data.synthetic import generate_shop
    from equilibra.data.training import build_interactions
    from equilibra.models.base import Recommender
    from equilibra.rank.ranker import LearnedRanker

    shop = generate_shop("demo", seed=3)
    x = build_interactions(shop.events, shop.items)
    model = LearnedRanker(
        generators=[
            {"algorithm": "recent", "params": {}},
            {"algorithm": "covisit", "params": {}},
            {"algorithm": "popularity", "params": {}},
        ],
        classifier="logistic",
        candidates=20,
    ).fit(x, shop.items)
    assert set(model.feature_importance_) == set(model.feature_names())
    assert model.training_["positives"] > 0
    # A shop log has few conversions per cut: the classifier learns from nested cuts.
    assert model.training_["split"] == "global" and model.training_["cuts"] >= 2
    users = np.arange(50)
    recs, scores = model.recommend(users, 10, exclude=x.converted())
    assert (recs >= 0).all() and (np.diff(scores, axis=1) <= 0).all()
    loaded = Recommender.load(model.save(tmp_path / "ranker"))
    again, _ = loaded.recommend(users, 10, exclude=x.converted())
    assert (again == recs).all()


def test_cold_users_get_trending_narrowed_by_category_and_segment(tiny_shop, tmp_path):
    data = TrainingData(events=tiny_shop.events, items=tiny_shop.items, users=None)
    from equilibra.data.validate import validate_users

    data.users = validate_users(tiny_shop.users).valid
    artifact = ModelArtifact.load(fit_artifact(data, "itemknn").save(tmp_path / "m"))
    plain = artifact.recommend(["newcomer"], 10)
    top_category = tiny_shop.items["categories"].str.split("|").str[0].value_counts().index[-1]
    narrowed = artifact.recommend(["newcomer"], 10, context={"category": top_category})
    categories = tiny_shop.items.set_index("item_id")["categories"]
    assert all(categories[i].startswith(top_category) for i in narrowed["item_id"].head(3))
    assert list(plain["item_id"]) != list(narrowed["item_id"])
    by_region = artifact.recommend(["newcomer"], 10, attributes={"newcomer": {"region": "north"}})
    assert len(by_region) == 10
    assert "region" in artifact.cold.segments


def test_ranker_counts_item_events_in_a_window_before_each_visit():
    from equilibra.rank.ranker import _events_between, _visit_context

    rng = np.random.default_rng(0)
    n_users, n_items, n_events = 30, 12, 400
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(n_users, size=n_events)],
            "item_id": [f"i{i}" for i in rng.integers(n_items, size=n_events)],
            "event_type": "view",
            "timestamp": 1.6e9 + rng.integers(0, 90 * 86_400, size=n_events).astype(float),
        }
    )
    from equilibra.data.training import build_interactions

    x = build_interactions(frame, None)
    context = _visit_context(x)
    users = rng.integers(x.shape[0], size=200)
    items = rng.integers(x.shape[1], size=200)
    end = context["visit_time"][users]
    start = end - rng.uniform(0, 60 * 86_400, size=200)
    got = _events_between(context, items, start, end)
    for i, lo, hi, count in zip(items, start, end, got, strict=True):
        mine = (x.event_item == i) & (x.event_time > lo) & (x.event_time <= hi)
        assert count == mine.sum()
    # A visit is the user's latest event.
    for u in range(x.shape[0]):
        assert context["visit_time"][u] == x.event_time[x.event_user == u].max()
