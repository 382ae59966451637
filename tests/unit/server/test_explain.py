"""Explanations: the closest history item by embedding, never the item itself, ties to the older one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lmrec.server.explain import explain_items
from tests.unit.server.test_recommend import LocalEncoder, state_of


@pytest.fixture(scope="module")
def state(tiny_bundle, tiny_build_dir):
    encoder = LocalEncoder(tiny_build_dir.repository_dir / "text_encoder" / str(tiny_build_dir.version))
    return state_of(tiny_bundle, encoder)


def _with_embeddings(state, embeddings):
    return replace(state, item_embeddings=np.asarray(embeddings, np.float32))


def test_the_closest_history_item_explains_and_an_item_never_explains_itself(state):
    n = len(state.item_embeddings)
    embeddings = np.eye(n, 8, dtype=np.float32)
    embeddings[5] = embeddings[1] * 0.9 + embeddings[2] * 0.1  # item 5 is closest to 1, then 2
    embeddings[6] = embeddings[2]
    explained = explain_items(_with_embeddings(state, embeddings), np.array([1, 2, 6]), [5, 6, 1], ["lm"] * 3)
    assert explained[0].because_item == 1 and explained[0].because_similarity == pytest.approx(0.9)
    assert explained[1].because_item == 2  # 6 itself is in the history, and is passed over
    # 1 is passed over, and 2 and 6 share nothing with it (similarity 0): no history item explains it.
    assert explained[2].because_item is None and "because you liked" not in explained[2].text.lower()


def test_a_history_item_with_negative_similarity_is_not_named_as_the_reason(state):
    n = len(state.item_embeddings)
    embeddings = np.zeros((n, 4), np.float32)
    embeddings[:, 0] = 1.0
    embeddings[8] = [-1.0, 0.0, 0.0, 0.0]  # opposite to everything
    embeddings[9] = [0.6, 0.8, 0.0, 0.0]
    explained = explain_items(_with_embeddings(state, embeddings), np.array([8]), [3, 8], ["lm"] * 2)
    assert explained[0].because_item is None and "because you liked" not in explained[0].text.lower()
    mixed = explain_items(_with_embeddings(state, embeddings), np.array([8, 9]), [3], ["lm"])
    assert mixed[0].because_item == 9 and mixed[0].because_similarity == pytest.approx(0.6)


def test_equal_similarities_go_to_the_history_item_listed_first_and_a_lone_self_explains_nothing(state):
    n = len(state.item_embeddings)
    embeddings = np.zeros((n, 4), np.float32)
    embeddings[:, 0] = 1.0  # every pair equally similar
    explained = explain_items(_with_embeddings(state, embeddings), np.array([3, 4, 7]), [9, 3], ["lm"] * 2)
    assert explained[0].because_item == 3
    assert explained[1].because_item == 4
    alone = explain_items(_with_embeddings(state, embeddings), np.array([3]), [3], ["lm"])
    assert alone[0].because_item is None and alone[0].because_title == ""


def test_an_interest_tag_matches_an_item_attribute_spelt_differently(state):
    from lmrec.export.dataset import ItemInfo
    from lmrec.server.catalogue import Catalogue

    items = list(state.catalogue.items)
    items[3] = ItemInfo(title="Robots", categories=("Sci-Fi",), tags=("time travel",), year=1994)
    catalogue = Catalogue(state.catalogue.item_ids, items, state.catalogue.n_base)
    explained = explain_items(replace(state, catalogue=catalogue), np.array([1]), [3], ["lm"],
                              user_tags=["scifi", "Time-Travel", "1990s movies", "Horror"])
    assert explained[0].matched_tags == ("scifi", "Time-Travel", "1990s movies")
    assert "scifi, Time-Travel, 1990s movies" in explained[0].text


@pytest.mark.parametrize("found_by, sentence", [
    ("popular", "It is popular"),
    ("new_demand", "It is new, and items like it are in demand"),
    ("sequential", "Found by the sequential signal"),
])
def test_an_item_nothing_else_explains_is_worded_by_the_signal_that_found_it(state, found_by, sentence):
    # No history: no liked item, tag or graph path can explain it.
    explained = explain_items(state, np.array([], np.int64), [4], [found_by])
    assert explained[0].text == sentence
