"""One serving state: a verified bundle plus the items added live, ready to answer requests.

`prepare_state(bundle, stored_items, encode)` builds it: added items are (re-)encoded with *this*
bundle's encoder and inserted into *this* bundle's index, so a state never mixes encoders. The gateway
swaps whole states on deploy; a request takes one state at its start and uses only that one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lmrec.export.dataset import ItemInfo
from lmrec.export.interest_tags import DEFAULT_TEMPLATE, InterestTagger, tag_vocabulary
from lmrec.export.kg import ItemGraph, build_item_graph
from lmrec.text import item_text_of

from .bundle import Bundle
from .catalogue import Catalogue, item_info_of
from .store import InMemoryUserStore

Encode = Callable[[list[str]], Awaitable[np.ndarray]]


class _Precomputed:
    """An encoder that answers from vectors computed beforehand (the tag phrases, through Triton)."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self._rows = {text: row for row, text in enumerate(texts)}
        self._vectors = vectors

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._vectors[[self._rows[t] for t in texts]]


@dataclass(kw_only=True, eq=False)
class ServingState:
    bundle: Bundle
    catalogue: Catalogue
    item_embeddings: np.ndarray  # (n_items, dim): the bundle's rows, then the added items'
    popularity: np.ndarray
    item_factors: np.ndarray  # added items get zero factors: CF knows nothing about them
    graph: ItemGraph
    tagger: InterestTagger | None
    fused: object | None
    snapshot_users: InMemoryUserStore
    popular_order: np.ndarray = field(init=False)
    cf_rows: np.ndarray = field(init=False)  # items with CF factors: the only ones ALS can propose
    inflight: int = 0  # requests using this state right now (a deploy waits for 0 before unloading)
    # Bumped by every AddItems: what was computed against the catalogue before it (a user's cached
    # candidates) is stale after it, and a request that awaited across it rebuilds its filter and mask.
    catalogue_generation: int = 0

    def __post_init__(self) -> None:
        self._index_rows()

    def _index_rows(self) -> None:
        self.popular_order = np.argsort(-self.popularity, kind="stable")
        self.cf_rows = np.flatnonzero(np.abs(self.item_factors).sum(axis=1) > 0)

    def allowed_popular(self, blocked: np.ndarray, at_least: int) -> np.ndarray:
        """Unblocked items in popularity order, at least `at_least` of them when that many exist.

        Reads a growing prefix of the order instead of the whole catalogue: a request's cost should not
        grow with catalogue size.
        """
        size = max(at_least * 2, 64)
        while True:
            prefix = self.popular_order[:size]
            # Items added after the request built `blocked` (during its ranker call) are not for it.
            prefix = prefix[prefix < len(blocked)]
            allowed = prefix[~blocked[prefix]]
            if len(allowed) >= at_least or size >= len(self.popular_order):
                return allowed
            size *= 4

    @property
    def label(self) -> str:
        return self.bundle.label

    @property
    def retriever(self):
        return self.bundle.retriever

    def add_items(self, items: Sequence[tuple[str, ItemInfo]], vectors: np.ndarray) -> tuple[int, int]:
        """Insert or replace added items (never the bundle's own). Returns (added, replaced).

        Every array is rebuilt and then assigned: the asyncio loop runs no other request in between, and
        the index insert holds the retriever's lock, so a concurrent search sees the old or the new set.
        """
        vectors = np.asarray(vectors, np.float32)
        embeddings, rows, new_infos = self.item_embeddings, [], []
        replaced_rows, replaced_infos = [], []
        added = replaced = 0
        for (item_id, info), vector in zip(items, vectors):
            row = self.catalogue.index.get(item_id)
            if row is None:
                row = self.catalogue.append(item_id, info)
                new_infos.append(info)
                added += 1
            else:
                self.catalogue.replace(row, info)
                replaced_rows.append(row)
                replaced_infos.append(info)
                replaced += 1
            rows.append(row)
        if added:
            embeddings = np.concatenate([embeddings, np.zeros((added, embeddings.shape[1]), np.float32)])
            self.popularity = np.concatenate([self.popularity, np.zeros(added, self.popularity.dtype)])
            self.item_factors = np.concatenate([self.item_factors,
                                                np.zeros((added, self.item_factors.shape[1]), np.float32)])
        else:
            embeddings = embeddings.copy()
        embeddings[rows] = vectors
        self.retriever.add(vectors, np.asarray(rows, np.int64))
        if self.fused is not None:
            self.fused = self.fused.with_items(embeddings[len(self.fused.item_embeddings):], new_infos) \
                if added else self.fused
            if replaced:  # a replaced item's text changed: its embedding row in the ranker changes too
                self.fused.set_item_embeddings(embeddings)
                if getattr(self.fused, "graph", None) is not None:  # and so may its attributes
                    self.fused.graph = self.fused.graph.with_rows_replaced(replaced_rows, replaced_infos)
        self.graph = self.graph.with_items(new_infos) if added else self.graph
        if replaced:
            self.graph = self.graph.with_rows_replaced(replaced_rows, replaced_infos)
        self.item_embeddings = embeddings
        self._index_rows()
        self.catalogue_generation += 1
        return added, replaced


async def build_tagger(bundle: Bundle, encode: Encode) -> InterestTagger | None:
    """The interest-tag vocabulary of the bundle's data, encoded by the bundle's served encoder."""
    fused_tagger = getattr(bundle.fused, "tagger", None) if bundle.fused is not None else None
    if fused_tagger is not None:
        return fused_tagger
    vocabulary = tag_vocabulary(bundle.dataset)
    if not vocabulary:
        return None
    phrases = [tag if tag.lower().endswith((" movies", " films")) else DEFAULT_TEMPLATE.format(tag)
               for tag in vocabulary]
    vectors = await encode(phrases)
    return InterestTagger(_Precomputed(phrases, vectors), vocabulary)


async def prepare_state(bundle: Bundle, stored_items: Sequence, encode: Encode) -> ServingState:
    """A state for `bundle` with the stored added items encoded by `encode` (this bundle's encoder)."""
    dataset = bundle.dataset
    catalogue = Catalogue(dataset.item_ids, dataset.items, n_base=dataset.n_items)
    fused = bundle.fused
    state = ServingState(
        bundle=bundle, catalogue=catalogue, item_embeddings=bundle.item_embeddings,
        popularity=np.asarray(bundle.popularity, np.float32), item_factors=bundle.item_factors,
        graph=fused.graph if fused is not None and getattr(fused, "graph", None) is not None
        else build_item_graph(dataset),
        tagger=await build_tagger(bundle, encode), fused=fused, snapshot_users=InMemoryUserStore(dataset))
    pending = [(item.item_id, item_info_of(item.fields)) for item in stored_items
               if item.item_id not in catalogue.index]
    for start in range(0, len(pending), 256):
        chunk = pending[start:start + 256]
        vectors = await encode([item_text_of(info) for _, info in chunk])
        state.add_items(chunk, vectors)
    return state
