"""Events, ForgetUser, AddItems, filters, explanations and profiles on the tiny bundle (local ONNX encoder)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from lmrec.export.dataset import ItemInfo
from lmrec.server.bundle import load_bundle
from lmrec.server.encoder_client import EncoderUnavailable
from lmrec.server.event_store import Event, MemoryEventStore
from lmrec.server.recommend import MAX_CACHED_ANSWER_K, Recommender, ServingConfig
from lmrec.server.requests import RecommendQuery, RequestError
from lmrec.server.users import resolve_user

from .test_recommend import DownEncoder, local_encoder, run, state_of  # noqa: F401 (a fixture)


@pytest.fixture
def live(tiny_build_root, local_encoder):
    """A recommender on its own copy of the bundle (AddItems changes the index), with an empty event store."""
    bundle = load_bundle(tiny_build_root)
    return Recommender(state_of(bundle, local_encoder), MemoryEventStore(), local_encoder)


@pytest.fixture
def live_beneath_answers(tiny_build_root, local_encoder):
    """`live` without its answer cache: a repeated request reaches the caches beneath it."""
    bundle = load_bundle(tiny_build_root)
    return Recommender(state_of(bundle, local_encoder), MemoryEventStore(), local_encoder,
                       ServingConfig(cache_answers=False))


def ids(result) -> list[str]:
    return list(result.item_ids)


def category_items(state, category: str) -> list[str]:
    return [state.catalogue.item_ids[i] for i, info in enumerate(state.catalogue.items) if category in info.categories]


# -- events ------------------------------------------------------------------------------------------------


def test_an_event_changes_the_next_recommendation(live):
    state = live.state
    user_id = state.bundle.dataset.user_ids[3]
    before = run(live.recommend(RecommendQuery(user_id=user_id, k=10)))
    horror = [i for i in category_items(state, "Horror") if i not in ids(before)][:4]
    assert run(live.record_events([Event(user_id=user_id, item_id=i) for i in horror])) == len(horror)
    after = run(live.recommend(RecommendQuery(user_id=user_id, k=10)))
    assert ids(after) != ids(before)
    assert not set(horror) & set(ids(after))  # now seen: excluded
    for item_id in horror:  # the profile text was rebuilt from the new history
        assert state.catalogue.items[state.catalogue.index[item_id]].title in after.profile_text


def test_events_invalidate_the_cached_vector(live_beneath_answers):
    live = live_beneath_answers
    user_id = live.state.bundle.dataset.user_ids[5]
    run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert live.metrics.cache_hit_ratio() == 0.5
    calls = len(live.encoder.calls)
    run(live.record_events([Event(user_id=user_id, item_id=live.state.catalogue.item_ids[0])]))
    run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert len(live.encoder.calls) == calls + 1  # recomputed, not served from the cache


def candidate_lookups(recommender) -> dict[str, float]:
    return {result: recommender.metrics.sample("lmrec_gateway_candidate_cache_total", {"result": result}) or 0.0
            for result in ("hit", "miss")}


def test_a_returning_user_reuses_their_candidates_until_an_event(live_beneath_answers):
    live = live_beneath_answers
    user_id = live.state.bundle.dataset.user_ids[5]
    first = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    second = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert candidate_lookups(live) == {"hit": 1.0, "miss": 1.0}
    assert ids(second) == ids(first) and [r.score for r in second.items] == [r.score for r in first.items]
    item_id = next(i for i in live.state.catalogue.item_ids if i not in ids(first))
    run(live.record_events([Event(user_id=user_id, item_id=item_id)]))
    after = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert candidate_lookups(live)["miss"] == 2.0 and item_id not in ids(after)  # recomputed: now seen


def test_cached_candidates_are_not_reused_for_other_exclusions_k_or_after_added_items(live_beneath_answers):
    live = live_beneath_answers
    state = live.state
    user_id = state.bundle.dataset.user_ids[1]
    first = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    excluding = run(live.recommend(RecommendQuery(user_id=user_id, k=5, exclude_item_ids=tuple(ids(first)[:2]))))
    assert not set(ids(first)[:2]) & set(ids(excluding))
    run(live.recommend(RecommendQuery(user_id=user_id, k=7)))
    assert candidate_lookups(live) == {"hit": 0.0, "miss": 3.0}
    run(live.recommend(RecommendQuery(user_id=user_id, k=7)))
    assert candidate_lookups(live)["hit"] == 1.0
    template = state.catalogue.items[0]
    run(live.add_items([("new-x", ItemInfo(title=f"{template.title} II", categories=template.categories))]))
    run(live.recommend(RecommendQuery(user_id=user_id, k=7)))
    assert candidate_lookups(live) == {"hit": 1.0, "miss": 4.0}  # the catalogue changed under the entry


def test_requests_with_their_own_items_or_text_are_not_cached(live):
    user_id = live.state.bundle.dataset.user_ids[4]
    recent = (live.state.catalogue.item_ids[2],)
    for _ in range(2):
        run(live.recommend(RecommendQuery(user_id=user_id, k=5, recent_item_ids=recent)))
        run(live.recommend(RecommendQuery(user_id=user_id, k=5, text="space operas")))
    assert candidate_lookups(live) == {"hit": 0.0, "miss": 0.0} and len(live.candidates) == 0
    assert answer_lookups(live) == {"hit": 0.0, "miss": 0.0} and len(live.answers) == 0


def test_a_new_user_from_events_alone(live):
    item_ids = category_items(live.state, "Space Adventure")[:3]
    run(live.record_events([Event(user_id="brand-new", item_id=i, timestamp=100 + n) for n, i in enumerate(item_ids)]))
    result = run(live.recommend(RecommendQuery(user_id="brand-new", k=5)))
    assert len(result.items) == 5 and not set(item_ids) & set(ids(result))
    space = set(category_items(live.state, "Space Adventure"))
    assert len(space & set(ids(result))) >= 3


def test_bad_events_store_nothing(live):
    good = Event(user_id="u-x", item_id=live.state.catalogue.item_ids[0])
    with pytest.raises(RequestError) as raised:
        run(live.record_events([good, Event(user_id="u-x", item_id="nope")]))
    assert raised.value.code == "INVALID_ARGUMENT" and "events[1].item_id 'nope'" in raised.value.message
    with pytest.raises(RequestError) as raised:
        run(live.record_events([good, Event(user_id="u-x", item_id=good.item_id, weight=float("nan"))]))
    assert raised.value.code == "INVALID_ARGUMENT" and "events[1].weight" in raised.value.message
    assert live.events.n_events() == 0


# -- ForgetUser -----------------------------------------------------------------------------------------------


def test_forget_user_removes_snapshot_history_events_and_cache(live):
    user_id = live.state.bundle.dataset.user_ids[2]
    run(live.record_events([Event(user_id=user_id, item_id=live.state.catalogue.item_ids[1])]))
    run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert len(live.cache) == 1
    assert len(live.candidates) == 1 and len(live.answers) == 1
    deleted, was_known = run(live.forget_user(user_id))
    assert (deleted, was_known) == (1, True)
    assert len(live.cache) == 0 and len(live.candidates) == 0 and len(live.answers) == 0
    with pytest.raises(RequestError) as raised:
        run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert raised.value.code == "NOT_FOUND"
    with pytest.raises(RequestError):
        run(live.profile(user_id))
    assert run(live.forget_user("never-seen")) == (0, False)


# -- filters: exactly k ----------------------------------------------------------------------------------------


def test_required_genre_returns_exactly_k_matching_items(live):
    state = live.state
    user_id = state.bundle.dataset.user_ids[0]
    history = set(state.catalogue.item_ids[i] for i in state.snapshot_users.get_user(user_id).history)
    comedy = [i for i in category_items(state, "Comedy") if i not in history]
    assert len(comedy) >= 6
    for k in (3, len(comedy)):
        result = run(live.recommend(RecommendQuery(user_id=user_id, k=k, require=(("genre", ("comedy",)),))))
        assert len(result.items) == k and set(ids(result)) <= set(comedy)
    result = run(live.recommend(RecommendQuery(user_id=user_id, k=len(comedy) + 5, require=(("genre", ("Comedy",)),))))
    assert set(ids(result)) == set(comedy)  # fewer eligible than k: all of them, nothing else


def test_excluded_ids_never_come_back_and_k_still_holds(live):
    user_id = live.state.bundle.dataset.user_ids[0]
    first = run(live.recommend(RecommendQuery(user_id=user_id, k=10)))
    again = run(live.recommend(RecommendQuery(user_id=user_id, k=10, exclude_item_ids=tuple(ids(first)))))
    assert len(again.items) == 10 and not set(ids(first)) & set(ids(again))


class AddingEncoder:
    """Encodes like the local encoder, but an AddItems lands while the first profile is being encoded."""

    def __init__(self, encoder, recommender, item) -> None:
        self.encoder, self.recommender, self.item, self.added = encoder, recommender, item, False

    async def encode(self, texts, *, model, version, timeout_s, max_batch_size=None):
        vectors = await self.encoder.encode(texts, model=model, version=version, timeout_s=timeout_s)
        if not self.added:
            self.added = True
            new = await self.encoder.encode([self.item[1].title], model=model, version=version, timeout_s=timeout_s)
            self.recommender.state.add_items([self.item], new)
        return vectors


def test_items_added_while_a_request_runs_are_held_to_its_filters(live):
    state = live.state
    user_id = state.bundle.dataset.user_ids[0]
    comedy = set(category_items(state, "Comedy"))
    live.encoder = AddingEncoder(live.encoder, live, ("added-during", ItemInfo(title="Night of the Ghosts",
                                                                              categories=("Horror",))))
    result = run(live.recommend(RecommendQuery(user_id=user_id, k=5, require=(("genre", ("Comedy",)),))))
    assert live.encoder.added and "added-during" in state.catalogue.index
    assert len(result.items) == 5 and set(ids(result)) <= comedy


def test_the_popularity_top_up_skips_items_added_after_the_mask_was_built(live):
    state = live.state
    blocked = np.zeros(len(state.catalogue), bool)  # a request's mask, built before the AddItems below
    template = state.catalogue.items[0]
    run(live.add_items([("later", ItemInfo(title=f"{template.title} Again", categories=template.categories))]))
    state.popularity[-1] = state.popularity.max() + 1  # make the added row the most popular one
    state._index_rows()
    allowed = state.allowed_popular(blocked, len(blocked) + 5)
    assert len(allowed) == len(blocked) and allowed.max() < len(blocked)


def test_filters_hold_in_degraded_mode(live):
    degraded = Recommender(live.state, live.events, DownEncoder())
    user_id = live.state.bundle.dataset.user_ids[0]
    result = run(degraded.recommend(RecommendQuery(user_id=user_id, k=4, require=(("genre", ("Horror",)),))))
    assert result.degraded and len(result.items) == 4
    assert set(ids(result)) <= set(category_items(live.state, "Horror"))


def test_an_answer_a_misspelt_filter_value_empties_says_which_value_and_the_closest(live):
    """`--require genre=Westerns` returned an empty list with a hint that never named 'Western'."""
    result = run(live.recommend(RecommendQuery(text="x", k=5, require=(("genre", ("Comedies",)),))))
    assert result.items == [] and result.notes == ["no item has genre = 'Comedies'; closest: Comedy"]
    assert run(live.recommend(RecommendQuery(text="x", k=5, require=(("genre", ("Comedy",)),)))).notes == ()


def test_unknown_filter_key_names_the_known_ones(live):
    with pytest.raises(RequestError) as raised:
        run(live.recommend(RecommendQuery(text="x", require=(("colour", ("red",)),))))
    assert raised.value.code == "INVALID_ARGUMENT"
    assert "'colour'" in raised.value.message and "genre" in raised.value.message


# -- attributes of unseen users, explanations, profiles ---------------------------------------------------------


def test_unseen_user_with_attributes_only(live):
    result = run(live.recommend(RecommendQuery(user_id="stranger", attributes={"occupation": "astronaut"}, k=5)))
    assert len(result.items) == 5 and "astronaut" in result.profile_text


def test_every_item_is_explained(live):
    user_id = live.state.bundle.dataset.user_ids[1]
    result = run(live.recommend(RecommendQuery(user_id=user_id, k=10)))
    history = set(live.state.snapshot_users.get_user(user_id).history.tolist())
    assert len(result.explanations) == 10
    for item, why in zip(result.items, result.explanations):
        assert why.text
        assert why.because_item in history and why.because_item != item.item
        assert why.because_title and why.because_title in why.text
    assert any(why.graph_path.startswith("shares ") for why in result.explanations)


def test_profile_has_tags_recent_items_and_version(live):
    user_id = live.state.bundle.dataset.user_ids[4]
    view = run(live.profile(user_id, max_tags=3, max_recent=4))
    assert 1 <= len(view.tags) <= 3 and view.tags[0][1] == pytest.approx(1.0)
    history = live.state.snapshot_users.get_user(user_id).history
    assert [item_id for item_id, _ in view.recent_items] == [live.state.catalogue.item_ids[i]
                                                            for i in history[::-1][:4]]
    assert view.bundle_version == "1" and view.recorded_events == 0


@pytest.mark.parametrize("max_tags, max_recent, named", [(51, 4, "max_tags must be in [0, 50], got 51"),
                                                         (3, 10_000, "max_recent_items must be in [0, 100], got 10000"),
                                                         (-1, 4, "max_tags must be in [0, 50], got -1")])
def test_profile_ranges_are_refused_by_name_and_value(live, max_tags, max_recent, named):
    user_id = live.state.bundle.dataset.user_ids[4]
    with pytest.raises(RequestError) as raised:
        run(live.profile(user_id, max_tags=max_tags, max_recent=max_recent))
    assert raised.value.code == "INVALID_ARGUMENT" and named in raised.value.message


def test_user_attributes_are_refused_past_their_key_length_and_count(live):
    """A key is copied into the profile text the answer echoes: a 5 MB key came back as RESOURCE_EXHAUSTED."""
    with pytest.raises(RequestError) as raised:
        run(live.recommend(RecommendQuery(attributes={"k" * 101: "v"}, k=3)))
    assert raised.value.code == "INVALID_ARGUMENT" and "is 101 characters long; the limit is 100" in raised.value.message
    many = {f"key{n}": "v" for n in range(51)}
    with pytest.raises(RequestError, match="attributes has 51 entries; the limit is 50"):
        run(live.recommend(RecommendQuery(attributes=many, k=3)))
    assert len(run(live.recommend(RecommendQuery(attributes={"k" * 100: "v", **dict(list(many.items())[:49])},
                                                 k=3))).items) == 3


# -- AddItems ----------------------------------------------------------------------------------------------------


def test_added_item_is_findable_and_recommended_to_a_matching_user(live):
    state = live.state
    # A user whose history is mostly one category, and a new item squarely in it.
    user_id = state.bundle.dataset.user_ids[6]
    history = state.snapshot_users.get_user(user_id).history
    top_category = max({c for i in history for c in state.catalogue.items[i].categories},
                       key=lambda c: sum(c in state.catalogue.items[i].categories for i in history))
    template = state.catalogue.items[int(history[-1])]
    new = ItemInfo(title=f"{template.title} Returns", categories=(top_category,), description=template.description,
                   year=template.year)
    added, replaced, version = run(live.add_items([("new-1", new)]))
    assert (added, replaced, version) == (1, 0, "1")
    similar = run(live.similar(item_id="new-1", k=5))
    assert len(similar.items) == 5
    by_text = run(live.similar(text=new.title, k=3))
    assert "new-1" in ids(by_text)
    result = run(live.recommend(RecommendQuery(user_id=user_id, k=10)))
    assert "new-1" in ids(result)


def test_add_items_refuses_bundle_items_and_bad_input_without_adding(live):
    existing = live.state.catalogue.item_ids[0]
    n = len(live.state.catalogue)
    with pytest.raises(RequestError) as raised:
        run(live.add_items([("fresh", ItemInfo(title="Fresh")), (existing, ItemInfo(title="Other"))]))
    assert raised.value.code == "INVALID_ARGUMENT" and f"'{existing}' is part of bundle" in raised.value.message
    with pytest.raises(RequestError) as raised:
        run(live.add_items([("blank", ItemInfo(title="  ", categories=("Drama",)))]))
    assert "items[0] has no text" in raised.value.message
    with pytest.raises(RequestError) as raised:  # such a key echoed in a filter error broke gRPC's metadata limit
        run(live.add_items([("fresh", ItemInfo(title="Fresh")),
                            ("long-key", ItemInfo(title="Long", attributes={"k" * 101: "v"}))]))
    assert raised.value.code == "INVALID_ARGUMENT"
    assert "items[1].attributes has a key of 101 characters; the limit is 100" in raised.value.message
    with pytest.raises(RequestError, match=r"items\[0\].attributes has a blank key"):
        run(live.add_items([("blank-key", ItemInfo(title="Blank", attributes={" ": "v"}))]))
    with pytest.raises(RequestError, match=r"items\[1\].item_id must be 1..256 characters, not only spaces"):
        run(live.add_items([("fresh", ItemInfo(title="Fresh")), ("   ", ItemInfo(title="Blank id"))]))
    with pytest.raises(RequestError) as raised:  # stored as "a:b:c", it was filed under the key 'a'
        run(live.add_items([("colon-key", ItemInfo(title="Colon", attributes={"a:b": "c"}))]))
    assert raised.value.code == "INVALID_ARGUMENT" and "key 'a:b' contains ':'" in raised.value.message
    down = Recommender(live.state, live.events, DownEncoder())
    with pytest.raises(RequestError) as raised:
        run(down.add_items([("fresh", ItemInfo(title="Fresh"))]))
    assert raised.value.code == "UNAVAILABLE"
    assert len(live.state.catalogue) == n and live.events.items() == []


def test_an_item_with_a_description_but_no_title_is_added_and_explained_by_it(live):
    """A described, untitled item is accepted; explanations name it by its description, never 'Untitled'."""
    added = run(live.add_items([("described", ItemInfo(title="", description="A quiet drama about two sisters "
                                                                              "who run a lighthouse in winter."))]))
    assert added[0] == 1
    row = live.state.catalogue.index["described"]
    from lmrec.server.explain import explain_items

    explanations = explain_items(live.state, np.array([row]), [0], ["lm"])
    assert explanations[0].because_title == "A quiet drama about two sisters who run..."


def test_replacing_an_added_item_reencodes_it(live):
    run(live.add_items([("swap", ItemInfo(title="starship nebula galaxy", categories=("Space Adventure",)))]))
    first = live.state.item_embeddings[live.state.catalogue.index["swap"]].copy()
    added, replaced, _ = run(live.add_items([("swap", ItemInfo(title="haunted graveyard zombies",
                                                                 categories=("Horror",)))]))
    assert (added, replaced) == (0, 1)
    second = live.state.item_embeddings[live.state.catalogue.index["swap"]]
    assert float(first @ second) < 0.9
    horror = run(live.recommend(RecommendQuery(text="haunted graveyard zombies", k=5)))
    assert "swap" in ids(horror)


def test_replacing_an_added_item_replaces_its_graph_attributes(live):
    state = live.state
    run(live.add_items([("swap", ItemInfo(title="starship nebula galaxy", categories=("Comedy",)))]))
    run(live.add_items([("swap", ItemInfo(title="haunted graveyard zombies", categories=("Horror",)))]))
    row = state.catalogue.index["swap"]
    attributes = {state.graph.attribute_ids[j] for j in state.graph.incidence[row].indices}
    # Explanations and the ranker's graph features read the graph: it must say what the filters say.
    assert any("Horror" in str(a) for a in attributes) and not any("Comedy" in str(a) for a in attributes)
    assert state.graph.incidence.shape[0] == len(state.catalogue)


def test_a_cancelled_add_items_is_still_inserted(live):
    """The client's deadline passes while the commit runs: what was stored must also be served."""
    async def cancel_while_storing():
        call = asyncio.ensure_future(live.add_items([("late", ItemInfo(title="A Late Arrival",
                                                                       categories=("Comedy",)))]))
        while not live.catalogue_lock.locked():
            await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        async with live.catalogue_lock:  # the add, still running, holds the lock until it has inserted
            pass

    run(cancel_while_storing())
    assert "late" in live.state.catalogue.index
    assert [item.item_id for item in live.events.items()] == ["late"]
    assert run(live.record_events([Event(user_id="u-late", item_id="late", timestamp=1.0)])) == 1


