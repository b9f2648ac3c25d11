"""A seedable synthetic shop: catalogue, users with latent tastes, and their sessions.

It is the embedded default dataset, the test data and the simulator's base. Everything is drawn
from a hidden truth (category and item vectors, user tastes, item popularity) that is kept in
:class:`ShopTruth`, so a model's or a policy's answers can be checked against it.

The shop's marginals are exact where a preset fixes them (visitors, items, views, carts and
purchases): views are spread over sessions to the exact total, every catalogue item is seen at
least once (as items in a real event log are), and exactly the requested number of views turn into
carts and of carts into purchases, drawn with probabilities that follow the user's affinity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from equilibra.data.columns import Columns
from equilibra.errors import EquilibraError

C = Columns
DAY = 86_400.0

ADJECTIVES = [
    "classic",
    "modern",
    "compact",
    "premium",
    "eco",
    "vintage",
    "smart",
    "light",
    "sturdy",
    "soft",
    "bold",
    "slim",
    "deluxe",
    "basic",
    "pro",
    "mini",
    "ultra",
    "cosy",
    "sport",
    "urban",
]
STYLE_WORDS = [
    "cotton",
    "leather",
    "steel",
    "wooden",
    "wireless",
    "organic",
    "waterproof",
    "handmade",
    "portable",
    "ergonomic",
    "minimalist",
    "colourful",
    "black",
    "white",
    "silver",
    "gold",
    "floral",
    "striped",
    "matte",
    "glossy",
    "recycled",
    "ceramic",
    "bamboo",
    "glass",
    "velvet",
    "denim",
    "silk",
    "wool",
    "linen",
    "rubber",
    "carbon",
    "aluminium",
    "vegan",
    "scented",
    "foldable",
    "adjustable",
    "rechargeable",
    "stackable",
    "quiet",
    "powerful",
]
TOP_CATEGORIES = [
    "Electronics",
    "Home",
    "Kitchen",
    "Fashion",
    "Beauty",
    "Sports",
    "Toys",
    "Garden",
    "Books",
    "Health",
    "Automotive",
    "Office",
    "Pets",
    "Baby",
    "Music",
    "Tools",
    "Grocery",
    "Jewellery",
    "Shoes",
    "Outdoor",
    "Games",
    "Crafts",
    "Lighting",
    "Luggage",
    "Watches",
]
NOUNS = [
    "lamp",
    "chair",
    "kettle",
    "jacket",
    "serum",
    "ball",
    "puzzle",
    "hose",
    "novel",
    "vitamin",
    "mat",
    "pen",
    "leash",
    "stroller",
    "speaker",
    "drill",
    "coffee",
    "ring",
    "sneaker",
    "tent",
    "console",
    "yarn",
    "bulb",
    "suitcase",
    "watch",
    "headphones",
    "table",
    "pan",
    "shirt",
    "cream",
    "racket",
    "doll",
    "rake",
    "atlas",
    "bandage",
    "cover",
    "folder",
    "bowl",
    "bottle",
    "guitar",
    "saw",
    "tea",
    "necklace",
    "boot",
    "backpack",
]
BRANDS = [
    "Acme",
    "Nordlys",
    "Kirra",
    "Velta",
    "Orbis",
    "Lumen",
    "Tessa",
    "Brio",
    "Solace",
    "Quill",
    "Marlo",
    "Zenith",
    "Fjord",
    "Aster",
    "Pico",
    "Rhea",
    "Helix",
    "Nova",
    "Oaken",
    "Sable",
]


@dataclass(frozen=True)
class ShopConfig:
    """Everything that shapes a synthetic shop. Presets fill it in; `seed` makes it repeatable."""

    n_users: int = 3_000
    n_items: int = 1_500
    days: float = 60.0
    start: float = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    n_top_categories: int = 12
    leaves_per_top: int = 6
    latent_dim: int = 16
    # Sessions per user are 1 + Geometric; a mean of 1.0 means every user visits once.
    sessions_per_user: float = 6.0
    views_per_session: float = 4.0
    # Exact totals where given (None: whatever the per-user draws add up to).
    total_views: int | None = None
    total_carts: int | None = None
    total_purchases: int | None = None
    cart_rate: float = 0.08  # carts per view, when total_carts is None
    purchase_rate: float = 0.35  # purchases per cart, when total_purchases is None
    favorite_rate: float = 0.01  # favourites per view
    # log-popularity ~ Normal(0, sigma): larger sigma, longer tail.
    popularity_sigma: float = 1.4
    # How strongly a user's taste (vs. plain popularity) steers what they look at.
    taste_strength: float = 2.5
    # Share of the catalogue that appears during the window rather than before it.
    new_item_share: float = 0.2
    # Extra log-popularity of a brand-new item, fading with `new_item_days`.
    new_item_boost: float = 1.0
    new_item_days: float = 7.0
    # How far user tastes move from their start to a second taste by the end of the window.
    drift: float = 0.3
    # Probability that the next view in a session stays in the same leaf category.
    session_stickiness: float = 0.75
    # Probability that a returning user re-buys an item they bought before, per session.
    repeat_purchase: float = 0.05
    mean_gap_days: float = 7.0
    seed: int = 42


PRESETS: dict[str, ShopConfig] = {
    # Unit tests: a few thousand events in well under a second.
    "tiny": ShopConfig(
        n_users=200,
        n_items=150,
        days=30.0,
        n_top_categories=5,
        leaves_per_top=3,
        sessions_per_user=3.0,
        views_per_session=3.0,
    ),
    # The embedded default: big enough to learn from, small enough for a 3-minute demo.
    "demo": ShopConfig(),
    # The public RetailRocket dataset's published shape (2015-05-03 .. 2015-09-18).
    "retailrocket": ShopConfig(
        n_users=1_407_580,
        n_items=235_061,
        days=138.0,
        start=datetime(2015, 5, 3, 3, tzinfo=UTC).timestamp(),
        n_top_categories=25,
        leaves_per_top=16,
        sessions_per_user=1.25,
        views_per_session=1.5,
        total_views=2_664_312,
        total_carts=69_332,
        total_purchases=22_457,
        popularity_sigma=1.6,
        new_item_share=0.25,
        drift=0.3,
        mean_gap_days=14.0,
        repeat_purchase=0.0,
        favorite_rate=0.0,
    ),
}


@dataclass
class ShopTruth:
    """The hidden truth the shop was drawn from."""

    user_taste_start: np.ndarray  # users x d
    user_taste_end: np.ndarray  # users x d (tastes drift linearly between the two)
    item_vectors: np.ndarray  # items x d
    item_log_popularity: np.ndarray  # items
    item_leaf: np.ndarray  # items -> leaf index
    leaf_top: np.ndarray  # leaf -> top-level category index
    item_created_at: np.ndarray  # items, Unix seconds

    def affinity(
        self, users: np.ndarray, items: np.ndarray, at: np.ndarray | float, config: ShopConfig
    ) -> np.ndarray:
        """A user's true affinity to an item at a time (taste . item vector, drift included)."""
        alpha = np.clip((np.asarray(at) - config.start) / (config.days * DAY), 0, 1) * config.drift
        alpha = np.asarray(alpha)[..., None] if np.ndim(alpha) else alpha
        taste = (1 - alpha) * self.user_taste_start[users] + alpha * self.user_taste_end[users]
        return np.einsum("...d,...d->...", taste, self.item_vectors[items])


