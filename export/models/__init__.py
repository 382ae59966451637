"""Recommendation methods behind one interface; `make_model(name, **params)` picks one."""

from .base import MODELS, Recommender, make_model, model_param_grid, register_model

__all__ = ["MODELS", "Recommender", "make_model", "model_param_grid", "register_model"]
