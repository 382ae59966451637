"""A user as one serving state sees them: the bundle's data snapshot plus the events recorded since.

A ForgetUser hides the snapshot history for good (the snapshot is part of an immutable bundle; the
next build should leave the user out) and deletes the recorded events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .event_store import EventStore
from .state import ServingState


@dataclass(frozen=True, kw_only=True)
class ResolvedUser:
    user_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    history: np.ndarray  # positive interactions, item rows of the state's catalogue, oldest first, each item once
    seen: np.ndarray  # every item the user interacted with (negative weights too)
    cf_index: int | None  # the bundle's trained ALS row, when nothing happened since the snapshot
    # History items not to name as liked: rated below the user's own mean in the snapshot, and not
    # liked again by a recorded event since.
    rated_low: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    recorded_events: int


def resolve_user(state: ServingState, events: EventStore, user_id: str) -> ResolvedUser | None:
    """None when the id has neither a snapshot history (not forgotten) nor recorded events."""
    snapshot = None if events.forgotten_at(user_id) is not None else state.snapshot_users.get_user(user_id)
    recorded = events.events_of(user_id)
    if snapshot is None and not recorded:
        return None
    index = state.catalogue.index
    # Events on items this state's catalogue lacks (e.g. after a rollback) are kept but not used.
    usable = [(index[e.item_id], e.weight) for e in recorded if e.item_id in index]
    # An item's latest event decides whether it is liked (events come in time order): liked, then
    # disliked (weight <= 0) is seen but no longer liked, in the profile, the fold-in and "because you liked".
    latest = {row: weight for row, weight in usable}
    disliked = np.array([row for row, weight in latest.items() if weight <= 0], np.int64)
    positive = np.array([row for row, weight in usable if weight > 0 and latest[row] > 0], np.int64)
    everything = np.array([row for row, _ in usable], np.int64)
    base = np.asarray(snapshot.history, np.int64) if snapshot is not None else np.zeros(0, np.int64)
    base = base[~np.isin(base, disliked)]
    rated_low = np.asarray(snapshot.rated_low, np.int64) if snapshot is not None else np.zeros(0, np.int64)
    rated_low = rated_low[~np.isin(rated_low, [row for row, weight in latest.items() if weight > 0])]
    return ResolvedUser(
        user_id=user_id,
        attributes=dict(snapshot.attributes) if snapshot is not None else {},
        history=latest_occurrences(np.concatenate([base, positive])),
        seen=np.unique(np.concatenate([base, everything])),
        cf_index=snapshot.cf_index if snapshot is not None and not recorded else None,
        rated_low=rated_low,
        recorded_events=len(recorded),
    )


def latest_occurrences(rows: np.ndarray) -> np.ndarray:
    """Each item once, where it last occurs (order kept, oldest first). Training data counts an item once
    per user, so a repeated view, or a RecordEvents retried after a deadline, must not fill the profile
    text with one title."""
    if len(rows) < 2:
        return rows
    _, first_from_end = np.unique(rows[::-1], return_index=True)
    return rows[np.sort(len(rows) - 1 - first_from_end)]
