"""Cleaning shared by every loader: raw rows in, a canonical `Dataset` and a `CleaningReport` out.

Loaders only parse files into `RawData` (row by row, so a bad row can be reported with its file and
line); everything after parsing happens here, the same way for every backend:

    out-of-range ratings -> unknown item / user ids -> duplicates (keep the latest)
    -> implicit threshold -> min-count filter (until stable) -> dense indices

A row problem is counted and dropped; a file that cannot be used at all raises `DataError`.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lmrec.export.dataset import Dataset, Interactions, ItemInfo, UserInfo

MAX_EXAMPLES = 20


class DataError(Exception):
    """A data folder or file cannot be used; the message says which file, where, and what was expected.

    `hint` (which option to pass) is kept apart from `problem`, so that a caller whose option has another
    name (a benchmark's --data-root) can give its own."""

    def __init__(self, problem: str, hint: str = "") -> None:
        super().__init__(f"{problem} ({hint})" if hint else problem)
        self.problem, self.hint = problem, hint


class RowProblem(NamedTuple):
    file: str
    line: int
    problem: str


# Reasons a row is dropped, in pipeline order; `CleaningReport` has one count field per reason.
REASONS = (
    "malformed",
    "out_of_range",
    "unknown_item",
    "unknown_user",
    "duplicate",
    "below_threshold",
    "below_min_count",
)
_REASON_LABELS = {
    "malformed": "malformed rows",
    "out_of_range": "ratings out of range",
    "unknown_item": "unknown item ids",
    "unknown_user": "unknown user ids",
    "duplicate": "duplicates (kept the latest)",
    "below_threshold": "below the implicit threshold",
    "below_min_count": "removed by the min-count filter",
}


class ProblemLog:
    """Mutable tally used while parsing and cleaning; frozen into a `CleaningReport` at the end."""

    def __init__(self) -> None:
        self.counts = {reason: 0 for reason in REASONS}
        self.examples: list[RowProblem] = []

    def add(self, reason: str, file: str, line: int, problem: str) -> None:
        self.add_many(reason, 1, [RowProblem(file, line, problem)])

    def add_many(self, reason: str, count: int, examples: list[RowProblem]) -> None:
        self.counts[reason] += count
        room = MAX_EXAMPLES - len(self.examples)
        if room > 0:
            self.examples.extend(examples[:room])


# Seconds since the epoch: year ~292 billion is int64's end; 10^15 is already far beyond any real date.
MAX_TIMESTAMP = 10**15

@dataclass(frozen=True, kw_only=True)
class CleaningReport:
    """What cleaning dropped and why, with up to MAX_EXAMPLES (file, line, problem) examples."""

    rows_read: int
    kept: int
    malformed: int = 0
    out_of_range: int = 0
    unknown_item: int = 0
    unknown_user: int = 0
    duplicate: int = 0
    below_threshold: int = 0
    below_min_count: int = 0
    examples: tuple[RowProblem, ...] = ()

    def summary(self) -> list[str]:
        """Readable lines for a CLI: totals, then each non-zero reason, then examples."""
        # Malformed rows of item/user files count too, so the reasons need not add up to read - kept.
        lines = [f"kept {self.kept} of {self.rows_read} interaction rows"]
        for reason in REASONS:
            count = getattr(self, reason)
            if count:
                lines.append(f"  {_REASON_LABELS[reason]}: {count}")
        if self.examples:
            lines.append("  examples:")
            lines.extend(f"    {ex.file}:{ex.line}: {ex.problem}" for ex in self.examples)
        return lines


# ---------------------------------------------------------------------------------------------------
# Raw rows as parsed by a loader


@dataclass(frozen=True, kw_only=True)
class RawInteractions:
    """Parsed interaction rows with raw string ids; `line` points back into `file` for reports."""

    file: str
    user_id: np.ndarray  # str
    item_id: np.ndarray  # str
    rating: np.ndarray  # float64
    timestamp: np.ndarray  # int64
    line: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.user_id)

    def select(self, mask: np.ndarray) -> "RawInteractions":
        return RawInteractions(
            file=self.file,
            user_id=self.user_id[mask],
            item_id=self.item_id[mask],
            rating=self.rating[mask],
            timestamp=self.timestamp[mask],
            line=self.line[mask],
        )


