"""Recommend and SimilarItems as plain async functions of a bundle, a user store and an encoder.

The gRPC layer (gateway.py) only validates transport details and maps `RequestError.code` to a gRPC
status; everything a request means happens here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmrec.text import profile_text_of

from .bundle import Bundle
from .encoder_client import EncoderUnavailable
from .fusion import BlendWeights, RankedItem, fill_candidates, rank_candidates
from .store import UserStore

MAX_K = 1000


class RequestError(Exception):
    """A request that cannot be served; `code` names the gRPC status (INVALID_ARGUMENT, NOT_FOUND, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, kw_only=True)
class ServingConfig:
    candidates_per_signal: int = 200
    max_text_chars: int = 2000
    max_recent_items: int = 200
    weights: BlendWeights = field(default_factory=BlendWeights)
    encoder_timeout_s: float = 2.0


@dataclass(frozen=True, kw_only=True)
class RecommendQuery:
    user_id: str = ""
    recent_item_ids: tuple[str, ...] = ()
    text: str = ""
    k: int = 10
    include_seen: bool = False


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    items: list[RankedItem]
    bundle_version: str
    profile_text: str = ""
    degraded: bool = False


def check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise RequestError("INVALID_ARGUMENT", f"k must be between 1 and {MAX_K}, got {k}")


