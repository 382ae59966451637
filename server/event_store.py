"""The gateway's durable per-user state, recorded after a bundle was built.

A bundle is a frozen snapshot; what users do after it was built (views, clicks, purchases, ratings),
which users asked to be forgotten, and which items were added since, lives here until the next build
folds it in. SQLite in WAL mode is the default: one local file, every write committed (fsync'd) before
the call returns, readers never blocked by the writer. `MemoryEventStore` behaves the same without a
file: `lmrec gateway --event-store memory` (nothing survives a restart), and the unit tests of the pieces
that use a store.

Every batch is validated as a whole before anything is written, and written in one transaction, so a
batch is stored completely or not at all.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_ID_LENGTH = 256
MAX_EVENT_TYPE_LENGTH = 64
# How long the checkpoint after a forget waits for another reader of the log (see `SqliteEventStore.forget`).
CHECKPOINT_WAIT_MS = 200
EVENT_STORE_KINDS = ("sqlite", "memory")


class EventStoreError(RuntimeError):
    """The store cannot be opened or used (not a database, wrong schema version, closed, I/O failure)."""


@dataclass(frozen=True, kw_only=True)
class Event:
    user_id: str
    item_id: str
    event_type: str = "interaction"  # e.g. "view", "click", "purchase", "rating"
    timestamp: float = 0.0  # seconds since the epoch; the caller fills in "now", the store keeps it as given
    weight: float = 1.0


@dataclass(frozen=True, kw_only=True)
class StoredItem:
    item_id: str
    # JSON-serialisable: title, categories (list), description, year (int | None), tags (list),
    # attributes (dict str -> str).
    fields: dict
    added_at: float


class EventStore(Protocol):
    def record(self, events: Sequence[Event]) -> int:
        """Stores the whole batch or nothing; committed before it returns. Returns how many were stored."""
        ...

    def events_of(self, user_id: str) -> list[Event]:
        """The user's events ordered by (timestamp, insertion order)."""
        ...

    def forget(self, user_id: str) -> int:
        """Deletes the user's events and remembers when; returns how many events were deleted."""
        ...

    def forgotten_at(self, user_id: str) -> float | None:
        """Time of the last forget() of this user id; None if it was never forgotten."""
        ...

    def put_items(self, items: Sequence[StoredItem]) -> None:
        """Upserts by item_id, all or nothing, committed before it returns."""
        ...

    def items(self) -> list[StoredItem]:
        """Every stored item in the order it was first added."""
        ...

    def n_events(self) -> int: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------------
# Validation shared by every implementation, so both reject exactly the same batches.


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _check_text(where: str, value: object, max_length: int) -> None:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise ValueError(f"{where} is {_shown(value)}; it must be a non-empty string of at most "
                         f"{max_length} characters")


def _check_new_id(where: str, value: object) -> None:
    """An id stored from now on: also not only spaces. Looking up and forgetting take any non-empty id, so
    one stored before this rule can still be erased."""
    _check_text(where, value, MAX_ID_LENGTH)
    if not value.strip():
        raise ValueError(f"{where} is {_shown(value)}; it must not be only spaces")


def _check_number(where: str, value: object, *, non_negative: bool) -> float:
    # bool is an int subclass, but True as a weight or timestamp is a bug at the caller.
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or (non_negative and value < 0):
        requirement = "a finite number >= 0" if non_negative else "a finite number"
        raise ValueError(f"{where} is {_shown(value)}; it must be {requirement}")
    return float(value)


def validated_events(events: Sequence[Event]) -> list[Event]:
    """The batch with numbers as floats; ValueError naming events[i] and the field on the first bad one."""
    checked = []
    for position, event in enumerate(events):
        where = f"events[{position}]"
        if not isinstance(event, Event):
            raise ValueError(f"{where} is {_shown(event)}; it must be an Event")
        _check_new_id(f"{where}.user_id", event.user_id)
        _check_new_id(f"{where}.item_id", event.item_id)
        _check_text(f"{where}.event_type", event.event_type, MAX_EVENT_TYPE_LENGTH)
        weight = _check_number(f"{where}.weight", event.weight, non_negative=False)
        timestamp = _check_number(f"{where}.timestamp", event.timestamp, non_negative=True)
        checked.append(Event(user_id=event.user_id, item_id=event.item_id, event_type=event.event_type,
                             timestamp=timestamp, weight=weight))
    return checked


