"""Every gateway request as a plain async method of `Recommender` (state, event store, encoder, cache).

The gRPC layer (gateway.py) only maps messages and turns `RequestError.code` into a gRPC status;
what a request means happens here (what it is, its limits and checks: requests.py). A request takes the
serving state once, at its start, and uses only that one: a deploy that swaps states meanwhile never
mixes two bundles in one answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from lmrec.export.dataset import ItemInfo
from lmrec.text import MAX_PROFILE_ITEMS, item_text_of, profile_text_of

from .catalogue import UnknownFilter, fields_of, shown
from .encoder_client import EncoderUnavailable
from .event_store import Event, EventStore, StoredItem
from .explain import explain_items
from .fusion import BlendWeights, RankedItem, fill_candidates, rank_candidates
from .metrics import GatewayMetrics
from .overlap import LOWEST_PRIORITY, low_priority_executor
from .requests import (MAX_ATTRIBUTE_KEY_CHARS, MAX_BATCH, MAX_CLOCK_AHEAD_S, MAX_USER_ATTRIBUTES, ProfileView,
                       Recommendation, RecommendQuery, RequestError, check_id, check_k, check_new_items, check_text)
from .state import ServingState
from .user_cache import InvalidationLog, PerUserCache, UserVectorCache
from .users import ResolvedUser, latest_occurrences, resolve_user

log = logging.getLogger("lmrec.recommend")
# A returning user's answer is kept for pages up to this size. With its explanations and its encoded response
# an answer takes about 1.5-2 KB per item (ml-100k: 13 KiB of Python objects for 10 items, 56 KiB for 50, plus
# the response message), so 4096 users' answers of 10 items hold ~60 MB, and of 50 items ~300 MB.
MAX_CACHED_ANSWER_K = 50
T = TypeVar("T")


async def run_to_completion(work: Coroutine[Any, Any, T]) -> T:
    """Await `work`, which keeps running to its end if the caller is cancelled (the caller still sees the
    cancellation). For changes that must not stop half-way: a deploy, an AddItems after its commit."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(_note_unawaited_failure)
    return await asyncio.shield(task)


def _history_half(fused, cf_row: int, history: np.ndarray, blocked: np.ndarray):
    """One request's features that need no profile vector (`FusedRecommender.prepare_features`)."""
    return fused.prepare_features(np.array([cf_row]), [history], [np.flatnonzero(blocked)])


async def _prepared_half(future: concurrent.futures.Future | None, *, wanted: bool):
    """What `future` (`Recommender._prepare_ranker_features`) computed, waited for if its thread is still
    at it. None if it is not wanted (the encoder failed), or if the pool had not started it: it is then
    cancelled, and the request computes the half itself at normal priority. Under load the low-priority
    pool may get little CPU, and a request must not wait on work that has not begun."""
    if future is None or future.cancel() or not wanted:
        return None
    return await asyncio.wrap_future(future)


def _note_unawaited_failure(task: asyncio.Task) -> None:
    # Retrieving the exception keeps asyncio from warning about it when the caller was cancelled; a
    # caller still waiting gets it from the shield as usual.
    if not task.cancelled() and task.exception() is not None:
        log.debug("work finished with %r", task.exception())


@dataclass(frozen=True, kw_only=True)
class ServingConfig:
    candidates_per_signal: int = 200
    max_text_chars: int = 2000
    max_recent_items: int = 200
    weights: BlendWeights = field(default_factory=BlendWeights)
    encoder_timeout_s: float = 2.0
    # Share of the remaining deadline the encoder, or the ranker, may use; the rest is kept for the fallback.
    encoder_deadline_share: float = 0.6
    # Off only for the naive baseline of the gateway benchmark: every request then encodes its profile.
    cache_user_vectors: bool = True
    # Users whose candidates and signal features are kept for their next request (0: none). Only where
    # the profile vector is cached too. One user's entry is ~300 candidates x ~20 float32 features with a
    # fused bundle (about 25 KB), so 4096 users hold about 100 MB. As many resolved users (history from
    # the snapshot and the events) are kept too, for any request naming a known user.
    candidate_cache_users: int = 4096
    # A returning user's last answer too (as many users; pages up to MAX_CACHED_ANSWER_K): the same request
    # from them, under the same bundle and catalogue, is then answered without recomputing its ranking,
    # explanations and interest tags. Off in tests of the caches beneath it.
    cache_answers: bool = True
    # With a fused bundle, the ranker features that need no profile vector are computed while Triton encodes
    # the profile (off: after it, as before), in threads of this Linux niceness (server/overlap.py).
    prepare_during_encode: bool = True
    overlap_niceness: int = LOWEST_PRIORITY

    def __post_init__(self) -> None:
        if self.candidate_cache_users < 0:
            raise ValueError(f"candidate_cache_users must be 0 (off) or more, got {self.candidate_cache_users}")
        if not -20 <= self.overlap_niceness <= 19:
            raise ValueError(f"overlap_niceness is a Linux nice value from -20 to 19, got {self.overlap_niceness}")


