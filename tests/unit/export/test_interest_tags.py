"""Interest tags: the vocabulary, the tagger's arithmetic (fake encoder), and the real encoder's choices."""

import numpy as np
import pytest

from lmrec.export.dataset import Dataset, Interactions, ItemInfo, UserInfo
from lmrec.export.interest_tags import InterestTagger, profile_texts, tag_vocabulary, user_interest_tags

MOVIES = (
    # Animation / Children's
    ItemInfo(title="Lion King, The (1994)", categories=("Animation", "Children's", "Musical"), year=1994),
    ItemInfo(title="Aladdin (1992)", categories=("Animation", "Children's", "Comedy", "Musical"), year=1992),
    ItemInfo(title="Beauty and the Beast (1991)", categories=("Animation", "Children's", "Musical"), year=1991),
    ItemInfo(title="Toy Story (1995)", categories=("Animation", "Children's", "Comedy"), year=1995),
    ItemInfo(title="Pinocchio (1940)", categories=("Animation", "Children's"), year=1940),
    ItemInfo(title="Snow White and the Seven Dwarfs (1937)", categories=("Animation", "Children's", "Musical"),
             year=1937),
    # Horror
    ItemInfo(title="Scream (1996)", categories=("Horror", "Thriller"), year=1996),
    ItemInfo(title="Halloween: The Curse of Michael Myers (1995)", categories=("Horror", "Thriller"), year=1995),
    ItemInfo(title="Shining, The (1980)", categories=("Horror",), year=1980),
    ItemInfo(title="Nightmare on Elm Street, A (1984)", categories=("Horror",), year=1984),
    ItemInfo(title="Exorcist, The (1973)", categories=("Horror",), year=1973),
    ItemInfo(title="Night of the Living Dead (1968)", categories=("Horror", "Sci-Fi"), year=1968),
    # Everything else, so the vocabulary has other genres to choose from
    ItemInfo(title="Heat (1995)", categories=("Action", "Crime", "Thriller"), year=1995),
    ItemInfo(title="Casablanca (1942)", categories=("Drama", "Romance", "War"), year=1942),
    ItemInfo(title="Unforgiven (1992)", categories=("Western",), year=1992),
    ItemInfo(title="Hoop Dreams (1994)", categories=("Documentary",), year=1994),
    ItemInfo(title="Star Wars (1977)", categories=("Action", "Adventure", "Sci-Fi"), year=1977),
    ItemInfo(title="Maltese Falcon, The (1941)", categories=("Film-Noir", "Mystery"), year=1941),
    ItemInfo(title="Sense and Sensibility (1995)", categories=("Drama", "Romance"), year=1995),
    ItemInfo(title="Clueless (1995)", categories=("Comedy", "Romance"), year=1995),
)
ANIMATION_USER, HORROR_USER, MIXED_USER, EMPTY_USER = 0, 1, 2, 3
HISTORIES = [np.arange(0, 6), np.arange(6, 12), np.array([12, 16, 7, 13]), np.array([], np.int32)]


def _dataset(items=MOVIES, n_users: int = 4, users=None) -> Dataset:
    rows = [(u, i) for u, h in enumerate(HISTORIES[:n_users]) for i in h]
    return Dataset(
        name="interest-tags",
        user_ids=tuple(f"u{u}" for u in range(n_users)),
        item_ids=tuple(f"i{i}" for i in range(len(items))),
        items=tuple(items),
        users=users or tuple(UserInfo() for _ in range(n_users)),
        interactions=Interactions.from_lists(*zip(*rows)).sorted() if rows else Interactions.from_lists([], []),
    )


# --- vocabulary -------------------------------------------------------------------------------


def test_vocabulary_has_genres_decades_and_readable_frequent_tags():
    items = [
        ItemInfo(title="a", categories=("Drama", "Sci-Fi"), year=1995,
                 tags=("time travel", "in netflix queue", "sci-fi", "06 oscar nominated", "robots")),
        ItemInfo(title="b", categories=("Drama",), year=1999, tags=("Time Travel", "in netflix queue", "robots")),
        ItemInfo(title="c", categories=("Comedy",), year=1991,
                 tags=("time travel", "06 oscar nominated", "one-off", "a very long tag of many words")),
        ItemInfo(title="d", categories=("Comedy",), year=1994, tags=("a very long tag of many words", "boring")),
        ItemInfo(title="e", categories=("Drama",), year=1997, tags=("boring",)),
        ItemInfo(title="f", categories=("Drama",), year=1955),  # a lone 1950s item: no decade tag
    ]
    vocabulary = tag_vocabulary(_dataset(items, n_users=0))
    assert vocabulary == ["Drama", "Comedy", "Sci-Fi", "1990s movies", "time travel", "robots"]
    assert tag_vocabulary(_dataset(items, n_users=0), max_tags=4) == vocabulary[:4]
    assert "1990s movies" not in tag_vocabulary(_dataset(items, n_users=0), decades=False)


def test_vocabulary_of_the_hand_made_set_is_its_genres_and_decades():
    vocabulary = tag_vocabulary(_dataset())
    assert {"Animation", "Children's", "Horror", "Western", "Film-Noir"} <= set(vocabulary)
    assert "1990s movies" in vocabulary and len(vocabulary) == len(set(vocabulary))


# --- the tagger's arithmetic (a fake encoder) ------------------------------------------------------


