"""Candidate generators behind one protocol (see base.Recommender), registered by name.

Importing this package registers every built-in generator; the composite models that rank
their output (hybrid, learned ranker) live in `equilibra.rank` and register when it is imported.
"""

from equilibra.models import (  # noqa: F401 - imported for their @register side effect
    content,
    ease,
    factorization,
    gru4rec,
    neighbours,
    popularity,
    recent,
    sasrec,
    sequence,
    session_knn,
)
from equilibra.models.base import Recommender
from equilibra.models.registry import MODELS, create_model, model_class, register

__all__ = ["MODELS", "Recommender", "create_model", "model_class", "register"]
