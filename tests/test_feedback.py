"""The feedback ledger: delayed feedback becomes exactly one outcome per shown item."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from equilibra.data.validate import validate_events
from equilibra.explore import FeedbackLedger, RewardConfig, parse_policy
from equilibra.explore.feedback import outcome_rewards
from equilibra.explore.impressions import slate_rows
from equilibra.explore.slate import Candidates

PRIORS = np.full(2, 0.1)


def test_an_impression_recorded_out_of_time_order_does_not_block_later_ones() -> None:
    """Before: impressions closed in the order they were recorded, so one recorded first but
    later in time held back every earlier-timed impression behind it."""
    ledger = FeedbackLedger(window_s=60)
    ledger.record("late", "u1", 200.0, ["a", "b"], PRIORS)
    ledger.record("early", "u2", 100.0, ["c", "d"], PRIORS)
    closed = ledger.close(170.0)
    assert {o.impression_id for o in closed} == {"early"}
    assert [o.position for o in closed] == [1, 2]
    assert {o.impression_id for o in ledger.close(300.0)} == {"late"}


def test_feedback_naming_a_closed_impression_is_not_credited_to_another() -> None:
    """Before: an event whose impression had closed fell back to the user's latest open
    impression that showed the item, crediting a click to a slate that never earned it."""
    ledger = FeedbackLedger(window_s=60)
    ledger.record("first", "u1", 100.0, ["a", "b"], PRIORS)
    assert len(ledger.close(170.0)) == 2
    ledger.record("second", "u1", 180.0, ["a", "c"], PRIORS)
    assert not ledger.observe("u1", "a", "click", 190.0, impression_id="first")
    assert ledger.late == 1
    assert [o.raw_reward for o in ledger.close(1_000.0)] == [0.0, 0.0]


def test_an_event_without_impression_id_finds_the_users_open_impression() -> None:
    ledger = FeedbackLedger(window_s=60)
    ledger.record("x", "u1", 100.0, ["a", "b"], PRIORS)
    assert ledger.observe("u1", "b", "add_to_cart", 120.0)
    assert not ledger.observe("u1", "b", "click", 90.0)  # before the impression
    assert not ledger.observe("u1", "zzz", "click", 120.0)  # never shown
    assert [o.raw_reward for o in ledger.close(200.0)] == [0.0, 2.0]


def test_the_default_reward_scale_agrees_with_click_probability_priors() -> None:
    """Before: a click was worth 1/8 (a cap of 8) against priors that are click
    probabilities, so every shown item looked ~8x worse than the ranker believed."""
    config = RewardConfig()
    assert (config.click, config.add_to_cart, config.purchase, config.revenue) == (1, 2, 5, 0)
    assert config.scaled(config.value("click")) == 1.0
    assert config.scaled(config.value("add_to_cart") + config.value("click")) == 1.0
    # A policy fed clicks at exactly its prior's rate, through the ledger, keeps that belief.
    rng = np.random.default_rng(0)
    ledger = FeedbackLedger(window_s=0)
    policy = parse_policy("greedy")
    prior = 0.2
    for t in range(3000):
        ledger.record(f"i{t}", "u", float(t), ["item"], np.array([prior]))
        if rng.random() < prior:
            ledger.observe("u", "item", "click", float(t), impression_id=f"i{t}")
        ledger.settle(policy, float(t))
    c = Candidates(items=np.array(["item"]), scores=np.zeros(1), prior=np.array([prior]))
    assert policy.mean(c)[0] == pytest.approx(prior, abs=0.03)


def test_reward_specs_parse_and_bad_ones_name_the_field() -> None:
    config = RewardConfig.parse("click=1,add_to_cart=3,purchase=10,revenue=0.01")
    assert config.value("purchase", 50.0) == pytest.approx(10.5)
    with pytest.raises(ValueError, match="purchase"):
        RewardConfig.parse("purchase=lots")
    with pytest.raises(ValueError, match="name=value"):
        RewardConfig.parse("clicks=1")
    with pytest.raises(ValueError, match="non-negative"):
        RewardConfig(click=-1)


def test_open_impressions_survive_a_restart(store) -> None:
    """Before: open impressions lived only in memory; a restart lost every pending reward."""
    window = 1800.0
    c = Candidates(items=np.array(["a", "b", "c"]), scores=np.array([3.0, 2.0, 1.0]))
    policy = parse_policy("greedy")
    slate = policy.select(c, 2, np.random.default_rng(0))
    t0 = 1_767_000_000.0
    rows = slate_rows(slate, c, impression_id="imp", timestamp=t0, user_id="u1", base_rate=0.05)
    store.append_impressions(pd.DataFrame(rows))
    first = FeedbackLedger(window_s=window)
    first.record("imp", "u1", t0, [e.item for e in slate.entries], slate.propensities)
    shown = slate.entries[0].item
    click = pd.DataFrame(
        [{"user_id": "u1", "item_id": shown, "event_type": "click", "timestamp": t0 + 60,
          "impression_id": "imp"}]
    )  # fmt: skip
    store.append_events(validate_events(click, now=t0 + 100).valid)
    first.observe("u1", shown, "click", t0 + 60, impression_id="imp")
    del first  # the process dies with the impression still open

    reopened = FeedbackLedger(window_s=window)
    opened = store.impressions_frame(open_only=True)
    events = store.events_frame(since=float(opened["timestamp"].min()))
    assert reopened.reopen(opened, events) == 1 and len(reopened) == 1
    outcomes = reopened.close(t0 + window + 1)
    assert [(o.position, o.raw_reward) for o in outcomes] == [(1, 1.0), (2, 0.0)]
    assert store.write_rewards(outcome_rewards(outcomes)) == 2
    assert store.impressions_frame(open_only=True).empty
    assert store.impressions_frame()["reward"].tolist() == [1.0, 0.0]


def test_without_impression_id_the_latest_shown_impression_by_time_is_credited() -> None:
    ledger = FeedbackLedger(window_s=60)
    ledger.record("later", "u1", 20.0, ["a"], np.full(1, 0.1))
    ledger.record("earlier", "u1", 10.0, ["a"], np.full(1, 0.1))  # recorded second
    assert ledger.observe("u1", "a", "click", 25.0)
    earned = {o.impression_id: o.raw_reward for o in ledger.close(1_000.0)}
    assert earned == {"later": 1.0, "earlier": 0.0}
    with pytest.raises(ValueError, match="cap"):
        RewardConfig.parse("cap=nan")


def test_an_adopted_impression_counts_each_event_once_and_leaves_the_others_alone() -> None:
    """`adopt`: another replica's open impressions with the events since, attributed to them
    alone; the same event offered again (the feedback bus) is not counted twice."""
    ledger = FeedbackLedger(window_s=60.0)
    ledger.record("own", "u1", 100.0, ["a", "b"], np.array([0.1, 0.1]))
    gone = pd.DataFrame(
        {
            "impression_id": ["theirs", "theirs"],
            "user_id": ["u1", "u1"],
            "timestamp": [110.0, 110.0],
            "position": [1, 2],
            "item_id": ["b", "c"],
            "prior": [0.1, 0.1],
            "exposure": [1.0, 1.0],
            "policy": ["greedy", "greedy"],
            "explore": [False, False],
            "segment": ["known", "known"],
            "placement": ["", ""],
            "variant": [None, None],
        }
    )
    events = pd.DataFrame(
        {
            "user_id": ["u1"],
            "item_id": ["c"],
            "event_type": ["click"],
            "timestamp": [120.0],
            "value": [None],
            "impression_id": [None],
        }
    )
    assert ledger.adopt(gone, events) == 1
    assert ledger.adopt(gone, events) == 0  # already open here
    assert not ledger.observe("u1", "c", "click", 120.0)  # the bus offers the same click again
    assert ledger.observe("u1", "c", "click", 125.0)  # a second click is a second click
    rewards = {(o.impression_id, o.item): o.raw_reward for o in ledger.close(1_000.0)}
    assert rewards == {("own", "a"): 0.0, ("own", "b"): 0.0, ("theirs", "b"): 0.0,
                       ("theirs", "c"): 2.0}  # fmt: skip