def test_a_ranker_failure_after_items_were_added_answers_from_the_blend_with_fresh_masks(live, monkeypatch):
    """A fused request awaits the ranker; AddItems lands; the ranker call then fails: the blend fallback
    must hold the added items to the request's filter, not index them with the mask built before."""
    state = live.state
    user_id = state.bundle.dataset.user_ids[0]
    comedy = set(category_items(state, "Comedy"))

    async def ranker_fails_after_an_add(*args, **kwargs):
        state.fused = None  # the stand-in has served its purpose; AddItems would extend a real fused model
        await live.add_items([("added-during-ranking", ItemInfo(title="Laughs in Space", categories=("Comedy",)))])
        raise EncoderUnavailable("ranker: deadline exceeded")

    # As if fused: the ranker branch runs (its features prepared during the encode), then falls back.
    monkeypatch.setattr(state, "fused", SimpleNamespace(prepare_features=lambda *args: None))
    monkeypatch.setattr(live, "_rank_with_ranker", ranker_fails_after_an_add)
    result = run(live.recommend(RecommendQuery(user_id=user_id, k=5, require=(("genre", ("Comedy",)),))))
    assert result.degraded and len(result.items) == 5
    assert set(ids(result)) <= comedy | {"added-during-ranking"}


def test_repeated_events_on_one_item_count_once_in_the_profile(live):
    state = live.state
    user_id = state.bundle.dataset.user_ids[1]
    item = state.catalogue.items[0]
    events = [Event(user_id=user_id, item_id=state.catalogue.item_ids[0], event_type="view", timestamp=time.time() - 100 + n)
              for n in range(10)]
    run(live.record_events(events))
    answer = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert answer.profile_text.count(item.title) == 1
    assert answer.profile_text.index(item.title) < len(answer.profile_text) // 2  # the newest item comes first


