from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "recent_item_ids", "text", "k", "include_seen", "attributes", "exclude_item_ids", "require")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RECENT_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    recent_item_ids: _containers.RepeatedScalarFieldContainer[str]
    text: str
    k: int
    include_seen: bool
    attributes: _containers.ScalarMap[str, str]
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    require: _containers.RepeatedCompositeFieldContainer[AttributeFilter]
    def __init__(self, user_id: _Optional[str] = ..., recent_item_ids: _Optional[_Iterable[str]] = ..., text: _Optional[str] = ..., k: _Optional[int] = ..., include_seen: bool = ..., attributes: _Optional[_Mapping[str, str]] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., require: _Optional[_Iterable[_Union[AttributeFilter, _Mapping]]] = ...) -> None: ...

class AttributeFilter(_message.Message):
    __slots__ = ("key", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("because_item_id", "because_title", "because_similarity", "matched_tags", "graph_path", "text")
    BECAUSE_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    BECAUSE_TITLE_FIELD_NUMBER: _ClassVar[int]
    BECAUSE_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MATCHED_TAGS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_PATH_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    because_item_id: str
    because_title: str
    because_similarity: float
    matched_tags: _containers.RepeatedScalarFieldContainer[str]
    graph_path: str
    text: str
    def __init__(self, because_item_id: _Optional[str] = ..., because_title: _Optional[str] = ..., because_similarity: _Optional[float] = ..., matched_tags: _Optional[_Iterable[str]] = ..., graph_path: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class SignalScore(_message.Message):
    __slots__ = ("signal", "score")
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    signal: str
    score: float
    def __init__(self, signal: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RecommendedItem(_message.Message):
    __slots__ = ("item_id", "title", "score", "signals", "found_by", "explanation")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    FOUND_BY_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    score: float
    signals: _containers.RepeatedCompositeFieldContainer[SignalScore]
    found_by: str
    explanation: Explanation
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., score: _Optional[float] = ..., signals: _Optional[_Iterable[_Union[SignalScore, _Mapping]]] = ..., found_by: _Optional[str] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "bundle_version", "profile_text", "degraded", "request_id", "notes")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROFILE_TEXT_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RecommendedItem]
    bundle_version: str
    profile_text: str
    degraded: bool
    request_id: str
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[RecommendedItem, _Mapping]]] = ..., bundle_version: _Optional[str] = ..., profile_text: _Optional[str] = ..., degraded: bool = ..., request_id: _Optional[str] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class SimilarItemsRequest(_message.Message):
    __slots__ = ("item_id", "text", "k")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    text: str
    k: int
    def __init__(self, item_id: _Optional[str] = ..., text: _Optional[str] = ..., k: _Optional[int] = ...) -> None: ...

class SimilarItemsResponse(_message.Message):
    __slots__ = ("items", "bundle_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RecommendedItem]
    bundle_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[RecommendedItem, _Mapping]]] = ..., bundle_version: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("user_id", "item_id", "event_type", "timestamp", "weight")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    item_id: str
    event_type: str
    timestamp: float
    weight: float
    def __init__(self, user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., event_type: _Optional[str] = ..., timestamp: _Optional[float] = ..., weight: _Optional[float] = ...) -> None: ...

class RecordEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ("recorded", "bundle_version")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    bundle_version: str
    def __init__(self, recorded: _Optional[int] = ..., bundle_version: _Optional[str] = ...) -> None: ...

class GetUserProfileRequest(_message.Message):
    __slots__ = ("user_id", "max_tags", "max_recent_items")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_TAGS_FIELD_NUMBER: _ClassVar[int]
    MAX_RECENT_ITEMS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    max_tags: int
    max_recent_items: int
    def __init__(self, user_id: _Optional[str] = ..., max_tags: _Optional[int] = ..., max_recent_items: _Optional[int] = ...) -> None: ...

class InterestTag(_message.Message):
    __slots__ = ("tag", "weight")
    TAG_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    tag: str
    weight: float
    def __init__(self, tag: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class ItemRef(_message.Message):
    __slots__ = ("item_id", "title")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class UserProfile(_message.Message):
    __slots__ = ("user_id", "tags", "recent_items", "profile_text", "bundle_version", "recorded_events")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    RECENT_ITEMS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_TEXT_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    tags: _containers.RepeatedCompositeFieldContainer[InterestTag]
    recent_items: _containers.RepeatedCompositeFieldContainer[ItemRef]
    profile_text: str
    bundle_version: str
    recorded_events: int
    def __init__(self, user_id: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[InterestTag, _Mapping]]] = ..., recent_items: _Optional[_Iterable[_Union[ItemRef, _Mapping]]] = ..., profile_text: _Optional[str] = ..., bundle_version: _Optional[str] = ..., recorded_events: _Optional[int] = ...) -> None: ...

class NewItem(_message.Message):
    __slots__ = ("item_id", "title", "categories", "description", "year", "tags", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    description: str
    year: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., year: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AddItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[NewItem]
    def __init__(self, items: _Optional[_Iterable[_Union[NewItem, _Mapping]]] = ...) -> None: ...

class AddItemsResponse(_message.Message):
    __slots__ = ("added", "replaced", "bundle_version")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    added: int
    replaced: int
    bundle_version: str
    def __init__(self, added: _Optional[int] = ..., replaced: _Optional[int] = ..., bundle_version: _Optional[str] = ...) -> None: ...

class ForgetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ForgetUserResponse(_message.Message):
    __slots__ = ("events_deleted", "was_known")
    EVENTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    WAS_KNOWN_FIELD_NUMBER: _ClassVar[int]
    events_deleted: int
    was_known: bool
    def __init__(self, events_deleted: _Optional[int] = ..., was_known: bool = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class DeployResponse(_message.Message):
    __slots__ = ("bundle_version", "previous_version", "seconds")
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    bundle_version: str
    previous_version: str
    seconds: float
    def __init__(self, bundle_version: _Optional[str] = ..., previous_version: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("bundle_version", "available_versions", "n_items", "added_items", "recorded_events", "cache_hit_ratio", "degraded")
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    N_ITEMS_FIELD_NUMBER: _ClassVar[int]
    ADDED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    RECORDED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    bundle_version: str
    available_versions: _containers.RepeatedScalarFieldContainer[int]
    n_items: int
    added_items: int
    recorded_events: int
    cache_hit_ratio: float
    degraded: bool
    def __init__(self, bundle_version: _Optional[str] = ..., available_versions: _Optional[_Iterable[int]] = ..., n_items: _Optional[int] = ..., added_items: _Optional[int] = ..., recorded_events: _Optional[int] = ..., cache_hit_ratio: _Optional[float] = ..., degraded: bool = ...) -> None: ...