@dataclass(frozen=True, kw_only=True)
class RawData:
    """Everything a loader parsed, before cleaning.

    `items` is the catalogue (None: the catalogue is the set of interacted item ids); `users` the user
    attributes (None: no users file, so no user id counts as unknown). `rows_read` counts every
    non-blank data row, malformed ones included.
    """

    name: str
    interactions: RawInteractions
    items: Mapping[str, ItemInfo] | None
    users: Mapping[str, UserInfo] | None
    rating_range: tuple[float, float] | None
    rows_read: int
    log: ProblemLog = field(default_factory=ProblemLog)


class InteractionRows:
    """Collects interaction rows one at a time, logging malformed ones with file and line."""

    def __init__(self, file: Path | str, log: ProblemLog) -> None:
        self.file = str(file)
        self.log = log
        self.rows_read = 0
        self._user: list[str] = []
        self._item: list[str] = []
        self._rating: list[float] = []
        self._timestamp: list[int] = []
        self._line: list[int] = []

    def add(self, line: int, user: str, item: str, rating: str | None, timestamp: str | None) -> None:
        """`rating` None: implicit (weight 1); `timestamp` None: the line number keeps file order."""
        self.rows_read += 1
        user, item = user.strip(), item.strip()
        if not user or not item:
            self.malformed(line, "empty user or item id")
            return
        weight = 1.0
        if rating is not None:
            try:
                weight = float(rating)
            except ValueError:
                weight = math.nan
            if not math.isfinite(weight):
                self.malformed(line, f"rating {rating!r} is not a number")
                return
        when = line
        if timestamp is not None:
            try:
                when = int(timestamp)
            except ValueError:
                # Some exports write '964982703.0'; accept integral floats, nothing fuzzier.
                try:
                    as_float = float(timestamp)
                except ValueError:
                    as_float = math.nan
                if not (math.isfinite(as_float) and as_float == int(as_float)):
                    self.malformed(line, f"timestamp {timestamp!r} is not an integer")
                    return
                when = int(as_float)
            if not -MAX_TIMESTAMP <= when <= MAX_TIMESTAMP:  # beyond int64 (and any calendar): one bad row
                self.malformed(line, f"timestamp {timestamp!r} is out of range")
                return
        self._user.append(user)
        self._item.append(item)
        self._rating.append(weight)
        self._timestamp.append(when)
        self._line.append(line)

    def malformed(self, line: int, problem: str) -> None:
        """Count a row that could not be parsed (call `add` for rows that parse)."""
        self.log.add("malformed", self.file, line, problem)

    def wrong_field_count(self, line: int, got: int, expected: int) -> None:
        self.rows_read += 1
        self.malformed(line, f"expected {expected} fields, got {got}")

    def finish(self) -> RawInteractions:
        return RawInteractions(
            file=self.file,
            user_id=np.asarray(self._user, dtype=str),
            item_id=np.asarray(self._item, dtype=str),
            rating=np.asarray(self._rating, dtype=np.float64),
            timestamp=np.asarray(self._timestamp, dtype=np.int64),
            line=np.asarray(self._line, dtype=np.int64),
        )


# ---------------------------------------------------------------------------------------------------
# Reading delimited files with line numbers


def require_file(path: Path, what: str, hint: str) -> Path:
    """`path` if it is a file, else DataError 'what: expected <name> in <folder> (hint)'."""
    if not path.is_file():
        raise DataError(f"{what}: expected {path.name} in {path.parent}", hint)
    return path


def _decoded_lines(path: Path, encoding: str) -> Iterator[str]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError as exc:
                problem = f"not decodable as {encoding} ({exc.reason} at byte {exc.start})"
                raise DataError(f"{path}:{number}: {problem}") from None


