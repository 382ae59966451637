"""Save a Dataset into a bundle and read it back (the gateway's catalogue and initial user state)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .dataset import Dataset, Interactions, ItemInfo, UserInfo

CATALOG_FILE = "catalog.json"
INTERACTIONS_FILE = "interactions.npz"


def save_snapshot(dataset: Dataset, directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    catalog = {
        "name": dataset.name,
        "item_ids": list(dataset.item_ids),
        "user_ids": list(dataset.user_ids),
        "items": [asdict(item) for item in dataset.items],
        "users": [user.attributes for user in dataset.users],
        "implicit_threshold": dataset.implicit_threshold,
    }
    (directory / CATALOG_FILE).write_text(json.dumps(catalog))
    inter = dataset.interactions
    np.savez(directory / INTERACTIONS_FILE, user=inter.user, item=inter.item, weight=inter.weight,
             timestamp=inter.timestamp)
    return [CATALOG_FILE, INTERACTIONS_FILE]


def load_snapshot(directory: Path) -> Dataset:
    catalog = json.loads((directory / CATALOG_FILE).read_text())
    arrays = np.load(directory / INTERACTIONS_FILE)
    items = tuple(
        ItemInfo(**{**item, "categories": tuple(item["categories"]), "tags": tuple(item["tags"])})
        for item in catalog["items"]
    )
    return Dataset(
        name=catalog["name"],
        user_ids=tuple(catalog["user_ids"]),
        item_ids=tuple(catalog["item_ids"]),
        items=items,
        users=tuple(UserInfo(attributes=attrs) for attrs in catalog["users"]),
        interactions=Interactions(user=arrays["user"], item=arrays["item"], weight=arrays["weight"],
                                  timestamp=arrays["timestamp"]),
        implicit_threshold=catalog.get("implicit_threshold"),  # absent from bundles written before it
    )
