"""One conformance suite for every candidate generator, on data whose right answer is known.

Two taste groups: even users touch even items, odd users odd items; each user leaves one item
of their group untouched. A personalised model must put an item of the user's own group first.
"""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from equilibra.data.interactions import Interactions
from equilibra.models.base import Recommender, SparseScores
from equilibra.models.content import ContentBased
from equilibra.models.ease import EASE
from equilibra.models.factorization import ALS, BPR
from equilibra.models.neighbours import ItemKNN, RP3Beta, UserKNN
from equilibra.models.popularity import Popularity
from equilibra.models.recent import RecentItems
from equilibra.models.sequence import CoVisitation
from equilibra.models.session_knn import SessionKNN, VectorSessionKNN
from equilibra.rank.hybrid import Hybrid

N_USERS, N_ITEMS = 40, 20

PERSONALISED = [
    ItemKNN(similarity="cosine", k=10),
    ItemKNN(similarity="jaccard"),
    ItemKNN(similarity="asymmetric", alpha=0.3),
    ItemKNN(similarity="bm25"),
    ItemKNN(similarity="tfidf", shrink=2.0),
    UserKNN(similarity="cosine", k=10),
    ALS(factors=8, iterations=15, regularization=0.1, alpha=1.0),
    BPR(factors=8, iterations=300),
    EASE(regularization=1.0),
    ContentBased(),
    CoVisitation(window=10, recent=10),
    RP3Beta(beta=0.3, k=10),
    SessionKNN(k=10),
    VectorSessionKNN(k=10, sample_size=20),
    Hybrid(),  # the serving default: recent + co-visitation + item-kNN
]
try:  # the neural sequence models are an extra (equilibra[torch]); test.sh installs it
    import torch  # noqa: F401

    from equilibra.models.gru4rec import GRU4Rec
    from equilibra.models.sasrec import SASRec

    PERSONALISED += [
        GRU4Rec(dim=16, epochs=30, negatives=8, batch_size=8),
        SASRec(dim=16, epochs=30, negatives=8, batch_size=8),
    ]
except ImportError:  # pragma: no cover - without the extra
    pass
OTHERS = [Popularity(), Popularity(half_life_days=3, by_category=True), RecentItems()]


@pytest.fixture(scope="module")
def blocks():
    rng = np.random.default_rng(0)
    rows = []
    for u in range(N_USERS):
        own = [i for i in range(N_ITEMS) if i % 2 == u % 2]
        held = rng.choice(own)
        # In no fixed order: a sequence model must learn the group, not a path through it.
        for t, i in enumerate(rng.permutation([i for i in own if i != held])):
            rows.append([f"u{u}", f"i{i}", "view", 1_700_000_000.0 + u * 100 + t])
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(N_ITEMS)],
            "categories": ["even" if i % 2 == 0 else "odd" for i in range(N_ITEMS)],
        }
    )
    x = Interactions.from_frame(frame, items=items["item_id"])
    return x, items


def group_of_item(x, dense):
    return np.array([int(name[1:]) % 2 for name in x.items.to_external(dense)])


def group_of_user(x, dense):
    return np.array([int(name[1:]) % 2 for name in x.users.to_external(dense)])


@pytest.mark.parametrize("model", PERSONALISED + OTHERS, ids=repr)
def test_recommend_contract(model: Recommender, blocks, tmp_path):
    x, items = blocks
    model.fit(x, items)
    users = np.arange(N_USERS)
    recs, scores = model.recommend(users, k=12, exclude=x.interacted())
    assert recs.shape == scores.shape == (N_USERS, 12)
    # Only 11 items per user are left to recommend: the 12th slot is padding.
    assert (recs[:, 11] == -1).all() and np.isneginf(scores[:, 11]).all()
    valid = recs[:, :11]
    assert not x.interacted()[np.repeat(users, 11), valid.ravel()].any()
    assert (np.diff(scores[:, :11], axis=1) <= 1e-6).all()
    direct = model.score(users[:3], valid[0])
    assert direct[0] == pytest.approx(scores[0, :11], rel=1e-4, abs=1e-5)
    loaded = Recommender.load(model.save(tmp_path / model.name))
    again, _ = loaded.recommend(users, k=12, exclude=x.interacted())
    assert (again == recs).all()


