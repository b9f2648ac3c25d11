"""Model names (as the CLI and configs spell them) -> classes, filled by `@register`.

A model module registers its class when it is imported; `equilibra.models` imports the built-in
generators and `equilibra.rank` the composite models (hybrid, ranker), so nothing here imports a
model and `models/` has no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from equilibra.models.base import Recommender

ModelType = TypeVar("ModelType", bound="type[Recommender]")

# name -> class, in registration order (the order `--algorithm` lists them).
MODELS: dict[str, type[Recommender]] = {}


def register(name: str) -> Callable[[ModelType], ModelType]:
    """Class decorator: `@register("als")` makes the class available as `--algorithm als`."""

    def decorate(cls: ModelType) -> ModelType:
        known = MODELS.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"algorithm: {name!r} is already registered by {known.__qualname__}")
        cls.name = name
        MODELS[name] = cls
        return cls

    return decorate


def model_class(name: str) -> type[Recommender]:
    if name not in MODELS:
        raise ValueError(f"algorithm: unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name]


def create_model(name: str, **params: Any) -> Recommender:
    return model_class(name)(**params)
