"""Loaders on the real MovieLens files (read in place) and the generic CSV loader on tmp files."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from lmrec.export.dataset import Dataset
from lmrec.export.loaders import CsvColumns, DataConfig, DataError, load_dataset


@pytest.fixture(scope="module")
def ml100k(ml100k_dir: Path):
    return load_dataset(DataConfig(dataset="ml-100k", data_dir=ml100k_dir))


@pytest.fixture(scope="module")
def ml_small(ml_latest_small_dir: Path):
    return load_dataset(DataConfig(dataset="ml-latest-small", data_dir=ml_latest_small_dir))


def as_raw_rows(dataset: Dataset) -> set[tuple[str, str, float, int]]:
    it = dataset.interactions
    return {
        (dataset.user_ids[u], dataset.item_ids[i], float(w), int(t))
        for u, i, w, t in zip(it.user.tolist(), it.item.tolist(), it.weight.tolist(), it.timestamp.tolist())
    }


def assert_canonical(dataset: Dataset) -> None:
    it = dataset.interactions
    key = np.stack([it.user.astype(np.int64), it.timestamp, it.item.astype(np.int64)], axis=1)
    assert (np.diff(key[:, 0]) >= 0).all()
    same_user = key[1:, 0] == key[:-1, 0]
    later = (key[1:, 1] > key[:-1, 1]) | ((key[1:, 1] == key[:-1, 1]) & (key[1:, 2] > key[:-1, 2]))
    assert later[same_user].all()


# ---------------------------------------------------------------------------------------------------
# ml-100k


def test_ml100k_sizes_and_clean_report(ml100k):
    ds = ml100k.dataset
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (943, 1682, 100_000)
    assert ml100k.report.kept == ml100k.report.rows_read == 100_000
    assert ml100k.report.examples == ()
    assert ds.interactions.user.dtype == np.int32 and ds.interactions.timestamp.dtype == np.int64
    assert_canonical(ds)


def test_ml100k_interactions_match_the_file(ml100k, ml100k_dir):
    expected = set()
    with open(ml100k_dir / "u.data") as handle:
        for line in handle:
            user, item, rating, ts = line.split("\t")
            expected.add((user, item, float(rating), int(ts)))
    assert as_raw_rows(ml100k.dataset) == expected


def test_ml100k_indices_follow_numeric_id_order(ml100k):
    ds = ml100k.dataset
    assert ds.item_ids == tuple(str(i) for i in range(1, 1683))
    assert ds.user_ids == tuple(str(u) for u in range(1, 944))


def test_ml100k_item_and_user_info(ml100k):
    ds = ml100k.dataset
    toy_story = ds.items[ds.item_index()["1"]]
    assert toy_story.title.startswith("Toy Story") and toy_story.year == 1995
    assert toy_story.categories == ("Animation", "Children's", "Comedy")
    unknown = ds.items[ds.item_index()["267"]]  # the 'unknown' placeholder movie: genre 'unknown' only
    assert unknown.categories == () and unknown.year is None
    assert all("unknown" not in info.categories for info in ds.items)
    assert ds.users[ds.user_index()["1"]].attributes == {
        "age": "24",
        "gender": "M",
        "occupation": "technician",
        "zip": "85711",
    }
    assert {u.attributes["gender"] for u in ds.users} == {"M", "F"}


# ---------------------------------------------------------------------------------------------------
# ml-latest-small


def test_ml_small_sizes_and_uninteracted_items_stay(ml_small, ml_latest_small_dir):
    ds = ml_small.dataset
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (610, 9742, 100_836)
    assert len(np.unique(ds.interactions.item)) == 9724
    with open(ml_latest_small_dir / "ratings.csv", newline="") as handle:
        rated = {row["movieId"] for row in csv.DictReader(handle)}
    never_rated = set(ds.item_ids) - rated
    assert len(never_rated) == 18
    index = ds.item_index()
    assert not np.isin([index[m] for m in never_rated], ds.interactions.item).any()
    assert_canonical(ds)


def test_ml_small_interactions_match_the_file(ml_small, ml_latest_small_dir):
    with open(ml_latest_small_dir / "ratings.csv", newline="") as handle:
        expected = {
            (r["userId"], r["movieId"], float(r["rating"]), int(r["timestamp"])) for r in csv.DictReader(handle)
        }
    assert as_raw_rows(ml_small.dataset) == expected


def test_ml_small_titles_genres_years_and_tags(ml_small, ml_latest_small_dir):
    ds = ml_small.dataset
    with open(ml_latest_small_dir / "movies.csv", newline="") as handle:
        movies = {r["movieId"]: r for r in csv.DictReader(handle)}
    info = {raw: ds.items[i] for raw, i in ds.item_index().items()}
    with_comma = [m for m, r in movies.items() if "," in r["title"]]
    assert with_comma and all(info[m].title == movies[m]["title"].strip() for m in with_comma)
    assert info["1"].year == 1995 and info["1"].categories[:2] == ("Adventure", "Animation")
    no_genre = [m for m, r in movies.items() if r["genres"] == "(no genres listed)"]
    assert no_genre and all(info[m].categories == () for m in no_genre)
    no_year = [m for m, r in movies.items() if not r["title"].strip().endswith(")")]
    assert no_year and all(info[m].year is None for m in no_year)

    tag_counts: dict[str, Counter] = defaultdict(Counter)
    with open(ml_latest_small_dir / "tags.csv", newline="") as handle:
        for r in csv.DictReader(handle):
            tag_counts[r["movieId"]][r["tag"].strip().lower()] += 1
    most_tagged = max(tag_counts, key=lambda m: len(tag_counts[m]))
    tags = info[most_tagged].tags
    assert len(tags) == 10 and all(t == t.lower() for t in tags)
    counts = [tag_counts[most_tagged][t] for t in tags]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] == max(tag_counts[most_tagged].values())
    assert info[next(m for m in movies if m not in tag_counts)].tags == ()


# ---------------------------------------------------------------------------------------------------
# Generic CSV


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_loader_with_custom_columns(tmp_path):
    write(tmp_path / "events.tsv", "who\twhat\tstars\twhen\nann\tb7\t4\t100\nbob\tb10\t2\t50\nann\tb10\t5\t90\n")
    write(
        tmp_path / "books.tsv",
        "code\tname\tshelves\tblurb\tauthor\tyear\n"
        "b7\tDune\tsci-fi;classic\tSand and spice.\tHerbert\t1965\n"
        "b10\tEmma\tromance\t\tAusten\t1815\n"
        "b99\tNever Read\t\t\t\t\n",
    )
    write(tmp_path / "readers.tsv", "uid\tcity\tage\nann\tOslo\t31\nbob\tRome\t\n")
    columns = CsvColumns(
        interactions_file="events.tsv",
        items_file="books.tsv",
        users_file="readers.tsv",
        delimiter="\t",
        user="who",
        item="what",
        rating="stars",
        timestamp="when",
        item_id="code",
        title="name",
        categories="shelves",
        category_separator=";",
        description="blurb",
        year="year",
        user_id="uid",
    )
    ds = load_dataset(DataConfig(dataset="csv", data_dir=tmp_path, csv=columns)).dataset
    assert ds.item_ids == ("b7", "b10", "b99")  # natural order, uninteracted b99 kept
    assert ds.user_ids == ("ann", "bob")
    dune = ds.items[0]
    assert (dune.title, dune.categories, dune.description, dune.year) == (
        "Dune",
        ("sci-fi", "classic"),
        "Sand and spice.",
        1965,
    )
    assert dune.attributes == {"author": "Herbert"}
    assert ds.users[0].attributes == {"city": "Oslo", "age": "31"}
    assert ds.users[1].attributes == {"city": "Rome"}
    # ann: b10 at 90 then b7 at 100; bob: b10 at 50
    assert ds.interactions.item.tolist() == [1, 0, 1]
    assert ds.interactions.weight.tolist() == [5.0, 4.0, 2.0]


def test_csv_loader_implicit_without_timestamps_or_items_file(tmp_path):
    write(tmp_path / "clicks.csv", "user,item\nu2,x\nu1,y\nu1,x\n")
    columns = CsvColumns(
        interactions_file="clicks.csv", items_file=None, user="user", item="item", rating=None, timestamp=None
    )
    ds = load_dataset(DataConfig(dataset="csv", data_dir=tmp_path, csv=columns)).dataset
    assert ds.item_ids == ("x", "y") and ds.items[1].title == "y"
    assert (ds.interactions.weight == 1.0).all()
    # without timestamps the file order is the chronological order: u1 took y (line 3) before x (line 4)
    assert [ds.item_ids[i] for i in ds.histories()[0]] == ["y", "x"]


def test_csv_loader_default_columns_when_config_omits_csv(tmp_path):
    write(tmp_path / "interactions.csv", "user_id,item_id,rating,timestamp\n1,a,3,10\n")
    write(tmp_path / "items.csv", "item_id,title\na,Alpha\n")
    ds = load_dataset(DataConfig(dataset="csv", data_dir=tmp_path)).dataset
    assert ds.items[0].title == "Alpha" and len(ds.interactions) == 1


# ---------------------------------------------------------------------------------------------------
# Errors from the entry point


def test_missing_file_names_path_and_expectation(tmp_path):
    with pytest.raises(DataError, match=r"ml-100k: expected u\.genre in .*--data-dir"):
        load_dataset(DataConfig(dataset="ml-100k", data_dir=tmp_path))
    with pytest.raises(DataError, match=r"expected movies\.csv in " + str(tmp_path)):
        load_dataset(DataConfig(dataset="movielens-csv", data_dir=tmp_path))


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="no data directory"):
        load_dataset(DataConfig(dataset="ml-latest-small"))
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'} does not exist"):
        load_dataset(DataConfig(dataset="csv", data_dir=tmp_path / "nope"))


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset 'ml-1b'"):
        load_dataset(DataConfig(dataset="ml-1b"))  # type: ignore[arg-type]


def test_movielens_csv_backend_serves_other_releases(ml_latest_small_dir):
    # The same loader reads any folder in the ratings.csv/movies.csv format (ml-25m, ml-32m, ...).
    result = load_dataset(DataConfig(dataset="movielens-csv", data_dir=ml_latest_small_dir))
    assert result.dataset.name == "ml-latest-small" and len(result.dataset.interactions) == 100_836


@pytest.mark.parametrize("folder, expected", [("ml-100k", "csv:ml-100k"), ("synthetic", "csv:synthetic"),
                                              ("ml-latest-small", "csv:ml-latest-small"), ("shop", "shop")])
def test_a_csv_data_set_in_a_folder_named_like_a_built_in_one_is_not_taken_for_it(tmp_path, folder, expected):
    data_dir = tmp_path / folder
    data_dir.mkdir()
    write(data_dir / "interactions.csv", "user_id,item_id,rating,timestamp\n1,a,3,10\n")
    write(data_dir / "items.csv", "item_id,title\na,Alpha\n")
    assert load_dataset(DataConfig(dataset="csv", data_dir=data_dir)).dataset.name == expected


@pytest.mark.parametrize("dataset, folder, expected", [("ml-100k", "my-films", "my-films"),
                                                       ("ml-100k", "ml-latest-small", "ml-100k:ml-latest-small"),
                                                       ("ml-latest-small", "my-films", "my-films")])
def test_your_own_folder_in_a_movielens_format_is_named_after_the_folder(tmp_path, ml100k_dir, ml_latest_small_dir,
                                                                         dataset, folder, expected):
    source = ml100k_dir if dataset == "ml-100k" else ml_latest_small_dir
    linked = tmp_path / folder
    linked.mkdir()
    for path in source.iterdir():
        (linked / path.name).symlink_to(path)  # links, not copies: the data stays in ../shared
    assert load_dataset(DataConfig(dataset=dataset, data_dir=linked)).dataset.name == expected
