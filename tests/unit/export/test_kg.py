"""The item–attribute knowledge graph: incidence, idf, user affinity, explanations, persistence, kg model."""

from pathlib import Path

import numpy as np
import pytest

from lmrec.export.dataset import Dataset, Interactions, ItemInfo, UserInfo
from lmrec.export.kg import (Explanation, ItemGraph, KnowledgeGraphRecommender, build_item_graph,
                             item_attribute_ids, load_item_graph)

ITEMS = (
    ItemInfo(title="Toy Story (1995)", categories=("Animation", "Children's", "Comedy"), year=1995,
             tags=("pixar", "Funny")),
    ItemInfo(title="Aladdin (1992)", categories=("Animation", "Children's", "Comedy", "Musical"), year=1992),
    ItemInfo(title="Heat (1995)", categories=("Action", "Crime", "Thriller"), year=1995),
    ItemInfo(title="Clueless (1995)", categories=("Comedy", "Romance"), year=1995, tags=("funny",)),
    ItemInfo(title="Casablanca (1942)", categories=("Drama", "Romance", "War"), year=1942,
             attributes={"director": "Michael Curtiz"}),
    ItemInfo(title="Sabrina (1954)", categories=("Comedy", "Romance"), year=1954),
    ItemInfo(title="Notebook", categories=()),  # nothing known
)
N_ITEMS = len(ITEMS)
TITLES = [info.title for info in ITEMS]


def _dataset(items=ITEMS, n_users: int = 2) -> Dataset:
    return Dataset(
        name="kg-test",
        user_ids=tuple(f"u{u}" for u in range(n_users)),
        item_ids=tuple(f"i{i}" for i in range(len(items))),
        items=tuple(items),
        users=tuple(UserInfo() for _ in range(n_users)),
        interactions=Interactions.from_lists([0, 1], [0, 2]).sorted(),
    )


@pytest.fixture(scope="module")
def graph() -> ItemGraph:
    return build_item_graph(_dataset())


# --- building ---------------------------------------------------------------------------------


def test_attribute_ids_cover_genres_decade_year_tags_and_attributes():
    assert item_attribute_ids(ITEMS[0]) == [
        "genre:Animation", "genre:Children's", "genre:Comedy", "decade:1990s", "year:1995", "tag:pixar", "tag:funny",
    ]
    assert "director:Michael Curtiz" in item_attribute_ids(ITEMS[4])
    assert item_attribute_ids(ITEMS[6]) == []


def test_incidence_rows_are_the_items_attributes(graph):
    assert graph.incidence.shape == (N_ITEMS, graph.n_attributes) == (N_ITEMS, len(graph.attribute_ids))
    assert graph.incidence.format == "csr"
    assert set(np.unique(graph.incidence.data)) == {1.0}
    for item, info in enumerate(ITEMS):
        assert set(graph.attributes_of(item)) == set(item_attribute_ids(info))
    # "funny" and "Funny" are one tag node, on Toy Story and Clueless.
    np.testing.assert_array_equal(graph.items_with("tag:funny"), [0, 3])
    np.testing.assert_array_equal(graph.items_with("decade:1990s"), [0, 1, 2, 3])
    assert graph.items_with("genre:Horror").size == 0
    assert set(graph.attribute_kinds) == {"genre", "decade", "year", "tag", "director"}
    # Columns are grouped by kind: genres first.
    n_genres = len(graph.nodes_of_kind("genre"))
    assert n_genres == 10 and graph.attribute_kinds[:n_genres] == ("genre",) * n_genres


def test_idf_weighs_rare_attributes_above_common_ones(graph):
    index = graph.attribute_index
    for attribute in ("genre:Comedy", "genre:Animation", "tag:pixar", "decade:1990s"):
        expected = np.log(N_ITEMS / len(graph.items_with(attribute)))
        assert graph.weights[index[attribute]] == pytest.approx(expected, rel=1e-6)
    assert graph.weights[index["tag:pixar"]] > graph.weights[index["genre:Animation"]] > graph.weights[
        index["genre:Comedy"]]
    assert graph.weights.dtype == np.float32


def test_an_attribute_every_item_has_weighs_nothing():
    items = [ItemInfo(title=f"m{i}", categories=("Drama",) + (("War",) if i == 0 else ())) for i in range(4)]
    graph = build_item_graph(_dataset(items))
    assert graph.weights[graph.attribute_index["genre:Drama"]] == 0.0
    affinity = graph.user_affinity([np.array([1])])
    np.testing.assert_array_equal(affinity, np.zeros((1, 4), np.float32))


# --- affinity ---------------------------------------------------------------------------------


def test_user_profiles_are_shares_of_the_history(graph):
    profiles = graph.user_profiles([np.array([0, 3]), np.array([], np.int32)])
    index = graph.attribute_index
    assert profiles[0, index["genre:Comedy"]] == pytest.approx(1.0)
    assert profiles[0, index["genre:Animation"]] == pytest.approx(0.5)
    assert profiles[0, index["tag:funny"]] == pytest.approx(1.0)
    assert not profiles[1].any()