def read_rows(
    path: Path, *, delimiter: str, encoding: str = "utf-8", quoted: bool = True
) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for every non-blank row; DataError when the file has no rows at all.

    `quoted=False` for MovieLens' pipe/tab files, whose titles may contain a bare '"'.
    """
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    reader = csv.reader(_decoded_lines(path, encoding), delimiter=delimiter, quoting=quoting)
    seen_any = False
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            seen_any = True
            yield reader.line_num, fields
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: unreadable CSV ({exc})") from None
    if not seen_any:
        raise DataError(f"{path}: the file is empty (expected {'header and ' if quoted else ''}rows)")


def read_table(
    path: Path, *, delimiter: str = ",", encoding: str = "utf-8", required: tuple[str, ...] = ()
) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """Header and data rows of a CSV with a header line; DataError if a required column is missing."""
    rows = read_rows(path, delimiter=delimiter, encoding=encoding)
    _line, header = next(rows)
    header = [name.strip().lstrip("\ufeff") for name in header]
    missing = [name for name in required if name not in header]
    if missing:
        listed = ", ".join(map(repr, missing))
        raise DataError(f"{path}:1: missing column(s) {listed}; the header has {', '.join(map(repr, header))}")
    return header, rows


# ---------------------------------------------------------------------------------------------------
# Cleaning


def natural_key(raw_id: str) -> tuple:
    """Sort key that orders numeric runs by value: 'i2' < 'i10', '9' < '10'."""
    parts = re.split(r"(\d+)", raw_id)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), raw_id


def natural_sorted(raw_ids) -> list[str]:
    return sorted(raw_ids, key=natural_key)


def _log_rows(log: ProblemLog, reason: str, raw: RawInteractions, dropped: np.ndarray, describe) -> None:
    count = int(np.count_nonzero(dropped))
    if not count:
        return
    rows = np.flatnonzero(dropped)[:MAX_EXAMPLES]
    examples = [RowProblem(raw.file, int(raw.line[r]), describe(r)) for r in rows]
    log.add_many(reason, count, examples)


def _drop_out_of_range(raw: RawInteractions, rating_range, log: ProblemLog) -> RawInteractions:
    if rating_range is None:
        return raw
    low, high = rating_range
    bad = (raw.rating < low) | (raw.rating > high)
    _log_rows(log, "out_of_range", raw, bad, lambda r: f"rating {raw.rating[r]:g} outside [{low:g}, {high:g}]")
    return raw.select(~bad)


def _drop_unknown(raw: RawInteractions, known: Mapping | None, column: str, log: ProblemLog) -> RawInteractions:
    if known is None:
        return raw
    ids = getattr(raw, f"{column}_id")
    bad = ~np.isin(ids, np.asarray(list(known), dtype=str))
    _log_rows(log, f"unknown_{column}", raw, bad, lambda r: f"{column} id {ids[r]!r} is not in the {column}s file")
    return raw.select(~bad)


def _drop_duplicates(raw: RawInteractions, log: ProblemLog) -> RawInteractions:
    """One row per (user, item): the latest by timestamp, then by line (a re-rating replaces the old one)."""
    order = np.lexsort((raw.line, raw.timestamp, raw.item_id, raw.user_id))
    user, item = raw.user_id[order], raw.item_id[order]
    is_last = np.ones(len(order), dtype=bool)
    is_last[:-1] = (user[1:] != user[:-1]) | (item[1:] != item[:-1])
    dropped = np.zeros(len(raw), dtype=bool)
    dropped[order[~is_last]] = True
    _log_rows(
        log, "duplicate", raw, dropped, lambda r: f"user {raw.user_id[r]!r} item {raw.item_id[r]!r} appears again later"
    )
    return raw.select(~dropped)


def _min_count_mask(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int, min_user: int, min_item: int):
    """Rows that survive iterated min-count filtering (removing items can push users under, and back)."""
    keep = np.ones(len(user), dtype=bool)
    while True:
        user_counts = np.bincount(user[keep], minlength=n_users)
        item_counts = np.bincount(item[keep], minlength=n_items)
        new_keep = keep & (user_counts[user] >= min_user) & (item_counts[item] >= min_item)
        if np.array_equal(new_keep, keep):
            return keep
        keep = new_keep


def clean(
    raw: RawData,
    *,
    implicit_threshold: float | None = None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
) -> tuple[Dataset, CleaningReport]:
    """Apply every cleaning step to `raw` and index it densely; DataError if nothing survives.

    The catalogue keeps every item of the items file, interacted or not (cold start needs them), also
    items whose interactions the min-count filter removed. Users are those with a kept interaction.
    Indices follow the natural order of raw ids, so for numeric ids a higher id is a higher index.
    """
    log = raw.log
    rows = raw.interactions
    rows = _drop_out_of_range(rows, raw.rating_range, log)
    rows = _drop_unknown(rows, raw.items, "item", log)
    rows = _drop_unknown(rows, raw.users, "user", log)
    rows = _drop_duplicates(rows, log)
    if implicit_threshold is not None:
        below = rows.rating < implicit_threshold
        _log_rows(log, "below_threshold", rows, below, lambda r: f"rating {rows.rating[r]:g} < {implicit_threshold:g}")
        rows = rows.select(~below)

    item_ids = natural_sorted(raw.items if raw.items is not None else set(rows.item_id.tolist()))
    item_codes = _codes(rows.item_id, item_ids)
    seen_users = natural_sorted(set(rows.user_id.tolist()))
    user_codes = _codes(rows.user_id, seen_users)
    if min_user_interactions > 1 or min_item_interactions > 1:
        keep = _min_count_mask(
            user_codes, item_codes, len(seen_users), len(item_ids), min_user_interactions, min_item_interactions
        )
        _log_rows(log, "below_min_count", rows, ~keep, lambda r: "user or item below the minimum interaction count")
        rows, item_codes, user_codes = rows.select(keep), item_codes[keep], user_codes[keep]

    if len(rows) == 0:
        report = _report(raw, 0)
        first = report.examples[0] if report.examples else None
        where = f"; first problem: {Path(first.file).name}:{first.line}: {first.problem}" if first else ""
        raise DataError(f"{raw.name}: no interactions left after cleaning ({report.rows_read} rows read){where}")

    # Drop users that lost every interaction, keeping the natural order of the rest.
    present, user_codes = np.unique(user_codes, return_inverse=True)
    user_ids = [seen_users[u] for u in present.tolist()]
    users_info = raw.users or {}
    interactions = Interactions(
        user=user_codes.astype(np.int32),
        item=item_codes.astype(np.int32),
        weight=rows.rating.astype(np.float32),
        timestamp=rows.timestamp.astype(np.int64),
    ).sorted()
    items_info = raw.items or {}
    dataset = Dataset(
        name=raw.name,
        user_ids=tuple(user_ids),
        item_ids=tuple(item_ids),
        items=tuple(items_info.get(i) or ItemInfo(title=i) for i in item_ids),
        users=tuple(users_info.get(u) or UserInfo() for u in user_ids),
        interactions=interactions,
        implicit_threshold=implicit_threshold,
    )
    return dataset, _report(raw, len(interactions))


def _codes(raw_ids: np.ndarray, ordered_ids: list[str]) -> np.ndarray:
    """Position of each raw id in `ordered_ids` (all must be present)."""
    ordered = np.asarray(ordered_ids, dtype=str)
    sorter = np.argsort(ordered)
    return sorter[np.searchsorted(ordered, raw_ids, sorter=sorter)].astype(np.int64)


def _report(raw: RawData, kept: int) -> CleaningReport:
    return CleaningReport(
        rows_read=raw.rows_read, kept=kept, examples=tuple(raw.log.examples), **raw.log.counts
    )