class FakeEncoder:
    """Each text maps to a fixed unit vector; records what it was asked to encode."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = {k: np.asarray(v, np.float32) / np.linalg.norm(v) for k, v in vectors.items()}
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.vstack([self.vectors[t] for t in texts]).astype(np.float32)


def _fake_tagger(**kwargs) -> tuple[InterestTagger, FakeEncoder]:
    encoder = FakeEncoder({"Horror movies": [1, 0, 0], "Comedy movies": [0, 1, 0], "1990s movies": [0, 0, 1]})
    return InterestTagger(encoder, ["Horror", "Comedy", "1990s movies"], **kwargs), encoder


def test_tags_are_encoded_once_as_phrases():
    tagger, encoder = _fake_tagger()
    assert encoder.calls == [["Horror movies", "Comedy movies", "1990s movies"]]
    tagger.tag_users(np.eye(3))
    assert len(encoder.calls) == 1


def test_weights_are_a_tempered_softmax_scaled_to_the_top_tag():
    tagger, _ = _fake_tagger(temperature=0.1)
    profiles = np.array([[0.9, 0.3, 0.1], [0.0, 0.2, 1.0]], np.float32)
    sims = profiles / np.linalg.norm(profiles, axis=1, keepdims=True)
    expected = np.exp((sims - sims.max(axis=1, keepdims=True)) / 0.1)
    np.testing.assert_allclose(tagger.weights(profiles), expected, rtol=1e-5)

    tags = tagger.tag_users(profiles, top_n=2, min_weight=0.0)
    assert [t for t, _ in tags[0]] == ["Horror", "Comedy"] and [t for t, _ in tags[1]] == ["1990s movies", "Comedy"]
    assert tags[0][0][1] == 1.0
    assert tags[0][1][1] == pytest.approx(expected[0, 1], rel=1e-5)


def test_min_weight_and_top_n_cut_the_list():
    tagger, _ = _fake_tagger(temperature=0.05)
    profile = np.array([[1.0, 0.9, 0.0]])
    assert [t for t, _ in tagger.tag_users(profile, top_n=3, min_weight=0.0)[0]] == ["Horror", "Comedy", "1990s movies"]
    assert [t for t, _ in tagger.tag_users(profile, top_n=3, min_weight=0.05)[0]] == ["Horror", "Comedy"]
    assert [t for t, _ in tagger.tag_users(profile, top_n=3, min_weight=1.0)[0]] == ["Horror"]
    assert tagger.tag_users(profile, top_n=0) == [[]]
    assert len(tagger.tag_users(profile, top_n=50)[0]) <= 3


def test_a_background_population_pulls_hub_tags_down():
    tagger, _ = _fake_tagger()
    background = np.array([[0.2, 0.0, 1.0], [0.0, 0.2, 1.0], [0.1, 0.1, 1.0]])  # everyone is close to the 1990s
    centred, _ = _fake_tagger(background=background, centering=1.0)
    profile = np.array([[0.5, 0.0, 0.6]])
    assert tagger.tag_users(profile)[0][0][0] == "1990s movies"
    assert centred.tag_users(profile)[0][0][0] == "Horror"


def test_the_tagger_rejects_empty_or_duplicate_vocabularies():
    encoder = FakeEncoder({"Horror movies": [1, 0]})
    with pytest.raises(ValueError):
        InterestTagger(encoder, [])
    with pytest.raises(ValueError):
        InterestTagger(encoder, ["Horror", "Horror"])


def test_profile_texts_are_newest_first_with_user_attributes():
    users = (UserInfo(attributes={"age": "30", "occupation": "writer", "zip": "12345"}),) + tuple(
        UserInfo() for _ in range(3))
    texts = profile_texts(_dataset(users=users), np.array([0, -1]), [np.array([0, 4]), np.array([6])])
    assert texts[0].startswith("A 30-year-old writer. Recently liked: Pinocchio (1940)")
    assert texts[0].index("Pinocchio") < texts[0].index("Lion King")
    assert texts[1].startswith("Recently liked: Scream (1996)")


# --- the real packaged encoder ----------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder():
    from lmrec.export.models.lm import exported_encoder

    return exported_encoder()


@pytest.fixture(scope="module")
def real_tags(encoder):
    dataset = _dataset()
    return user_interest_tags(dataset, encoder, np.arange(4), HISTORIES, top_n=5)


def _names(tags) -> list[str]:
    return [name for name, _ in tags]


def test_an_animation_and_childrens_user_is_tagged_so(real_tags):
    assert {"Animation", "Children's"} & set(_names(real_tags[ANIMATION_USER][:3])), real_tags[ANIMATION_USER]


def test_a_horror_user_is_tagged_horror(real_tags):
    assert "Horror" in _names(real_tags[HORROR_USER][:3]), real_tags[HORROR_USER]
    assert "Animation" not in _names(real_tags[HORROR_USER])


def test_real_weights_are_sorted_and_in_zero_one(real_tags):
    for tags in real_tags[:3]:
        weights = [w for _, w in tags]
        assert 1 <= len(tags) <= 5
        assert weights[0] == 1.0
        assert weights == sorted(weights, reverse=True)
        assert all(0.0 < w <= 1.0 for w in weights)
    assert real_tags[EMPTY_USER] == []  # nothing to describe, no tags


def test_real_tags_are_deterministic(encoder, real_tags):
    dataset = _dataset()
    again = user_interest_tags(dataset, encoder, np.arange(4), HISTORIES, top_n=5)
    assert again == real_tags
    # One user alone gets what it got in the batch.
    alone = user_interest_tags(dataset, encoder, np.array([HORROR_USER]), [HISTORIES[HORROR_USER]], top_n=5)
    assert _names(alone[0]) == _names(real_tags[HORROR_USER])
    np.testing.assert_allclose([w for _, w in alone[0]], [w for _, w in real_tags[HORROR_USER]], atol=1e-4)
