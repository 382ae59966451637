"""Cleaning: dropped rows are counted with file and line; unusable files raise DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmrec.export.cleaning import CleaningReport, DataError, natural_sorted
from lmrec.export.loaders import CsvColumns, DataConfig, load_dataset

MOVIES = "movieId,title,genres\n1,Alpha (1990),Drama\n2,\"Beta, The (1991)\",Comedy|Drama\n3,Gamma,(no genres listed)\n"


def movielens_folder(tmp_path: Path, ratings: str, movies: str = MOVIES) -> Path:
    (tmp_path / "ratings.csv").write_text(ratings, encoding="utf-8")
    (tmp_path / "movies.csv").write_text(movies, encoding="utf-8")
    return tmp_path


def load_movielens(folder: Path, **options):
    return load_dataset(DataConfig(dataset="movielens-csv", data_dir=folder, **options))


def test_bad_rows_are_dropped_and_counted_with_file_and_line(tmp_path):
    ratings = (
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,100\n"  # line 2: kept
        "1,2,3.5\n"  # line 3: too few fields
        "1,2,great,101\n"  # line 4: non-numeric rating
        "2,1,3.0,200\n"  # line 5: superseded by line 6 (same user+item, later)
        "2,1,1.5,300\n"  # line 6: kept
        "2,77,4.0,150\n"  # line 7: unknown movie
        "2,2,7.0,160\n"  # line 8: out of range
        "2,3,0.0,170\n"  # line 9: out of range (MovieLens starts at 0.5)
        "3,2,0.5,20\n"  # line 10: kept
        "3,3,5.0,yesterday\n"  # line 11: non-numeric timestamp
    )
    folder = movielens_folder(tmp_path, ratings)
    result = load_movielens(folder)
    report = result.report
    assert (report.rows_read, report.kept) == (10, 3)
    assert (report.malformed, report.duplicate, report.unknown_item, report.out_of_range) == (3, 1, 1, 2)
    file = str(folder / "ratings.csv")
    problems = {ex.line: ex.problem for ex in report.examples if ex.file == file}
    assert set(problems) == {3, 4, 5, 7, 8, 9, 11}
    assert "expected 4 fields, got 3" in problems[3]
    assert "'great'" in problems[4] and "'yesterday'" in problems[11]
    assert "77" in problems[7] and "7" in problems[8]

    ds = result.dataset
    it = ds.interactions
    rows = {
        (ds.user_ids[u], ds.item_ids[i]): (w, t)
        for u, i, w, t in zip(it.user.tolist(), it.item.tolist(), it.weight.tolist(), it.timestamp.tolist())
    }
    assert rows == {("1", "1"): (4.0, 100), ("2", "1"): (1.5, 300), ("3", "2"): (0.5, 20)}
    assert ds.item_ids == ("1", "2", "3")  # movie 3 has no valid rating but stays in the catalogue
    assert ds.items[1].title == "Beta, The (1991)" and ds.items[1].categories == ("Comedy", "Drama")
    assert ds.items[2].categories == () and ds.items[2].year is None


def test_duplicate_keeps_the_latest_by_time_not_by_file_position(tmp_path):
    folder = movielens_folder(tmp_path, "userId,movieId,rating,timestamp\n1,1,5.0,900\n1,1,2.0,100\n1,2,3.0,500\n")
    result = load_movielens(folder)
    ds = result.dataset
    assert result.report.duplicate == 1
    assert result.report.examples[0].line == 3
    index = ds.item_index()["1"]
    assert ds.interactions.weight[ds.interactions.item == index].tolist() == [5.0]


def test_summary_lines_name_each_reason_and_examples(tmp_path):
    folder = movielens_folder(tmp_path, "userId,movieId,rating,timestamp\n1,1,4,1\n1,9,4,2\n1,1,4\n")
    lines = load_movielens(folder).report.summary()
    assert lines[0] == "kept 1 of 3 interaction rows"
    text = "\n".join(lines)
    assert "unknown item ids: 1" in text and "malformed rows: 1" in text
    assert f"{folder / 'ratings.csv'}:4: expected 4 fields, got 3" in text


def test_examples_are_capped_at_twenty(tmp_path):
    bad = "".join(f"1,1,{k},x\n" for k in range(30))
    report = load_movielens(movielens_folder(tmp_path, "userId,movieId,rating,timestamp\n2,1,4,1\n" + bad)).report
    assert report.malformed == 30 and len(report.examples) == 20


def test_missing_header_column_is_a_data_error_naming_file_line_and_column(tmp_path):
    folder = movielens_folder(tmp_path, "userId,movieId,score,timestamp\n1,1,4,1\n")
    with pytest.raises(DataError) as error:
        load_movielens(folder)
    message = str(error.value)
    assert f"{folder / 'ratings.csv'}:1:" in message and "'rating'" in message and "'score'" in message


def test_empty_file_is_a_data_error(tmp_path):
    folder = movielens_folder(tmp_path, "")
    with pytest.raises(DataError, match=f"{folder / 'ratings.csv'}: the file is empty"):
        load_movielens(folder)


def test_undecodable_file_names_the_line(tmp_path):
    folder = movielens_folder(tmp_path, "")
    (folder / "ratings.csv").write_bytes(b"userId,movieId,rating,timestamp\n1,1,4,1\n1,2,\xff\xfe,2\n")
    with pytest.raises(DataError, match=rf"ratings\.csv:3: not decodable as utf-8"):
        load_movielens(folder)


def test_nothing_left_is_a_data_error_with_the_report(tmp_path):
    folder = movielens_folder(tmp_path, "userId,movieId,rating,timestamp\n1,1;4;1\n1,2;4;2\n")
    with pytest.raises(DataError, match=r"no interactions left after cleaning \(2 rows read\); "
                                        r"first problem: ratings\.csv:2: ") as error:
        load_movielens(folder)
    assert "\n" not in str(error.value)


def test_unknown_user_ids_when_a_users_file_is_given(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id\nu1,a\nu2,a\nu1,b\n")
    (tmp_path / "users.csv").write_text("user_id,age\nu1,30\n")
    columns = CsvColumns(items_file=None, users_file="users.csv", rating=None, timestamp=None)
    result = load_dataset(DataConfig(dataset="csv", data_dir=tmp_path, csv=columns))
    assert result.report.unknown_user == 1 and result.report.examples[0].line == 3
    assert result.dataset.user_ids == ("u1",)


def test_implicit_threshold_keeps_weights_at_or_above(tmp_path):
    folder = movielens_folder(tmp_path, "userId,movieId,rating,timestamp\n1,1,3.5,1\n1,2,4.0,2\n2,1,5.0,3\n2,2,1.0,4\n")
    result = load_movielens(folder, implicit_threshold=4.0)
    assert result.report.below_threshold == 2 and result.report.kept == 2
    assert (result.dataset.interactions.weight >= 4.0).all()
    assert result.dataset.implicit_threshold == 4.0  # what the kept ratings mean: each one is a like
    assert load_movielens(folder).dataset.implicit_threshold is None


def test_min_count_filter_iterates_until_stable(tmp_path):
    # a-b-c form a chain that unravels one step at a time (c's item 4 is rare -> c too short -> item 3
    # rare -> b too short -> item 2 rare -> a too short); d and e with items 5 and 6 are a stable core.
    rows = ["a,1", "a,2", "b,2", "b,3", "c,3", "c,4", "d,5", "d,6", "e,5", "e,6"]
    (tmp_path / "interactions.csv").write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"{i},Item {i}\n" for i in range(1, 7)))
    columns = CsvColumns(rating=None, timestamp=None)
    config = DataConfig(dataset="csv", data_dir=tmp_path, csv=columns, min_user_interactions=2, min_item_interactions=2)
    result = load_dataset(config)
    ds = result.dataset
    assert ds.user_ids == ("d", "e")
    assert sorted({ds.item_ids[i] for i in ds.interactions.item.tolist()}) == ["5", "6"]
    assert ds.n_items == 6  # the catalogue keeps filtered items (cold start can still recommend them)
    assert result.report.below_min_count == 6 and result.report.kept == 4


def test_min_count_filter_leaves_no_user_or_item_below_the_minimum(ml100k_dir):
    result = load_dataset(
        DataConfig(
            dataset="ml-100k",
            data_dir=ml100k_dir,
            implicit_threshold=4,
            min_user_interactions=20,
            min_item_interactions=10,
        )
    )
    it = result.dataset.interactions
    assert np.bincount(it.user).min() >= 20
    item_counts = np.bincount(it.item)
    assert item_counts[item_counts > 0].min() >= 10
    assert result.report.kept + result.report.below_threshold + result.report.below_min_count == 100_000
    assert result.report.below_min_count > 0 and result.report.below_threshold > 0


def test_ids_are_indexed_in_natural_order_and_ties_follow_item_index(tmp_path):
    assert natural_sorted(["10", "9", "100", "2"]) == ["2", "9", "10", "100"]
    assert natural_sorted(["i10", "i9", "b", "a2"]) == ["a2", "b", "i9", "i10"]
    # Same second: item "10" has the higher index than "9", so it counts as the later interaction.
    folder = movielens_folder(
        tmp_path,
        "userId,movieId,rating,timestamp\n10,3,4,5\n10,1,4,5\n9,2,4,7\n9,1,4,3\n",
        movies="movieId,title,genres\n3,C,Drama\n1,A,Drama\n2,B,Drama\n",
    )
    ds = load_movielens(folder).dataset
    assert ds.user_ids == ("9", "10") and ds.item_ids == ("1", "2", "3")
    assert [list(map(ds.item_ids.__getitem__, h)) for h in ds.histories()] == [["1", "2"], ["1", "3"]]


def test_report_is_frozen():
    report = CleaningReport(rows_read=1, kept=1)
    with pytest.raises(AttributeError):
        report.kept = 2  # type: ignore[misc]


def test_a_timestamp_beyond_any_date_is_one_malformed_row(tmp_path):
    ratings = "userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,3.5,99999999999999999999\n2,1,3.0,200\n"
    report = load_movielens(movielens_folder(tmp_path, ratings)).report
    assert (report.rows_read, report.kept, report.malformed) == (3, 2, 1)
    assert any(ex.line == 3 and "out of range" in ex.problem for ex in report.examples)


def test_a_year_in_superscript_digits_is_one_malformed_row(tmp_path):
    """'²' passes str.isdigit() but not int(): the whole load ended in a ValueError traceback."""
    (tmp_path / "interactions.csv").write_text("user_id,item_id\nu1,a\nu1,b\n", encoding="utf-8")
    (tmp_path / "items.csv").write_text("item_id,title,year\na,Alpha,1999\nb,Beta,\u00b2\n", encoding="utf-8")
    loaded = load_dataset(DataConfig(dataset="csv", data_dir=tmp_path,
                                     csv=CsvColumns(items_file="items.csv", year="year", rating=None,
                                                 timestamp=None)))
    assert [item.year for item in loaded.dataset.items] == [1999]
    assert loaded.report.malformed == 1 and any("is not an integer" in ex.problem for ex in loaded.report.examples)
