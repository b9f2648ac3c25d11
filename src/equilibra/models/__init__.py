"""Candidate generators behind one protocol (see base.Recommender)."""

from equilibra.models.base import Recommender
from equilibra.models.registry import MODELS, create_model

__all__ = ["MODELS", "Recommender", "create_model"]
