"""The logic behind the Triton `ranker` python model, importable and unit-tested without Triton."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmrec.ranker_runtime import RANKER_INPUT


class BadFeatures(ValueError):
    """One request's features are unusable; only that request fails."""


def score_requests(ranker, requests_features: Sequence[np.ndarray], n_features: int) -> list[np.ndarray | BadFeatures]:
    """Score all valid requests' rows in one call and split the scores back ([n, 1] float32 each)."""
    valid: list[np.ndarray | BadFeatures] = []
    for features in requests_features:
        array = np.asarray(features, np.float32)
        if array.ndim != 2 or array.shape[1] != n_features:
            valid.append(BadFeatures(f"{RANKER_INPUT} must be [n, {n_features}], got {list(array.shape)}"))
        elif not np.isfinite(array).all():
            valid.append(BadFeatures(f"{RANKER_INPUT} contains NaN or infinity"))
        else:
            valid.append(array)
    rows = [a for a in valid if not isinstance(a, BadFeatures)]
    scores = ranker.score(np.concatenate(rows)) if rows else np.zeros(0, np.float32)
    out: list[np.ndarray | BadFeatures] = []
    offset = 0
    for item in valid:
        if isinstance(item, BadFeatures):
            out.append(item)
        else:
            out.append(scores[offset : offset + len(item)].reshape(-1, 1).astype(np.float32))
            offset += len(item)
    return out
