"""The embedded default data set: a deterministic synthetic catalogue of films and their viewers.

It is built so that every signal the recommender combines carries information:
- text: each category has its own vocabulary, and titles and descriptions are made of it, so items a
  user likes share words with other items of that user's favourite categories;
- co-occurrence: users draw most items from 1-2 favourite categories, popular items more often;
- sequence: items form series ("The Silent Clue", "The Silent Clue II", ...) and users tend to take
  the next part of a series right after the previous one;
- user attributes: occupations lean towards the favourite category; ratings are higher there.
A share of interactions is noise from any category. The same config always gives the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from lmrec.export.cleaning import RawData, RawInteractions
from lmrec.export.dataset import ItemInfo, UserInfo


@dataclass(frozen=True)
class Category:
    name: str
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    occupations: tuple[str, ...]  # occupations that lean towards this category


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


CATEGORIES: tuple[Category, ...] = (
    Category(
        "Space Adventure",
        _words("stellar cosmic orbital galactic interstellar lunar solar uncharted"),
        _words("starship nebula galaxy captain asteroid rocket planet alien station comet astronaut wormhole"),
        ("engineer", "scientist"),
    ),
    Category(
        "Cooking",
        _words("savory spicy golden rustic crispy smoky zesty buttery"),
        _words("kitchen chef recipe bakery spice pasta bread feast soup dessert oven market"),
        ("chef", "baker"),
    ),
    Category(
        "Detective Mystery",
        _words("silent hidden missing shadowy cryptic locked foggy deadly"),
        _words("detective clue inspector alibi suspect witness riddle poison verdict case manor cipher"),
        ("lawyer", "writer"),
    ),
    Category(
        "Romance",
        _words("tender passionate eternal moonlit blushing lovesick charming wistful"),
        _words("heart kiss wedding letter promise bride sweetheart rose waltz valentine lover honeymoon"),
        ("artist", "librarian"),
    ),
    Category(
        "History",
        _words("ancient royal imperial medieval forgotten noble victorian feudal"),
        _words("empire king queen castle dynasty crown revolution battle treaty pharaoh knight chronicle"),
        ("teacher", "historian"),
    ),
    Category(
        "Wildlife Documentary",
        _words("wild untamed migratory tropical arctic roaming coastal nocturnal"),
        _words("lion whale eagle wolf savanna reef jungle herd predator elephant penguin rainforest"),
        ("biologist", "farmer"),
    ),
    Category(
        "Comedy",
        _words("wacky goofy silly hilarious clumsy awkward zany madcap"),
        _words("prankster roommate neighbor party vacation blunder sitcom clown mixup misfit uncle karaoke"),
        ("salesman", "student"),
    ),
    Category(
        "Horror",
        _words("haunted cursed bloody ghostly wicked sinister eerie possessed"),
        _words("ghost curse zombie witch demon cellar graveyard nightmare crypt scream vampire asylum"),
        ("programmer", "nurse"),
    ),
)
_OTHER_OCCUPATIONS = ("student", "retired", "administrator", "technician", "other")
_KINDS = ("story", "tale", "film", "journey", "saga")
_NUMERALS = ("", " II", " III", " IV", " V", " VI")
_START_TIME = 1_609_459_200  # 2021-01-01 UTC


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    seed: int = 7
    n_users: int = 300
    n_items: int = 400
    n_categories: int = len(CATEGORIES)
    min_interactions: int = 15
    max_interactions: int = 60
    max_series_length: int = 5
    follow_series: float = 0.4  # chance the next item is the next part of the last item's series
    noise: float = 0.1  # share of picks from a random category rather than a favourite
    popularity_skew: float = 0.9  # Zipf exponent of item popularity inside a category
    second_category: float = 0.25  # share of items that also belong to a second category


@dataclass(frozen=True)
class _Catalogue:
    items: list[ItemInfo]
    category: np.ndarray  # primary category per item
    next_in_series: np.ndarray  # item that continues the series, -1 at the end
    popularity: np.ndarray  # sampling weight inside the primary category


def generate_synthetic(config: SyntheticConfig = SyntheticConfig()) -> RawData:
    """Raw rows of the synthetic data set (cleaned like every other backend by `clean`)."""
    _check(config)
    rng = np.random.default_rng(config.seed)
    categories = CATEGORIES[: config.n_categories]
    catalogue = _make_catalogue(config, categories, rng)
    # Raw ids are shuffled against generation order so that an item's index says nothing about it.
    item_ids = np.asarray([f"i{n}" for n in rng.permutation(config.n_items) + 1])

    users: dict[str, UserInfo] = {}
    user_col: list[np.ndarray] = []
    item_col: list[np.ndarray] = []
    rating_col: list[np.ndarray] = []
    time_col: list[np.ndarray] = []
    for u in range(config.n_users):
        user_id = f"u{u + 1}"
        favourites, weights = _favourites(len(categories), rng)
        users[user_id] = UserInfo(attributes=_user_attributes(categories[favourites[0]], rng))
        history = _history(config, catalogue, favourites, weights, rng)
        user_col.append(np.full(len(history), user_id))
        item_col.append(item_ids[history])
        rating_col.append(_ratings(catalogue, history, favourites, rng))
        gaps = rng.integers(60, 3 * 86_400, size=len(history))
        time_col.append(_START_TIME + rng.integers(0, 180 * 86_400) + np.cumsum(gaps))

    n = sum(len(h) for h in item_col)
    interactions = RawInteractions(
        file=f"<synthetic seed={config.seed}>",
        user_id=np.concatenate(user_col),
        item_id=np.concatenate(item_col),
        rating=np.concatenate(rating_col).astype(np.float64),
        timestamp=np.concatenate(time_col).astype(np.int64),
        line=np.arange(1, n + 1, dtype=np.int64),
    )
    return RawData(
        name="synthetic",
        interactions=interactions,
        items=dict(zip(item_ids.tolist(), catalogue.items)),
        users=users,
        rating_range=(1.0, 5.0),
        rows_read=n,
    )


def _check(config: SyntheticConfig) -> None:
    if not 1 <= config.n_categories <= len(CATEGORIES):
        raise ValueError(f"n_categories must be 1..{len(CATEGORIES)}, got {config.n_categories}")
    if config.n_items < config.n_categories or config.n_users < 1:
        raise ValueError("need at least one user and one item per category")
    if not 1 <= config.min_interactions <= config.max_interactions <= config.n_items:
        raise ValueError("need 1 <= min_interactions <= max_interactions <= n_items")
    if not 1 <= config.max_series_length < len(_NUMERALS) + 1:
        raise ValueError(f"max_series_length must be 1..{len(_NUMERALS)}")


def _make_catalogue(config: SyntheticConfig, categories, rng: np.random.Generator) -> _Catalogue:
    n_cat = len(categories)
    items: list[ItemInfo] = []
    category = np.zeros(config.n_items, dtype=np.int64)
    next_in_series = np.full(config.n_items, -1, dtype=np.int64)
    popularity = np.zeros(config.n_items)
    sizes = np.full(n_cat, config.n_items // n_cat)
    sizes[: config.n_items % n_cat] += 1
    for c, size in enumerate(sizes.tolist()):
        cat = categories[c]
        bases = _base_titles(cat, rng)
        # Popularity rank is random inside a category; later parts of a series are found mostly by
        # following the series, so their own weight is damped.
        rank_weight = 1.0 / (rng.permutation(size) + 1.0) ** config.popularity_skew
        made = 0
        for base in bases:
            if made == size:
                break
            length = min(int(rng.integers(1, config.max_series_length + 1)), size - made)
            year = int(rng.integers(1970, 2020))
            for part in range(length):
                index = len(items)
                category[index] = c
                popularity[index] = rank_weight[made] * 0.5**part
                if part + 1 < length:
                    next_in_series[index] = index + 1
                items.append(_item(base + _NUMERALS[part], c, categories, year + 2 * part, config, rng))
                made += 1
        if made < size:
            raise ValueError(f"category {cat.name!r} has too few title words for {size} items")
    return _Catalogue(items=items, category=category, next_in_series=next_in_series, popularity=popularity)


def _base_titles(cat: Category, rng: np.random.Generator) -> list[str]:
    """Distinct series titles from the category's words: 'The Silent Clue', then 'The Silent Clue of the Manor'."""
    pairs = [f"The {a.capitalize()} {n.capitalize()}" for a, n in product(cat.adjectives, cat.nouns)]
    triples = [
        f"The {a.capitalize()} {n.capitalize()} of the {m.capitalize()}"
        for a, n, m in product(cat.adjectives, cat.nouns, cat.nouns)
        if n != m
    ]
    return [pairs[k] for k in rng.permutation(len(pairs))] + [triples[k] for k in rng.permutation(len(triples))]


