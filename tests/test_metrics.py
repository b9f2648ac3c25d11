"""Every ranking metric against a brute-force, textbook definition on random cases."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from equilibra.evaluate import metrics as m

N_ITEMS = 12


@st.composite
def cases(draw):
    n_users = draw(st.integers(1, 6))
    k = draw(st.integers(1, 6))
    recs, truth = [], []
    for _ in range(n_users):
        ranked = draw(st.permutations(range(N_ITEMS)))[: draw(st.integers(0, k))]
        recs.append(list(ranked) + [-1] * (k - len(ranked)))
        truth.append(draw(st.sets(st.integers(0, N_ITEMS - 1), max_size=6)))
    rows = [u for u, items in enumerate(truth) for _ in items]
    cols = [i for items in truth for i in items]
    relevant = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, N_ITEMS))
    return np.array(recs, dtype=np.int64).reshape(n_users, k), relevant, truth, k


def brute(recs, truth, k):
    out = {"p": [], "r": [], "ndcg": [], "ap": [], "rr": [], "hit": []}
    for row, rel in zip(recs, truth, strict=True):
        ranked = [i for i in row[:k]]
        gains = [1 if i >= 0 and i in rel else 0 for i in ranked]
        out["p"].append(sum(gains) / k)
        out["r"].append(sum(gains) / len(rel) if rel else 0.0)
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
        out["ndcg"].append(dcg / idcg if idcg else 0.0)
        precisions = [sum(gains[: r + 1]) / (r + 1) for r in range(len(gains)) if gains[r]]
        out["ap"].append(sum(precisions) / min(len(rel), k) if rel else 0.0)
        out["rr"].append(next((1 / (r + 1) for r, g in enumerate(gains) if g), 0.0))
        out["hit"].append(float(any(gains)))
    return out


@settings(max_examples=200, deadline=None)
@given(cases())
def test_metrics_match_brute_force(case):
    recs, relevant, truth, k = case
    expected = brute(recs, truth, k)
    assert m.precision_at_k(recs, relevant, k) == pytest.approx(expected["p"])
    assert m.recall_at_k(recs, relevant, k) == pytest.approx(expected["r"])
    assert m.ndcg_at_k(recs, relevant, k) == pytest.approx(expected["ndcg"])
    assert m.map_at_k(recs, relevant, k) == pytest.approx(expected["ap"])
    assert m.mrr_at_k(recs, relevant, k) == pytest.approx(expected["rr"])
    assert m.hit_rate_at_k(recs, relevant, k) == pytest.approx(expected["hit"])
    f1 = m.f1_at_k(recs, relevant, k)
    p, r = np.array(expected["p"]), np.array(expected["r"])
    assert f1 == pytest.approx(np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0))
    assert ((m.ndcg_at_k(recs, relevant, k) >= 0) & (m.ndcg_at_k(recs, relevant, k) <= 1)).all()


def test_beyond_accuracy_metrics():
    recs = np.array([[0, 1, -1], [1, 2, 3]])
    assert m.coverage_at_k(recs, n_items=8, k=3) == pytest.approx(4 / 8)
    popularity = np.array([10, 5, 1, 1, 0, 0, 0, 0])
    assert m.popularity_bias_at_k(recs, popularity, 3) == pytest.approx([7.5, 7 / 3])
    novelty = m.novelty_at_k(recs, popularity, n_users=10, k=3)
    assert novelty[0] == pytest.approx((0 + 1) / 2)
    vectors = np.array([[1, 0], [0, 1], [1, 0], [1, 1]] + [[0, 0]] * 4, dtype=float)
    ild = m.intra_list_diversity(recs, vectors, 3)
    assert ild[0] == pytest.approx(1.0)
    assert m.rmse([1, 3], [2, 5]) == pytest.approx(math.sqrt(2.5))
    assert m.mae([1, 3], [2, 5]) == pytest.approx(1.5)


def test_targets_must_be_seen_in_training():
    import pandas as pd

    from equilibra.data.interactions import Interactions
    from equilibra.data.split import test_truth

    train = pd.DataFrame(
        {
            "user_id": ["a", "b"],
            "item_id": ["x", "y"],
            "event_type": ["view", "view"],
            "timestamp": [1.0, 2.0],
        }
    )
    x = Interactions.from_frame(train, items=["x", "y", "catalogue-only"])
    test = pd.DataFrame(
        {
            "user_id": ["a", "a", "c"],
            "item_id": ["y", "catalogue-only", "x"],
            "event_type": ["purchase"] * 3,
            "timestamp": [3.0, 3.0, 3.0],
        }
    )
    truth = test_truth(x, test, exclude="converted")
    assert truth.relevant.nnz == 1 and list(truth.cold_users) == ["c"]
