"""Content-based: items as TF-IDF of their text plus categories and price band.

A user's profile is the weighted mean of the vectors of items they interacted with; scores are
cosine similarities between profile and item vectors. Needs only metadata on the item side, so an
item nobody has touched yet is recommendable and has similar items from its first minute.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.interactions import Interactions
from equilibra.models.base import Recommender, normalise_rows, top_k
from equilibra.models.registry import register


def item_features(
    interactions: Interactions,
    items: pd.DataFrame,
    max_features: int = 20_000,
    category_weight: float = 1.0,
    price_bands: int = 5,
    price_weight: float = 0.3,
) -> sp.csr_matrix:
    """Row-normalised item vectors in the snapshot's item order (zeros where no metadata)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    n_items = interactions.shape[1]
    table = items.drop_duplicates("item_id", keep="last").set_index("item_id")
    table = table.reindex(interactions.items.ids)
    text = (
        table.get("title", pd.Series("", index=table.index)).fillna("").astype(str)
        + " "
        + table.get("description", pd.Series("", index=table.index)).fillna("").astype(str)
    )
    blocks = []
    if text.str.strip().str.len().gt(0).any():
        vectorizer = TfidfVectorizer(
            max_features=max_features,
            sublinear_tf=True,
            token_pattern=r"(?u)\b\w[\w-]+\b",
            min_df=1,
        )
        blocks.append(sp.csr_matrix(vectorizer.fit_transform(text.to_numpy())))
    if "categories" in table:
        cats = table["categories"].fillna("").astype(str).str.split("|")
        exploded = cats.explode()
        exploded = exploded[exploded.str.len() > 0]
        if len(exploded):
            rows = pd.Index(table.index).get_indexer(exploded.index)
            codes, names = pd.factorize(exploded.to_numpy())
            # Deeper levels of a category path are more specific: weigh them up.
            depth = exploded.groupby(level=0).cumcount().to_numpy() + 1
            blocks.append(
                category_weight
                * sp.csr_matrix(
                    (np.sqrt(depth).astype(np.float64), (rows, codes)), shape=(n_items, len(names))
                )
            )
    if "price" in table and price_bands > 1:
        price = pd.to_numeric(table["price"], errors="coerce")
        known = price.notna().to_numpy()
        if known.sum() >= price_bands:
            bands = pd.qcut(price[known].rank(method="first"), price_bands, labels=False)
            rows = np.flatnonzero(known)
            blocks.append(
                price_weight
                * sp.csr_matrix(
                    (np.ones(len(rows)), (rows, bands.to_numpy().astype(int))),
                    shape=(n_items, price_bands),
                )
            )
    if not blocks:
        raise ValueError("items: no title, description, categories or price to build content from")
    return normalise_rows(sp.hstack(blocks).tocsr()).astype(np.float32)


@register("content")
class ContentBased(Recommender):
    def __init__(
        self, max_features: int = 20_000, category_weight: float = 1.0, price_bands: int = 5
    ):
        self.max_features = max_features
        self.category_weight = category_weight
        self.price_bands = price_bands

    def _fit(
        self, interactions: Interactions, items: pd.DataFrame | None, users: pd.DataFrame | None
    ) -> None:
        if items is None:
            raise ValueError("items: the content model needs an item table")
        self.item_features_ = item_features(
            interactions, items, self.max_features, self.category_weight, self.price_bands
        )
        weights = sp.csr_matrix(interactions.matrix, dtype=np.float32, copy=True)
        weights.data = np.log1p(weights.data)  # many views of one item should not drown the rest
        self.user_items_ = weights

    def user_profiles(self, users: np.ndarray) -> sp.csr_matrix:
        return normalise_rows(sp.csr_matrix(self.user_items_[users] @ self.item_features_))

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return (self.user_profiles(users) @ self.item_features_.T).toarray()

    def similar_items(self, items: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        items = np.asarray(items, dtype=np.int64)
        block = (self.item_features_[items] @ self.item_features_.T).toarray()
        block[block <= 0] = -np.inf
        block[np.arange(len(items)), items] = -np.inf
        return top_k(block, k)