@dataclass(kw_only=True)
class RankerInput:
    """A user's candidates and the ranker's features for them; `scores`, the ranker's answer, is filled
    in by the first request that asks the ranker (the cached entry keeps it for the next ones)."""
    candidates: np.ndarray
    features: np.ndarray
    names: list[str]
    scores: np.ndarray | None = None


def trained_cf_row(user: ResolvedUser | None, recent) -> int:
    """The bundle's trained ALS row to score this request with, or -1 to fold its history in: an anonymous
    session, a user with events since the snapshot, or a known user who also sent session items (the
    trained row knows nothing of those). The blend and the fusion ranker's features both read it."""
    if user is None or user.cf_index is None or len(recent):
        return -1
    return int(user.cf_index)


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(scores))
    return np.argpartition(-scores, n - 1)[:n] if n > 0 else np.zeros(0, np.int64)


class Recommender:
    def __init__(self, state: ServingState, events: EventStore, encoder, config: ServingConfig = ServingConfig(), *,
                 metrics: GatewayMetrics | None = None, cache: UserVectorCache | None = None) -> None:
        self.state = state  # replaced as a whole by a deploy
        self.events = events
        self.encoder = encoder
        self.config = config
        self.metrics = metrics or GatewayMetrics()
        # The per-user caches go stale together (events, ForgetUser, deploys): one log of when.
        self.invalidations = InvalidationLog()
        self.cache = cache if cache is not None else UserVectorCache(log=self.invalidations)
        # A returning user's candidates with their features (the blend's or the ranker's input, with the
        # ranker's scores once it answered): what the signals say about them changes only with their
        # events, added items or a deploy.
        self.candidates = PerUserCache(max_entries=config.candidate_cache_users, log=self.invalidations)
        # A returning user as resolved from the snapshot and the event store (history, seen items, ALS
        # row): it changes only with their events, ForgetUser or a deploy, like the entries above. A hit
        # also spares the request its thread hop to the store, which under load cost a third of the
        # cached throughput (performance log, blend item 8). Off with the vector cache (the naive path).
        self.users = PerUserCache(max_entries=config.candidate_cache_users if config.cache_user_vectors else 0,
                                  log=self.invalidations)
        # A returning user's last answer, with the resolved user it was computed for (see `_answer_stamp`).
        # Under load, a cached request's own Python (explanations, tags, ranking, the response message) was
        # most of its time once the ranker's scores were cached (performance log, fused item 6).
        self.answers = PerUserCache(max_entries=self.users.max_entries if config.cache_answers else 0,
                                    log=self.invalidations)
        self.catalogue_lock = asyncio.Lock()  # AddItems and deploys change the catalogue one at a time
        self.overlap = low_priority_executor(niceness=config.overlap_niceness)  # work done while Triton encodes
        self.metrics.set_bundle_version(state.bundle.version)

    # -- helpers ------------------------------------------------------------------------------------
    def forget_cached(self, user_ids=None) -> None:
        """Drop what was cached for `user_ids` (their events changed), or for everyone (a deploy)."""
        for cache in (self.cache, self.candidates, self.users, self.answers):
            cache.clear() if user_ids is None else cache.invalidate(user_ids)

    @staticmethod
    def _rows(state: ServingState, field_name: str, item_ids: Sequence[str]) -> np.ndarray:
        rows = []
        for position, item_id in enumerate(item_ids):
            row = state.catalogue.index.get(item_id)
            if row is None:
                raise RequestError("INVALID_ARGUMENT", f"{field_name}[{position}] '{shown(item_id)}' is not in the catalogue")
            rows.append(row)
        return np.asarray(rows, np.int64)

    async def encode(self, state: ServingState, texts: list[str], timeout_s: float) -> np.ndarray:
        return await self.encoder.encode(texts, model=state.bundle.encoder_model, version=state.bundle.encoder_version,
                                         timeout_s=timeout_s, max_batch_size=state.bundle.encoder_max_batch_size)

    def _triton_budget(self, timeout_s: float) -> float:
        """What one Triton call (the encoder, or the ranker) may take of the remaining deadline: the rest is
        kept for the fallback that answers when the call fails (CF, or the fixed blend)."""
        return max(min(self.config.encoder_timeout_s, timeout_s * self.config.encoder_deadline_share), 0.001)

    async def _profile_vector(self, state: ServingState, user_id: str, cacheable: bool, profile_text: str,
                              timeout_s: float, method: str, as_of: int) -> np.ndarray:
        cached = self._cached_vector(state, user_id, cacheable, profile_text)
        if cached is not None:
            return cached
        return await self._encoded_vector(state, user_id, cacheable, profile_text, timeout_s, method, as_of)

    def _cached_vector(self, state: ServingState, user_id: str, cacheable: bool, profile_text: str) -> np.ndarray | None:
        if not cacheable:
            return None
        cached = self.cache.get(state.label, user_id, profile_text)
        if cached is not None:
            self.metrics.cache_hit()
        else:
            self.metrics.cache_miss()
        return cached

    async def _encoded_vector(self, state: ServingState, user_id: str, cacheable: bool, profile_text: str,
                              timeout_s: float, method: str, as_of: int) -> np.ndarray:
        """The profile's vector from Triton, kept for the user's next request where it may be."""
        with self.metrics.time_stage(method, "encode"):
            vector = (await self.encode(state, [profile_text], self._triton_budget(timeout_s)))[0]
        if cacheable:
            self.cache.put(state.label, user_id, profile_text, vector, as_of=as_of)
        return vector

    def _result(self, state, ranked, liked, user_tags, **kwargs) -> Recommendation:
        with self.metrics.time_stage("Recommend", "explain"):
            explanations = explain_items(state, liked, [r.item for r in ranked], [r.found_by for r in ranked],
                                         user_tags)
        catalogue = state.catalogue
        return Recommendation(items=ranked, bundle_version=state.label, explanations=explanations,
                              titles=[catalogue.items[r.item].title for r in ranked],
                              item_ids=[catalogue.item_ids[r.item] for r in ranked], **kwargs)

    def _user_tags(self, state: ServingState, vector: np.ndarray | None, n: int = 5) -> list[tuple[str, float]]:
        if vector is None or state.tagger is None:
            return []
        return state.tagger.tag_users(np.asarray(vector)[None, :], top_n=n)[0]

    # -- Recommend ----------------------------------------------------------------------------------
    async def recommend(self, query: RecommendQuery, *, timeout_s: float = 5.0) -> Recommendation:
        with self._holding_state() as state:
            return await self._recommend(state, query, timeout_s)

    @contextlib.contextmanager
    def _holding_state(self):
        """The serving state, counted in use until the block ends: a deploy waits for every request that
        took the old state (and may still call its model versions) before Triton unloads them."""
        state = self.state
        state.inflight += 1
        try:
            yield state
        finally:
            state.inflight -= 1

    def _validate(self, state: ServingState, query: RecommendQuery):
        check_k(query.k)
        check_text("text", query.text, self.config.max_text_chars)
        for name, ids in (("recent_item_ids", query.recent_item_ids), ("exclude_item_ids", query.exclude_item_ids)):
            if len(ids) > self.config.max_recent_items:
                raise RequestError("INVALID_ARGUMENT", f"{name} has {len(ids)} ids; the limit is "
                                                       f"{self.config.max_recent_items}")
        if len(query.attributes) > MAX_USER_ATTRIBUTES:
            raise RequestError("INVALID_ARGUMENT", f"attributes has {len(query.attributes)} entries; the limit is "
                                                   f"{MAX_USER_ATTRIBUTES}")
        for key, value in query.attributes.items():
            if len(key) > MAX_ATTRIBUTE_KEY_CHARS:  # a key is copied into the profile text the answer echoes
                raise RequestError("INVALID_ARGUMENT", f"attributes key '{shown(key)}' is {len(key)} characters "
                                                       f"long; the limit is {MAX_ATTRIBUTE_KEY_CHARS}")
            check_text(f"attributes['{shown(key)}']", value, 200)
        check_id("user_id", query.user_id)
        if not (query.user_id or query.recent_item_ids or query.text.strip() or query.attributes):
            raise RequestError("INVALID_ARGUMENT", "empty request: give user_id, recent_item_ids, attributes or text")
        recent = self._rows(state, "recent_item_ids", query.recent_item_ids)
        excluded = self._rows(state, "exclude_item_ids", query.exclude_item_ids)
        for position, (key, values) in enumerate(query.require):
            if not key.strip() or not values:
                raise RequestError("INVALID_ARGUMENT", f"require[{position}] needs a key and at least one value")
            if not all(str(value).strip() for value in values):  # an empty value matches no item
                raise RequestError("INVALID_ARGUMENT", f"require[{position}] ('{shown(key)}') has an empty value")
        return recent, excluded, self._eligible(state, query)

    @staticmethod
    def _eligible(state: ServingState, query: RecommendQuery) -> np.ndarray | None:
        try:
            return state.catalogue.eligible(query.require)
        except UnknownFilter as error:
            raise RequestError("INVALID_ARGUMENT", str(error)) from None

    @staticmethod
    def _blocked(state: ServingState, query: RecommendQuery, user, history, excluded, eligible) -> np.ndarray:
        """Items this answer must not contain: seen (unless include_seen), excluded, or failing a filter."""
        blocked = np.zeros(len(state.catalogue), bool)
        if not query.include_seen:
            blocked[history] = True
            if user is not None:
                blocked[user.seen] = True
        blocked[excluded] = True
        if eligible is not None:
            blocked[: len(eligible)] |= ~eligible
        return blocked

    async def _recommend(self, state: ServingState, query: RecommendQuery, timeout_s: float) -> Recommendation:
        started = time.perf_counter()
        generation = state.catalogue_generation  # read first: an AddItems during the awaits below makes it stale
        # Before the user's history is read: what this request caches is dropped if they change meanwhile.
        as_of = self.invalidations.clock()
        recent, excluded, eligible = self._validate(state, query)
        user = await self._resolved_user(state, query.user_id, as_of) if query.user_id else None
        if query.user_id and user is None and not (len(recent) or query.text.strip() or query.attributes):
            raise RequestError("NOT_FOUND", f"user_id '{shown(query.user_id)}' is not known; for a new user send "
                                            "recent_item_ids, attributes and/or text instead")
        # A known user asking as themselves: their profile vector, what the signals computed for them, and
        # the whole answer may come from their last request (each cache checks it was computed from the same
        # inputs).
        cacheable = self.config.cache_user_vectors and user is not None and not (
            len(recent) or query.text or query.attributes)
        answer_stamp = self._answer_stamp(state, query, user, generation) if cacheable else None
        if answer_stamp is not None:
            kept = self.answers.lookup(user.user_id, answer_stamp)
            self.metrics.answer_cache(kept is not None)
            if kept is not None:
                return kept[1]
        result = await self._answer(state, query, user, recent, excluded, eligible, cacheable, generation,
                                    as_of, started, timeout_s)
        if answer_stamp is not None and not result.degraded:  # a fallback's answer is not kept
            # With the user object: its id in the stamp stays theirs while the entry holds it.
            self.answers.store(user.user_id, answer_stamp, (user, result), as_of=as_of)
        return result

    def _answer_stamp(self, state: ServingState, query: RecommendQuery, user: ResolvedUser, generation: int):
        """What a returning user's answer depends on, or None where it is not kept: the state (bundle and
        catalogue as of the request's start), the user as resolved (their history, seen items, attributes
        and so the profile text: a new resolve after an event is a new object), and the request's terms."""
        if self.answers.max_entries <= 0 or query.k > MAX_CACHED_ANSWER_K:
            return None
        return (id(state), state.label, generation, id(user), query.k, query.include_seen, query.exclude_item_ids,
                query.require)

    async def _answer(self, state: ServingState, query: RecommendQuery, user: ResolvedUser | None, recent, excluded,
                      eligible, cacheable: bool, generation: int, as_of: int, started: float,
                      timeout_s: float) -> Recommendation:
        """The answer itself: profile, vector, candidates, ranking (the ranker or the fixed blend) and
        explanations."""
        # Each item once, where it last occurs: a session repeating an item, or naming one already in the
        # user's history, describes the user as training data would.
        history = latest_occurrences(np.concatenate([user.history if user else np.zeros(0, np.int64),
                                                     recent]).astype(np.int64))
        # What an explanation may name as liked: not an item the user rated below their own mean (unless
        # this session names it again).
        liked = history[~np.isin(history, np.setdiff1d(user.rated_low, recent))] if user else history
        attributes = {**(user.attributes if user else {}), **query.attributes}
        items = state.catalogue.items
        profile_text = profile_text_of([items[i] for i in history[::-1]], attributes=attributes, free_text=query.text)

        blocked = self._blocked(state, query, user, history, excluded, eligible)
        if blocked.all():
            # In a thread: each note compares a value with every value of its key (35 ms for 6,000 tags).
            notes = (await asyncio.to_thread(state.catalogue.unmatched_filter_values, query.require)
                     if query.require else [])
            return Recommendation(items=[], bundle_version=state.label, profile_text=profile_text, notes=notes)
        k = min(query.k, int((~blocked).sum()))

        vector, degraded, prepared = None, False, None
        if profile_text:
            vector = self._cached_vector(state, query.user_id, cacheable, profile_text)
            if vector is None:
                preparing = self._prepare_ranker_features(state, user, recent, history, blocked)
                try:
                    vector = await self._encoded_vector(state, query.user_id, cacheable, profile_text,
                                                        timeout_s - (time.perf_counter() - started), "Recommend",
                                                        as_of)
                except EncoderUnavailable as error:
                    degraded = True
                    self.metrics.fallback("encoder_unavailable")
                    log.warning("degraded answer (CF and popularity only): %s", error)
                # Before the masks are checked again: an AddItems while this waits changes the catalogue too.
                prepared = await _prepared_half(preparing, wanted=vector is not None)
        # Items added while this request awaited the event store or the encoder: the filters and the mask
        # must cover them too (the state is updated in place), and the features prepared meanwhile are stale.
        masks = self._current_masks(state, query, user, history, excluded, (generation, eligible, blocked, k))
        if masks[0] != generation:
            prepared = None
        generation, eligible, blocked, k = masks
        user_tags = [tag for tag, _ in self._user_tags(state, vector)]
        # What the candidates and their features depend on: the bundle, the catalogue's added items, the
        # user's history (events also drop the entry; the counts and the profile text catch a request that
        # resolved the user before an event and stores after it), and the request's exclusions and filters.
        stamp = (state.label, generation, user.recorded_events, len(user.history), profile_text, query.include_seen,
                 query.exclude_item_ids, query.require) if cacheable and vector is not None else None
        if state.fused is not None and vector is not None:
            try:
                ranked = await self._rank_with_ranker(state, user, trained_cf_row(user, recent), history, blocked,
                                                      vector, k, started + timeout_s, stamp, as_of, prepared)
                return self._result(state, ranked, liked, user_tags, profile_text=profile_text)
            except EncoderUnavailable as error:
                degraded = True  # the fixed blend below is the ranker's fallback
                self.metrics.fallback("ranker_unavailable")
                log.warning("ranker unavailable, answering with the fixed blend: %s", error)
                # Items may have been added while the ranker call was awaited.
                generation, eligible, blocked, k = self._current_masks(state, query, user, history, excluded,
                                                                       (generation, eligible, blocked, k))
        with self.metrics.time_stage("Recommend", "blend"):
            blend_stamp = stamp + (k,) if stamp is not None and not degraded else None
            inputs = self._cached_candidates(user, blend_stamp, as_of, lambda: self._blend_inputs(
                state, user, history, recent, blocked, eligible, vector, k))
            ranked = rank_candidates(*inputs, self.config.weights, k)
        return self._result(state, ranked, liked, user_tags, profile_text=profile_text, degraded=degraded)

    async def _resolved_user(self, state: ServingState, user_id: str, as_of: int) -> ResolvedUser | None:
        """`resolve_user` (the event store read in a thread), or the same user from their last request: the
        entry is stamped with the state and its catalogue, and dropped by their events and ForgetUser."""
        stamp = (id(state), state.label, state.catalogue_generation)
        user = self.users.lookup(user_id, stamp)
        if user is None:
            user = await asyncio.to_thread(resolve_user, state, self.events, user_id)
            if user is not None:
                for array in (user.history, user.seen, user.rated_low):  # shared by later requests: never edited
                    array.setflags(write=False)
                self.users.store(user_id, stamp, user, as_of=as_of)
        return user

    def _current_masks(self, state: ServingState, query: RecommendQuery, user, history, excluded, masks):
        """`masks` (generation, eligible, blocked, k) as they are, or built again if AddItems changed the
        catalogue since they were."""
        if state.catalogue_generation == masks[0]:
            return masks
        generation = state.catalogue_generation
        eligible = self._eligible(state, query)
        blocked = self._blocked(state, query, user, history, excluded, eligible)
        return generation, eligible, blocked, min(query.k, int((~blocked).sum()))

    def _cached_candidates(self, user: ResolvedUser | None, stamp, as_of: int, compute):
        """`compute()`, or what it returned for this user last time under the same stamp."""
        if stamp is None or self.candidates.max_entries <= 0:  # nothing cacheable, or the cache is off
            return compute()
        found = self.candidates.lookup(user.user_id, stamp)
        self.metrics.candidate_cache(found is not None)
        if found is None:
            found = compute()
            self.candidates.store(user.user_id, stamp, found, as_of=as_of)
        return found

    def _blend_inputs(self, state, user: ResolvedUser | None, history, recent, blocked, eligible, vector, k):
        """The fixed blend's candidates and their raw signal scores: text similarity, ALS and popularity.
        The blend is also the ranker's fallback when Triton is away."""
        n = self.config.candidates_per_signal
        candidate_sets = []
        if vector is not None:
            if eligible is not None:  # a restrictive filter: score the eligible items exactly
                scores = state.item_embeddings @ vector
                scores[blocked] = -np.inf
                candidate_sets.append(_top(scores, n))
            else:
                with self.metrics.time_stage("Recommend", "retrieve"):
                    labels, _ = state.retriever.search(vector, n + int(blocked.sum()))
                candidate_sets.append(labels[0])
        user_vector = None
        cf_row = trained_cf_row(user, recent)
        if cf_row >= 0:
            user_vector = state.bundle.user_factors[cf_row]
        elif len(history):
            base = history[history < state.catalogue.n_base]
            user_vector = state.bundle.fold_in_user(base) if len(base) else None
        if user_vector is not None:
            # Only items CF was trained on have factors: added items (zero rows) are never ALS candidates.
            rows = state.cf_rows[~blocked[state.cf_rows]]
            als = state.item_factors[rows] @ user_vector
            candidate_sets.append(rows[_top(als, n)])
        allowed_popular = state.allowed_popular(blocked, n + k)
        candidate_sets.append(allowed_popular[:n])
        candidates = fill_candidates(np.concatenate(candidate_sets).astype(np.int64), np.flatnonzero(blocked),
                                     allowed_popular, k)
        candidates = np.sort(candidates)
        features = {"popular": np.log1p(state.popularity[candidates])}
        if vector is not None:
            features["lm"] = state.item_embeddings[candidates] @ vector
        if user_vector is not None:
            features["als"] = state.item_factors[candidates] @ user_vector
        return candidates, features

    def _prepare_ranker_features(self, state: ServingState, user, recent, history,
                                 blocked) -> concurrent.futures.Future | None:
        """With a fused bundle, the ranker features that need no profile vector (the CF signals, the graph,
        the similarities to the last items, their ranks and top items: most of the features' time),
        computed in a low-priority thread while Triton encodes the profile. The event loop only waits
        meanwhile."""
        if state.fused is None or not self.config.prepare_during_encode:
            return None
        return self.overlap.submit(_history_half, state.fused, trained_cf_row(user, recent), history, blocked)

    async def _rank_with_ranker(self, state: ServingState, user, cf_row: int, history, blocked, profile, k,
                                deadline: float, stamp, as_of: int, prepared=None):
        """The neural fusion ranker (served by Triton) over the fused model's candidates; `deadline` is the
        request's, on the time.perf_counter() clock (the ranker's share is taken of what is left once the
        candidates and their features are ready). `prepared`: the history half of the features for this
        request's history and mask (`_prepared_half`), if there is one."""
        fused = state.fused

        def features_of_candidates():
            half = prepared or _history_half(fused, cf_row, history, blocked)
            candidates, features, names = fused.finish_features(half, profile[None, :])
            return RankerInput(candidates=candidates[0], features=features[0], names=names)

        with self.metrics.time_stage("Recommend", "cf"):
            found = self._cached_candidates(user, stamp, as_of, features_of_candidates)
        candidates, features, names = found.candidates, found.features, found.names
        ranked = []
        if len(candidates):
            scores = found.scores
            if scores is None:
                with self.metrics.time_stage("Recommend", "rank"):
                    scores = await self.encoder.score(features, model=state.bundle.ranker_model,
                                                      version=state.bundle.ranker_version,
                                                      timeout_s=self._triton_budget(deadline - time.perf_counter()))
                # The same features and ranker version (the stamp holds the bundle) give the same scores:
                # a returning user's next request needs no ranker call.
                found.scores = scores
            order = np.argsort(-scores, kind="stable")[:k]
            rr_columns = {name[:-3]: j for j, name in enumerate(names) if name.endswith("_rr")}
            for position in order:
                shares = {signal: float(features[position, j]) for signal, j in rr_columns.items()}
                found_by = max(shares, key=shares.get)
                ranked.append(RankedItem(item=int(candidates[position]), score=float(scores[position]),
                                         signals=shares, found_by=found_by))
        if len(ranked) < k:  # exactly k whenever the catalogue allows: top up by popularity
            allowed_popular = state.allowed_popular(blocked, len(candidates) + k)
            taken = set(candidates.tolist())
            floor = min((item.score for item in ranked), default=0.0)
            # Its signal share is what the ranker's features say of popularity: 1 / (1 + its rank among the
            # items this request may return), so the 40th most popular item does not claim 1.0.
            top_up = [(rank, int(i)) for rank, i in enumerate(allowed_popular) if int(i) not in taken]
            for rank, index in top_up[: k - len(ranked)]:
                floor -= 1.0
                ranked.append(RankedItem(item=index, score=floor, signals={"popular": 1.0 / (1.0 + rank)},
                                         found_by="popular"))
        return ranked

    # -- SimilarItems ---------------------------------------------------------------------------------
    async def similar(self, *, item_id: str = "", text: str = "", k: int = 10,
                      timeout_s: float = 5.0) -> Recommendation:
        with self._holding_state() as state:
            return await self._similar(state, item_id, text, k, timeout_s)

    async def _similar(self, state: ServingState, item_id: str, text: str, k: int, timeout_s: float) -> Recommendation:
        check_k(k)
        check_text("text", text, self.config.max_text_chars)
        if item_id:
            index = state.catalogue.index.get(item_id)
            if index is None:
                raise RequestError("NOT_FOUND", f"item_id '{shown(item_id)}' is not in the catalogue")
            # The stored embedding came from this bundle's encoder: no need to ask Triton again.
            vector = state.item_embeddings[index]
            exclude = {index}
        elif text.strip():
            try:
                vector = (await self.encode(state, [text], self._triton_budget(timeout_s)))[0]
            except EncoderUnavailable as error:
                raise RequestError("UNAVAILABLE", f"the text encoder is unavailable: {error}") from None
            exclude = set()
        else:
            raise RequestError("INVALID_ARGUMENT", "empty request: give item_id or text")
        labels, sims = state.retriever.search(vector, k + len(exclude))
        ranked = [
            RankedItem(item=int(label), score=float(sim), signals={"lm": float(sim)}, found_by="lm")
            for label, sim in zip(labels[0], sims[0])
            if int(label) not in exclude
        ][:k]
        return Recommendation(items=ranked, bundle_version=state.label,
                              titles=[state.catalogue.items[r.item].title for r in ranked],
                              item_ids=[state.catalogue.item_ids[r.item] for r in ranked])

    # -- events, profiles, items, privacy ------------------------------------------------------------
    async def record_events(self, events: Sequence[Event]) -> int:
        state = self.state
        if not events:
            raise RequestError("INVALID_ARGUMENT", "no events given")
        if len(events) > MAX_BATCH:
            raise RequestError("INVALID_ARGUMENT", f"{len(events)} events in one call; the limit is {MAX_BATCH}")
        now = time.time()
        ready = []
        for position, event in enumerate(events):
            if not event.user_id:
                raise RequestError("INVALID_ARGUMENT", f"events[{position}].user_id is empty")
            if event.item_id not in state.catalogue.index:
                raise RequestError("INVALID_ARGUMENT",
                                   f"events[{position}].item_id '{shown(event.item_id)}' is not in the catalogue")
            if event.timestamp > now + MAX_CLOCK_AHEAD_S:  # NaN and negatives are the store's to refuse
                raise RequestError("INVALID_ARGUMENT", f"events[{position}].timestamp {event.timestamp:.0f} is more than a "
                                                       "day ahead of the gateway's clock; timestamps are seconds "
                                                       "since the epoch (not milliseconds)")
            ready.append(Event(user_id=event.user_id, item_id=event.item_id,
                               event_type=event.event_type or "interaction",
                               timestamp=event.timestamp or now, weight=event.weight))
        return await run_to_completion(self._record_and_forget(ready))

    async def _record_and_forget(self, ready: list[Event]) -> int:
        """The write, then the invalidation of its users' cached entries, as one: a client that gives up
        after the commit must not leave a returning user's cached history behind (it has no other way
        to notice the events)."""
        try:
            stored = await asyncio.to_thread(self.events.record, ready)  # committed (fsync) before we answer
        except ValueError as error:
            raise RequestError("INVALID_ARGUMENT", str(error)) from None
        self.forget_cached({event.user_id for event in ready})
        self.metrics.events_recorded(stored)
        return stored

    async def forget_user(self, user_id: str) -> tuple[int, bool]:
        if not user_id:  # only spaces is an id here: one stored before such ids were refused can be erased
            raise RequestError("INVALID_ARGUMENT", "user_id is empty")
        check_id("user_id", user_id)
        was_known = await asyncio.to_thread(resolve_user, self.state, self.events, user_id) is not None
        return await run_to_completion(self._forget_and_invalidate(user_id)), was_known

    async def _forget_and_invalidate(self, user_id: str) -> int:
        """Like `_record_and_forget`: a forgotten user's cached history must go even if the caller gave up."""
        deleted = await asyncio.to_thread(self.events.forget, user_id)
        self.forget_cached([user_id])
        return deleted

    async def profile(self, user_id: str, *, max_tags: int = 5, max_recent: int = 10,
                      timeout_s: float = 5.0) -> ProfileView:
        with self._holding_state() as state:
            return await self._profile(state, user_id, max_tags, max_recent, timeout_s)

    async def _profile(self, state: ServingState, user_id: str, max_tags: int, max_recent: int,
                       timeout_s: float) -> ProfileView:
        if not user_id:
            raise RequestError("INVALID_ARGUMENT", "user_id is empty")
        check_id("user_id", user_id)
        for name, value, most in (("max_tags", max_tags, 50), ("max_recent_items", max_recent, MAX_PROFILE_ITEMS * 10)):
            if not 0 <= value <= most:
                raise RequestError("INVALID_ARGUMENT", f"{name} must be in [0, {most}], got {value}")
        as_of = self.invalidations.clock()
        user = await asyncio.to_thread(resolve_user, state, self.events, user_id)
        if user is None:
            raise RequestError("NOT_FOUND", f"user_id '{shown(user_id)}' is not known")
        items = state.catalogue.items
        newest_first = user.history[::-1]
        profile_text = profile_text_of([items[i] for i in newest_first], attributes=user.attributes)
        tags: list[tuple[str, float]] = []
        if profile_text and max_tags:
            try:
                vector = await self._profile_vector(state, user_id, self.config.cache_user_vectors, profile_text,
                                                    timeout_s, "GetUserProfile", as_of)
            except EncoderUnavailable as error:
                raise RequestError("UNAVAILABLE", f"the text encoder is unavailable: {error}") from None
            tags = self._user_tags(state, vector, max_tags)
        recent = [(state.catalogue.item_ids[i], items[i].title) for i in newest_first[:max_recent].tolist()]
        return ProfileView(user_id=user_id, tags=tags, recent_items=recent, profile_text=profile_text,
                           bundle_version=state.label, recorded_events=user.recorded_events)

    async def add_items(self, items: Sequence[tuple[str, ItemInfo]], *, timeout_s: float = 30.0) -> tuple[int, int, str]:
        """Validate, encode, store, insert. Once validated, the call runs to its end even if cancelled (a
        client deadline): an item stored but not inserted would be refused by RecordEvents until a restart."""
        check_new_items(items)
        return await run_to_completion(self._add_items(items, timeout_s))

    async def _add_items(self, items: Sequence[tuple[str, ItemInfo]], timeout_s: float) -> tuple[int, int, str]:
        async with self.catalogue_lock:  # a deploy cannot start between encoding and inserting
            state = self.state
            for position, (item_id, _) in enumerate(items):
                row = state.catalogue.index.get(item_id)
                if row is not None and row < state.catalogue.n_base:
                    raise RequestError("INVALID_ARGUMENT", f"items[{position}].item_id '{item_id}' is part of bundle "
                                                           f"{state.label}'s catalogue; rebuild to change it")
            try:
                vectors = await self.encode(state, [item_text_of(info) for _, info in items], timeout_s)
            except EncoderUnavailable as error:
                raise RequestError("UNAVAILABLE", f"the text encoder is unavailable, nothing was added: {error}") from None
            now = time.time()
            await asyncio.to_thread(self.events.put_items, [StoredItem(item_id=item_id, fields=fields_of(info),
                                                                       added_at=now) for item_id, info in items])
            added, replaced = state.add_items(items, vectors)
        self.metrics.items_added(added)
        return added, replaced, state.label