def test_forget_user_refuses_an_overlong_id_by_name(live):
    with pytest.raises(RequestError) as raised:
        run(live.forget_user("u" * 300))
    assert raised.value.code == "INVALID_ARGUMENT" and "user_id" in raised.value.message


def test_stored_items_come_back_in_a_fresh_state(tiny_build_root, local_encoder):
    events = MemoryEventStore()
    first = Recommender(state_of(load_bundle(tiny_build_root), local_encoder), events, local_encoder)
    run(first.add_items([("kept", ItemInfo(title="A lighthouse keeper's storm", categories=("Drama",)))]))
    restarted = state_of(load_bundle(tiny_build_root), local_encoder, events.items())
    row = restarted.catalogue.index["kept"]
    np.testing.assert_allclose(restarted.item_embeddings[row], first.state.item_embeddings[row], atol=1e-5)
    assert restarted.retriever.search(restarted.item_embeddings[row], 1)[0][0][0] == row


def test_an_item_nobody_has_touched_is_not_explained_as_popular(live):
    run(live.add_items([("new-1", ItemInfo(title="Quantum Gardening Handbook", categories=("Gardening",),
                                           description="growing vegetables with physics"))]))
    result = run(live.recommend(RecommendQuery(text="vegetable gardening", k=1, require=(("genre", ("Gardening",)),))))
    assert ids(result) == ["new-1"]
    assert result.items[0].found_by != "popular" and result.explanations[0].text != "It is popular"


