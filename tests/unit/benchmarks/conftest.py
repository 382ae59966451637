"""Fixtures shared by the benchmark suites' tests."""

from __future__ import annotations

import csv

import pytest


@pytest.fixture(scope="session")
def own_csv_dataset(tmp_path_factory):
    """(folder, dataset, --csv options): the project's synthetic data set written out as a generic CSV
    layout with its own file and column names, as a user's data set would come; the folder is `shop`."""
    folder = tmp_path_factory.mktemp("own") / "shop"
    return folder, _write_csv_dataset(folder), OWN_CSV


def _write_csv_dataset(folder, n_users: int = 40):
    """The project's synthetic data set written out as a generic CSV layout, with its own column names."""
    from lmrec.export.loaders import DataConfig, SyntheticConfig, load_dataset

    dataset = load_dataset(DataConfig(dataset="synthetic", synthetic=SyntheticConfig(
        n_users=n_users, n_items=60, min_interactions=8, max_interactions=20))).dataset
    folder.mkdir()
    with open(folder / "events.csv", "w", newline="") as out:
        rows = csv.writer(out, delimiter=";")
        rows.writerow(["uid", "iid", "stars", "time"])
        for u, i, w, t in zip(dataset.interactions.user, dataset.interactions.item, dataset.interactions.weight,
                              dataset.interactions.timestamp):
            rows.writerow([dataset.user_ids[u], dataset.item_ids[i], f"{w:g}", t])
    with open(folder / "items.csv", "w", newline="") as out:
        rows = csv.writer(out, delimiter=";")
        rows.writerow(["item_id", "title", "genres", "summary", "released"])
        for item_id, info in zip(dataset.item_ids, dataset.items):
            rows.writerow([item_id, info.title, "|".join(info.categories), info.description, info.year or ""])
    return dataset


OWN_CSV = ["--csv", "interactions_file=events.csv", "--csv", "delimiter=;", "--csv", "user=uid", "--csv", "item=iid",
           "--csv", "rating=stars", "--csv", "timestamp=time", "--csv", "categories=genres", "--csv", "description=summary",
           "--csv", "year=released"]
