from dataclasses import replace

import numpy as np

from equilibra.data.synthetic import generate_shop, preset


def test_same_seed_same_shop_other_seed_other_shop():
    a, b, c = (
        generate_shop("tiny", seed=1),
        generate_shop("tiny", seed=1),
        generate_shop("tiny", seed=2),
    )
    assert a.events.equals(b.events) and a.items.equals(b.items)
    assert not a.events.equals(c.events)


def test_exact_marginals_when_a_preset_fixes_them():
    # The retailrocket preset's machinery at 1/200 of its size.
    config = replace(
        preset("retailrocket"),
        n_users=7_000,
        n_items=1_200,
        total_views=13_300,
        total_carts=350,
        total_purchases=110,
        n_top_categories=6,
        leaves_per_top=4,
    )
    shop = generate_shop(config)
    kinds = dict(zip(*np.unique(shop.event_type, return_counts=True), strict=True))
    assert kinds == {"view": 13_300, "add_to_cart": 350, "purchase": 110}
    assert len(np.unique(shop.user_index)) == 7_000
    assert len(np.unique(shop.item_index)) == 1_200  # every catalogue item appears
    assert shop.timestamp.max() - shop.timestamp.min() <= config.days * 86_400


def test_funnel_is_causal_and_items_are_on_sale_when_seen():
    shop = generate_shop("tiny", seed=3)
    events = shop.events
    created = shop.truth.item_created_at[shop.item_index]
    assert (shop.timestamp >= created).all()
    views = events[events.event_type == "view"].groupby(["user_id", "item_id"]).timestamp.min()
    carts = (
        events[events.event_type == "add_to_cart"].groupby(["user_id", "item_id"]).timestamp.min()
    )
    joined = carts.to_frame("cart").join(views.rename("view"), how="left")
    assert joined["view"].notna().all() and (joined["cart"] > joined["view"]).all()


def test_taste_drives_purchases_more_than_chance():
    shop = generate_shop("demo", seed=5)
    bought = shop.event_type == "purchase"
    viewed = shop.event_type == "view"
    affinity = shop.truth.affinity(shop.user_index, shop.item_index, shop.timestamp, shop.config)
    assert affinity[bought].mean() > affinity[viewed].mean() + 0.05


def test_catalogue_has_text_categories_and_prices():
    items = generate_shop("tiny").items
    assert (
        items["title"].str.len().min() > 5
        and items["categories"].str.contains("|", regex=False).all()
    )
    assert (items["price"] > 0).all()
