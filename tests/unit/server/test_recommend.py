"""Recommend and SimilarItems on the tiny bundle, with the build's own ONNX encoder standing in for Triton."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lmrec.encoder import OnnxTextEncoder
from lmrec.server.encoder_client import EncoderUnavailable
from lmrec.server.fusion import SIGNALS
from lmrec.server.event_store import MemoryEventStore
from lmrec.server.recommend import Recommender, ServingConfig
from lmrec.server.requests import MAX_K, RecommendQuery, RequestError
from lmrec.server.state import prepare_state


class LocalEncoder:
    """The TritonTextEncoder interface, answered in-process by the bundle's encoder files."""

    def __init__(self, directory) -> None:
        self._encoder = OnnxTextEncoder(directory, threads=2)
        self.calls: list[tuple[list[str], str, int]] = []

    async def encode(self, texts, *, model, version, timeout_s, max_batch_size=None):
        assert timeout_s > 0
        self.calls.append((list(texts), model, version))
        return self._encoder.encode(list(texts))


class DownEncoder:
    async def encode(self, texts, *, model, version, timeout_s, max_batch_size=None):
        raise EncoderUnavailable("triton is down")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def local_encoder(tiny_build_dir):
    return LocalEncoder(tiny_build_dir.repository_dir / "text_encoder" / str(tiny_build_dir.version))


def state_of(bundle, encoder, stored_items=()):
    async def encode(texts):
        return await encoder.encode(texts, model=bundle.encoder_model, version=bundle.encoder_version, timeout_s=5.0)
    return run(prepare_state(bundle, list(stored_items), encode))


@pytest.fixture(scope="module")
def tiny_state(tiny_bundle, local_encoder):
    return state_of(tiny_bundle, local_encoder)


@pytest.fixture
def recommender(tiny_state, local_encoder):
    local_encoder.calls.clear()
    return Recommender(tiny_state, MemoryEventStore(), local_encoder)


@pytest.fixture
def degraded_recommender(tiny_state):
    return Recommender(tiny_state, MemoryEventStore(), DownEncoder())


@pytest.fixture(scope="module")
def user(tiny_bundle):
    """A known user and that user's history (item indices, oldest first)."""
    index = 7
    return tiny_bundle.dataset.user_ids[index], tiny_bundle.dataset.histories()[index]


def ids_of(tiny_bundle, recommendation) -> list[str]:
    return [tiny_bundle.dataset.item_ids[r.item] for r in recommendation.items]


def assert_well_formed(recommendation, k):
    items = [r.item for r in recommendation.items]
    assert len(items) == k
    assert len(set(items)) == k
    scores = [r.score for r in recommendation.items]
    assert scores == sorted(scores, reverse=True)
    for r in recommendation.items:
        assert r.found_by in SIGNALS
        assert set(r.signals) <= set(SIGNALS)


# ---------------------------------------------------------------------------------------------------
# Recommend


def test_known_user_gets_k_unseen_items(recommender, tiny_bundle, user):
    user_id, history = user
    result = run(recommender.recommend(RecommendQuery(user_id=user_id, k=10)))
    assert_well_formed(result, 10)
    assert not set(r.item for r in result.items) & set(history.tolist())
    assert result.bundle_version == "1" and not result.degraded
    # Every signal took part: text, the trained ALS factors and popularity.
    assert {s for r in result.items for s in r.signals} == {"lm", "als", "popular"}
    # The profile text was built from the user's history, newest first, and sent to the bundle's encoder.
    newest = tiny_bundle.dataset.items[history[-1]].title
    oldest_named = tiny_bundle.dataset.items[history[-10]].title
    assert result.profile_text.index(newest) < result.profile_text.index(oldest_named)
    assert recommender.encoder.calls == [([result.profile_text], "text_encoder", 1)]


def test_seen_items_come_back_with_include_seen(recommender, tiny_bundle, user):
    user_id, history = user
    n_items = tiny_bundle.dataset.n_items
    result = run(recommender.recommend(RecommendQuery(user_id=user_id, k=n_items, include_seen=True)))
    assert_well_formed(result, n_items)
    assert set(history.tolist()) <= {r.item for r in result.items}


def test_exactly_k_when_k_is_everything_unseen(recommender, tiny_bundle, user):
    user_id, history = user
    unseen = set(range(tiny_bundle.dataset.n_items)) - set(history.tolist())
    result = run(recommender.recommend(RecommendQuery(user_id=user_id, k=len(unseen))))
    assert_well_formed(result, len(unseen))
    assert {r.item for r in result.items} == unseen


def test_k_beyond_the_unseen_catalogue_returns_every_unseen_item(recommender, tiny_bundle, user):
    user_id, history = user
    result = run(recommender.recommend(RecommendQuery(user_id=user_id, k=MAX_K)))
    assert {r.item for r in result.items} == set(range(tiny_bundle.dataset.n_items)) - set(history.tolist())


def test_anonymous_session_with_recent_items(recommender, tiny_bundle):
    recent = tiny_bundle.dataset.item_ids[:3]
    result = run(recommender.recommend(RecommendQuery(recent_item_ids=recent, k=5)))
    assert_well_formed(result, 5)
    assert not set(ids_of(tiny_bundle, result)) & set(recent)
    assert any("als" in r.signals for r in result.items)  # folded in from the session
    for item_id in recent:
        assert tiny_bundle.dataset.items[tiny_bundle.item_index[item_id]].title in result.profile_text


