"""Popularity: every user gets the items with the most training interactions."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np

from lmrec.export.dataset import Dataset, Interactions


class PopularityRecommender:
    name = "pop"
    param_grid: ClassVar[list[dict[str, Any]]] = [{}]

    def __init__(self, *, seed: int = 42) -> None:
        self.seed = seed  # accepted for a uniform factory signature; popularity is deterministic
        self.item_counts: np.ndarray | None = None

    def fit(self, dataset: Dataset, train: Interactions) -> "PopularityRecommender":
        # Every interaction counts once, whatever its rating: the same rule the CF models use.
        self.item_counts = np.bincount(train.item, minlength=dataset.n_items).astype(np.float32)
        return self

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        if self.item_counts is None:
            raise RuntimeError("fit the model before scoring")
        return np.tile(self.item_counts, (len(users), 1))
