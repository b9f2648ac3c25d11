"""Every algorithm `fit --algorithm` accepts: the generators of `models` and the composite
models of `rank`, registered by importing both packages."""

from equilibra import rank  # noqa: F401 - registers hybrid and ranker
from equilibra.models import MODELS, create_model, model_class

__all__ = ["MODELS", "create_model", "model_class"]
