"""Generic CSV backend: an interactions file, optionally an items file and a users file.

Column names are configured by `CsvColumns`; every column a config names must exist in the header
(a typo should fail loudly, not yield a data set without ratings). Item and user columns that the
config does not map land in `attributes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmrec.export.cleaning import InteractionRows, ProblemLog, RawData, read_table, require_file
from lmrec.export.dataset import ItemInfo, UserInfo

_HINT = "pass --data-dir pointing at the folder that holds the CSV files, or set the file names"


@dataclass(frozen=True, kw_only=True)
class CsvColumns:
    """File names (relative to the data dir, or absolute) and column names of a generic CSV data set."""

    interactions_file: str = "interactions.csv"
    items_file: str | None = "items.csv"  # None: the catalogue is the set of interacted item ids
    users_file: str | None = None
    delimiter: str = ","
    encoding: str = "utf-8"
    # interactions
    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = "rating"  # None: implicit feedback, every row has weight 1
    timestamp: str | None = "timestamp"  # None: file order is the chronological order
    rating_range: tuple[float, float] | None = None  # ratings outside are dropped and counted
    # items
    item_id: str = "item_id"
    title: str | None = "title"  # None: the item id is the title
    categories: str | None = None
    category_separator: str = "|"
    description: str | None = None
    year: str | None = None
    # users
    user_id: str = "user_id"


def load_csv(data_dir: Path, columns: CsvColumns, *, name: str = "csv") -> RawData:
    log = ProblemLog()
    items = None
    if columns.items_file is not None:
        items = _read_items(require_file(data_dir / columns.items_file, name, _HINT), columns, log)
    users = None
    if columns.users_file is not None:
        users = _read_users(require_file(data_dir / columns.users_file, name, _HINT), columns, log)

    path = require_file(data_dir / columns.interactions_file, name, _HINT)
    wanted = [c for c in (columns.user, columns.item, columns.rating, columns.timestamp) if c is not None]
    header, data = read_table(path, delimiter=columns.delimiter, encoding=columns.encoding, required=tuple(wanted))
    u, i = header.index(columns.user), header.index(columns.item)
    r = header.index(columns.rating) if columns.rating is not None else None
    t = header.index(columns.timestamp) if columns.timestamp is not None else None
    rows = InteractionRows(path, log)
    for line, fields in data:
        if len(fields) != len(header):
            rows.wrong_field_count(line, len(fields), len(header))
            continue
        rows.add(
            line,
            fields[u],
            fields[i],
            fields[r] if r is not None else None,
            fields[t] if t is not None else None,
        )
    return RawData(
        name=name,
        interactions=rows.finish(),
        items=items,
        users=users,
        rating_range=columns.rating_range,
        rows_read=rows.rows_read,
        log=log,
    )


def _read_items(path: Path, columns: CsvColumns, log: ProblemLog) -> dict[str, ItemInfo]:
    mapped = {
        "id": columns.item_id,
        "title": columns.title,
        "categories": columns.categories,
        "description": columns.description,
        "year": columns.year,
    }
    named = {role: col for role, col in mapped.items() if col is not None}
    header, data = read_table(
        path, delimiter=columns.delimiter, encoding=columns.encoding, required=tuple(named.values())
    )
    at = {role: header.index(col) for role, col in named.items()}
    extra = [(name, k) for k, name in enumerate(header) if name not in named.values()]
    items: dict[str, ItemInfo] = {}
    for line, fields in data:
        if len(fields) != len(header):
            log.add("malformed", str(path), line, f"expected {len(header)} fields, got {len(fields)}")
            continue
        item_id = fields[at["id"]].strip()
        if not item_id:
            log.add("malformed", str(path), line, "empty item id")
            continue
        year_text = fields[at["year"]].strip() if "year" in at else ""
        if year_text and not year_text.isdecimal():
            log.add("malformed", str(path), line, f"year {year_text!r} is not an integer")
            continue
        categories = ()
        if "categories" in at:
            parts = fields[at["categories"]].split(columns.category_separator)
            categories = tuple(p.strip() for p in parts if p.strip())
        items[item_id] = ItemInfo(
            title=fields[at["title"]].strip() if "title" in at else item_id,
            categories=categories,
            description=fields[at["description"]].strip() if "description" in at else "",
            year=int(year_text) if year_text else None,
            attributes={name: fields[k].strip() for name, k in extra if fields[k].strip()},
        )
    return items


def _read_users(path: Path, columns: CsvColumns, log: ProblemLog) -> dict[str, UserInfo]:
    header, data = read_table(path, delimiter=columns.delimiter, encoding=columns.encoding, required=(columns.user_id,))
    at_id = header.index(columns.user_id)
    users: dict[str, UserInfo] = {}
    for line, fields in data:
        if len(fields) != len(header):
            log.add("malformed", str(path), line, f"expected {len(header)} fields, got {len(fields)}")
            continue
        user_id = fields[at_id].strip()
        if not user_id:
            log.add("malformed", str(path), line, "empty user id")
            continue
        attributes = {name: fields[k].strip() for k, name in enumerate(header) if k != at_id and fields[k].strip()}
        users[user_id] = UserInfo(attributes=attributes)
    return users
