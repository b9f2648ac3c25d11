"""Model names (as the CLI and configs spell them) -> classes."""

from __future__ import annotations

from typing import Any

from equilibra.models.base import Recommender


def _classes() -> dict[str, type[Recommender]]:
    from equilibra.models.content import ContentBased
    from equilibra.models.ease import EASE
    from equilibra.models.factorization import ALS, BPR
    from equilibra.models.hybrid import Hybrid
    from equilibra.models.neighbours import ItemKNN, RP3Beta, UserKNN
    from equilibra.models.popularity import Popularity
    from equilibra.models.ranker import LearnedRanker
    from equilibra.models.recent import RecentItems
    from equilibra.models.sequence import CoVisitation

    return {
        cls.name: cls
        for cls in (
            Popularity,
            ItemKNN,
            UserKNN,
            ALS,
            BPR,
            EASE,
            RecentItems,
            ContentBased,
            CoVisitation,
            Hybrid,
            LearnedRanker,
            RP3Beta,
        )
    }


MODELS: tuple[str, ...] = (
    "popularity",
    "itemknn",
    "userknn",
    "als",
    "bpr",
    "ease",
    "recent",
    "content",
    "covisit",
    "hybrid",
    "ranker",
    "rp3beta",
)


def model_class(name: str) -> type[Recommender]:
    classes = _classes()
    if name not in classes:
        raise ValueError(f"algorithm: unknown model {name!r}; expected one of {', '.join(classes)}")
    return classes[name]


def create_model(name: str, **params: Any) -> Recommender:
    return model_class(name)(**params)