def test_a_session_repeating_an_item_names_it_once(live):
    first = live.state.catalogue.item_ids[0]
    result = run(live.recommend(RecommendQuery(recent_item_ids=(first, first, first), k=3)))
    assert result.profile_text.count(live.state.catalogue.items[0].title) == 1


def test_a_filter_with_an_empty_value_is_refused_by_name(live):
    with pytest.raises(RequestError) as raised:
        run(live.recommend(RecommendQuery(text="comedy", k=3, require=(("genre", ("",)),))))
    assert raised.value.code == "INVALID_ARGUMENT" and "require[0]" in raised.value.message


def test_over_long_ids_are_refused_or_quoted_short(live):
    with pytest.raises(RequestError) as raised:
        run(live.recommend(RecommendQuery(user_id="u" * 20_000, k=3)))
    assert raised.value.code == "INVALID_ARGUMENT" and len(raised.value.message) < 200
    with pytest.raises(RequestError) as raised:
        run(live.recommend(RecommendQuery(text="x", recent_item_ids=("i" * 20_000,), k=3)))
    assert raised.value.code == "INVALID_ARGUMENT" and "20000 characters" in raised.value.message
    assert len(raised.value.message) < 300  # gRPC refuses status messages over its metadata limit
    with pytest.raises(RequestError) as raised:
        run(live.similar(item_id="i" * 20_000, k=3))
    assert raised.value.code == "NOT_FOUND" and len(raised.value.message) < 300