def check_text(field_name: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise RequestError("INVALID_ARGUMENT", f"{field_name} is {len(text)} characters long; the limit is {limit}")


class Recommender:
    def __init__(self, bundle: Bundle, store: UserStore, encoder, config: ServingConfig = ServingConfig()) -> None:
        self.bundle = bundle
        self.store = store
        self.encoder = encoder
        self.config = config
        self._popular_order = np.argsort(-bundle.popularity, kind="stable")

    def _item_indices(self, field_name: str, item_ids: tuple[str, ...]) -> np.ndarray:
        indices = []
        for position, item_id in enumerate(item_ids):
            index = self.bundle.item_index.get(item_id)
            if index is None:
                raise RequestError("INVALID_ARGUMENT",
                                   f"{field_name}[{position}] '{item_id}' is not in the catalogue")
            indices.append(index)
        return np.asarray(indices, np.int64)

    def _top(self, scores: np.ndarray, n: int) -> np.ndarray:
        n = min(n, len(scores))
        return np.argpartition(-scores, n - 1)[:n] if n > 0 else np.zeros(0, np.int64)

    async def _encode(self, text: str, timeout_s: float) -> np.ndarray:
        vectors = await self.encoder.encode([text], model=self.bundle.encoder_model,
                                            version=self.bundle.encoder_version,
                                            timeout_s=min(timeout_s, self.config.encoder_timeout_s))
        return vectors[0]

    async def recommend(self, query: RecommendQuery, *, timeout_s: float = 5.0) -> Recommendation:
        check_k(query.k)
        check_text("text", query.text, self.config.max_text_chars)
        if len(query.recent_item_ids) > self.config.max_recent_items:
            raise RequestError("INVALID_ARGUMENT", f"recent_item_ids has {len(query.recent_item_ids)} ids; "
                                                   f"the limit is {self.config.max_recent_items}")
        if not (query.user_id or query.recent_item_ids or query.text.strip()):
            raise RequestError("INVALID_ARGUMENT", "empty request: give user_id, recent_item_ids or text")
        recent = self._item_indices("recent_item_ids", query.recent_item_ids)
        user = self.store.get_user(query.user_id) if query.user_id else None
        if query.user_id and user is None and not (len(recent) or query.text.strip()):
            raise RequestError("NOT_FOUND", f"user_id '{query.user_id}' is not known; for a new user send "
                                            "recent_item_ids and/or text instead")
        history = np.concatenate([user.history if user else np.zeros(0, np.int64), recent]).astype(np.int64)
        attributes = user.attributes if user else {}
        items = self.bundle.dataset.items
        profile_text = profile_text_of([items[i] for i in history[::-1]], attributes=attributes,
                                       free_text=query.text)

        features_source: dict[str, np.ndarray] = {}
        candidate_sets = []
        degraded = False
        if profile_text:
            try:
                query_vector = await self._encode(profile_text, timeout_s)
                labels, _ = self.bundle.retriever.search(query_vector, self.config.candidates_per_signal)
                candidate_sets.append(labels[0])
                features_source["lm"] = query_vector
            except EncoderUnavailable:
                degraded = True
        user_vector = None
        if user is not None and user.cf_index is not None and len(recent) == 0:
            user_vector = self.bundle.user_factors[user.cf_index]
        elif len(history):
            user_vector = self.bundle.fold_in_user(history)
        if user_vector is not None:
            als_scores = self.bundle.item_factors @ user_vector
            candidate_sets.append(self._top(als_scores, self.config.candidates_per_signal))
        candidate_sets.append(self._popular_order[: self.config.candidates_per_signal])

        excluded = np.zeros(0, np.int64) if query.include_seen else np.unique(history)
        if self.bundle.fused is not None and "lm" in features_source:
            try:
                ranked = await self._rank_with_ranker(user, history, excluded, features_source["lm"], query.k,
                                                      timeout_s)
                return Recommendation(items=ranked, bundle_version=self.bundle.label, profile_text=profile_text,
                                      degraded=False)
            except EncoderUnavailable:
                degraded = True  # the fixed blend below is the ranker's fallback
        candidates = fill_candidates(np.concatenate(candidate_sets).astype(np.int64), excluded,
                                     self._popular_order, query.k)
        features = {"popular": np.log1p(self.bundle.popularity[candidates])}
        if "lm" in features_source:
            features["lm"] = self.bundle.item_embeddings[candidates] @ features_source["lm"]
        if user_vector is not None:
            features["als"] = self.bundle.item_factors[candidates] @ user_vector
        ranked = rank_candidates(np.sort(candidates), {k: v[np.argsort(candidates)] for k, v in features.items()},
                                 self.config.weights, query.k)
        return Recommendation(items=ranked, bundle_version=self.bundle.label, profile_text=profile_text,
                              degraded=degraded)

    async def _rank_with_ranker(self, user, history: np.ndarray, excluded: np.ndarray, profile: np.ndarray,
                                k: int, timeout_s: float) -> list[RankedItem]:
        """The neural fusion ranker (served by Triton) over the fused model's candidates."""
        fused = self.bundle.fused
        user_index = user.cf_index if user is not None and user.cf_index is not None else -1
        candidates, features, names = fused.features(np.array([user_index]), [history], profile=profile[None, :],
                                                     excluded=[excluded])
        candidates, features = candidates[0], features[0]
        scores = await self.encoder.score(features, model=self.bundle.ranker_model,
                                          version=self.bundle.ranker_version, timeout_s=timeout_s)
        order = np.argsort(-scores, kind="stable")[:k]
        rr_columns = {name[:-3]: j for j, name in enumerate(names) if name.endswith("_rr")}
        ranked = []
        for position in order:
            shares = {signal: float(features[position, j]) for signal, j in rr_columns.items()}
            found_by = max(shares, key=shares.get)
            ranked.append(RankedItem(item=int(candidates[position]), score=float(scores[position]), signals=shares,
                                     found_by=found_by))
        if len(ranked) < k:  # exactly k whenever the catalogue allows: top up by popularity
            extra = fill_candidates(candidates, excluded, self._popular_order, k)
            floor = min((item.score for item in ranked), default=0.0)
            for index in [i for i in extra if i not in set(candidates.tolist())][: k - len(ranked)]:
                floor -= 1.0
                ranked.append(RankedItem(item=int(index), score=floor, signals={"popular": 1.0}, found_by="popular"))
        return ranked

    async def similar(self, *, item_id: str = "", text: str = "", k: int = 10,
                      timeout_s: float = 5.0) -> Recommendation:
        check_k(k)
        check_text("text", text, self.config.max_text_chars)
        if item_id:
            index = self.bundle.item_index.get(item_id)
            if index is None:
                raise RequestError("NOT_FOUND", f"item_id '{item_id}' is not in the catalogue")
            # The stored embedding came from this bundle's encoder: no need to ask Triton again.
            vector = self.bundle.item_embeddings[index]
            exclude = {index}
        elif text.strip():
            try:
                vector = await self._encode(text, timeout_s)
            except EncoderUnavailable as error:
                raise RequestError("UNAVAILABLE", f"the text encoder is unavailable: {error}") from None
            exclude = set()
        else:
            raise RequestError("INVALID_ARGUMENT", "empty request: give item_id or text")
        labels, sims = self.bundle.retriever.search(vector, k + len(exclude))
        ranked = [
            RankedItem(item=int(label), score=float(sim), signals={"lm": float(sim)}, found_by="lm")
            for label, sim in zip(labels[0], sims[0])
            if int(label) not in exclude
        ][:k]
        return Recommendation(items=ranked, bundle_version=self.bundle.label)
