"""Interest tags for user profiles, chosen by the text encoder itself.

The vocabulary is what the data set can say about items in words: its genres, its most frequent
readable item tags and the decades its items come from ("1950s movies"). Each tag is encoded once; a
user's interest tags are the tags whose embeddings lie closest to the user's profile embedding (the
same `profile_text_of` text the LM recommenders and the gateway encode). No count-based prior: the
encoder decides, so a user who has only ever seen horror titles gets "Horror" because their profile
reads like horror, and a fine-tuned encoder changes the tags with everything else.

Each tag goes to the encoder as a phrase, "{tag} movies" ("Horror movies", "time travel movies").
Checked with the packaged MiniLM on ml-100k (943 users): bare words, "Interest: {tag}", "Interested in
{tag}." and "Genres: {tag}." pile most users onto one or two hub tags (a decade, "Film-Noir") and put
one of the genres of the user's profile items on top for only 13-58% of users; "{tag} movies" spreads
the top tags over 23 of 25 and puts a profile genre on top for 88% (ml-latest-small, 300 tags: 49%,
against 2% for bare words). A tag that already ends in "movies"/"films" ("1990s movies") is encoded
as it is.

Weights are a softmax over the vocabulary at a low temperature, rescaled so the top tag weighs 1:
`exp((sim - best_sim) / temperature)`, in (0, 1], falling by a factor e for every `temperature` of
cosine similarity below the best tag.

Optionally (`background=`, profile embeddings of a reference population) each tag's mean similarity
to that population is partly subtracted first, so tags every profile sits close to ("fun",
"1990s movies") give way to what sets this user apart. Off by default.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Protocol, Sequence

import numpy as np

from lmrec.export.dataset import Dataset
from lmrec.text import profile_text_of

DEFAULT_TEMPERATURE = 0.05
DEFAULT_MIN_WEIGHT = 0.05
DEFAULT_TEMPLATE = "{} movies"  # how a tag is put to the encoder (see the module notes)
DEFAULT_CENTERING = 0.5
_ALREADY_PHRASED = (" movies", " films")

# User-typed tags that say how a user filed a movie or judged it, not what it is about.
_NOT_INTERESTS = frozenset({
    "in netflix queue", "netflix queue", "seen more than once", "seen", "to see", "watched", "own", "owned",
    "dvd", "bd-r", "bd-video", "clv", "vhs", "imdb top 250", "movies", "movie", "film", "favorite",
    "favorites", "bad", "boring", "overrated", "predictable", "bad plot", "plot holes", "interesting",
    "bad acting", "stupid", "awful", "good", "great", "nothing special", "too long", "long", "slow",
})
_READABLE = re.compile(r"^[a-z][a-z '&-]*[a-z]$", re.IGNORECASE)
MAX_TAG_WORDS = 3
MAX_TAG_CHARS = 25
MIN_TAG_ITEMS = 2
MIN_DECADE_ITEMS = 5


class TextEncoder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


def tag_key(tag: str) -> str:
    """One spelling per tag, for de-duplicating the vocabulary and matching a tag to an item's attributes:
    'Sci-Fi' ~ 'sci-fi' ~ 'scifi'; "Children's" ~ 'children'; 'ghosts' ~ 'ghost'."""
    key = re.sub(r"[^a-z0-9]", "", tag.lower())
    return key[:-1] if key.endswith("s") and len(key) > 3 else key


def _readable_tag(tag: str) -> bool:
    return (
        bool(_READABLE.match(tag))
        and len(tag) <= MAX_TAG_CHARS
        and len(tag.split()) <= MAX_TAG_WORDS
        and tag.lower() not in _NOT_INTERESTS
    )


def tag_vocabulary(dataset: Dataset, max_tags: int = 300, *, decades: bool = True) -> list[str]:
    """Genres (most common first), then decades as '1990s movies', then the most frequent readable tags.

    Item tags count once per item and must be on at least MIN_TAG_ITEMS items; tags that only file or
    judge a movie ('in netflix queue', 'boring'), carry digits or punctuation, or repeat a genre are left
    out. At most `max_tags` entries; genres are never dropped for tags.
    """
    genres = Counter(" ".join(g.split()) for info in dataset.items for g in info.categories if g.strip())
    vocabulary: list[str] = []
    seen: set[str] = set()

    def add(word: str) -> None:
        key = tag_key(word)
        if key and key not in seen and len(vocabulary) < max_tags:
            seen.add(key)
            vocabulary.append(word)

    for genre, _ in sorted(genres.items(), key=lambda kv: (-kv[1], kv[0])):
        add(genre)
    if decades:
        counts = Counter(int(info.year) - int(info.year) % 10 for info in dataset.items if info.year is not None)
        for decade in sorted(d for d, n in counts.items() if n >= MIN_DECADE_ITEMS):
            add(f"{decade}s movies")
    tags = Counter(t for info in dataset.items for t in {" ".join(tag.split()).lower() for tag in info.tags})
    for tag, n in sorted(tags.items(), key=lambda kv: (-kv[1], kv[0])):
        if n >= MIN_TAG_ITEMS and _readable_tag(tag):
            add(tag)
    return vocabulary


class InterestTagger:
    """Scores profile embeddings against a fixed tag vocabulary, encoded once."""

    def __init__(self, encoder: TextEncoder, vocabulary: Sequence[str], *, template: str = DEFAULT_TEMPLATE,
                 temperature: float = DEFAULT_TEMPERATURE, background: np.ndarray | None = None,
                 centering: float = DEFAULT_CENTERING) -> None:
        if not vocabulary:
            raise ValueError("the tag vocabulary is empty")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("the tag vocabulary has duplicates")
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.vocabulary: tuple[str, ...] = tuple(vocabulary)
        self.template = template
        self.temperature = float(temperature)
        self.phrases: tuple[str, ...] = tuple(self.phrase(tag) for tag in self.vocabulary)
        self.tag_embeddings = _unit_rows(encoder.encode(list(self.phrases)))
        # Subtracted from every similarity row: zero, or `centering` × the mean similarity of each tag to
        # the background profiles.
        self.tag_offsets = np.zeros(len(self.vocabulary), np.float32)
        if background is not None and len(background):
            self.tag_offsets = (float(centering) * (_unit_rows(background) @ self.tag_embeddings.T).mean(axis=0)
                                ).astype(np.float32)

    def phrase(self, tag: str) -> str:
        """The text encoded for `tag`: the template, unless the tag already names movies/films."""
        return tag if tag.lower().endswith(_ALREADY_PHRASED) else self.template.format(tag)

    def similarities(self, profile_embeddings: np.ndarray) -> np.ndarray:
        """(n_users, n_tags) cosine similarities of each profile to each tag, less the background offsets."""
        return _unit_rows(profile_embeddings) @ self.tag_embeddings.T - self.tag_offsets

    def weights(self, profile_embeddings: np.ndarray) -> np.ndarray:
        """(n_users, n_tags) softmax over tags at `temperature`, divided by each row's maximum: in (0, 1]."""
        sims = self.similarities(profile_embeddings).astype(np.float64)
        return np.exp((sims - sims.max(axis=1, keepdims=True)) / self.temperature)

    def tag_users(self, profile_embeddings: np.ndarray, top_n: int = 5,
                  min_weight: float = DEFAULT_MIN_WEIGHT) -> list[list[tuple[str, float]]]:
        """Per user, up to `top_n` (tag, weight) pairs, heaviest first, each weighing at least `min_weight`.

        The top tag always weighs 1.0, so every user with a profile gets at least one tag. Ties between
        equal weights go to the tag listed first in the vocabulary.
        """
        weights = self.weights(profile_embeddings)
        n = min(max(int(top_n), 0), weights.shape[1])
        if n == 0:
            return [[] for _ in range(len(weights))]
        # Stable ordering: heaviest first, then vocabulary order.
        order = np.argsort(-weights, axis=1, kind="stable")[:, :n]
        top = np.take_along_axis(weights, order, axis=1)
        return [
            [(self.vocabulary[j], float(w)) for j, w in zip(row_tags.tolist(), row_weights.tolist()) if w >= min_weight]
            for row_tags, row_weights in zip(order, top)
        ]


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    rows = np.atleast_2d(np.asarray(embeddings, np.float32))
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def profile_texts(dataset: Dataset, users: np.ndarray, histories: Sequence[np.ndarray]) -> list[str]:
    """`profile_text_of` each user: history newest first, attributes from `dataset.users` (none for -1)."""
    texts = []
    for user, history in zip(np.asarray(users).tolist(), histories):
        attributes = dataset.users[user].attributes if 0 <= user < len(dataset.users) else {}
        texts.append(profile_text_of([dataset.items[i] for i in np.asarray(history)[::-1]], attributes=attributes))
    return texts


def user_interest_tags(dataset: Dataset, encoder: TextEncoder, users: np.ndarray, histories: Sequence[np.ndarray],
                       top_n: int = 5, *, vocabulary: Sequence[str] | None = None,
                       tagger: InterestTagger | None = None,
                       min_weight: float = DEFAULT_MIN_WEIGHT) -> list[list[tuple[str, float]]]:
    """Interest tags of `users` from their profile texts (`tagger` is built from the data set when None).

    A user with nothing to describe (no history, no attributes) gets no tags.
    """
    if len(users) != len(histories):
        raise ValueError("one history per user expected")
    if tagger is None:
        tagger = InterestTagger(encoder, vocabulary if vocabulary is not None else tag_vocabulary(dataset))
    texts = profile_texts(dataset, users, histories)
    described = [j for j, text in enumerate(texts) if text]
    out: list[list[tuple[str, float]]] = [[] for _ in texts]
    if described:
        tags = tagger.tag_users(encoder.encode([texts[j] for j in described]), top_n=top_n, min_weight=min_weight)
        for j, user_tags in zip(described, tags):
            out[j] = user_tags
    return out