def test_added_items_with_over_long_text_are_refused_by_field(live):
    with pytest.raises(RequestError, match=r"items\[0\].description is 20000 characters"):
        run(live.add_items([("long", ItemInfo(title="Long", description="d" * 20_000))]))
    assert "long" not in live.state.catalogue.index


def test_an_event_timestamp_in_milliseconds_is_refused_by_name(live):
    item = live.state.catalogue.item_ids[0]
    with pytest.raises(RequestError, match=r"events\[1\].timestamp .*not milliseconds"):
        run(live.record_events([Event(user_id="ms", item_id=item, timestamp=time.time()),
                                Event(user_id="ms", item_id=item, timestamp=time.time() * 1000)]))
    assert live.events.events_of("ms") == []  # nothing of the batch was stored


def test_an_item_liked_then_disliked_is_no_longer_described_as_liked(live):
    state = live.state
    first, second = state.catalogue.item_ids[0], state.catalogue.item_ids[1]
    now = time.time()
    run(live.record_events([Event(user_id="changed-mind", item_id=first, timestamp=now - 30),
                            Event(user_id="changed-mind", item_id=second, timestamp=now - 20),
                            Event(user_id="changed-mind", item_id=first, timestamp=now - 10, weight=-1.0)]))
    answer = run(live.recommend(RecommendQuery(user_id="changed-mind", k=10)))
    title = state.catalogue.items[0].title
    assert title not in answer.profile_text and state.catalogue.items[1].title in answer.profile_text
    assert first not in ids(answer)  # still seen
    assert all(title not in why.text for why in answer.explanations)


def fake_fused_ranker(live, monkeypatch, *, pick=None, on_features=None, score=None) -> None:
    """The state's fused model and the ranker call replaced: candidates are `pick(excluded)` (by default the
    first 12 allowed of rows 0..19) with two zero feature columns, `on_features(users)` runs first (to record
    the users, or to be slow), and `score` answers the ranker call (by default, later candidates higher)."""

    class Fused:
        def prepare_features(self, users, histories, excluded):
            if on_features is not None:
                on_features(users)
            return excluded

        def finish_features(self, excluded, profile):
            chosen = pick(excluded[0]) if pick else [i for i in range(20) if i not in set(excluded[0].tolist())][:12]
            candidates = np.array(chosen, np.int64)
            return [candidates], [np.zeros((len(candidates), 2), np.float32)], ["als_z", "als_rr"]

    async def in_order(features, *, model, version, timeout_s):
        return np.arange(len(features), dtype=np.float32)

    monkeypatch.setattr(live.state, "fused", Fused())
    monkeypatch.setattr(live.encoder, "score", score or in_order, raising=False)


def test_a_known_users_session_items_reach_the_fused_cf_features(live, monkeypatch):
    """Like the blend, the ranker's features fold the session into ALS instead of the trained user row."""
    state = live.state
    user_id = state.bundle.dataset.user_ids[0]
    asked = []
    fake_fused_ranker(live, monkeypatch, on_features=lambda users: asked.append(int(users[0])))
    run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    session = state.catalogue.item_ids[25]
    run(live.recommend(RecommendQuery(user_id=user_id, k=5, recent_item_ids=(session,))))
    assert asked[0] >= 0 and asked[1] == -1  # the trained row alone, then folded in with the session


