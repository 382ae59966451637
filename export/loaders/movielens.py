"""MovieLens backends: the ml-100k folder format and the CSV releases (ml-latest-small, ml-25m, ...).

Both parse files into `RawData`; cleaning and indexing happen in `lmrec.export.cleaning`. Titles keep
MovieLens' spelling ("Toy Story (1995)"); the year is also parsed into `ItemInfo.year`.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from lmrec.export.cleaning import (
    DataError,
    InteractionRows,
    ProblemLog,
    RawData,
    read_rows,
    read_table,
    require_file,
)
from lmrec.export.dataset import ItemInfo, UserInfo

ML100K_RATING_RANGE = (1.0, 5.0)
MOVIELENS_CSV_RATING_RANGE = (0.5, 5.0)
MAX_TAGS = 10
# Genre labels that say "no genre" rather than name one.
_NO_GENRE = {"unknown", "(no genres listed)"}
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
_ML100K_FIELDS_BEFORE_GENRES = 5  # id | title | release date | video release | url


def year_of(title: str, fallback: str = "") -> int | None:
    """Year from a trailing '(1995)' in the title, else the last 4-digit run of `fallback` (a date)."""
    match = _TITLE_YEAR.search(title)
    if match:
        return int(match.group(1))
    match = re.search(r"(\d{4})\s*$", fallback)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------------
# ml-100k


def _ml100k_file(data_dir: Path, name: str) -> Path:
    return require_file(data_dir / name, "ml-100k", "pass --data-dir pointing at the unpacked ml-100k folder")


def load_ml100k(data_dir: Path) -> RawData:
    """u.data (user item rating timestamp, tab-separated), u.item + u.genre, and u.user when present."""
    log = ProblemLog()
    genres = _read_ml100k_genres(_ml100k_file(data_dir, "u.genre"))
    items = _read_ml100k_items(_ml100k_file(data_dir, "u.item"), genres, log)
    users_path = data_dir / "u.user"
    users = _read_ml100k_users(users_path, log) if users_path.is_file() else None

    ratings_path = _ml100k_file(data_dir, "u.data")
    rows = InteractionRows(ratings_path, log)
    for line, fields in read_rows(ratings_path, delimiter="\t", quoted=False):
        if len(fields) != 4:
            rows.wrong_field_count(line, len(fields), 4)
            continue
        rows.add(line, fields[0], fields[1], fields[2], fields[3])
    return RawData(
        name="ml-100k",
        interactions=rows.finish(),
        items=items,
        users=users,
        rating_range=ML100K_RATING_RANGE,
        rows_read=rows.rows_read,
        log=log,
    )


def _read_ml100k_genres(path: Path) -> list[str]:
    """Genre names in flag order (u.genre lists 'name|index')."""
    by_index: dict[int, str] = {}
    for line, fields in read_rows(path, delimiter="|", encoding="latin-1", quoted=False):
        try:
            by_index[int(fields[1])] = fields[0].strip()
        except (IndexError, ValueError):
            raise DataError(f"{path}:{line}: expected 'genre name|index', got {'|'.join(fields)!r}") from None
    return [by_index[i] for i in sorted(by_index)]


def _read_ml100k_items(path: Path, genres: list[str], log: ProblemLog) -> dict[str, ItemInfo]:
    expected = _ML100K_FIELDS_BEFORE_GENRES + len(genres)
    items: dict[str, ItemInfo] = {}
    for line, fields in read_rows(path, delimiter="|", encoding="latin-1", quoted=False):
        if len(fields) != expected:
            log.add("malformed", str(path), line, f"expected {expected} fields, got {len(fields)}")
            continue
        flags = fields[_ML100K_FIELDS_BEFORE_GENRES:]
        if any(flag not in ("0", "1") for flag in flags):
            log.add("malformed", str(path), line, "genre flags must be 0 or 1")
            continue
        item_id, title, release_date = fields[0].strip(), fields[1].strip(), fields[2]
        categories = tuple(g for g, flag in zip(genres, flags) if flag == "1" and g not in _NO_GENRE)
        items[item_id] = ItemInfo(title=title, categories=categories, year=year_of(title, release_date))
    return items


def _read_ml100k_users(path: Path, log: ProblemLog) -> dict[str, UserInfo]:
    users: dict[str, UserInfo] = {}
    for line, fields in read_rows(path, delimiter="|", encoding="latin-1", quoted=False):
        if len(fields) != 5:
            log.add("malformed", str(path), line, f"expected 5 fields, got {len(fields)}")
            continue
        user_id, age, gender, occupation, zip_code = (f.strip() for f in fields)
        users[user_id] = UserInfo(attributes={"age": age, "gender": gender, "occupation": occupation, "zip": zip_code})
    return users


# ---------------------------------------------------------------------------------------------------
# MovieLens CSV releases


def _csv_file(data_dir: Path, name: str) -> Path:
    return require_file(
        data_dir / name, "movielens-csv", "pass --data-dir pointing at the unpacked ml-latest-small (or ml-*m) folder"
    )


def load_movielens_csv(data_dir: Path, *, name: str = "ml-latest-small") -> RawData:
    """ratings.csv + movies.csv, and tags.csv (most frequent tags per movie) when present."""
    log = ProblemLog()
    items = _read_movies(_csv_file(data_dir, "movies.csv"), log)
    tags_path = data_dir / "tags.csv"
    if tags_path.is_file():
        items = _with_tags(items, _read_top_tags(tags_path, log))

    ratings_path = _csv_file(data_dir, "ratings.csv")
    header, data = read_table(ratings_path, required=("userId", "movieId", "rating", "timestamp"))
    u, i, r, t = (header.index(c) for c in ("userId", "movieId", "rating", "timestamp"))
    rows = InteractionRows(ratings_path, log)
    for line, fields in data:
        if len(fields) != len(header):
            rows.wrong_field_count(line, len(fields), len(header))
            continue
        rows.add(line, fields[u], fields[i], fields[r], fields[t])
    return RawData(
        name=name,
        interactions=rows.finish(),
        items=items,
        users=None,
        rating_range=MOVIELENS_CSV_RATING_RANGE,
        rows_read=rows.rows_read,
        log=log,
    )


def _read_movies(path: Path, log: ProblemLog) -> dict[str, ItemInfo]:
    header, data = read_table(path, required=("movieId", "title", "genres"))
    m, t, g = (header.index(c) for c in ("movieId", "title", "genres"))
    items: dict[str, ItemInfo] = {}
    for line, fields in data:
        if len(fields) != len(header):
            log.add("malformed", str(path), line, f"expected {len(header)} fields, got {len(fields)}")
            continue
        title = fields[t].strip()
        categories = tuple(x.strip() for x in fields[g].split("|") if x.strip() and x.strip() not in _NO_GENRE)
        items[fields[m].strip()] = ItemInfo(title=title, categories=categories, year=year_of(title))
    return items


def _read_top_tags(path: Path, log: ProblemLog) -> dict[str, tuple[str, ...]]:
    """movieId -> up to MAX_TAGS lowercased tags, most frequent first (ties alphabetical)."""
    header, data = read_table(path, required=("movieId", "tag"))
    m, t = header.index("movieId"), header.index("tag")
    counts: dict[str, Counter] = defaultdict(Counter)
    for line, fields in data:
        if len(fields) != len(header):
            log.add("malformed", str(path), line, f"expected {len(header)} fields, got {len(fields)}")
            continue
        tag = " ".join(fields[t].lower().split())
        if tag:
            counts[fields[m].strip()][tag] += 1
    return {
        movie: tuple(tag for tag, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TAGS])
        for movie, c in counts.items()
    }


def _with_tags(items: dict[str, ItemInfo], tags: dict[str, tuple[str, ...]]) -> dict[str, ItemInfo]:
    return {
        item_id: ItemInfo(title=info.title, categories=info.categories, year=info.year, tags=tags.get(item_id, ()))
        for item_id, info in items.items()
    }
