"""MMR: the plain ranking at λ = 0, more distinct lists as λ grows, scores kept as a set."""

import numpy as np

from equilibra.evaluate.metrics import intra_list_diversity
from equilibra.rank.diversity import diversified_scores, mmr_order


def test_mmr_trades_relevance_for_variety():
    scores = np.array([1.0, 0.99, 0.98, 0.5, 0.4])
    vectors = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0.7, 0.7]])
    assert mmr_order(scores, vectors, 0.0, 5).tolist() == [0, 1, 2, 3, 4]
    diverse = mmr_order(scores, vectors, 0.6, 3)
    assert diverse[:2].tolist() == [0, 3]  # the best, then the most different good one
    low, high = intra_list_diversity(np.array([[0, 1, 2], diverse[:3]]), vectors, 3)
    assert high > low
    new = diversified_scores(scores, vectors, 0.6, 3)
    assert sorted(new.tolist()) == sorted(scores.tolist())
    assert np.argsort(-new, kind="stable")[:3].tolist() == diverse[:3].tolist()