def test_user_profiles_equal_the_share_weighted_product_with_the_incidence_and_count_repeats():
    rng = np.random.default_rng(0)
    incidence = (rng.random((40, 12)) < 0.3).astype(np.float32)
    graph = ItemGraph(incidence, [f"tag:t{j}" for j in range(12)])
    histories = [rng.integers(0, 40, size=int(n)) for n in (0, 1, 7, 30)] + [np.array([5, 5, 5, 9])]
    shares = np.zeros((len(histories), 40))
    for row, history in enumerate(histories):
        np.add.at(shares[row], history, 1.0 / max(len(history), 1))
    np.testing.assert_allclose(graph.user_profiles(histories), shares @ incidence, rtol=1e-12, atol=0)
    assert graph.user_profiles(histories).shape == (5, 12)
    assert graph.user_profiles([]).shape == (0, 12) and graph.user_profiles([]).dtype == np.float64
    assert graph.user_profiles([np.zeros(0, np.int64)]).dtype == np.float64


def test_user_profiles_add_up_exactly_as_the_sparse_product_did():
    """Bit for bit: the fused model's graph feature must not move when this is computed another way."""
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    incidence = (rng.random((300, 40)) < 0.15).astype(np.float32)
    graph = ItemGraph(incidence, [f"tag:t{j}" for j in range(40)])
    histories = [rng.integers(0, 300, size=int(n)) for n in rng.integers(0, 120, size=60)]
    histories += [np.array([7, 7, 3, 7, 3]), np.zeros(0, np.int64)]  # repeats, in any order; an empty one
    lengths = np.array([len(h) for h in histories])
    rows = np.repeat(np.arange(len(histories)), lengths)
    values = 1.0 / np.repeat(np.maximum(lengths, 1), lengths)
    product = sp.csr_matrix((values, (rows, np.concatenate(histories))), shape=(len(histories), 300))
    expected = np.asarray((product @ graph.incidence.astype(np.float64)).todense())
    np.testing.assert_array_equal(graph.user_profiles(histories), expected)


def test_affinity_is_idf_weighted_overlap_with_the_profile(graph):
    histories = [np.array([0, 3]), np.array([4])]
    affinity = graph.user_affinity(histories)
    assert affinity.shape == (2, N_ITEMS) and affinity.dtype == np.float32
    profiles = graph.user_profiles(histories)
    dense = graph.incidence.toarray() * graph.weights
    np.testing.assert_allclose(affinity, profiles @ dense.T, rtol=1e-5, atol=1e-6)
    assert (affinity[:, 6] == 0).all()  # an item without attributes matches nothing


def test_rare_shared_attributes_outrank_a_common_one(graph):
    # History: Toy Story. Aladdin shares Animation + Children's (rare); Heat shares the year 1995 and the
    # decade; Sabrina and Clueless share Comedy (common); Casablanca shares nothing.
    affinity = graph.user_affinity([np.array([0])])[0]
    assert affinity[1] > affinity[5] > affinity[4] == 0
    assert affinity[1] > affinity[2]


def test_candidates_select_columns_and_batches_match_single_users(graph):
    histories = [np.array([0]), np.array([4, 5]), np.array([2])]
    full = graph.user_affinity(histories)
    candidates = np.array([5, 1, 1])
    np.testing.assert_array_equal(graph.user_affinity(histories, candidates), full[:, candidates])
    singles = np.vstack([graph.user_affinity([h]) for h in histories])
    np.testing.assert_allclose(full, singles, rtol=1e-6)


def test_out_of_range_items_are_rejected(graph):
    with pytest.raises(ValueError):
        graph.user_affinity([np.array([N_ITEMS])])
    with pytest.raises(ValueError):
        graph.user_affinity([np.array([0])], candidates=np.array([-1]))


# --- explanations -----------------------------------------------------------------------------


def test_explain_picks_the_history_item_sharing_the_most_and_names_the_heaviest_attributes(graph):
    # Aladdin shares Animation, Children's, Comedy and the 1990s with Toy Story, only Comedy with Sabrina.
    explanation = graph.explain(np.array([5, 0, 2]), 1, TITLES)
    assert isinstance(explanation, Explanation)
    assert explanation.via_item == 0
    assert set(explanation.attributes) == {"Animation", "Children's"}
    assert explanation.text == "shares Animation and Children's with Toy Story (1995), which you rated"


def test_explain_names_a_year_not_its_decade_and_genres_before_years(graph):
    explanation = graph.explain(np.array([2]), 3, TITLES, max_attributes=3)  # Clueless from Heat
    assert explanation.via_item == 2
    assert explanation.attributes == ("1995",)
    explanation = graph.explain(np.array([0]), 3, TITLES, max_attributes=3)  # Clueless from Toy Story
    assert explanation.attributes[-1] == "1995"
    assert "the 1990s" not in explanation.attributes
    assert {"funny", "Comedy"} <= set(explanation.attributes)


