"""Recommendation methods behind one interface; `make_model(name, **params)` picks one."""

from .base import MODELS, Recommender, make_model, model_param_grid, register_model
from ..kg import KnowledgeGraphRecommender
from .bpr import BPRRecommender
from .ease import EASERecommender
from .fused import FusedInt8Recommender, FusedRecommender
from .itemknn import ItemKNNRecommender
from .lm import FinetunedLMRecommender, PretrainedLMRecommender
from .sequential import SequentialRecommender

register_model(ItemKNNRecommender.name, ItemKNNRecommender)
register_model(BPRRecommender.name, BPRRecommender)
register_model(EASERecommender.name, EASERecommender)
register_model(SequentialRecommender.name, SequentialRecommender)
register_model(KnowledgeGraphRecommender.name, KnowledgeGraphRecommender)
register_model(FusedRecommender.name, FusedRecommender)
register_model(FusedInt8Recommender.name, FusedInt8Recommender)

register_model(PretrainedLMRecommender.name, PretrainedLMRecommender)
register_model(FinetunedLMRecommender.name, FinetunedLMRecommender)

__all__ = ["MODELS", "Recommender", "make_model", "model_param_grid", "register_model"]