def _item(title: str, c: int, categories, year: int, config: SyntheticConfig, rng) -> ItemInfo:
    cat = categories[c]
    names = [cat.name]
    adjective = cat.adjectives[rng.integers(len(cat.adjectives))]
    n1, n2, n3 = (cat.nouns[k] for k in rng.choice(len(cat.nouns), 3, replace=False))
    kind = _KINDS[rng.integers(len(_KINDS))]
    sentences = [f"A {adjective} {kind} about the {n1}, the {n2} and the {n3}."]
    if len(categories) > 1 and rng.random() < config.second_category:
        other = categories[(c + 1 + rng.integers(len(categories) - 1)) % len(categories)]
        names.append(other.name)
        a2 = other.adjectives[rng.integers(len(other.adjectives))]
        m1, m2 = (other.nouns[k] for k in rng.choice(len(other.nouns), 2, replace=False))
        sentences.append(f"It also has {a2} moments with the {m1} and the {m2}.")
    return ItemInfo(title=title, categories=tuple(names), description=" ".join(sentences), year=year)


def _favourites(n_categories: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    count = 1 if n_categories == 1 or rng.random() < 0.4 else 2
    favourites = rng.choice(n_categories, count, replace=False)
    weights = np.array([1.0]) if count == 1 else np.array([0.65, 0.35])
    return favourites, weights


def _user_attributes(first_favourite: Category, rng: np.random.Generator) -> dict[str, str]:
    pool = first_favourite.occupations if rng.random() < 0.6 else _OTHER_OCCUPATIONS
    return {
        "age": str(int(rng.integers(16, 71))),
        "gender": "F" if rng.random() < 0.5 else "M",
        "occupation": pool[rng.integers(len(pool))],
    }


def _history(config: SyntheticConfig, catalogue: _Catalogue, favourites, weights, rng) -> list[int]:
    """Item indices of one user, oldest first, without repeats."""
    n_items = len(catalogue.items)
    n_categories = int(catalogue.category.max()) + 1
    length = int(rng.integers(config.min_interactions, config.max_interactions + 1))
    available = np.ones(n_items, dtype=bool)
    history: list[int] = []
    while len(history) < length:
        last_next = catalogue.next_in_series[history[-1]] if history else -1
        if last_next >= 0 and available[last_next] and rng.random() < config.follow_series:
            pick = int(last_next)
        else:
            if rng.random() < config.noise:
                c = int(rng.integers(n_categories))
            else:
                c = int(favourites[rng.choice(len(favourites), p=weights)])
            weight = catalogue.popularity * available * (catalogue.category == c)
            if weight.sum() == 0:  # the category is used up: any item left will do
                weight = catalogue.popularity * available
            cumulative = np.cumsum(weight)
            pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
            pick = min(pick, n_items - 1)
        available[pick] = False
        history.append(pick)
    return history


def _ratings(catalogue: _Catalogue, history: list[int], favourites, rng) -> np.ndarray:
    """1-5 stars, about 4 on favourite categories and below 3 elsewhere."""
    liked = np.isin(catalogue.category[history], favourites)
    mean = np.where(liked, 4.1, 2.7)
    return np.clip(np.rint(mean + rng.normal(0.0, 0.9, size=len(history))), 1, 5)
