"""Why an item was recommended: the closest history item, matched interest tags, a graph path.

`explain_items(state, liked, items, found_by, user_tags=())` returns one `ItemExplanation` per item,
computed with array operations over the returned items only (never the whole catalogue); `found_by`
(one signal per item) words the sentence of an item nothing else explains. `liked` is the part of
the user's history an explanation may name (oldest first): the caller leaves out what they rated low.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lmrec.export.interest_tags import tag_key
from lmrec.text import item_name

from .state import ServingState

# The most recent history items considered: older ones rarely explain today's list, and cost grows with them.
MAX_HISTORY = 50
# "Because you liked X" only when X is closer than this to the item: at or below 0 the two texts have
# nothing in common, and the phrase would claim a reason that is not there.
MIN_BECAUSE_SIMILARITY = 0.0


@dataclass(frozen=True, kw_only=True)
class ItemExplanation:
    because_item: int | None = None
    because_item_id: str = ""
    because_title: str = ""
    because_similarity: float = 0.0
    matched_tags: tuple[str, ...] = ()
    graph_path: str = ""
    text: str = ""


class _Titles:
    def __init__(self, items) -> None:
        self._items = items

    def __getitem__(self, row: int) -> str:
        return item_name(self._items[row])  # an untitled item is named by its description or tags


# What an item nothing else explains was chosen for, by the signal that found it.
_UNEXPLAINED = {
    "popular": "it is popular",
    "new_demand": "it is new, and items like it are in demand",  # the fused model's `new_demand_rr`
}


def _sentence(because_title: str, tags: Sequence[str], graph_path: str, found_by: str) -> str:
    parts = []
    if because_title:
        parts.append(f"because you liked {because_title}")
    if tags:
        parts.append("it matches your interest in " + ", ".join(tags))
    if graph_path:
        parts.append(f"it {graph_path}")
    if not parts:
        parts.append(_UNEXPLAINED.get(found_by, f"found by the {found_by} signal"))
    text = "; ".join(parts)
    return text[0].upper() + text[1:]


def explain_items(state: ServingState, liked: np.ndarray, items: Sequence[int], found_by: Sequence[str],
                  user_tags: Sequence[str] = ()) -> list[ItemExplanation]:
    liked = np.asarray(liked, np.int64)
    recent = liked[-MAX_HISTORY:]
    recent = recent[np.sort(np.unique(recent, return_index=True)[1])]
    catalogue = state.catalogue
    titles = _Titles(catalogue.items)  # looked up per explained item, never built for the whole catalogue
    items = np.asarray(items, np.int64)
    similarities = (state.item_embeddings[items] @ state.item_embeddings[recent].T) if len(recent) else None
    wanted = {tag_key(tag): tag for tag in user_tags}
    in_graph = items[items < state.graph.n_items]
    paths = {}
    if len(recent) and len(in_graph):  # one pair of sparse products for all the items
        paths = dict(zip(in_graph.tolist(), state.graph.explain_many(recent, in_graph, titles, action="")))
    if similarities is not None:
        similarities[recent[None, :] == items[:, None]] = -np.inf  # an item never explains itself
        closest = np.argmax(similarities, axis=1)  # ties: the older history item, as listed first
        closest_similarity = similarities[np.arange(len(items)), closest]
    explanations = []
    for row, item in enumerate(items.tolist()):
        because, similarity = None, 0.0
        if similarities is not None and closest_similarity[row] > MIN_BECAUSE_SIMILARITY:
            because, similarity = int(recent[closest[row]]), float(closest_similarity[row])
        keys = catalogue.tag_keys(item)
        tags = tuple(original for key, original in wanted.items() if key in keys)
        explanation = paths.get(item)
        path = explanation.text if explanation is not None else ""
        because_title = titles[because] if because is not None else ""
        explanations.append(ItemExplanation(because_item=because, because_similarity=similarity, matched_tags=tags,
                                            because_item_id=catalogue.item_ids[because] if because is not None else "",
                                            because_title=because_title,
                                            graph_path=path,
                                            text=_sentence(because_title, tags, path, found_by[row])))
    return explanations
