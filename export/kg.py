"""An item–attribute knowledge graph built from what the data set already says about its items.

Nodes are items and attributes; an edge joins an item to each of its attributes: genres
(`ItemInfo.categories`), tags, the release year and its decade, and every `ItemInfo.attributes`
key/value. Attribute node ids read `kind:value`: "genre:Animation", "tag:time travel", "year:1995",
"decade:1990s", "director:Jane Campion".

The graph is stored as a sparse item × attribute incidence matrix plus one idf weight per attribute
(log(n_items / items with the attribute)), so a shared rare attribute ("Film-Noir", "tag:heist")
counts for more than a shared "Drama". On it:

- `user_affinity`: how well each candidate item matches the attributes of a user's history — a
  content signal that needs no interactions (cold items, anonymous sessions) and the score of the
  `kg` recommender;
- `explain`: the path history item → shared attributes → recommended item, as a sentence
  ("shares Animation and 1995 with Toy Story (1995), which you rated");
- `save` / `load_item_graph`: npz + json. Only the tests use them: no bundle ships the graph; the gateway
  builds it from the bundle's snapshot at start-up, or takes the one inside a fused bundle's fused.pkl.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import scipy.sparse as sp

from lmrec.export.dataset import Dataset, Interactions

GRAPH_ARRAYS_FILE = "item_graph.npz"
GRAPH_META_FILE = "item_graph.json"
FORMAT_VERSION = 1

# Built-in attribute kinds, in the order their columns come (then `ItemInfo.attributes` keys, sorted).
GENRE, TAG, YEAR, DECADE = "genre", "tag", "year", "decade"
_BUILT_IN_KINDS = (GENRE, DECADE, YEAR, TAG)
# The order attributes are named in an explanation: what an item is before when it came out.
_DISPLAY_ORDER = {GENRE: 0, TAG: 1, YEAR: 3, DECADE: 4}  # any `attributes` key: 2


def _clean(value: str) -> str:
    return " ".join(str(value).split())


def item_attribute_ids(info) -> list[str]:
    """The attribute node ids of one item (an `ItemInfo` or anything with its fields), deduplicated.

    Tags are lower-cased (user-typed tags differ in case only too often); genres and attribute values
    keep their case. Empty values are skipped.
    """
    ids: list[str] = []
    for genre in info.categories:
        if _clean(genre):
            ids.append(f"{GENRE}:{_clean(genre)}")
    if info.year is not None:
        year = int(info.year)
        ids.append(f"{DECADE}:{year - year % 10}s")
        ids.append(f"{YEAR}:{year}")
    for tag in info.tags:
        if _clean(tag):
            ids.append(f"{TAG}:{_clean(tag).lower()}")
    for key, value in (info.attributes or {}).items():
        key, value = _clean(key).lower().replace(" ", "_"), _clean(value)
        if key and value:
            ids.append(f"{key}:{value}")
    return list(dict.fromkeys(ids))


def attribute_kind(attribute_id: str) -> str:
    return attribute_id.split(":", 1)[0]


def readable_attribute(attribute_id: str) -> str:
    """How an explanation names an attribute: 'Animation', '1995', 'the 1990s', 'director Jane Campion'."""
    kind, _, value = attribute_id.partition(":")
    if kind in (GENRE, TAG, YEAR):
        return value
    if kind == DECADE:
        return f"the {value}"
    return f"{kind.replace('_', ' ')} {value}"


def _join_words(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


@dataclass(frozen=True)
class Explanation:
    """Why an item is recommended: it shares `attributes` (readable values) with history item `via_item`."""

    via_item: int
    attributes: tuple[str, ...]
    text: str


class ItemGraph:
    """Item × attribute incidence (CSR, 0/1) with idf attribute weights."""

    def __init__(self, incidence: sp.spmatrix, attribute_ids: Sequence[str],
                 weights: np.ndarray | None = None) -> None:
        incidence = sp.csr_matrix(incidence, dtype=np.float32)
        incidence.sum_duplicates()
        incidence.data[:] = 1.0
        incidence.eliminate_zeros()
        if incidence.shape[1] != len(attribute_ids):
            raise ValueError(f"{incidence.shape[1]} incidence columns but {len(attribute_ids)} attribute ids")
        self.incidence: sp.csr_matrix = incidence
        self.attribute_ids: tuple[str, ...] = tuple(attribute_ids)
        self.attribute_kinds: tuple[str, ...] = tuple(attribute_kind(a) for a in self.attribute_ids)
        self.attribute_index: dict[str, int] = {a: j for j, a in enumerate(self.attribute_ids)}
        if len(self.attribute_index) != len(self.attribute_ids):
            raise ValueError("attribute ids must be unique")
        self.item_counts = np.asarray(incidence.sum(axis=0)).ravel().astype(np.int64)
        if weights is None:
            weights = np.log(max(self.n_items, 1) / np.maximum(self.item_counts, 1))
        self.weights = np.asarray(weights, np.float32)
        if self.weights.shape != (self.n_attributes,):
            raise ValueError("one weight per attribute expected")
        # Idf-weighted incidence (float64, CSR): rows slice cheaply for candidates.
        self._weighted = sp.csr_matrix(incidence.astype(np.float64) @ sp.diags(self.weights.astype(np.float64)))

    # --- shape and look-ups ------------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return self.incidence.shape[0]

    @property
    def n_attributes(self) -> int:
        return self.incidence.shape[1]

    def _row(self, item: int) -> np.ndarray:
        """Column indices of `item`'s attributes, ascending."""
        return np.sort(self.incidence.indices[self.incidence.indptr[item] : self.incidence.indptr[item + 1]])

    def attributes_of(self, item: int) -> list[str]:
        """Attribute ids of `item`, in column order."""
        return [self.attribute_ids[j] for j in self._row(item)]

    def items_with(self, attribute_id: str) -> np.ndarray:
        """Item indices carrying `attribute_id` (empty when the graph has no such node)."""
        j = self.attribute_index.get(attribute_id)
        if j is None:
            return np.zeros(0, np.int32)
        return self.incidence[:, j].nonzero()[0].astype(np.int32)

    def nodes_of_kind(self, kind: str) -> list[str]:
        return [a for a, k in zip(self.attribute_ids, self.attribute_kinds) if k == kind]

    # --- scoring -----------------------------------------------------------------------------

    def _check_items(self, items: np.ndarray, what: str) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64).ravel()
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"{what} must be item indices in [0, {self.n_items})")
        return items

    def user_profiles(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """(n_users, n_attributes) float64: the share of each user's history items that carry each attribute.

        A repeated item counts once per occurrence; an empty history gives a zero row.
        """
        lengths = np.fromiter((len(h) for h in histories), np.int64, len(histories))
        items = self._check_items(np.concatenate([np.asarray(h).ravel() for h in histories])
                                  if len(histories) else np.zeros(0), "histories")
        users = np.repeat(np.arange(len(histories)), lengths)
        shares = 1.0 / np.repeat(np.maximum(lengths, 1), lengths)
        # Summed exactly as the sparse product (history @ incidence) sums them, which this replaces
        # because scipy's conversions alone cost 0.3 ms per served request: each user's items in
        # ascending order, a repeated item's shares added up first, then each attribute accumulates
        # its items' shares in that order. The incidence is 0/1, so its columns are read straight
        # from the CSR arrays.
        order = np.lexsort((items, users))
        users, items, shares = users[order], items[order], shares[order]
        first = np.ones(len(items), bool)
        first[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
        starts = np.flatnonzero(first)
        shares = np.add.reduceat(shares, starts) if len(starts) else shares
        users, items = users[starts], items[starts]
        begins = self.incidence.indptr[items]
        counts = self.incidence.indptr[items + 1] - begins
        entry = np.repeat(np.arange(len(items)), counts)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        attributes = self.incidence.indices[begins[entry] + within]
        flat = np.bincount(users[entry] * self.n_attributes + attributes, weights=shares[entry],
                           minlength=len(histories) * self.n_attributes)
        return flat.reshape(len(histories), self.n_attributes).astype(np.float64, copy=False)

    def user_affinity(self, histories: Sequence[np.ndarray], candidates: np.ndarray | None = None) -> np.ndarray:
        """(n_users, n_candidates) float32: sum over each candidate's attributes of idf × the user's profile.

        `candidates` are item indices (all items, in order, when None). The profile is
        `user_profiles(histories)`, so an item sharing an attribute with every history item gains that
        attribute's full idf weight, and an attribute every item has adds nothing.
        """
        profiles = self.user_profiles(histories)  # (n_users, n_attributes)
        weighted = self._weighted  # (n_items, n_attributes)
        if candidates is not None:
            weighted = weighted[self._check_items(candidates, "candidates")]
        # sparse @ dense: one product for the whole batch, no Python loop over items.
        return np.ascontiguousarray(np.asarray(weighted @ profiles.T).T, dtype=np.float32)

    def shared_weights(self, items: np.ndarray, item: int) -> np.ndarray:
        """For each of `items`, the idf-weighted count of attributes it shares with `item` (float64)."""
        items = self._check_items(items, "items")
        item = int(self._check_items(np.array([item]), "item")[0])
        target = self._weighted[item].toarray().ravel()
        return np.asarray(self.incidence[items].astype(np.float64) @ target).ravel()

    def similar_items(self, item: int, k: int = 10) -> np.ndarray:
        """The `k` other items sharing the most idf-weighted attributes with `item` (ties: lower index)."""
        scores = self.shared_weights(np.arange(self.n_items), item)
        scores[item] = -np.inf
        order = np.lexsort((np.arange(self.n_items), -scores))
        order = order[np.isfinite(scores[order]) & (scores[order] > 0)]
        return order[:k].astype(np.int32)

    def with_items(self, infos: Sequence) -> "ItemGraph":
        """This graph plus rows for `infos` (items added after it was built), appended in order.

        The attribute columns and their idf weights stay as built, so features computed for the new
        items mean what they meant when the ranker was trained; attributes the graph never had are left out.
        """
        added = self._incidence_of(infos, np.arange(len(infos)), len(infos))
        return ItemGraph(sp.vstack([self.incidence, added], format="csr"), self.attribute_ids, self.weights)

    def with_rows_replaced(self, rows: Sequence[int], infos: Sequence) -> "ItemGraph":
        """This graph with the attributes of items `rows` taken from `infos` instead (an added item whose
        description was replaced); the columns and weights stay as built, as in `with_items`."""
        rows = np.asarray(rows, np.int64)
        kept = np.ones(self.n_items, np.float32)
        kept[rows] = 0.0
        incidence = sp.diags(kept) @ self.incidence + self._incidence_of(infos, rows, self.n_items)
        return ItemGraph(sp.csr_matrix(incidence), self.attribute_ids, self.weights)

    def _incidence_of(self, infos: Sequence, rows: np.ndarray, n_rows: int) -> sp.csr_matrix:
        """(n_rows, n_attributes) incidence with row `rows[i]` holding the known attributes of `infos[i]`."""
        row_ids, cols = [], []
        for row, info in zip(rows, infos):
            for attribute in item_attribute_ids(info):
                j = self.attribute_index.get(attribute)
                if j is not None:
                    row_ids.append(int(row))
                    cols.append(j)
        return sp.csr_matrix((np.ones(len(row_ids), np.float32), (np.asarray(row_ids, np.int64),
                                                                   np.asarray(cols, np.int64))),
                             shape=(n_rows, self.n_attributes))

    # --- explanations ------------------------------------------------------------------------

    def explain(self, history: np.ndarray, item: int, item_titles: Sequence[str], max_attributes: int = 2,
                *, action: str = "rated") -> Explanation | None:
        """The history item sharing the most idf-weighted attributes with `item`, and what they share.

        `item` itself in the history is passed over; ties go to the most recent history item (histories
        are oldest first). The named attributes are the `max_attributes` heaviest shared ones (a shared
        year makes its decade redundant), listed genres and tags first. None when the history shares no
        attribute with `item`. `action` ends the sentence ("which you rated"); "" leaves it off.
        """
        return self.explain_many(history, np.array([item]), item_titles, max_attributes, action=action)[0]

    def explain_many(self, history: np.ndarray, items: np.ndarray, item_titles: Sequence[str],
                     max_attributes: int = 2, *, action: str = "rated") -> list[Explanation | None]:
        """`explain` for several items against one history, with two small products for all of them."""
        history = self._check_items(history, "history")
        items = self._check_items(items, "items")
        if history.size == 0 or items.size == 0:
            return [None] * len(items)
        weights, counts = self._shared_attributes(history, items)
        # Count a shared attribute as a tiny positive weight even when its idf is 0, so sharing only
        # an attribute every item has still explains (weakly) rather than not at all.
        scores = weights + 1e-6 * counts
        scores[history[:, None] == items[None, :]] = 0.0  # an item never explains itself
        explained = (scores > 0).any(axis=0)
        best = len(history) - 1 - np.argmax(scores[::-1], axis=0)  # the last maximum: ties go to the most recent
        return [self._describe(int(history[via]), item, item_titles, max_attributes, action) if found else None
                for item, via, found in zip(items.tolist(), best.tolist(), explained.tolist())]

    def _entries(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in `items`, attribute column) of every incidence entry of `items`, from the CSR arrays."""
        indptr = self.incidence.indptr
        starts, lengths = indptr[items], indptr[items + 1] - indptr[items]
        rows = np.repeat(np.arange(len(items)), lengths)
        positions = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))
        return rows, self.incidence.indices[positions]

    def _shared_attributes(self, history: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(history × items) float64: idf-weighted shared attributes, and shared-attribute counts.

        Dense over only the attributes the items have (no other column can be shared). On the request
        path, a history and a page of items are a few dozen rows, and scipy's fancy indexing and sparse
        products cost ~0.1 ms each in fixed overhead: more than the arithmetic.
        """
        item_rows, item_columns = self._entries(items)
        columns = np.unique(item_columns)
        item_dense = np.zeros((len(items), len(columns)))
        item_dense[item_rows, np.searchsorted(columns, item_columns)] = 1.0
        history_rows, history_columns = self._entries(history)
        shared = np.isin(history_columns, columns)
        history_dense = np.zeros((len(history), len(columns)))
        history_dense[history_rows[shared], np.searchsorted(columns, history_columns[shared])] = 1.0
        weights = history_dense @ (item_dense * self.weights[columns].astype(np.float64)).T
        return weights, history_dense @ item_dense.T

    def _describe(self, via: int, item: int, item_titles: Sequence[str], max_attributes: int,
                  action: str) -> Explanation:
        target = set(self._row(item).tolist())
        shared = [j for j in self._row(via).tolist() if j in target]
        kinds = {self.attribute_kinds[j] for j in shared}
        if YEAR in kinds:
            shared = [j for j in shared if self.attribute_kinds[j] != DECADE]
        # Heaviest first; equal weights in column order (genres, decade, year, tags, other keys).
        shared.sort(key=lambda j: (-float(self.weights[j]), j))
        chosen = shared[: max(1, max_attributes)]
        chosen.sort(key=lambda j: (_DISPLAY_ORDER.get(self.attribute_kinds[j], 2), -float(self.weights[j]), j))
        words = tuple(readable_attribute(self.attribute_ids[j]) for j in chosen)
        title = item_titles[via]
        text = f"shares {_join_words(words)} with {title}" + (f", which you {action}" if action else "")
        return Explanation(via_item=via, attributes=words, text=text)

    # --- persistence -------------------------------------------------------------------------

    def save(self, path: Path | str) -> Path:
        """Write `item_graph.npz` (incidence + weights) and `item_graph.json` (attribute ids) into `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        csr = self.incidence
        np.savez_compressed(
            path / GRAPH_ARRAYS_FILE,
            indptr=csr.indptr.astype(np.int64),
            indices=csr.indices.astype(np.int32),
            shape=np.asarray(csr.shape, np.int64),
            weights=self.weights,
        )
        meta = {"format_version": FORMAT_VERSION, "n_items": self.n_items, "attribute_ids": list(self.attribute_ids)}
        (path / GRAPH_META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1))
        return path


def load_item_graph(path: Path | str) -> ItemGraph:
    """The graph `ItemGraph.save(path)` wrote."""
    path = Path(path)
    meta = json.loads((path / GRAPH_META_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported item graph format {meta.get('format_version')!r} in {path}")
    with np.load(path / GRAPH_ARRAYS_FILE) as arrays:
        indptr, indices = arrays["indptr"], arrays["indices"]
        shape = tuple(int(n) for n in arrays["shape"])
        weights = arrays["weights"]
    if shape != (meta["n_items"], len(meta["attribute_ids"])):
        raise ValueError(f"item graph arrays and metadata disagree in {path}")
    incidence = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=shape)
    return ItemGraph(incidence, meta["attribute_ids"], weights)


def _column_order(attribute_id: str) -> tuple[int, str, Any]:
    kind, _, value = attribute_id.partition(":")
    rank = _BUILT_IN_KINDS.index(kind) if kind in _BUILT_IN_KINDS else len(_BUILT_IN_KINDS)
    sortable: Any = int(value[:-1] if kind == DECADE else value) if kind in (YEAR, DECADE) else value
    return rank, kind, sortable


def build_item_graph(dataset: Dataset) -> ItemGraph:
    """The graph of `dataset.items`: one row per item, one column per attribute any item has."""
    per_item = [item_attribute_ids(info) for info in dataset.items]
    attribute_ids = sorted({a for ids in per_item for a in ids}, key=_column_order)
    index = {a: j for j, a in enumerate(attribute_ids)}
    rows = np.repeat(np.arange(len(per_item)), [len(ids) for ids in per_item])
    cols = np.fromiter((index[a] for ids in per_item for a in ids), np.int64, len(rows))
    incidence = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                              shape=(dataset.n_items, len(attribute_ids)))
    return ItemGraph(incidence, attribute_ids)


class KnowledgeGraphRecommender:
    """Content baseline: each item scored by `ItemGraph.user_affinity` to the user's history.

    Learns nothing from the interactions (the graph depends only on item side information), so cold
    items and anonymous sessions are scored like everything else.
    """

    name = "kg"
    param_grid: ClassVar[list[dict[str, Any]]] = [{}]

    def __init__(self, *, seed: int = 42) -> None:
        self.seed = seed  # accepted for a uniform factory signature; the graph is deterministic
        self.graph: ItemGraph | None = None

    def fit(self, dataset: Dataset, train: Interactions) -> "KnowledgeGraphRecommender":
        self.graph = build_item_graph(dataset)
        return self

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        if self.graph is None:
            raise RuntimeError("fit the model before scoring")
        return self.graph.user_affinity(histories)