@dataclass
class SyntheticShop:
    config: ShopConfig
    # Events in integer form (dense ids); `events` turns them into the canonical frame.
    user_index: np.ndarray
    item_index: np.ndarray
    event_type: np.ndarray  # object array of canonical type names
    timestamp: np.ndarray  # Unix seconds, float64
    items: pd.DataFrame
    users: pd.DataFrame
    truth: ShopTruth
    transaction_id: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @staticmethod
    def user_id(index: np.ndarray) -> np.ndarray:
        return np.char.add("u", index.astype(str)).astype(object)

    @staticmethod
    def item_id(index: np.ndarray) -> np.ndarray:
        return np.char.add("i", index.astype(str)).astype(object)

    @property
    def events(self) -> pd.DataFrame:
        """Canonical events: user_id, item_id, event_type, timestamp (seconds), time-ordered."""
        return pd.DataFrame(
            {
                C.user: self.user_id(self.user_index),
                C.item: self.item_id(self.item_index),
                C.event_type: self.event_type,
                C.timestamp: self.timestamp,
            }
        )

    def __len__(self) -> int:
        return len(self.timestamp)

    def write(
        self, folder: Path | str, fmt: str = "canonical", compress: bool = False
    ) -> dict[str, Path]:
        """Write events (and the catalogue and users) in the canonical or RetailRocket format."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".csv.gz" if compress else ".csv"
        paths: dict[str, Path] = {}
        if fmt == "retailrocket":
            names = {"view": "view", "add_to_cart": "addtocart", "purchase": "transaction"}
            keep = np.isin(self.event_type, list(names))
            tx = self.transaction_id[keep].astype(float)
            frame = pd.DataFrame(
                {
                    "timestamp": np.round(self.timestamp[keep] * 1000).astype(np.int64),
                    "visitorid": self.user_index[keep],
                    "event": pd.Series(self.event_type[keep]).map(names).to_numpy(),
                    "itemid": self.item_index[keep],
                    "transactionid": pd.array(np.where(tx >= 0, tx, np.nan)).astype("Int64"),
                }
            )
            paths["events"] = folder / f"events{suffix}"
            frame.to_csv(paths["events"], index=False)
            return paths
        if fmt != "canonical":
            raise EquilibraError(
                f"format: the synthetic shop writes canonical or retailrocket, not {fmt!r}"
            )
        paths["events"] = folder / f"events{suffix}"
        self.events.to_csv(paths["events"], index=False, float_format="%.3f")
        paths["items"] = folder / "items.csv"
        self.items.to_csv(paths["items"], index=False)
        paths["users"] = folder / "users.csv"
        self.users.to_csv(paths["users"], index=False)
        return paths


def preset(name: str, **overrides: object) -> ShopConfig:
    if name not in PRESETS:
        raise EquilibraError(
            f"preset: unknown preset {name!r}; expected one of {', '.join(PRESETS)}"
        )
    return replace(PRESETS[name], **overrides)  # type: ignore[arg-type]


def generate_shop(config: ShopConfig | str = "demo", seed: int | None = None) -> SyntheticShop:
    if isinstance(config, str):
        config = preset(config)
    if seed is not None:
        config = replace(config, seed=seed)
    return _Generator(config).run()


def _normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True).clip(1e-9)


def _exact_choice(rng: np.random.Generator, weights: np.ndarray, count: int) -> np.ndarray:
    """`count` distinct indices drawn without replacement with probability ∝ weights."""
    count = min(count, len(weights))
    keys = np.log(np.clip(weights, 1e-300, None)) + rng.gumbel(size=len(weights))
    return np.argpartition(-keys, count - 1)[:count] if count else np.empty(0, dtype=np.int64)


class _Generator:
    def __init__(self, config: ShopConfig):
        self.cfg = config
        self.rng = np.random.default_rng(config.seed)
        self.end = config.start + config.days * DAY

    # --- catalogue ----------------------------------------------------------------------------
    def catalogue(self) -> tuple[pd.DataFrame, ShopTruth]:
        cfg, rng, d = self.cfg, self.rng, self.cfg.latent_dim
        n_top = cfg.n_top_categories
        n_leaf = n_top * cfg.leaves_per_top
        top_vec = _normalise(rng.normal(size=(n_top, d)))
        leaf_top = np.repeat(np.arange(n_top), cfg.leaves_per_top)
        leaf_vec = _normalise(top_vec[leaf_top] + 0.5 * _normalise(rng.normal(size=(n_leaf, d))))
        # Category sizes are skewed too: a few big departments, many small ones.
        leaf_weight = rng.dirichlet(np.full(n_leaf, 0.8))
        item_leaf = rng.choice(n_leaf, size=cfg.n_items, p=leaf_weight)
        item_vec = _normalise(
            leaf_vec[item_leaf] + 0.6 * _normalise(rng.normal(size=(cfg.n_items, d)))
        )
        log_pop = rng.normal(0.0, cfg.popularity_sigma, size=cfg.n_items)
        is_new = rng.random(cfg.n_items) < cfg.new_item_share
        created = np.where(
            is_new,
            # New items arrive until a day before the end, so each can still be seen.
            rng.uniform(cfg.start, self.end - DAY, cfg.n_items),
            cfg.start - rng.uniform(0, 365 * DAY, cfg.n_items),
        )
        # Prices: each leaf has its own level; items scatter around it (log-normal).
        leaf_price = np.exp(rng.normal(3.2, 1.0, n_leaf))
        price = np.round(leaf_price[item_leaf] * np.exp(rng.normal(0, 0.4, cfg.n_items)), 2)
        # Words in titles and descriptions follow the item's vector, so text carries signal.
        word_vec = _normalise(rng.normal(size=(len(STYLE_WORDS), d)))
        word_logits = 3.0 * item_vec @ word_vec.T + rng.gumbel(size=(cfg.n_items, len(STYLE_WORDS)))
        words = np.argsort(-word_logits, axis=1)[:, :3]
        top_names = [
            TOP_CATEGORIES[i % len(TOP_CATEGORIES)]
            + ("" if i < len(TOP_CATEGORIES) else f" {i // len(TOP_CATEGORIES) + 1}")
            for i in range(n_top)
        ]
        leaf_names = [
            f"{top_names[leaf_top[j]]} {NOUNS[j % len(NOUNS)]}s"
            + ("" if j < len(NOUNS) else f" {j // len(NOUNS) + 1}")
            for j in range(n_leaf)
        ]
        brand = rng.integers(0, len(BRANDS), cfg.n_items)
        adjective = rng.integers(0, len(ADJECTIVES), cfg.n_items)
        style = np.array(STYLE_WORDS, dtype=object)
        noun = np.array([NOUNS[j % len(NOUNS)] for j in range(n_leaf)], dtype=object)[item_leaf]
        brands = np.array(BRANDS, dtype=object)[brand]
        titles = (
            brands
            + " "
            + np.array(ADJECTIVES, dtype=object)[adjective]
            + " "
            + style[words[:, 0]]
            + " "
            + noun
        )
        descriptions = (
            "A "
            + style[words[:, 0]]
            + ", "
            + style[words[:, 1]]
            + " and "
            + style[words[:, 2]]
            + " "
            + noun
            + " by "
            + brands
            + "."
        )
        categories = (
            np.array(top_names, dtype=object)[leaf_top[item_leaf]]
            + "|"
            + np.array(leaf_names, dtype=object)[item_leaf]
        )
        items = pd.DataFrame(
            {
                C.item: SyntheticShop.item_id(np.arange(cfg.n_items)),
                C.title: titles,
                C.description: descriptions,
                C.categories: categories,
                C.price: price,
                C.available: rng.random(cfg.n_items) > 0.03,
                C.created_at: np.round(created, 3),
                "brand": brands,
            }
        )
        truth = ShopTruth(
            user_taste_start=np.empty((0, d)),
            user_taste_end=np.empty((0, d)),
            item_vectors=item_vec,
            item_log_popularity=log_pop,
            item_leaf=item_leaf,
            leaf_top=leaf_top,
            item_created_at=created,
        )
        self.top_vec = top_vec
        return items, truth

    # --- users ---------------------------------------------------------------------------------
    def users(self, truth: ShopTruth) -> pd.DataFrame:
        cfg, rng, d = self.cfg, self.rng, self.cfg.latent_dim
        n_top = len(self.top_vec)

        def tastes() -> np.ndarray:
            # Each user leans to one or two departments, plus a personal twist.
            first = rng.integers(0, n_top, cfg.n_users)
            second = rng.integers(0, n_top, cfg.n_users)
            mix = rng.uniform(0.5, 1.0, cfg.n_users)[:, None]
            base = mix * self.top_vec[first] + (1 - mix) * self.top_vec[second]
            return _normalise(base + 0.5 * _normalise(rng.normal(size=(cfg.n_users, d))))

        truth.user_taste_start = tastes()
        truth.user_taste_end = _normalise((1 - 0.5) * truth.user_taste_start + 0.5 * tastes())
        regions = np.array(["north", "south", "east", "west", "centre"], dtype=object)
        devices = np.array(["mobile", "desktop", "tablet"], dtype=object)
        return pd.DataFrame(
            {
                C.user: SyntheticShop.user_id(np.arange(cfg.n_users)),
                "region": regions[rng.integers(0, len(regions), cfg.n_users)],
                "device": devices[rng.choice(3, cfg.n_users, p=[0.6, 0.3, 0.1])],
            }
        )

    # --- sessions and views --------------------------------------------------------------------
    def sessions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (session user, session start time, views per session)."""
        cfg, rng = self.cfg, self.rng
        extra = cfg.sessions_per_user - 1.0
        per_user = 1 + (
            rng.geometric(1.0 / (1.0 + extra), cfg.n_users) - 1
            if extra > 0
            else np.zeros(cfg.n_users, dtype=np.int64)
        )
        user = np.repeat(np.arange(cfg.n_users), per_user)
        first = rng.uniform(cfg.start, self.end - 600, cfg.n_users)
        order_in_user = np.arange(len(user)) - np.repeat(np.cumsum(per_user) - per_user, per_user)
        gaps = rng.exponential(cfg.mean_gap_days * DAY, len(user)) * (order_in_user > 0)
        # Cumulative gaps within each user, restarting at each user's first session.
        cumulative = np.cumsum(gaps)
        cumulative -= np.repeat(cumulative[np.cumsum(per_user) - per_user], per_user)
        start = first[user] + cumulative
        late = start >= self.end - 600
        start[late] = rng.uniform(first[user[late]], self.end - 600)
        views = rng.geometric(1.0 / cfg.views_per_session, len(user))
        if cfg.total_views is not None:
            views = self._adjust_total(views, cfg.total_views)
        return user, start, views

    def _adjust_total(self, counts: np.ndarray, target: int) -> np.ndarray:
        """Add or remove single views at random (never below 1) until the total is exact."""
        counts = counts.copy()
        if target < len(counts):
            raise EquilibraError("total_views: must be at least the number of sessions")
        while (diff := target - int(counts.sum())) != 0:
            if diff > 0:
                np.add.at(counts, self.rng.integers(0, len(counts), diff), 1)
            else:
                can = np.flatnonzero(counts > 1)
                take = self.rng.choice(can, size=min(-diff, len(can)), replace=False)
                counts[take] -= 1
        return counts

    def views(
        self, truth: ShopTruth, s_user: np.ndarray, s_start: np.ndarray, s_views: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (user, item, time) of every view."""
        cfg, rng = self.cfg, self.rng
        n_leaf = len(truth.leaf_top)
        n_views = int(s_views.sum())
        v_session = np.repeat(np.arange(len(s_user)), s_views)
        v_user = s_user[v_session]
        step = np.arange(n_views) - np.repeat(np.cumsum(s_views) - s_views, s_views)
        dwell = rng.exponential(75.0, n_views) * (step > 0)
        offsets = np.cumsum(dwell)
        offsets -= np.repeat(offsets[np.cumsum(s_views) - s_views], s_views)
        v_time = np.minimum(s_start[v_session] + offsets, self.end - 1)

        # Session leaf: the user's taste (as of the session) against leaf vectors, plus size.
        leaf_vec = _normalise(
            np.stack(
                [
                    truth.item_vectors[truth.item_leaf == j].mean(0)
                    if np.any(truth.item_leaf == j)
                    else np.zeros(cfg.latent_dim)
                    for j in range(n_leaf)
                ]
            )
        )
        leaf_size = np.bincount(truth.item_leaf, minlength=n_leaf)
        leaf_log_size = np.log(np.maximum(leaf_size, 1e-9)) + np.where(leaf_size == 0, -1e9, 0)
        s_leaf = np.empty(len(s_user), dtype=np.int64)
        for lo in range(0, len(s_user), 50_000):
            sl = slice(lo, lo + 50_000)
            alpha = (np.clip((s_start[sl] - cfg.start) / (cfg.days * DAY), 0, 1) * cfg.drift)[
                :, None
            ]
            taste = (1 - alpha) * truth.user_taste_start[s_user[sl]] + alpha * truth.user_taste_end[
                s_user[sl]
            ]
            logits = 2 * cfg.taste_strength * taste @ leaf_vec.T + 0.5 * leaf_log_size
            s_leaf[sl] = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        v_leaf = s_leaf[v_session]
        # Some views wander to a sibling leaf of the same department.
        wander = (step > 0) & (rng.random(n_views) > cfg.session_stickiness)
        siblings = truth.leaf_top[v_leaf[wander]] * cfg.leaves_per_top + rng.integers(
            0, cfg.leaves_per_top, int(wander.sum())
        )
        v_leaf[wander] = np.where(leaf_size[siblings] > 0, siblings, v_leaf[wander])

        v_item = self._pick_items(truth, v_user, v_leaf, v_time)
        v_item = self._cover_catalogue(truth, v_item, v_time)
        return v_user, v_item, v_time

    def _pick_items(
        self,
        truth: ShopTruth,
        v_user: np.ndarray,
        v_leaf: np.ndarray,
        v_time: np.ndarray,
        candidates: int = 8,
    ) -> np.ndarray:
        """Within a leaf: a few items drawn by popularity, one chosen by taste and freshness."""
        cfg, rng = self.cfg, self.rng
        order = np.argsort(truth.item_leaf, kind="stable")
        leaf_start = np.searchsorted(truth.item_leaf[order], np.arange(len(truth.leaf_top)))
        weight = np.exp(truth.item_log_popularity[order])
        cum = np.cumsum(weight)
        base = np.concatenate([[0.0], cum])
        n_views = len(v_user)
        chosen = np.empty(n_views, dtype=np.int64)
        leaf_end = np.append(leaf_start[1:], len(order))
        for lo in range(0, n_views, 200_000):
            sl = slice(lo, lo + 200_000)
            leaf = v_leaf[sl]
            left, right = base[leaf_start[leaf]], base[leaf_end[leaf]]
            u = rng.random((len(leaf), candidates))
            pos = np.searchsorted(cum, left[:, None] + u * (right - left)[:, None], side="right")
            pos = np.minimum(pos, leaf_end[leaf][:, None] - 1)
            cand = order[pos]
            at = v_time[sl][:, None]
            age = at - truth.item_created_at[cand]
            logits = cfg.taste_strength * truth.affinity(
                v_user[sl][:, None], cand, at, cfg
            ) + cfg.new_item_boost * np.exp(-np.clip(age, 0, None) / (cfg.new_item_days * DAY))
            logits = np.where(age >= 0, logits, -np.inf)  # not on sale yet
            none_ok = ~np.isfinite(logits).any(axis=1)
            logits[none_ok, 0] = 0.0  # nothing on sale yet in this leaf: keep the first draw
            pick = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
            chosen[sl] = cand[np.arange(len(leaf)), pick]
            # A leaf whose only draws were not yet on sale: fall back to its oldest item.
            if none_ok.any():
                oldest = self._oldest_in_leaf(truth, order, leaf_start, leaf_end)
                chosen[sl][none_ok] = oldest[leaf[none_ok]]
        return chosen

    @staticmethod
    def _oldest_in_leaf(
        truth: ShopTruth, order: np.ndarray, leaf_start: np.ndarray, leaf_end: np.ndarray
    ) -> np.ndarray:
        oldest = np.zeros(len(leaf_start), dtype=np.int64)
        for j, (a, b) in enumerate(zip(leaf_start, leaf_end, strict=True)):
            if b > a:
                members = order[a:b]
                oldest[j] = members[np.argmin(truth.item_created_at[members])]
        return oldest

    def _cover_catalogue(
        self, truth: ShopTruth, v_item: np.ndarray, v_time: np.ndarray
    ) -> np.ndarray:
        """Give every unseen item one view (taken from an item seen more than once) after launch."""
        if self.cfg.total_views is None:
            return v_item
        v_item = v_item.copy()
        by_time = np.argsort(v_time, kind="stable")
        sorted_time = v_time[by_time]
        for _ in range(30):
            counts = np.bincount(v_item, minlength=len(truth.item_leaf))
            unseen = np.flatnonzero(counts == 0)
            if len(unseen) == 0:
                break
            first_ok = np.searchsorted(sorted_time, truth.item_created_at[unseen])
            first_ok = np.minimum(first_ok, len(sorted_time) - 1)
            slot = first_ok + (self.rng.random(len(unseen)) * (len(sorted_time) - first_ok)).astype(
                np.int64
            )
            target = by_time[np.minimum(slot, len(sorted_time) - 1)]
            donor_ok = (counts[v_item[target]] > 1) & (
                v_time[target] >= truth.item_created_at[unseen]
            )
            target, unseen = target[donor_ok], unseen[donor_ok]
            target, first = np.unique(target, return_index=True)
            v_item[target] = unseen[first]
        return v_item

    # --- funnel --------------------------------------------------------------------------------
    def funnel(
        self, truth: ShopTruth, v_user: np.ndarray, v_item: np.ndarray, v_time: np.ndarray
    ) -> dict[str, np.ndarray]:
        cfg, rng = self.cfg, self.rng
        n_views = len(v_user)
        affinity = np.empty(n_views)
        for lo in range(0, n_views, 500_000):
            sl = slice(lo, lo + 500_000)
            affinity[sl] = truth.affinity(v_user[sl], v_item[sl], v_time[sl], cfg)
        # The better the match, the likelier a cart: weights ∝ exp(4 * affinity).
        weight = np.exp(4.0 * affinity)
        n_carts = (
            cfg.total_carts if cfg.total_carts is not None else rng.binomial(n_views, cfg.cart_rate)
        )
        carts = np.sort(_exact_choice(rng, weight, n_carts))
        n_buys = (
            cfg.total_purchases
            if cfg.total_purchases is not None
            else rng.binomial(len(carts), cfg.purchase_rate)
        )
        buys = np.sort(carts[_exact_choice(rng, weight[carts], n_buys)])
        favs = np.flatnonzero(rng.random(n_views) < cfg.favorite_rate * weight / weight.mean())
        cart_time = v_time[carts] + rng.exponential(40.0, len(carts)) + 1.0
        buy_time = v_time[buys] + rng.exponential(600.0, len(buys)) + 60.0
        fav_time = v_time[favs] + rng.exponential(20.0, len(favs)) + 1.0
        return {
            "carts": carts,
            "buys": buys,
            "favs": favs,
            "cart_time": cart_time,
            "buy_time": buy_time,
            "fav_time": fav_time,
        }

    def repeat_purchases(
        self, v_user: np.ndarray, v_item: np.ndarray, v_time: np.ndarray, buys: np.ndarray
    ) -> np.ndarray:
        """Indices of later views of an item the same user bought, turned into re-purchases."""
        if self.cfg.repeat_purchase <= 0 or len(buys) == 0:
            return np.empty(0, dtype=np.int64)
        bought = pd.DataFrame({"u": v_user[buys], "i": v_item[buys], "t": v_time[buys]})
        first = bought.groupby(["u", "i"])["t"].min()
        later = pd.DataFrame({"u": v_user, "i": v_item, "t": v_time, "row": np.arange(len(v_user))})
        joined = later.merge(first.rename("bought_at").reset_index(), on=["u", "i"])
        joined = joined[joined["t"] > joined["bought_at"] + DAY]
        keep = self.rng.random(len(joined)) < self.cfg.repeat_purchase * 10
        return joined["row"].to_numpy()[keep]

    # --- assembly ------------------------------------------------------------------------------
    def run(self) -> SyntheticShop:
        cfg = self.cfg
        if cfg.n_users < 1 or cfg.n_items < 1:
            raise EquilibraError("preset: needs at least one user and one item")
        items, truth = self.catalogue()
        users = self.users(truth)
        s_user, s_start, s_views = self.sessions()
        v_user, v_item, v_time = self.views(truth, s_user, s_start, s_views)
        f = self.funnel(truth, v_user, v_item, v_time)
        # Exact totals stay exact: re-purchases only where no total is fixed.
        again = (
            self.repeat_purchases(v_user, v_item, v_time, f["buys"])
            if cfg.total_purchases is None
            else np.empty(0, dtype=np.int64)
        )
        again = np.setdiff1d(again, f["buys"])
        buys = np.concatenate([f["buys"], again])
        buy_time = np.concatenate([f["buy_time"], v_time[again] + 120.0])
        parts = [
            (v_user, v_item, "view", v_time),
            (v_user[f["carts"]], v_item[f["carts"]], "add_to_cart", f["cart_time"]),
            (v_user[buys], v_item[buys], "purchase", buy_time),
            (v_user[f["favs"]], v_item[f["favs"]], "favorite", f["fav_time"]),
        ]
        user = np.concatenate([p[0] for p in parts])
        item = np.concatenate([p[1] for p in parts])
        kinds = np.concatenate([np.full(len(p[0]), p[2], dtype=object) for p in parts])
        when = np.minimum(np.concatenate([p[3] for p in parts]), self.end - 1e-3)
        when = np.round(when, 3)
        # One transaction per purchase session: same user and the same hour's basket.
        transaction = np.full(len(user), -1, dtype=np.int64)
        is_buy = kinds == "purchase"
        basket = pd.DataFrame({"u": user[is_buy], "h": (when[is_buy] // 3600).astype(np.int64)})
        transaction[is_buy] = basket.groupby(["u", "h"]).ngroup().to_numpy()
        order = np.lexsort((item, user, when))
        return SyntheticShop(
            config=cfg,
            user_index=user[order],
            item_index=item[order],
            event_type=kinds[order],
            timestamp=when[order],
            items=items,
            users=users,
            truth=truth,
            transaction_id=transaction[order],
        )
