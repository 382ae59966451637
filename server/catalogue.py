"""The catalogue one serving state answers from: the bundle's items plus the items added live.

Added items get the rows after the bundle's items, so every per-item array of the bundle (embeddings,
popularity, CF factors) extends by appending, and the bundle's own rows never move.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmrec.export.dataset import ItemInfo
from lmrec.export.interest_tags import tag_key
from lmrec.export.kg import item_attribute_ids

# Filter keys and the attribute kind each reads (see `lmrec.export.kg.item_attribute_ids`).
FILTER_ALIASES = {"genre": "genre", "genres": "genre", "category": "genre", "categories": "genre",
                  "tag": "tag", "tags": "tag", "year": "year", "decade": "decade"}



def shown(value: str, limit: int = 80) -> str:
    """`value` as an error message quotes it: at most `limit` characters. A caller's over-long id echoed
    whole would push the message past gRPC's metadata limit, and the status would become
    RESOURCE_EXHAUSTED instead of the one that names the problem."""
    return value if len(value) <= limit else f"{value[:limit]}… ({len(value)} characters)"

# Keys an error message lists: added items may bring hundreds of attribute keys, and the whole list would
# push the message past gRPC's metadata limit as surely as one long value.
LISTED_KEYS = 30


def listed(names: Sequence[str], limit: int = LISTED_KEYS) -> str:
    """The first `limit` of `names`, each `shown`, and how many more there are."""
    more = f", and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(shown(name, 40) for name in names[:limit]) + more


# Notes an empty answer carries at most (`Catalogue.unmatched_filter_values`).
MAX_NOTES = 3


class UnknownFilter(ValueError):
    """A filter key that no item has; the message lists the keys that exist."""


def item_info_of(fields: dict) -> ItemInfo:
    """An `ItemInfo` from stored/API fields (title, categories, description, year, tags, attributes)."""
    year = fields.get("year")
    return ItemInfo(title=str(fields.get("title", "")), categories=tuple(fields.get("categories", ())),
                    description=str(fields.get("description", "")), year=int(year) if year else None,
                    tags=tuple(fields.get("tags", ())), attributes=dict(fields.get("attributes", {})))


def fields_of(info: ItemInfo) -> dict:
    return {"title": info.title, "categories": list(info.categories), "description": info.description,
            "year": info.year, "tags": list(info.tags), "attributes": dict(info.attributes)}


class Catalogue:
    def __init__(self, item_ids: Sequence[str], items: Sequence[ItemInfo], n_base: int) -> None:
        self.item_ids: list[str] = list(item_ids)
        self.items: list[ItemInfo] = list(items)
        self.n_base = n_base  # rows [0, n_base) are the bundle's; later rows were added live
        self.index: dict[str, int] = {item_id: row for row, item_id in enumerate(self.item_ids)}
        self._attribute_rows: dict[str, dict[str, list[int]]] | None = None
        self._spellings: dict[str, dict[str, str]] = {}
        self._tag_keys: dict[int, frozenset[str]] = {}  # filled as explanations ask (see `tag_keys`)

    def __len__(self) -> int:
        return len(self.item_ids)

    def append(self, item_id: str, info: ItemInfo) -> int:
        row = len(self.item_ids)
        self.item_ids.append(item_id)
        self.items.append(info)
        self.index[item_id] = row
        self._attribute_rows = None
        return row

    def replace(self, row: int, info: ItemInfo) -> None:
        self.items[row] = info
        self._attribute_rows = None
        self._tag_keys.pop(row, None)

    def tag_keys(self, row: int) -> frozenset[str]:
        """The item's attribute values as interest-tag keys (`tag_key`: 'Sci-Fi', 'sci fi' and 'scifi' are one
        tag; a decade reads as the vocabulary's '1990s movies'). Kept per item: every explanation asks."""
        keys = self._tag_keys.get(row)
        if keys is None:
            keys = self._tag_keys[row] = frozenset(
                tag_key(f"{value} movies" if kind == "decade" else value)
                for kind, _, value in (attribute.partition(":") for attribute in item_attribute_ids(self.items[row])))
        return keys

    def _rows_by_attribute(self) -> dict[str, dict[str, list[int]]]:
        """kind → value as filters match it (lower case) → rows; `_spellings` keeps each value as the first
        item that has it spells it (for notes)."""
        if self._attribute_rows is None:
            rows: dict[str, dict[str, list[int]]] = {}
            spellings: dict[str, dict[str, str]] = {}
            for row, info in enumerate(self.items):
                for attribute in item_attribute_ids(info):
                    kind, _, value = attribute.partition(":")
                    rows.setdefault(kind, {}).setdefault(value.lower(), []).append(row)
                    spellings.setdefault(kind, {}).setdefault(value.lower(), value)
            self._attribute_rows, self._spellings = rows, spellings
        return self._attribute_rows

    def unmatched_filter_values(self, filters: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        """A note for each of the first MAX_NOTES filter values that no item of the catalogue has, with the
        key's values closest to it: an empty answer then says which value emptied it ('Westerns' where the
        genre is 'Western'). The first few only: each note compares the value with every value of its key."""
        import difflib

        by_kind = self._rows_by_attribute()
        notes = []
        for key, values in filters:
            kind = self._filter_kind(key)
            known, spellings = by_kind.get(kind, {}), self._spellings.get(kind, {})
            for value in values:
                wanted = self._filter_value(kind, value)
                if wanted in known:
                    continue
                if len(notes) == MAX_NOTES:
                    return notes
                closest = difflib.get_close_matches(wanted, list(known), n=3, cutoff=0.6)
                note = f"no item has {shown(key)} = '{shown(str(value))}'"
                if closest:
                    note += "; closest: " + ", ".join(spellings.get(match, match) for match in closest)
                notes.append(note)
        return notes

    @staticmethod
    def _filter_kind(key: str) -> str:
        """A filter key as the attribute index names its kind ('genres' and 'Genre' are 'genre')."""
        return FILTER_ALIASES.get(key.strip().lower(), key.strip().lower().replace(" ", "_"))

    @staticmethod
    def _filter_value(kind: str, value) -> str:
        """A filter value as the attribute index holds it: spaces collapsed, lower case, decades with an 's'."""
        value = " ".join(str(value).split()).lower()
        if kind == "decade" and value and not value.endswith("s"):
            value += "s"
        return value

    def eligible(self, filters: Sequence[tuple[str, Sequence[str]]]) -> np.ndarray | None:
        """Bool mask of the items matching every (key, any-of values) filter; None when no filter."""
        if not filters:
            return None
        by_kind = self._rows_by_attribute()
        mask = np.ones(len(self), bool)
        for key, values in filters:
            kind = self._filter_kind(key)
            if kind not in by_kind:
                raise UnknownFilter(f"filter key '{shown(key)}' matches no item attribute; known keys: "
                                    f"{listed(sorted(by_kind))}")
            matching = np.zeros(len(self), bool)
            for value in values:
                matching[by_kind[kind].get(self._filter_value(kind, value), [])] = True
            mask &= matching
        return mask
