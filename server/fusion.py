"""Blend per-signal scores of candidate items into one ranking, keeping each signal's contribution.

Pure functions (no I/O), so the fusion rule is unit-tested on its own. This is the fixed blend only. With a
fused bundle the neural ranker ranks instead (`Recommender._rank_with_ranker` in recommend.py, over the
candidates and feature rows of `FusedRecommender.features` in export/models/fused.py, pickled into the
bundle); the blend stays its fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIGNALS = ("lm", "als", "popular")


@dataclass(frozen=True, kw_only=True)
class BlendWeights:
    lm: float = 0.5
    als: float = 0.4
    popular: float = 0.1

    def of(self, signal: str) -> float:
        return getattr(self, signal)


@dataclass(frozen=True)
class RankedItem:
    item: int  # item index in the bundle
    score: float
    signals: dict[str, float]  # signal -> its weighted contribution to `score`; from the ranker, its reciprocal rank
    found_by: str


def normalise(values: np.ndarray) -> np.ndarray:
    """Min-max over the candidate set to [0, 1]; a constant signal carries no preference (all 0)."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def fill_candidates(candidates: np.ndarray, excluded: np.ndarray, fallback_order: np.ndarray, k: int) -> np.ndarray:
    """Eligible candidates, topped up from `fallback_order` (e.g. by popularity) until there are k."""
    blocked = np.zeros(max(int(fallback_order.max(initial=-1)), int(candidates.max(initial=-1)),
                           int(excluded.max(initial=-1))) + 1, bool)
    blocked[excluded] = True
    eligible = np.unique(candidates[~blocked[candidates]]) if len(candidates) else candidates
    if len(eligible) >= k:
        return eligible
    blocked[eligible] = True
    extra = fallback_order[~blocked[fallback_order]][: k - len(eligible)]
    return np.concatenate([eligible, extra])


def rank_candidates(candidates: np.ndarray, features: dict[str, np.ndarray], weights: BlendWeights,
                    k: int) -> list[RankedItem]:
    """Top-k of `candidates` by the weighted sum of normalised signals.

    `features[signal]` holds that signal's raw score per candidate (signals that are unavailable for
    this request are simply absent, and the remaining weights are rescaled to sum to 1).
    """
    if len(candidates) == 0:
        return []
    present = [s for s in SIGNALS if s in features and weights.of(s) > 0]
    total = sum(weights.of(s) for s in present) or 1.0
    contributions = {s: normalise(np.asarray(features[s], np.float32)) * (weights.of(s) / total) for s in present}
    scores = np.sum([contributions[s] for s in present], axis=0) if present else np.zeros(len(candidates), np.float32)
    # Ties break by candidate order, which callers make deterministic (item index).
    order = np.argsort(-scores, kind="stable")[:k]
    ranked = []
    for position in order:
        parts = {s: float(contributions[s][position]) for s in present}
        if parts and max(parts.values()) > 0:
            found_by = max(parts, key=parts.get)
        else:  # every signal ties (one candidate, say): name the heaviest one that has evidence for the item
            evidence = [s for s in sorted(present, key=weights.of, reverse=True) if features[s][position] > 0]
            found_by = evidence[0] if evidence else "popular"
        ranked.append(RankedItem(item=int(candidates[position]), score=float(scores[position]), signals=parts,
                                 found_by=found_by))
    return ranked
