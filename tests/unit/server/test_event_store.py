"""The gateway's event store: one conformance suite for every implementation, then SQLite-only checks."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import threading
import time

import pytest

from lmrec.server.event_store import (
    Event,
    EventStoreError,
    MemoryEventStore,
    SqliteEventStore,
    StoredItem,
    open_event_store,
)


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    opened = open_event_store(request.param, tmp_path / "state" / "events.sqlite3")
    yield opened
    opened.close()


def event(user: str, item: str, timestamp: float, **extra) -> Event:
    return Event(user_id=user, item_id=item, timestamp=timestamp, **extra)


# --- conformance: every implementation ----------------------------------------------------------------


def test_events_come_back_by_timestamp_and_ties_keep_insertion_order(store):
    stored = store.record([event("u", "late", 30.0), event("u", "tie-first", 10.0),
                           event("other", "x", 5.0), event("u", "tie-second", 10.0)])
    store.record([event("u", "tie-third", 10.0, event_type="purchase", weight=2.5), event("u", "early", 1.0)])

    assert stored == 4
    history = store.events_of("u")
    assert [e.item_id for e in history] == ["early", "tie-first", "tie-second", "tie-third", "late"]
    assert history[3] == Event(user_id="u", item_id="tie-third", event_type="purchase", timestamp=10.0, weight=2.5)
    assert [e.item_id for e in store.events_of("other")] == ["x"]
    assert store.events_of("nobody") == []


def test_n_events_counts_every_user(store):
    assert store.n_events() == 0
    store.record([event("a", "1", 1.0), event("b", "2", 2.0)])
    store.record([event("a", "3", 3.0)])
    assert store.n_events() == 3


@pytest.mark.parametrize("field, value, message", [
    ("weight", float("nan"), "events[2].weight is nan; it must be a finite number"),
    ("timestamp", -1.0, "events[2].timestamp is -1.0; it must be a finite number >= 0"),
    ("timestamp", float("inf"), "events[2].timestamp is inf"),
    ("user_id", "", "events[2].user_id is ''"),
    ("user_id", "   ", "events[2].user_id is '   '; it must not be only spaces"),
    ("item_id", "i" * 257, "events[2].item_id"),
    ("event_type", "t" * 65, "events[2].event_type"),
], ids=["nan-weight", "negative-timestamp", "infinite-timestamp", "empty-user", "blank-user", "long-item",
        "long-event-type"])
def test_a_batch_with_one_bad_event_stores_nothing_and_names_its_position(store, field, value, message):
    store.record([event("u", "kept", 1.0)])
    good = [event("u", "a", 2.0), event("v", "b", 3.0)]
    bad = dataclasses.replace(event("u", "c", 4.0), **{field: value})

    with pytest.raises(ValueError, match="^" + re.escape(message)):
        store.record([*good, bad, event("u", "d", 5.0)])

    assert store.n_events() == 1
    assert [e.item_id for e in store.events_of("u")] == ["kept"]
    assert store.events_of("v") == []


def test_limits_are_inclusive(store):
    longest = Event(user_id="u" * 256, item_id="i" * 256, event_type="t" * 64, timestamp=0.0, weight=-3.0)
    assert store.record([longest]) == 1
    assert store.events_of("u" * 256) == [longest]


def test_forget_deletes_the_users_events_and_remembers_when(store):
    store.record([event("u", "a", 1.0), event("u", "b", 2.0), event("keep", "c", 3.0)])
    assert store.forgotten_at("u") is None

    before = time.time()
    assert store.forget("u") == 2
    after = time.time()

    assert store.events_of("u") == []
    assert before <= store.forgotten_at("u") <= after
    assert [e.item_id for e in store.events_of("keep")] == ["c"]
    assert store.forgotten_at("keep") is None
    assert store.n_events() == 1


def test_forgetting_an_unknown_user_still_remembers_the_id(store):
    assert store.forget("never-seen") == 0
    assert store.forgotten_at("never-seen") is not None


def test_events_after_forget_are_a_fresh_history(store):
    store.record([event("u", "old", 1.0)])
    store.forget("u")
    forgotten = store.forgotten_at("u")

    store.record([event("u", "new", 2.0)])

    assert [e.item_id for e in store.events_of("u")] == ["new"]
    assert store.forgotten_at("u") == forgotten


def test_put_items_upserts_keeping_first_added_order(store):
    store.put_items([StoredItem(item_id="b", fields={"title": "B"}, added_at=1.0),
                     StoredItem(item_id="a", fields={"title": "A", "year": None}, added_at=2.0)])
    store.put_items([StoredItem(item_id="c", fields={"title": "C"}, added_at=3.0),
                     StoredItem(item_id="b", fields={"title": "B2", "tags": ["x"]}, added_at=4.0)])

    items = store.items()
    assert [i.item_id for i in items] == ["b", "a", "c"]
    assert items[0].fields == {"title": "B2", "tags": ["x"]}
    assert items[0].added_at == 1.0  # when it first came, not when it was last updated
    assert items[1].fields == {"title": "A", "year": None}


def test_put_items_with_one_bad_item_stores_nothing(store):
    store.put_items([StoredItem(item_id="kept", fields={}, added_at=1.0)])
    with pytest.raises(ValueError, match=r"items\[1\]\.fields"):
        store.put_items([StoredItem(item_id="new", fields={"title": "N"}, added_at=2.0),
                         StoredItem(item_id="bad", fields={"when": object()}, added_at=2.0)])
    with pytest.raises(ValueError, match=r"items\[0\]\.item_id"):
        store.put_items([StoredItem(item_id="", fields={}, added_at=2.0)])
    with pytest.raises(ValueError, match=r"items\[0\]\.fields is a list; it must be a dict"):
        store.put_items([StoredItem(item_id="x", fields=["not", "a", "dict"], added_at=2.0)])

    assert [i.item_id for i in store.items()] == ["kept"]


def test_stored_fields_are_a_copy(store):
    fields = {"categories": ["drama"]}
    store.put_items([StoredItem(item_id="a", fields=fields, added_at=1.0)])
    fields["categories"].append("changed later")
    store.items()[0].fields["categories"].append("changed by a reader")
    assert store.items()[0].fields == {"categories": ["drama"]}


def test_a_closed_store_refuses_work(store):
    store.close()
    with pytest.raises(EventStoreError, match="closed"):
        store.n_events()


# --- factory -------------------------------------------------------------------------------------------


def test_factory_kinds(tmp_path):
    assert isinstance(open_event_store("memory"), MemoryEventStore)
    sqlite_store = open_event_store("sqlite", tmp_path / "e.db")
    assert isinstance(sqlite_store, SqliteEventStore)
    sqlite_store.close()
    with pytest.raises(ValueError, match="needs a path"):
        open_event_store("sqlite")
    with pytest.raises(ValueError, match="known: sqlite, memory"):
        open_event_store("redis")


# --- SQLite only ---------------------------------------------------------------------------------------


def test_sqlite_state_survives_close_and_reopen(tmp_path):
    path = tmp_path / "deep" / "folder" / "events.sqlite3"
    first = SqliteEventStore(path)
    first.record([event("u", "a", 2.0, event_type="rating", weight=4.5), event("u", "b", 1.0)])
    first.record([event("gone", "c", 1.0)])
    first.forget("gone")
    forgotten = first.forgotten_at("gone")
    first.put_items([StoredItem(item_id="new", fields={"title": "New", "attributes": {"k": "v"}}, added_at=9.0)])
    first.close()

    reopened = SqliteEventStore(path)
    try:
        assert reopened.events_of("u") == [
            event("u", "b", 1.0), Event(user_id="u", item_id="a", event_type="rating", timestamp=2.0, weight=4.5)]
        assert reopened.n_events() == 2
        assert reopened.forgotten_at("gone") == forgotten
        assert reopened.items() == [StoredItem(item_id="new", fields={"title": "New", "attributes": {"k": "v"}},
                                               added_at=9.0)]
    finally:
        reopened.close()


def test_sqlite_a_storage_failure_mid_batch_rolls_back_the_whole_batch(tmp_path):
    path = tmp_path / "events.sqlite3"
    store = SqliteEventStore(path)
    # A trigger stands in for a failure validation cannot foresee (disk full, I/O error) on the 3rd row.
    with sqlite3.connect(path) as side:
        side.execute("CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.item_id = 'poison'"
                     " BEGIN SELECT RAISE(ABORT, 'refused'); END")
    try:
        with pytest.raises(EventStoreError, match="refused"):
            store.record([event("u", "a", 1.0), event("u", "b", 2.0), event("u", "poison", 3.0)])
        assert store.n_events() == 0
        assert store.record([event("u", "after", 4.0)]) == 1  # the failed transaction left nothing open
        assert [e.item_id for e in store.events_of("u")] == ["after"]
    finally:
        store.close()


def test_sqlite_a_full_disk_is_reported_as_such_and_stores_nothing(tmp_path):
    store = SqliteEventStore(tmp_path / "events.sqlite3")
    store.record([Event(user_id="u", item_id="1", timestamp=1.0)])
    connection = store._connection
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count={pages}")  # no page can be added: the disk is full
    batch = [Event(user_id=f"user-{n}" * 10, item_id="1", timestamp=float(n)) for n in range(1000)]
    with pytest.raises(EventStoreError, match="database or disk is full"):  # not "cannot rollback - no transaction is active"
        store.record(batch)
    assert store.n_events() == 1
    connection.execute("PRAGMA max_page_count=1073741823")  # space freed: the store works again
    assert store.record(batch[:2]) == 2


def test_sqlite_uses_wal_and_records_the_schema_version(tmp_path):
    path = tmp_path / "events.sqlite3"
    SqliteEventStore(path).close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 1


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are not the pages you are looking for\n" * 200)
    with pytest.raises(EventStoreError, match="notes.txt"):
        SqliteEventStore(path)


def test_sqlite_refuses_another_schema_version(tmp_path):
    path = tmp_path / "events.sqlite3"
    SqliteEventStore(path).close()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version=7")
    connection.close()

    with pytest.raises(EventStoreError) as raised:
        SqliteEventStore(path)
    message = str(raised.value)
    assert str(path) in message and "7" in message and "1" in message


def test_sqlite_concurrent_record_from_threads_all_lands(tmp_path):
    store = SqliteEventStore(tmp_path / "events.sqlite3")
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def record_fifty(worker: int) -> None:
        try:
            start.wait()
            for n in range(50):
                store.record([event(f"user-{worker}", f"item-{n}", float(n))])
        except BaseException as error:  # surfaced below: an exception in a thread would be lost
            failures.append(error)

    threads = [threading.Thread(target=record_fifty, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    try:
        assert failures == []
        assert store.n_events() == 200
        assert [e.item_id for e in store.events_of("user-3")] == [f"item-{n}" for n in range(50)]
    finally:
        store.close()


def test_a_forgotten_users_events_leave_the_files_on_disk(tmp_path):
    """Deleted rows stayed readable in the write-ahead log until some later checkpoint (review 29)."""
    path = tmp_path / "events.sqlite3"
    store = SqliteEventStore(path)
    marker = "item-only-alice-ever-saw-7f3a"
    store.record([event("alice", marker, 1.0 + n) for n in range(20)] + [event("bob", "i1", 2.0)])

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("events.sqlite3"))

    assert marker.encode() in on_disk()
    assert store.forget("alice") == 20
    assert marker.encode() not in on_disk()
    assert [e.item_id for e in store.events_of("bob")] == ["i1"]
    store.close()


def test_an_id_of_only_spaces_stored_before_they_were_refused_can_still_be_forgotten(tmp_path):
    path = tmp_path / "events.sqlite3"
    SqliteEventStore(path).close()
    with sqlite3.connect(path) as connection:  # as an older version stored it
        connection.execute("INSERT INTO events (user_id, item_id, event_type, timestamp, weight)"
                           " VALUES ('  ', 'i1', 'view', 1.0, 1.0)")
    store = SqliteEventStore(path)
    assert len(store.events_of("  ")) == 1 and store.forget("  ") == 1 and store.events_of("  ") == []
    store.close()


def test_the_checkpoint_after_a_forget_waits_briefly_for_another_reader_and_says_so(tmp_path, caplog):
    """A reader holding the log made forget wait the connection's whole 5 s busy timeout, silently."""
    path = tmp_path / "events.sqlite3"
    store = SqliteEventStore(path)
    store.record([event("alice", "i1", 1.0)])
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM events").fetchone()  # a read transaction pins the log
    started = time.perf_counter()
    with caplog.at_level("WARNING"):
        assert store.forget("alice") == 1
    assert time.perf_counter() - started < 2.0
    assert "kept the write-ahead log from being emptied" in caplog.text
    reader.rollback()
    reader.close()
    assert store.forget("bob") == 0 and store.events_of("alice") == []
    store.close()