def test_candidate_lookups_are_not_counted_while_the_cache_is_off(tiny_build_root, local_encoder):
    recommender = Recommender(state_of(load_bundle(tiny_build_root), local_encoder), MemoryEventStore(), local_encoder,
                              ServingConfig(candidate_cache_users=0))
    user_id = recommender.state.bundle.dataset.user_ids[0]
    for _ in range(3):
        run(recommender.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert candidate_lookups(recommender) == {"hit": 0.0, "miss": 0.0}


def test_an_item_the_user_rated_low_is_never_named_as_liked_unless_liked_again(live, monkeypatch):
    state = live.state
    user_id = state.bundle.dataset.user_ids[2]
    named = {why.because_item for why in run(live.recommend(RecommendQuery(user_id=user_id, k=10))).explanations}
    named.discard(None)
    assert named
    original = state.snapshot_users.get_user
    monkeypatch.setattr(state.snapshot_users, "get_user", lambda uid: dataclasses.replace(
        original(uid), rated_low=np.array(sorted(named), np.int64)) if uid == user_id else original(uid))
    live.forget_cached()  # a state's snapshot never changes; the patched one stands for another bundle's
    answer = run(live.recommend(RecommendQuery(user_id=user_id, k=10)))
    titles = {state.catalogue.items[i].title for i in named}
    assert not {why.because_item for why in answer.explanations} & named
    assert not any(title in why.text for why in answer.explanations for title in titles)
    again = sorted(named)[0]  # a later positive event: liked again, so it may be named
    run(live.record_events([Event(user_id=user_id, item_id=state.catalogue.item_ids[again])]))
    assert again not in resolve_user(state, live.events, user_id).rated_low.tolist()


def test_popularity_top_up_items_carry_their_popularity_rank_not_a_full_share(live, monkeypatch):
    state = live.state
    session = int(state.popular_order[0])  # the most popular item is seen, so it is not returned
    fake_fused_ranker(live, monkeypatch, pick=lambda excluded: [int(state.popular_order[5]), int(state.popular_order[9])])
    answer = run(live.recommend(RecommendQuery(recent_item_ids=(state.catalogue.item_ids[session],), k=6)))
    allowed = [int(i) for i in state.popular_order if int(i) != session]
    top_ups = [r for r in answer.items if r.found_by == "popular"]
    assert len(top_ups) == 4
    for item in top_ups:
        assert item.signals == {"popular": pytest.approx(1.0 / (1.0 + allowed.index(item.item)))}
    assert top_ups[0].signals["popular"] == 1.0 and top_ups[-1].signals["popular"] < 1.0


def test_a_slow_ranker_gets_a_share_of_the_deadline_and_the_blend_still_answers_within_it(live, monkeypatch):
    state = live.state
    user_id = state.bundle.dataset.user_ids[0]
    budgets = []

    async def slow_score(features, *, model, version, timeout_s):
        budgets.append(timeout_s)
        await asyncio.sleep(timeout_s)
        raise EncoderUnavailable("deadline exceeded")

    fake_fused_ranker(live, monkeypatch, score=slow_score)
    run(live.recommend(RecommendQuery(user_id=user_id, k=5), timeout_s=2.0))  # the profile vector is cached now
    answer = run(live.recommend(RecommendQuery(user_id=user_id, k=5), timeout_s=1.0))
    assert budgets[-1] <= 0.6 * 1.0 + 1e-6  # encoder_deadline_share of what was left, not all of it
    assert answer.degraded and len(answer.items) == 5


def test_the_rankers_share_is_of_what_is_left_after_the_candidates_are_ready(live, monkeypatch):
    budgets = []

    async def score(features, *, model, version, timeout_s):
        budgets.append(timeout_s)
        return np.arange(len(features), dtype=np.float32)

    fake_fused_ranker(live, monkeypatch, on_features=lambda users: time.sleep(0.4), score=score)
    run(live.recommend(RecommendQuery(text="a space adventure", k=5), timeout_s=1.0))
    assert budgets and budgets[-1] <= 0.6 * (1.0 - 0.4) + 1e-6


def test_a_returning_user_gets_the_rankers_scores_from_the_cache_until_an_event(live_beneath_answers, monkeypatch):
    """The same features and ranker version give the same scores: no second ranker call, also for another
    k, and a full answer while the ranker is down; an event makes the next request ask the ranker again."""
    live = live_beneath_answers
    state = live.state
    user_id = state.bundle.dataset.user_ids[0]
    calls = []

    async def score(features, *, model, version, timeout_s):
        calls.append(len(features))
        if len(calls) > 1 and down:
            raise EncoderUnavailable("triton is down")
        return np.arange(len(features), dtype=np.float32)

    down = False
    fake_fused_ranker(live, monkeypatch, score=score)
    first = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    down = True
    again = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    more = run(live.recommend(RecommendQuery(user_id=user_id, k=8)))
    assert len(calls) == 1 and not again.degraded and not more.degraded
    assert ids(again) == ids(first) and [r.score for r in again.items] == [r.score for r in first.items]
    assert ids(more)[:5] == ids(first)
    run(live.record_events([Event(user_id=user_id, item_id=ids(first)[0])]))
    after = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert len(calls) == 2 and after.degraded  # asked again (and the ranker is down: the blend answered)


def _slow_encoder(live, monkeypatch, *, during=None, fails: bool = False) -> dict:
    """The encoder made to take 0.2 s per call (or to fail after it); `during()` runs once, mid-call.
    The returned dict counts the calls that have "finished"."""
    encode, progress = live.encoder.encode, {"finished": 0, "during": during}

    async def slow_encode(texts, **kwargs):
        try:
            await asyncio.sleep(0.2)
            if progress["during"] is not None:
                task, progress["during"] = progress["during"], None
                await task()
            if fails:
                raise EncoderUnavailable("triton is down")
            return await encode(texts, **kwargs)
        finally:
            progress["finished"] += 1

    monkeypatch.setattr(live.encoder, "encode", slow_encode)
    return progress


def test_the_ranker_features_that_need_no_profile_are_prepared_while_the_encoder_works(live, monkeypatch):
    """Triton encoding the profile is most of an uncached request's time; the features of the CF signals,
    the graph and the last items need no profile vector, so they are computed meanwhile, in a thread of
    the overlap pool."""
    progress = _slow_encoder(live, monkeypatch)
    prepared = []
    fake_fused_ranker(live, monkeypatch, on_features=lambda users: prepared.append(
        (threading.current_thread().name.startswith("lmrec-overlap"), progress["finished"])))
    answer = run(live.recommend(RecommendQuery(text="a space adventure", k=5)))
    assert prepared == [(True, 0)] and progress["finished"] == 1  # before the encode had finished
    assert len(answer.items) == 5 and not answer.degraded
    user_id = live.state.bundle.dataset.user_ids[0]
    run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    live.candidates.clear()  # the vector is still cached: no encoder call to overlap, the features are computed after
    run(live.recommend(RecommendQuery(user_id=user_id, k=6)))
    assert prepared == [(True, 0), (True, 1), (False, 2)]


def test_the_features_are_prepared_after_the_encode_where_the_config_says_so(tiny_build_root, local_encoder,
                                                                           monkeypatch):
    recommender = Recommender(state_of(load_bundle(tiny_build_root), local_encoder), MemoryEventStore(), local_encoder,
                              ServingConfig(prepare_during_encode=False))
    progress = _slow_encoder(recommender, monkeypatch)
    prepared = []
    fake_fused_ranker(recommender, monkeypatch, on_features=lambda users: prepared.append(
        (threading.current_thread().name.startswith("lmrec-overlap"), progress["finished"])))
    run(recommender.recommend(RecommendQuery(text="a space adventure", k=5)))
    assert prepared == [(False, 1)]


def test_features_prepared_before_items_were_added_are_computed_again(live, monkeypatch):
    """An AddItems landing during the encode changes the catalogue the prepared features were taken over:
    they are dropped, and the features are computed again under the new mask."""
    prepared = []

    async def add_an_item():
        await live.add_items([("added-during-encode", ItemInfo(title="Laughs in Space", categories=("Comedy",)))])

    _slow_encoder(live, monkeypatch, during=add_an_item)
    fake_fused_ranker(live, monkeypatch, on_features=lambda users: prepared.append(len(live.state.catalogue.item_ids)))
    fused = live.state.fused  # what AddItems reads of the stand-in: it gains the item and stays the same object
    monkeypatch.setattr(type(fused), "with_items", lambda self, *args: self, raising=False)
    monkeypatch.setattr(fused, "item_embeddings", live.state.item_embeddings, raising=False)
    n_items = len(live.state.catalogue.item_ids)
    answer = run(live.recommend(RecommendQuery(text="a space adventure", k=5)))
    assert prepared == [n_items, n_items + 1] and len(answer.items) == 5


def test_features_prepared_for_a_failed_encode_are_left_unused(live, monkeypatch):
    """The encoder fails: the blend answers, and the prepared features (here failing too) are not used."""
    _slow_encoder(live, monkeypatch, fails=True)
    prepared = []

    def fail(users):
        prepared.append(users)
        raise RuntimeError("prepared features failed")

    fake_fused_ranker(live, monkeypatch, on_features=fail)
    answer = run(live.recommend(RecommendQuery(recent_item_ids=tuple(live.state.catalogue.item_ids[:3]), k=5)))
    assert len(prepared) == 1 and answer.degraded and len(answer.items) == 5  # CF and popularity answered


def test_features_the_busy_pool_never_started_are_computed_by_the_request_itself(live, monkeypatch):
    """Under load the low-priority pool may not get to a request's features before its encode returns:
    the queued work is cancelled, and the request computes them on the event loop instead of waiting."""
    from concurrent.futures import ThreadPoolExecutor

    progress = _slow_encoder(live, monkeypatch)
    prepared = []
    fake_fused_ranker(live, monkeypatch, on_features=lambda users: prepared.append(
        (threading.current_thread().name, progress["finished"])))
    busy = ThreadPoolExecutor(max_workers=1, thread_name_prefix="busy")
    monkeypatch.setattr(live, "overlap", busy)
    release = threading.Event()
    busy.submit(release.wait, 5.0)  # the pool's only thread is taken for the whole request
    try:
        answer = run(live.recommend(RecommendQuery(text="a space adventure", k=5)))
    finally:
        release.set()
        busy.shutdown(wait=True)
    assert prepared == [(threading.main_thread().name, 1)]  # once, after the encode, on the event loop
    assert len(answer.items) == 5 and not answer.degraded


def test_a_returning_user_is_resolved_once_until_their_events_change(live, monkeypatch):
    """The event-store read (in a thread) is skipped for a returning user; events, ForgetUser and AddItems
    make the next request read again, and what is kept cannot be edited by a later request."""
    import lmrec.server.recommend as recommend_module

    reads = []

    def counted(state, events, user_id):
        reads.append(user_id)
        return resolve_user(state, events, user_id)

    monkeypatch.setattr(recommend_module, "resolve_user", counted)
    state = live.state
    user_id = state.bundle.dataset.user_ids[6]
    first = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    run(live.recommend(RecommendQuery(user_id=user_id, k=7, text="something else")))  # any request naming them
    assert reads == [user_id]
    kept = live.users.lookup(user_id, (id(state), state.label, state.catalogue_generation))
    with pytest.raises(ValueError):
        kept.history[0] = 0
    run(live.record_events([Event(user_id=user_id, item_id=ids(first)[0])]))
    after = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert reads == [user_id] * 2 and ids(first)[0] not in ids(after)  # read again: the item is seen now
    template = state.catalogue.items[0]
    run(live.add_items([("new-y", ItemInfo(title=f"{template.title} III", categories=template.categories))]))
    run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert len(reads) == 3  # the catalogue changed under the entry
    run(live.forget_user(user_id))
    with pytest.raises(RequestError):
        run(live.recommend(RecommendQuery(user_id=user_id, k=5)))


@pytest.mark.parametrize("call", ["record", "forget"])
def test_a_write_whose_caller_gave_up_still_drops_the_cached_history(live, monkeypatch, call):
    """A client deadline cancelled the handler after the store's thread had started: the write committed,
    but the invalidation after it never ran, so Recommend kept serving the old history (and, after a
    ForgetUser, a forgotten one) from the resolved-user cache (a review of that cache)."""
    state = live.state
    user_id = state.bundle.dataset.user_ids[7]
    first = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))  # the user is cached now
    name = "record" if call == "record" else "forget"
    original = getattr(live.events, name)

    def slow(*args):
        time.sleep(0.3)
        return original(*args)

    monkeypatch.setattr(live.events, name, slow)

    async def give_up_then_ask():
        write = (live.record_events([Event(user_id=user_id, item_id=ids(first)[0])]) if call == "record"
                 else live.forget_user(user_id))
        task = asyncio.ensure_future(write)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)  # the write commits meanwhile
        return await live.recommend(RecommendQuery(user_id=user_id, k=5))

    if call == "record":
        assert ids(first)[0] not in ids(run(give_up_then_ask()))  # seen now: the new history was read
    else:
        with pytest.raises(RequestError) as raised:
            run(give_up_then_ask())
        assert raised.value.code == "NOT_FOUND"