@pytest.mark.parametrize("model", PERSONALISED + OTHERS, ids=repr)
@pytest.mark.parametrize("exclude", ["interacted", "none"])
def test_recommend_one_matches_the_batch(model: Recommender, exclude: str, blocks):
    """A serving request asks for one user (`recommend_one`: the sparse models' own one-row
    path); it answers what the batch answers for that user, ties and exclusions alike."""
    x, items = blocks
    model.fit(x, items)
    banned = x.interacted() if exclude == "interacted" else None
    recs, scores = model.recommend(np.arange(N_USERS), k=15, exclude=banned)
    for user in range(N_USERS):
        one_items, one_scores = model.recommend_one(user, 15, banned)
        keep = recs[user] >= 0
        assert len(one_items) == keep.sum()
        # One row is multiplied instead of a block: float32 sums in another order.
        assert np.allclose(one_scores, scores[user][keep], rtol=1e-4, atol=1e-6)
        tied = np.isclose(one_scores, scores[user][keep], rtol=1e-4, atol=1e-6)
        assert ((one_items == recs[user][keep]) | tied).all()


@pytest.mark.parametrize("model", PERSONALISED, ids=repr)
def test_personalised_models_find_the_users_group(model: Recommender, blocks):
    x, items = blocks
    model.fit(x, items)
    users = np.arange(N_USERS)
    recs, _ = model.recommend(users, k=1, exclude=x.interacted())
    hit = group_of_item(x, recs[:, 0]) == group_of_user(x, users)
    assert hit.mean() >= 0.9


@pytest.mark.parametrize(
    "model",
    [m for m in PERSONALISED if not isinstance(m, UserKNN)] + [Popularity(by_category=True)],
    ids=repr,
)
def test_similar_items_exclude_the_item_and_share_its_group(model: Recommender, blocks):
    x, items = blocks
    model.fit(x, items)
    probe = np.arange(N_ITEMS)
    similar, _ = model.similar_items(probe, k=3)
    assert (similar != probe[:, None]).all()
    same = group_of_item(x, similar[:, 0]) == group_of_item(x, probe)
    assert same.mean() >= 0.9


def test_pearson_user_knn_reads_rating_levels():
    # Everyone rates every item; only the level tells the groups apart (cosine cannot).
    rows = [
        [f"u{u}", f"i{i}", "rating", 1.7e9 + i, 5.0 if i % 2 == u % 2 else 1.0]
        for u in range(N_USERS)
        for i in range(N_ITEMS)
        if (u + i) % 7
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "value"])
    x = Interactions.from_frame(frame)
    model = UserKNN(similarity="pearson", k=10).fit(x)
    users = np.arange(N_USERS)
    recs, _ = model.recommend(users, k=1, exclude=x.interacted())
    held = recs[:, 0] >= 0
    assert (group_of_item(x, recs[held, 0]) == group_of_user(x, users[held])).mean() >= 0.9


def test_ease_bounded_catalogue_still_ranks_every_item(blocks):
    x, items = blocks
    model = EASE(regularization=1.0, max_items=6).fit(x, items)
    recs, _ = model.recommend(np.arange(N_USERS), k=N_ITEMS)
    assert (recs >= 0).all() and len(model.kept_items_) == 6


def test_unknown_similarity_is_explained(blocks):
    with pytest.raises(ValueError, match="similarity"):
        ItemKNN(similarity="euclid").fit(blocks[0])


def test_content_model_reaches_items_nobody_has_touched(blocks):
    x, items = blocks
    catalogue = pd.concat([items, pd.DataFrame({"item_id": ["new-even"], "categories": ["even"]})])
    frame = x.events_frame()
    x2 = Interactions.from_frame(frame, items=catalogue["item_id"])
    model = ContentBased().fit(x2, catalogue)
    new = x2.items.to_dense(["new-even"])[0]
    similar, _ = model.similar_items(x2.items.to_dense(["i0"]), k=N_ITEMS)
    assert new in similar[0]
    even_user = x2.users.to_dense(["u0"])
    recs, _ = model.recommend(even_user, k=N_ITEMS, exclude=x2.interacted())
    assert new in recs[0]
    odd_user = x2.users.to_dense(["u1"])
    recs, scores = model.recommend(odd_user, k=N_ITEMS, exclude=x2.interacted())
    assert scores[0][list(recs[0]).index(new)] < scores[0][0]


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(2, 30),
    st.integers(1, 8),
    st.floats(0.0, 0.6),
    st.booleans(),
    st.integers(0, 10_000),
)
def test_sparse_top_k_matches_the_dense_definition(n_rows, n_items, k, density, with_bg, seed):
    from equilibra.models.base import SparseScores, mask_rows, top_k, top_k_sparse

    rng = np.random.default_rng(seed)
    matrix = sp.random(n_rows, n_items, density=density, format="csr", random_state=seed)
    matrix.data = rng.permutation(len(matrix.data)) + 1.0  # distinct: no ties to reorder
    background = (rng.permutation(n_items) * 1e-3) if with_bg else None
    banned = sp.random(n_rows, n_items, density=0.3, format="csr", random_state=seed + 1)
    banned.data[:] = 1
    scores = SparseScores(matrix, background)
    dense = scores.dense()
    if background is None:
        dense[matrix.toarray() == 0] = -np.inf
    mask_rows(dense, banned, np.arange(n_rows))
    expected_items, expected_values = top_k(dense, k)
    items, values = top_k_sparse(scores, k, banned, np.arange(n_rows))
    assert np.allclose(values, expected_values)
    assert (items == expected_items).all()