def validated_item_rows(items: Sequence[StoredItem]) -> list[tuple[str, str, float]]:
    """(item_id, fields as JSON, added_at) per item; ValueError naming items[i] on the first bad one."""
    rows = []
    for position, item in enumerate(items):
        where = f"items[{position}]"
        if not isinstance(item, StoredItem):
            raise ValueError(f"{where} is {_shown(item)}; it must be a StoredItem")
        _check_new_id(f"{where}.item_id", item.item_id)
        if not isinstance(item.fields, dict):
            raise ValueError(f"{where}.fields is a {type(item.fields).__name__}; it must be a dict")
        try:
            # Strict JSON (no NaN/Infinity), so whatever reads the stored text later can parse it.
            fields_json = json.dumps(item.fields, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}.fields cannot be stored as JSON: {error}") from error
        added_at = _check_number(f"{where}.added_at", item.added_at, non_negative=True)
        rows.append((item.item_id, fields_json, added_at))
    return rows


def _check_user_id(user_id: object) -> None:
    _check_text("user_id", user_id, MAX_ID_LENGTH)


# ---------------------------------------------------------------------------------------------------


class SqliteEventStore:
    """One SQLite file in WAL mode; one connection shared by the gateway's worker threads under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are opened explicitly, so a batch is exactly one.
            self._connection: sqlite3.Connection | None = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise EventStoreError(f"cannot open event store {self.path}: {error}") from error
        try:
            self._prepare_schema(self._connection)
        except sqlite3.DatabaseError as error:
            self._connection.close()
            raise EventStoreError(f"{self.path} is not a usable SQLite event store: {error}") from error
        except EventStoreError:
            self._connection.close()
            raise

    def _prepare_schema(self, connection: sqlite3.Connection) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise EventStoreError(f"event store {self.path} has schema version {version}; this code reads "
                                  f"schema version {SCHEMA_VERSION}")
        connection.execute("PRAGMA journal_mode=WAL")
        # A forgotten user's events are overwritten where they lay, not only unlinked (see `forget`).
        connection.execute("PRAGMA secure_delete=ON")
        # FULL: in WAL mode NORMAL may lose the last commits on power loss; record() promises durability.
        connection.execute("PRAGMA synchronous=FULL")
        if version == SCHEMA_VERSION:
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " user_id TEXT NOT NULL, item_id TEXT NOT NULL, event_type TEXT NOT NULL,"
                " timestamp REAL NOT NULL, weight REAL NOT NULL)")
            connection.execute("CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id)")
            connection.execute("CREATE TABLE IF NOT EXISTS forgotten (user_id TEXT PRIMARY KEY, at REAL NOT NULL)")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS items (item_id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE,"
                " fields TEXT NOT NULL, added_at REAL NOT NULL)")
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._connection is None:
                raise EventStoreError(f"event store {self.path} is closed")
            try:
                yield self._connection
            except sqlite3.Error as error:
                raise EventStoreError(f"event store {self.path}: {error}") from error

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._locked() as connection:
            # IMMEDIATE takes the write lock up front, so a second process fails here, not mid-batch.
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                # SQLite has already rolled back after some errors (SQLITE_FULL, SQLITE_IOERR); a second
                # ROLLBACK would raise and hide the error that matters.
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def record(self, events: Sequence[Event]) -> int:
        checked = validated_events(events)
        if not checked:
            return 0
        with self._transaction() as connection:
            connection.executemany(
                "INSERT INTO events (user_id, item_id, event_type, timestamp, weight) VALUES (?, ?, ?, ?, ?)",
                [(e.user_id, e.item_id, e.event_type, e.timestamp, e.weight) for e in checked])
        return len(checked)

    def events_of(self, user_id: str) -> list[Event]:
        with self._locked() as connection:
            rows = connection.execute(
                "SELECT user_id, item_id, event_type, timestamp, weight FROM events WHERE user_id = ?"
                " ORDER BY timestamp, seq", (user_id,)).fetchall()
        return [Event(user_id=u, item_id=i, event_type=t, timestamp=ts, weight=w) for u, i, t, ts, w in rows]

    def forget(self, user_id: str) -> int:
        _check_user_id(user_id)
        with self._transaction() as connection:
            deleted = connection.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            connection.execute(
                "INSERT INTO forgotten (user_id, at) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET at = excluded.at",
                (user_id, time.time()))
        # The write-ahead log still holds the pages as they were before the delete: fold it into the
        # database (whose freed cells secure_delete has zeroed) and empty it, so the events are gone from disk.
        # The delete has committed by now: a failed checkpoint is logged, not reported as a failed forget
        # (the next checkpoint, at the latest when the store closes, does the same).
        # Another connection reading (an sqlite3 shell, a backup) holds the log: wait for it briefly, not for
        # the connection's whole busy timeout with the store locked.
        try:
            with self._locked() as connection:
                waited = connection.execute("PRAGMA busy_timeout").fetchone()[0]
                connection.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
                try:
                    busy = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                finally:
                    connection.execute(f"PRAGMA busy_timeout = {int(waited)}")
        except EventStoreError as error:
            busy = str(error)
        if busy:
            log.warning("a forgotten user's events are deleted, but another reader kept the write-ahead log from "
                        "being emptied (%s); the next checkpoint will", busy)
        return deleted

    def forgotten_at(self, user_id: str) -> float | None:
        with self._locked() as connection:
            row = connection.execute("SELECT at FROM forgotten WHERE user_id = ?", (user_id,)).fetchone()
        return None if row is None else row[0]

    def put_items(self, items: Sequence[StoredItem]) -> None:
        rows = validated_item_rows(items)
        if not rows:
            return
        with self._transaction() as connection:
            # An upsert replaces the fields only: seq and added_at keep recording when the item first came.
            connection.executemany(
                "INSERT INTO items (item_id, seq, fields, added_at)"
                " VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM items), ?, ?)"
                " ON CONFLICT (item_id) DO UPDATE SET fields = excluded.fields", rows)

    def items(self) -> list[StoredItem]:
        with self._locked() as connection:
            rows = connection.execute("SELECT item_id, fields, added_at FROM items ORDER BY seq").fetchall()
        return [StoredItem(item_id=item_id, fields=json.loads(fields), added_at=added_at)
                for item_id, fields, added_at in rows]

    def n_events(self) -> int:
        with self._locked() as connection:
            return connection.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class MemoryEventStore:
    """The same behaviour as SqliteEventStore, held in memory (nothing survives the process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._events: dict[str, list[Event]] = {}  # user_id -> events in insertion order
        self._forgotten: dict[str, float] = {}
        # item_id -> (fields as JSON, added_at); dicts keep first-insertion order across updates.
        # Fields are kept as JSON so callers get fresh copies shaped exactly as SQLite returns them.
        self._items: dict[str, tuple[str, float]] = {}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise EventStoreError("event store (memory) is closed")
            yield

    def record(self, events: Sequence[Event]) -> int:
        checked = validated_events(events)
        with self._locked():
            for event in checked:
                self._events.setdefault(event.user_id, []).append(event)
        return len(checked)

    def events_of(self, user_id: str) -> list[Event]:
        with self._locked():
            history = list(self._events.get(user_id, ()))
        return sorted(history, key=lambda event: event.timestamp)  # stable: ties keep insertion order

    def forget(self, user_id: str) -> int:
        _check_user_id(user_id)
        with self._locked():
            deleted = len(self._events.pop(user_id, ()))
            self._forgotten[user_id] = time.time()
        return deleted

    def forgotten_at(self, user_id: str) -> float | None:
        with self._locked():
            return self._forgotten.get(user_id)

    def put_items(self, items: Sequence[StoredItem]) -> None:
        rows = validated_item_rows(items)
        with self._locked():
            for item_id, fields_json, added_at in rows:
                first_added_at = self._items[item_id][1] if item_id in self._items else added_at
                self._items[item_id] = (fields_json, first_added_at)

    def items(self) -> list[StoredItem]:
        with self._locked():
            stored = list(self._items.items())
        return [StoredItem(item_id=item_id, fields=json.loads(fields_json), added_at=added_at)
                for item_id, (fields_json, added_at) in stored]

    def n_events(self) -> int:
        with self._locked():
            return sum(len(history) for history in self._events.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True


def open_event_store(kind: str, path: Path | None = None) -> EventStore:
    if kind == "sqlite":
        if path is None:
            raise ValueError("the sqlite event store needs a path")
        return SqliteEventStore(Path(path))
    if kind == "memory":
        return MemoryEventStore()
    raise ValueError(f"unknown event store '{kind}' (known: {', '.join(EVENT_STORE_KINDS)})")
