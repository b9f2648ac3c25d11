"""The online item counters: the kept leader sets answer exactly what a full scan would."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from equilibra.online.state import InProcessState, ItemCounters, OnlineConfig

events = st.lists(
    st.tuples(
        st.integers(0, 200),  # item
        st.floats(0.1, 5.0),  # weight
        st.floats(0.0, 50_000.0),  # timestamp, out of order
        st.booleans(),  # ask for the top and the newest after this event
    ),
    min_size=1,
    max_size=400,
)


def brute_top(counters: ItemCounters, n: int) -> list[float]:
    keys = counters.key[: len(counters)]
    return sorted(keys.tolist(), reverse=True)[:n]


def brute_newest(counters: ItemCounters, n: int, at: float, max_age: float) -> list[float]:
    age = at - counters.first_seen[: len(counters)]
    return sorted(a for a in age.tolist() if a <= max_age)[:n]


@settings(max_examples=150, deadline=None)
@given(events, st.integers(1, 30), st.floats(100.0, 20_000.0))
def test_top_and_newest_match_a_full_scan(stream, n, max_age) -> None:
    counters = ItemCounters(half_life_s=3_600.0)
    counters.leader_depth = 1  # small sets, so updates must join them
    clock = 0.0
    for item, weight, timestamp, ask in stream:
        counters.add(f"i{item}", weight, timestamp)
        clock = max(clock, timestamp)
        if ask:
            top = counters.top(n, clock)
            # The same keys in the same order (ties may pick either item).
            keys = [counters.key[counters.index[i]] for i, _ in top]
            np.testing.assert_allclose(keys, brute_top(counters, n))  # shapes too
            fewer = counters.top(max(1, n // 2), clock)  # the sorted leaders, reused
            keys = [counters.key[counters.index[i]] for i, _ in fewer]
            np.testing.assert_allclose(keys, brute_top(counters, max(1, n // 2)))
            newest = counters.newest(n, clock, max_age)
            np.testing.assert_allclose(
                [a for _, a in newest], brute_newest(counters, n, clock, max_age)
            )


def test_trending_follows_a_burst_and_new_items_are_listed() -> None:
    state = InProcessState(OnlineConfig())
    for t in range(300):
        state.learn_one(f"u{t}", f"old{t % 50}", "view", 1_000.0 + t)
    assert state.trending(5)[0][0].startswith("old")
    for t in range(40):
        state.learn_one(f"v{t}", "burst", "view", 1_400.0 + t)
    assert state.trending(5)[0][0] == "burst"
    assert "burst" in [item for item, _ in state.newest(10)]


def test_co_visitation_counts_within_a_session_only() -> None:
    state = InProcessState(OnlineConfig())
    gap = OnlineConfig().session_gap_s
    state.learn_one("u", "a", "view", 1_000.0)
    state.learn_one("u", "b", "view", 1_000.0 + 2 * gap)  # a new session
    state.learn_one("u", "c", "view", 1_060.0 + 2 * gap)
    assert state.neighbours(["a"], 5) == []
    assert [item for item, _ in state.neighbours(["b"], 5)] == ["c"]


def test_fold_in_matches_implicits_own_solve_for_one_user() -> None:
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    from equilibra.online.foldin import FoldIn

    rng = np.random.default_rng(0)
    matrix = sp.random(60, 40, density=0.15, format="csr", random_state=1, dtype=np.float32)
    matrix.data = rng.integers(1, 6, len(matrix.data)).astype(np.float32)  # event weights
    confidence = matrix.copy()
    confidence.data = np.log1p(confidence.data)  # models.factorization.ALS, weighting "log"
    model = AlternatingLeastSquares(factors=8, regularization=0.1, alpha=10.0, random_state=0)
    model.fit(confidence, show_progress=False)
    fold = FoldIn(np.asarray(model.item_factors), alpha=10.0, regularization=0.1)
    row = matrix[3]
    ours = fold.user_vector(row.indices, row.data)
    theirs = np.asarray(model.recalculate_user(3, confidence[3])).ravel()
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)