@pytest.mark.parametrize(
    "model",
    [ALS(factors=8, iterations=5), EASE(regularization=1.0), EASE(regularization=1.0, max_items=6)],
    ids=repr,
)
def test_fast_recommend_paths_match_the_generic_one(model, blocks):
    x, items = blocks
    model.fit(x, items)
    users = np.arange(N_USERS)
    fast_items, fast_scores = model.recommend(users, 15, exclude=x.interacted())
    slow_items, slow_scores = Recommender.recommend(model, users, 15, exclude=x.interacted())
    assert np.allclose(fast_scores, slow_scores, rtol=1e-4, atol=1e-5)
    assert ((fast_items == slow_items) | np.isclose(fast_scores, slow_scores)).all()


@pytest.mark.parametrize(
    "components",
    [
        None,
        [{"algorithm": "covisit", "weight": 1.0}, {"algorithm": "popularity", "weight": 0.0},
         {"algorithm": "itemknn", "weight": 0.5}],
        [{"algorithm": "recent", "weight": 2.0}, {"algorithm": "itemknn", "weight": 1.0}],
    ],
)  # fmt: skip
def test_hybrid_one_user_path_matches_the_batch_blend(components, blocks) -> None:
    """A serving request scores one user through `_score_one`; a batch goes through scipy."""
    x, items = blocks
    model = Hybrid(components).fit(x, items)
    batch_items, batch_scores = model.recommend(np.arange(N_USERS), 12, exclude=x.interacted())
    for user in range(N_USERS):
        one_items, one_scores = model.recommend(np.array([user]), 12, exclude=x.interacted())
        assert np.allclose(one_scores[0], batch_scores[user])
        same = (one_items[0] == batch_items[user]) | np.isclose(one_scores[0], batch_scores[user])
        assert same.all()
    one, batch = model._score_users(np.array([0])), model._score_users(np.arange(3))
    if isinstance(one, SparseScores):  # the blended background is made once, for both paths
        assert one.background is batch.background


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 15), st.booleans())
def test_sparse_row_top_k_matches_the_dense_top_k(seed: int, k: int, positive_only: bool) -> None:
    import scipy.sparse as sp

    from equilibra.models.base import top_k, top_k_rows

    rng = np.random.default_rng(seed)
    matrix = sp.random(25, 25, density=rng.uniform(0, 0.5), format="csr", random_state=seed)
    matrix.data = rng.permutation(len(matrix.data)) - len(matrix.data) / 3.0  # distinct, some < 0
    items = rng.integers(0, 25, 4)
    block = matrix[items].toarray()
    block[(block <= 0) if positive_only else (block == 0)] = -np.inf
    block[np.arange(len(items)), items] = -np.inf
    expected_items, expected_values = top_k(block, k)
    found_items, found_values = top_k_rows(matrix, items, k, positive_only)
    assert np.array_equal(found_items, expected_items)
    assert np.array_equal(found_values, expected_values)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12), st.booleans(), st.booleans())
def test_one_row_top_k_matches_the_batch_top_k(
    seed: int, k: int, with_background: bool, with_banned: bool
) -> None:
    """`top_k_row` is `top_k_sparse` for one user: same items, scores and tie order (the
    values are drawn from a few levels, so ties are common)."""
    from equilibra.models.base import SparseRow, top_k_row, top_k_sparse

    rng = np.random.default_rng(seed)
    n = 30
    indices = np.sort(rng.choice(n, rng.integers(0, n), replace=False))
    data = rng.integers(0, 4, len(indices)).astype(np.float32) / 2
    background = rng.integers(0, 3, n).astype(np.float32) / 100 if with_background else None
    banned = np.sort(rng.choice(n, rng.integers(0, 8), replace=False)) if with_banned else None
    row = SparseRow(indices, data, background)
    exclude = None
    if banned is not None:
        exclude = sp.csr_matrix(
            (np.ones(len(banned)), banned, np.array([0, len(banned)])), shape=(1, n)
        )
    items, values = top_k_sparse(row.as_scores(n), k, exclude, np.array([0]))
    keep = items[0] >= 0
    found_items, found_values = top_k_row(row, k, banned)
    assert np.array_equal(found_items, items[0][keep])
    assert np.array_equal(found_values, values[0][keep])
