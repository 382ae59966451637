"""What a gateway request and its answer are, the limits on a request, and how a bad one is refused.

`RequestError` carries the gRPC status a refused request gets (gateway.py maps it); the checks here name
the bad field and the limit, so the caller can fix the request. recommend.py does what a request means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lmrec.export.dataset import ItemInfo
from lmrec.text import has_item_text

from .catalogue import shown
from .event_store import MAX_ID_LENGTH
from .explain import ItemExplanation
from .fusion import RankedItem

MAX_K = 1000
MAX_BATCH = 1000
# An added item's text is cut to the encoder's max length (256 tokens pretrained, 128 fine-tuned) anyway;
# these bounds keep a full AddItems batch within the gateway's message size limit.
MAX_TITLE_CHARS = 500
MAX_DESCRIPTION_CHARS = 10_000
MAX_ATTRIBUTE_KEY_CHARS = 100  # a key is a name (a filter's key), not text
MAX_USER_ATTRIBUTES = 50  # a Recommend's attributes describe one user; each becomes profile text
# An event this far ahead of the gateway's clock is a unit mistake (milliseconds), not clock skew: it would
# stay the user's newest event for decades.
MAX_CLOCK_AHEAD_S = 86_400.0


class RequestError(Exception):
    """A request that cannot be served; `code` names the gRPC status (INVALID_ARGUMENT, NOT_FOUND, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, kw_only=True)
class RecommendQuery:
    user_id: str = ""
    recent_item_ids: tuple[str, ...] = ()
    text: str = ""
    k: int = 10
    include_seen: bool = False
    attributes: dict[str, str] = field(default_factory=dict)
    exclude_item_ids: tuple[str, ...] = ()
    require: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (key, any-of values)


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    items: list[RankedItem]
    bundle_version: str
    titles: Sequence[str] = ()  # titles of the items, same order
    item_ids: Sequence[str] = ()
    explanations: list[ItemExplanation] = field(default_factory=list)
    profile_text: str = ""
    degraded: bool = False
    notes: Sequence[str] = ()  # why an answer is empty (`Catalogue.unmatched_filter_values`)
    # The transport's encoding of this answer (gateway.py keeps its response message here), so that an
    # answer served again from the cache is not encoded again. Not part of the answer's value.
    encoded: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class ProfileView:
    user_id: str
    tags: list[tuple[str, float]]
    recent_items: list[tuple[str, str]]  # (item id, title), newest first
    profile_text: str
    bundle_version: str
    recorded_events: int


def check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise RequestError("INVALID_ARGUMENT", f"k must be between 1 and {MAX_K}, got {k}")


def check_text(field_name: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise RequestError("INVALID_ARGUMENT", f"{field_name} is {len(text)} characters long; the limit is {limit}")


def check_id(field_name: str, value: str) -> None:
    check_text(field_name, value, MAX_ID_LENGTH)


def check_new_items(items: Sequence[tuple[str, ItemInfo]]) -> None:
    """An AddItems batch as a whole: refused, with the first bad field named, before anything is stored."""
    if not items:
        raise RequestError("INVALID_ARGUMENT", "no items given")
    if len(items) > MAX_BATCH:
        raise RequestError("INVALID_ARGUMENT", f"{len(items)} items in one call; the limit is {MAX_BATCH}")
    seen_ids = set()
    for position, (item_id, info) in enumerate(items):
        if not item_id.strip() or len(item_id) > 256:
            raise RequestError("INVALID_ARGUMENT", f"items[{position}].item_id must be 1..256 characters, not "
                                                   "only spaces")
        if item_id in seen_ids:
            raise RequestError("INVALID_ARGUMENT", f"items[{position}].item_id '{item_id}' appears twice")
        seen_ids.add(item_id)
        check_text(f"items[{position}].title", info.title, MAX_TITLE_CHARS)
        check_text(f"items[{position}].description", info.description, MAX_DESCRIPTION_CHARS)
        for key in info.attributes:
            if not key.strip():
                raise RequestError("INVALID_ARGUMENT", f"items[{position}].attributes has a blank key")
            if len(key) > MAX_ATTRIBUTE_KEY_CHARS:
                raise RequestError("INVALID_ARGUMENT", f"items[{position}].attributes has a key of {len(key)} "
                                                       f"characters; the limit is {MAX_ATTRIBUTE_KEY_CHARS}")
            if ":" in key:  # the graph names an attribute "key:value": the key would end at the colon
                raise RequestError("INVALID_ARGUMENT", f"items[{position}].attributes key '{shown(key)}' contains "
                                                       "':'; use another separator (e.g. '_')")
        if not has_item_text(info):
            raise RequestError("INVALID_ARGUMENT", f"items[{position}] has no text: give it a title, a "
                                                   "description or tags for the encoder")
