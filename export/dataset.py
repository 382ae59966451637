"""The in-memory data model every loader produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, kw_only=True)
class ItemInfo:
    """What is known about an item besides its interactions (input to the item text builder)."""

    title: str
    categories: tuple[str, ...] = ()
    description: str = ""
    year: int | None = None
    tags: tuple[str, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class UserInfo:
    """Optional user attributes (age, gender, occupation, ...), as strings."""

    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Interactions:
    """Column arrays of (user index, item index, weight, timestamp).

    Canonical order is chronological per user: sorted by (user, timestamp, item), so that of two
    interactions at the same second the higher item index counts as the later one.
    """

    user: np.ndarray  # int32 user index
    item: np.ndarray  # int32 item index
    weight: np.ndarray  # float32 rating or implicit weight
    timestamp: np.ndarray  # int64 seconds

    def __post_init__(self) -> None:
        n = len(self.user)
        if not (len(self.item) == len(self.weight) == len(self.timestamp) == n):
            raise ValueError("interaction columns must have equal lengths")

    def __len__(self) -> int:
        return len(self.user)

    def select(self, mask_or_index: np.ndarray) -> "Interactions":
        return Interactions(
            user=self.user[mask_or_index],
            item=self.item[mask_or_index],
            weight=self.weight[mask_or_index],
            timestamp=self.timestamp[mask_or_index],
        )

    def sorted(self) -> "Interactions":
        order = np.lexsort((self.item, self.timestamp, self.user))
        return self.select(order)

    @staticmethod
    def from_lists(user, item, weight=None, timestamp=None) -> "Interactions":
        user = np.asarray(user, dtype=np.int32)
        n = len(user)
        return Interactions(
            user=user,
            item=np.asarray(item, dtype=np.int32),
            weight=np.ones(n, np.float32) if weight is None else np.asarray(weight, np.float32),
            timestamp=np.arange(n, dtype=np.int64) if timestamp is None else np.asarray(timestamp, np.int64),
        )


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A cleaned data set: raw ids map to dense indices; `items[i]` describes `item_ids[i]`."""

    name: str
    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    items: tuple[ItemInfo, ...]
    users: tuple[UserInfo, ...]
    interactions: Interactions  # canonical (chronological per user) order
    # Ratings below this were dropped at loading, so every kept interaction is a like whatever its
    # rating (None: every rating was kept, low ones included).
    implicit_threshold: float | None = None

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_index(self) -> dict[str, int]:
        return {raw: i for i, raw in enumerate(self.item_ids)}

    def user_index(self) -> dict[str, int]:
        return {raw: i for i, raw in enumerate(self.user_ids)}

    def histories(self) -> list[np.ndarray]:
        """Item indices per user, oldest first."""
        return histories_of(self.interactions, self.n_users)


def histories_of(interactions: Interactions, n_users: int) -> list[np.ndarray]:
    """Item indices per user in the interactions' order (chronological when canonical)."""
    order = np.argsort(interactions.user, kind="stable")
    users = interactions.user[order]
    items = interactions.item[order]
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(n_users)]


@dataclass(frozen=True, kw_only=True)
class Split:
    """One evaluation split: disjoint train / valid / test interactions (each in canonical order).

    `train` holds every interaction a model may learn from when tuning; valid and test targets never
    appear in it. For the `cold-items` protocol, `cold_items` lists the items that have no training
    interaction at all.
    """

    protocol: str
    seed: int
    train: Interactions
    valid: Interactions
    test: Interactions
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))


def concat(*parts: Interactions) -> Interactions:
    """Union of interaction sets, returned in canonical order."""
    return Interactions(
        user=np.concatenate([p.user for p in parts]),
        item=np.concatenate([p.item for p in parts]),
        weight=np.concatenate([p.weight for p in parts]),
        timestamp=np.concatenate([p.timestamp for p in parts]),
    ).sorted()


def targets_by_user(interactions: Interactions) -> dict[int, np.ndarray]:
    """User index -> the item indices that user has in `interactions`."""
    out: dict[int, list[int]] = {}
    for u, i in zip(interactions.user.tolist(), interactions.item.tolist()):
        out.setdefault(u, []).append(i)
    return {u: np.asarray(items, np.int32) for u, items in out.items()}