def test_explain_reads_decades_and_other_attributes():
    items = [ItemInfo(title="A", year=1991, attributes={"director": "Jane Campion"}),
             ItemInfo(title="B", year=1994, attributes={"director": "Jane Campion"}),
             ItemInfo(title="C", year=1975)]
    graph = build_item_graph(_dataset(items))
    explanation = graph.explain(np.array([0]), 1, ["A", "B", "C"], action="watched")
    assert explanation.text == "shares director Jane Campion and the 1990s with A, which you watched"


def test_explain_is_none_when_nothing_is_shared(graph):
    assert graph.explain(np.array([2]), 4, TITLES) is None  # Heat and Casablanca
    assert graph.explain(np.array([0, 1]), 6, TITLES) is None  # an item without attributes
    assert graph.explain(np.array([], np.int32), 1, TITLES) is None
    assert graph.explain(np.array([1]), 1, TITLES) is None  # never explained by itself


def test_explain_ties_go_to_the_most_recent_history_item(graph):
    # Clueless and Sabrina each share only Romance with Casablanca: the later one in the history wins.
    assert graph.explain(np.array([3, 5]), 4, TITLES).via_item == 5
    assert graph.explain(np.array([5, 3]), 4, TITLES).via_item == 3


# --- persistence and the kg model ----------------------------------------------------------------


def test_save_and_load_round_trip(graph, tmp_path: Path):
    graph.save(tmp_path / "kg")
    loaded = load_item_graph(tmp_path / "kg")
    assert loaded.attribute_ids == graph.attribute_ids
    assert loaded.attribute_kinds == graph.attribute_kinds
    assert (loaded.incidence != graph.incidence).nnz == 0
    np.testing.assert_array_equal(loaded.weights, graph.weights)
    histories = [np.array([0, 3]), np.array([4])]
    np.testing.assert_array_equal(loaded.user_affinity(histories), graph.user_affinity(histories))
    assert loaded.explain(np.array([0]), 1, TITLES) == graph.explain(np.array([0]), 1, TITLES)


def test_kg_recommender_scores_with_the_graph():
    dataset = _dataset()
    model = KnowledgeGraphRecommender(seed=3).fit(dataset, dataset.interactions)
    assert model.name == "kg" and KnowledgeGraphRecommender.param_grid == [{}]
    histories = [np.array([0]), np.array([], np.int32)]
    scores = model.score(np.array([0, -1]), histories)
    np.testing.assert_array_equal(scores, build_item_graph(dataset).user_affinity(histories))
    assert scores.dtype == np.float32 and not scores[1].any()


def test_kg_recommender_conforms_on_items_without_side_information():
    from lmrec.export.models.base import Recommender

    items = [ItemInfo(title=f"item {i}") for i in range(5)]
    dataset = _dataset(items)
    model = KnowledgeGraphRecommender().fit(dataset, dataset.interactions)
    assert isinstance(model, Recommender)
    scores = model.score(np.array([0, 1]), [np.array([0, 1]), np.array([], np.int32)])
    assert scores.shape == (2, 5) and scores.dtype == np.float32 and np.isfinite(scores).all()


# --- real data ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml100k(ml100k_dir):
    from lmrec.export.loaders import DataConfig, load_dataset

    dataset = load_dataset(DataConfig(dataset="ml-100k", data_dir=ml100k_dir)).dataset
    return dataset, build_item_graph(dataset)


def test_ml100k_graph_has_genres_decades_and_years(ml100k):
    dataset, graph = ml100k
    genres = graph.nodes_of_kind("genre")
    assert 17 <= len(genres) <= 19 and "genre:unknown" not in genres
    assert {"genre:Animation", "genre:Children's", "genre:Film-Noir"} <= set(genres)
    assert {"decade:1930s", "decade:1990s"} <= set(graph.nodes_of_kind("decade"))
    assert len(graph.nodes_of_kind("year")) > 50
    assert graph.n_items == dataset.n_items
    weights = dict(zip(graph.attribute_ids, graph.weights))
    assert weights["genre:Film-Noir"] > weights["genre:Animation"] > weights["genre:Drama"] > 0


def test_ml100k_affinity_is_finite_for_every_user(ml100k):
    dataset, graph = ml100k
    histories = dataset.histories()
    affinity = graph.user_affinity(histories)
    assert affinity.shape == (dataset.n_users, dataset.n_items) and affinity.dtype == np.float32
    assert np.isfinite(affinity).all() and (affinity >= 0).all()
    assert (affinity.max(axis=1) > 0).all()


def test_ml100k_toy_story_neighbours_are_explained_by_animation_or_childrens(ml100k):
    dataset, graph = ml100k
    titles = [info.title for info in dataset.items]
    toy_story = titles.index("Toy Story (1995)")
    neighbours = graph.similar_items(toy_story, k=10)
    assert "Aladdin (1992)" in {titles[i] for i in neighbours}
    for neighbour in neighbours:
        explanation = graph.explain(np.array([toy_story]), int(neighbour), titles)
        assert explanation.via_item == toy_story
        assert {"Animation", "Children's"} & set(explanation.attributes), titles[neighbour]
        assert explanation.text.endswith("with Toy Story (1995), which you rated")
