"""The online state: the kept leader sets answer exactly what a full scan would, and one
conformance suite holds the in-process and the Redis backends to the same answers."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from equilibra.online.state import InProcessState, ItemCounters, OnlineConfig, OnlineState

MakeState = Callable[[OnlineConfig], OnlineState]


@pytest.fixture(params=["in-process", "redis"])
def make_state(request: pytest.FixtureRequest) -> MakeState:
    """A factory of empty online states of one backend (Redis: a fresh key prefix each)."""
    if request.param == "in-process":
        return InProcessState
    from equilibra.online.redis_state import RedisState

    server = request.getfixturevalue("redis_server")
    return lambda config: RedisState(server.url, config, prefix=f"t{uuid.uuid4().hex[:12]}")


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


def test_trending_follows_a_burst_and_new_items_are_listed(make_state: MakeState) -> None:
    state = make_state(OnlineConfig())
    for t in range(300):
        state.learn_one(f"u{t}", f"old{t % 50}", "view", 1_000.0 + t)
    assert state.trending(5)[0][0].startswith("old")
    for t in range(40):
        state.learn_one(f"v{t}", "burst", "view", 1_400.0 + t)
    assert state.trending(5)[0][0] == "burst"
    assert "burst" in [item for item, _ in state.newest(10)]


def test_co_visitation_counts_within_a_session_only(make_state: MakeState) -> None:
    state = make_state(OnlineConfig())
    gap = OnlineConfig().session_gap_s
    state.learn_one("u", "a", "view", 1_000.0)
    state.learn_one("u", "b", "view", 1_000.0 + 2 * gap)  # a new session
    state.learn_one("u", "c", "view", 1_060.0 + 2 * gap)
    assert state.neighbours(["a"], 5) == []
    assert [item for item, _ in state.neighbours(["b"], 5)] == ["c"]


stream_of_events = st.lists(
    st.tuples(
        st.integers(0, 5),  # user
        st.integers(0, 30),  # item
        st.sampled_from(["view", "click", "add_to_cart", "purchase"]),
        st.integers(0, 20_000),  # timestamp (whole seconds), out of order
    ),
    min_size=1,
    max_size=120,
)


def _answers(state: OnlineState, users: list[str]) -> dict[str, object]:
    """Everything a request or a page reads, in a form two backends can be compared in."""
    items = [f"i{i}" for i in range(32)]
    counts, first = state.item_stats(items)
    out: dict[str, object] = {
        "known_users": state.known_users(),
        "n_items": state.n_items(),
        "counts": counts.tolist(),
        "first": first.tolist(),
        # Values, best first (ties may list either item).
        "trending": [round(v, 9) for _, v in state.trending(10)],
        "newest": [round(a, 6) for _, a in state.newest(10)],
        "item": [None if (s := state.item(i)) is None else (s.count, s.first_seen) for i in items],
    }
    for user_id in users:
        user = state.user(user_id)
        if user is None:
            out[user_id] = None
            continue
        recent = user.recent_items(5)
        out[user_id] = {
            "history": list(user.history),
            "session": user.session(),
            "converted": sorted(user.converted),
            "events": user.events,
            "neighbours": sorted(round(v, 9) for _, v in state.neighbours(recent, 8)),
        }
    return out


# `make_state` is a factory: each example builds fresh states from it.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stream=stream_of_events)
def test_every_backend_answers_as_the_in_process_state(make_state: MakeState, stream) -> None:
    config = OnlineConfig(history=4, session_gap_s=1_800.0, covisit_per_item=3)
    reference, state = InProcessState(config), make_state(config)
    users = [f"u{u}" for u in range(6)]
    half = len(stream) // 2
    for user, item, kind, stamp in stream[:half]:
        reference.learn_one(f"u{user}", f"i{item}", kind, float(stamp))
        state.learn_one(f"u{user}", f"i{item}", kind, float(stamp))
    rest = [(f"u{u}", f"i{i}", kind, float(t)) for u, i, kind, t in stream[half:]]
    reference.learn_many(rest)
    state.learn_many(rest)  # a batch, in order
    assert _answers(state, users) == _answers(reference, users)
    assert state.forget_user("u0") == reference.forget_user("u0")
    assert state.user("u0") is None and state.forget_user("u0") is False
    assert state.known_users() == reference.known_users()


def test_a_large_batch_is_learnt_whole(make_state: MakeState) -> None:
    """More events than one pipelined round trip takes (a replica seeding Redis at start)."""
    rng = np.random.default_rng(3)
    rows = [
        (f"u{rng.integers(50)}", f"i{rng.integers(200)}", "view", 1_000.0 + t) for t in range(2_500)
    ]
    reference, state = InProcessState(OnlineConfig()), make_state(OnlineConfig())
    reference.learn_many(rows)
    state.learn_many(iter(rows))  # any iterable, a generator included
    assert _answers(state, ["u1", "u7"]) == _answers(reference, ["u1", "u7"])


def test_a_redis_state_is_shared_by_two_clients(redis_server) -> None:
    from equilibra.online.redis_state import RedisState

    prefix = f"t{uuid.uuid4().hex[:12]}"
    one = RedisState(redis_server.url, prefix=prefix)
    two = RedisState(redis_server.url, prefix=prefix)
    one.learn_one("u", "a", "view", 100.0)
    one.learn_one("u", "b", "purchase", 160.0)
    seen = two.user("u")
    assert seen is not None and [s.item for s in seen.history] == ["a", "b"]
    assert seen.converted == {"b"}
    assert [item for item, _ in two.neighbours(["a"], 5)] == ["b"]
    assert two.clock == 160.0 and two.events == 2
    assert one.claim_seed() and not two.claim_seed()  # only the first replica seeds it


def test_redis_unreachable_degrades_to_an_empty_state_and_recovers(tmp_path, caplog) -> None:
    from conftest import RedisServer

    from equilibra.online.redis_state import RedisState

    if __import__("shutil").which("redis-server") is None:
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path)
    server.start()
    state = RedisState(server.url, retry_after_s=0.0)
    state.learn_one("u", "a", "view", 100.0)
    server.stop()
    with caplog.at_level("WARNING", logger="equilibra.online"):
        assert state.user("u") is None  # no exception: an unknown user
        assert state.trending(5) == [] and state.newest(5) == []
        assert state.neighbours(["a"], 5) == []
        counts, first = state.item_stats(["a"])
        assert counts.tolist() == [0.0] and first.tolist() == [float("inf")]
        state.learn_one("u", "b", "view", 110.0)
    assert state.lost_writes == 1 and state.degraded
    assert sum("Redis unreachable" in r.getMessage() for r in caplog.records) == 1  # one line
    server.start()  # an empty Redis (no persistence): it learns again at once
    state.learn_one("u", "c", "view", 120.0)
    seen = state.user("u")
    assert seen is not None and [s.item for s in seen.history] == ["c"]
    assert not state.degraded
    server.stop()


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
