"""Recommendation methods behind one interface; `make_model(name, **params)` picks one."""

from .base import MODELS, Recommender, make_model, model_param_grid, register_model
from .lm import FinetunedLMRecommender, PretrainedLMRecommender

register_model(PretrainedLMRecommender.name, PretrainedLMRecommender)
register_model(FinetunedLMRecommender.name, FinetunedLMRecommender)

__all__ = ["MODELS", "Recommender", "make_model", "model_param_grid", "register_model"]