def test_free_text_cold_start_follows_the_text(recommender, tiny_bundle):
    result = run(recommender.recommend(RecommendQuery(text="a haunted graveyard full of ghosts and zombies", k=5)))
    assert_well_formed(result, 5)
    assert result.profile_text == "a haunted graveyard full of ghosts and zombies"
    categories = [tiny_bundle.dataset.items[r.item].categories for r in result.items]
    assert sum("Horror" in c for c in categories) >= 3
    assert all("als" not in r.signals for r in result.items)  # no history, no CF


def test_unknown_user_with_text_is_served(recommender):
    result = run(recommender.recommend(RecommendQuery(user_id="nobody", text="cooking with spices", k=3)))
    assert_well_formed(result, 3)


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1])
def test_k_out_of_range(recommender, user, k):
    with pytest.raises(RequestError) as raised:
        run(recommender.recommend(RecommendQuery(user_id=user[0], k=k)))
    assert raised.value.code == "INVALID_ARGUMENT"
    assert "k must be between 1 and 1000" in raised.value.message and str(k) in raised.value.message


@pytest.mark.parametrize("query", [RecommendQuery(), RecommendQuery(text="   \n ")])
def test_empty_request(recommender, query):
    with pytest.raises(RequestError) as raised:
        run(recommender.recommend(query))
    assert raised.value.code == "INVALID_ARGUMENT" and "empty request" in raised.value.message


def test_unknown_user_alone_is_not_found(recommender):
    with pytest.raises(RequestError) as raised:
        run(recommender.recommend(RecommendQuery(user_id="u99999")))
    assert raised.value.code == "NOT_FOUND" and "'u99999'" in raised.value.message


def test_unknown_recent_item(recommender, tiny_bundle):
    ids = (tiny_bundle.dataset.item_ids[0], "no-such-item")
    with pytest.raises(RequestError) as raised:
        run(recommender.recommend(RecommendQuery(recent_item_ids=ids)))
    assert raised.value.code == "INVALID_ARGUMENT"
    assert "recent_item_ids[1] 'no-such-item'" in raised.value.message


def test_over_long_text(recommender):
    limit = ServingConfig().max_text_chars
    with pytest.raises(RequestError) as raised:
        run(recommender.recommend(RecommendQuery(text="x" * (limit + 1))))
    assert raised.value.code == "INVALID_ARGUMENT" and str(limit) in raised.value.message
    assert recommender.encoder.calls == []
    assert_well_formed(run(recommender.recommend(RecommendQuery(text="x" * limit, k=2))), 2)


def test_too_many_recent_items(recommender, tiny_bundle):
    ids = (tiny_bundle.dataset.item_ids[0],) * (ServingConfig().max_recent_items + 1)
    with pytest.raises(RequestError) as raised:
        run(recommender.recommend(RecommendQuery(recent_item_ids=ids)))
    assert raised.value.code == "INVALID_ARGUMENT" and "recent_item_ids" in raised.value.message


def test_encoder_down_degrades_but_still_answers(degraded_recommender, user):
    result = run(degraded_recommender.recommend(RecommendQuery(user_id=user[0], k=10)))
    assert result.degraded
    assert_well_formed(result, 10)
    assert all("lm" not in r.signals for r in result.items)
    assert not {r.item for r in result.items} & set(user[1].tolist())


def test_encoder_down_text_only_falls_back_to_popular(degraded_recommender, tiny_bundle):
    result = run(degraded_recommender.recommend(RecommendQuery(text="ghosts", k=4)))
    assert result.degraded
    assert_well_formed(result, 4)
    popularity = tiny_bundle.popularity[[r.item for r in result.items]]
    assert (popularity == np.sort(tiny_bundle.popularity)[::-1][:4]).all()


# ---------------------------------------------------------------------------------------------------
# SimilarItems


def test_similar_by_item_excludes_the_item(recommender, tiny_bundle):
    item_id = tiny_bundle.dataset.item_ids[11]
    result = run(recommender.similar(item_id=item_id, k=5))
    labels = [r.item for r in result.items]
    assert len(labels) == 5 and 11 not in labels
    sims = tiny_bundle.item_embeddings @ tiny_bundle.item_embeddings[11]
    sims[11] = -np.inf
    assert set(labels) == set(np.argsort(-sims)[:5].tolist())
    scores = [r.score for r in result.items]
    assert scores == sorted(scores, reverse=True)
    assert all(r.found_by == "lm" for r in result.items)
    assert recommender.encoder.calls == []  # stored embeddings, no encoder round trip


def test_similar_by_item_with_k_the_whole_catalogue(recommender, tiny_bundle):
    n = tiny_bundle.dataset.n_items
    result = run(recommender.similar(item_id=tiny_bundle.dataset.item_ids[0], k=n))
    assert sorted(r.item for r in result.items) == list(range(1, n))


def test_similar_by_text(recommender, tiny_bundle):
    result = run(recommender.similar(text="starships and galaxies in deep space", k=5))
    assert len(result.items) == 5
    categories = [tiny_bundle.dataset.items[r.item].categories for r in result.items]
    assert sum("Space Adventure" in c for c in categories) >= 3


def test_similar_errors(recommender, degraded_recommender):
    with pytest.raises(RequestError) as raised:
        run(recommender.similar(item_id="no-such-item"))
    assert raised.value.code == "NOT_FOUND" and "'no-such-item'" in raised.value.message
    with pytest.raises(RequestError) as raised:
        run(recommender.similar(text="  "))
    assert raised.value.code == "INVALID_ARGUMENT"
    with pytest.raises(RequestError) as raised:
        run(recommender.similar(item_id="x", k=0))
    assert raised.value.code == "INVALID_ARGUMENT" and "k" in raised.value.message
    with pytest.raises(RequestError) as raised:
        run(degraded_recommender.similar(text="ghosts"))
    assert raised.value.code == "UNAVAILABLE"