def test_the_naive_path_keeps_no_resolved_users(tiny_build_root, local_encoder):
    recommender = Recommender(state_of(load_bundle(tiny_build_root), local_encoder), MemoryEventStore(), local_encoder,
                              ServingConfig(cache_user_vectors=False))
    user_id = recommender.state.bundle.dataset.user_ids[0]
    for _ in range(2):
        run(recommender.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert len(recommender.users) == 0 and len(recommender.answers) == 0


# -- the answer cache --------------------------------------------------------------------------------------------


def answer_lookups(recommender) -> dict[str, float]:
    return {result: recommender.metrics.sample("lmrec_gateway_answer_cache_total", {"result": result}) or 0.0
            for result in ("hit", "miss")}


def test_a_returning_users_same_request_is_answered_whole_from_the_cache_until_an_event(live, monkeypatch):
    """Nothing is computed again (no features, no ranker call), the kept answer equals a recomputation, and
    the user's events make the request compute its own."""
    state = live.state
    user_id = state.bundle.dataset.user_ids[0]
    features = []
    fake_fused_ranker(live, monkeypatch, on_features=features.append)
    first = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    again = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert len(features) == 1 and answer_lookups(live) == {"hit": 1.0, "miss": 1.0} and again is first
    assert live.metrics.cache_hit_ratio() == 0.5  # the vector was computed once, for two requests
    live.forget_cached()
    recomputed = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert len(features) == 2 and recomputed == first and recomputed.explanations
    run(live.record_events([Event(user_id=user_id, item_id=ids(first)[0])]))
    after = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert answer_lookups(live)["miss"] == 3.0 and ids(first)[0] not in ids(after)  # now seen


@pytest.mark.parametrize("change", ["k", "include_seen", "exclude_item_ids", "require"])
def test_a_request_that_differs_in_one_term_computes_its_own_answer(live, change):
    user_id = live.state.bundle.dataset.user_ids[0]
    base = RecommendQuery(user_id=user_id, k=5)
    first = run(live.recommend(base))
    changed = {"k": 6, "include_seen": True, "exclude_item_ids": (ids(first)[0],),
               "require": (("genre", ("Comedy",)),)}[change]
    other = dataclasses.replace(base, **{change: changed})
    run(live.recommend(other))
    assert answer_lookups(live) == {"hit": 0.0, "miss": 2.0}
    run(live.recommend(other))
    assert answer_lookups(live)["hit"] == 1.0  # kept for its own terms


def test_added_items_and_a_deploy_make_the_answer_computed_again(live):
    state = live.state
    user_id = state.bundle.dataset.user_ids[1]
    query = RecommendQuery(user_id=user_id, k=5)
    run(live.recommend(query))
    template = state.catalogue.items[0]
    run(live.add_items([("new-z", ItemInfo(title=f"{template.title} IV", categories=template.categories))]))
    run(live.recommend(query))
    run(live.recommend(query))
    live.forget_cached()  # what a deploy does (test_deploy_live.py deploys for real)
    assert len(live.answers) == 0
    run(live.recommend(query))
    assert answer_lookups(live) == {"hit": 1.0, "miss": 3.0}


def test_a_fallback_answer_is_not_kept(live, monkeypatch):
    user_id = live.state.bundle.dataset.user_ids[0]
    down = [True]

    async def score(features, *, model, version, timeout_s):
        if down[0]:
            raise EncoderUnavailable("triton is down")
        return np.arange(len(features), dtype=np.float32)

    fake_fused_ranker(live, monkeypatch, score=score)
    assert run(live.recommend(RecommendQuery(user_id=user_id, k=5))).degraded
    assert len(live.answers) == 0
    down[0] = False
    assert not run(live.recommend(RecommendQuery(user_id=user_id, k=5))).degraded  # the ranker's, not the kept blend


def test_pages_larger_than_the_kept_size_are_computed_each_time(live):
    user_id = live.state.bundle.dataset.user_ids[2]
    k = min(MAX_CACHED_ANSWER_K + 1, len(live.state.catalogue) - 1)
    assert k > MAX_CACHED_ANSWER_K  # the tiny bundle has enough items
    for _ in range(2):
        run(live.recommend(RecommendQuery(user_id=user_id, k=k)))
    assert answer_lookups(live) == {"hit": 0.0, "miss": 0.0} and len(live.answers) == 0


def test_an_answer_computed_across_the_users_event_is_not_kept(live):
    """The user's event lands while their request awaits the encoder: that answer was computed from the old
    history, so it is not kept, and the next request sees the event."""
    state = live.state
    user_id = state.bundle.dataset.user_ids[3]
    encoder = live.encoder
    first = run(live.recommend(RecommendQuery(user_id=user_id, k=5, text="warm up the catalogue")))
    seen = ids(first)[0]

    class EventDuringEncode:
        async def encode(self, texts, **kwargs):
            live.encoder = encoder
            await live.record_events([Event(user_id=user_id, item_id=seen)])
            return await encoder.encode(texts, **kwargs)

    live.encoder = EventDuringEncode()
    run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert len(live.answers) == 0
    assert seen not in ids(run(live.recommend(RecommendQuery(user_id=user_id, k=5))))


def test_an_answer_is_kept_for_the_user_as_resolved_not_for_the_id_alone(live):
    """The resolved user dropped alone (as the bounded cache does with its oldest users): the next request
    resolves them again and computes its own answer, since the stamp holds the resolved user."""
    user_id = live.state.bundle.dataset.user_ids[4]
    first = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    live.users.invalidate([user_id])
    again = run(live.recommend(RecommendQuery(user_id=user_id, k=5)))
    assert answer_lookups(live) == {"hit": 0.0, "miss": 2.0} and again == first
