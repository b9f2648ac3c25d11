import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from equilibra.data.interactions import EventWeights, IdMap, Interactions
from equilibra.errors import EquilibraError

DAY = 86_400.0


def log(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "value"])


def test_weights_sum_per_cell_and_flags_record_types():
    x = Interactions.from_frame(
        log(
            [
                ["u1", "a", "view", 10.0, None],
                ["u1", "a", "view", 20.0, None],
                ["u1", "a", "purchase", 30.0, None],
                ["u2", "b", "rating", 40.0, 4.0],
                ["u2", "a", "add_to_cart", 50.0, None],
            ]
        )
    )
    u, i = x.users.to_dense(["u1", "u2", "u2"]), x.items.to_dense(["a", "b", "a"])
    assert np.asarray(x.matrix[u, i]).ravel().tolist() == [10.0, 4.0, 4.0]
    assert x.last_seen[u[0], i[0]] == 30.0
    converted = x.converted()
    assert converted[u[0], i[0]] and converted[u[2], i[2]] and not converted[u[1], i[1]]
    assert x.interacted().nnz == 3 and x.n_events == 5


def test_time_decay_halves_weight_per_half_life():
    x = Interactions.from_frame(
        log([["u", "old", "view", 0.0, None], ["u", "new", "view", 10 * DAY, None]]),
        EventWeights(half_life_days=10),
    )
    old, new = x.items.to_dense(["old", "new"])
    assert x.matrix[0, old] == pytest.approx(0.5) and x.matrix[0, new] == pytest.approx(1.0)


def test_fixed_catalogue_keeps_untouched_items_and_rejects_unknown_ones():
    x = Interactions.from_frame(log([["u", "a", "view", 1.0, None]]), items=["a", "cold"])
    assert x.shape == (1, 2) and x.matrix[:, 1].nnz == 0
    with pytest.raises(EquilibraError, match="not among the given ids"):
        Interactions.from_frame(log([["u", "zzz", "view", 1.0, None]]), items=["a"])


def test_weight_spec_parsing():
    weights = EventWeights.parse("view=0.5,purchase=10")
    assert (weights.view, weights.purchase, weights.add_to_cart) == (0.5, 10.0, 4.0)
    with pytest.raises(EquilibraError, match="unknown event type"):
        EventWeights.parse("like=1")


def test_id_map_round_trip():
    ids = IdMap(["x", "y", "z"])
    assert ids.to_dense(["z", "x", "nope"]).tolist() == [2, 0, -1]
    assert ids.to_external([1]).tolist() == ["y"]


def test_events_frame_round_trips():
    frame = log([["u1", "a", "view", 1.0, None], ["u2", "b", "rating", 2.0, 3.0]])
    back = Interactions.from_frame(frame).events_frame()
    assert back[["user_id", "item_id", "event_type"]].values.tolist() == [
        ["u1", "a", "view"],
        ["u2", "b", "rating"],
    ]


events_strategy = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.integers(0, 7),
        st.sampled_from(["view", "click", "add_to_cart", "purchase", "favorite"]),
        st.floats(0, 1e6),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(events_strategy)
def test_matrix_total_equals_sum_of_event_weights(rows):
    frame = pd.DataFrame(
        [[f"u{u}", f"i{i}", t, ts] for u, i, t, ts in rows],
        columns=["user_id", "item_id", "event_type", "timestamp"],
    )
    weights = EventWeights()
    x = Interactions.from_frame(frame, weights)
    expected = sum(getattr(weights, t) for _, _, t, _ in rows)
    assert x.matrix.sum() == pytest.approx(expected, rel=1e-5)
    assert x.matrix.nnz == len({(u, i) for u, i, _, _ in rows})
    assert x.last_seen.nnz == x.type_flags.nnz == x.matrix.nnz


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12))
def test_few_row_sparse_helpers_match_scipy(seed: int, n_rows: int) -> None:
    import scipy.sparse as sp

    from equilibra.data.sparse import rows_times, take_rows

    rng = np.random.default_rng(seed)
    left = sp.random(30, 40, density=rng.uniform(0, 0.3), format="csr", random_state=seed)
    right = sp.random(40, 50, density=rng.uniform(0, 0.3), format="csr", random_state=seed + 1)
    rows = rng.integers(0, 30, n_rows)
    taken = take_rows(left, rows)
    assert np.array_equal(taken.toarray(), left[rows].toarray())
    assert np.allclose(rows_times(taken, right).toarray(), (left[rows] @ right).toarray())
