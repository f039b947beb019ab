"""L2: the revisioned key-value store behind the API server (SQLite, or etcd)."""

from kybernetes.store.backend import (
    AlreadyExistsError,
    Backend,
    CompactedError,
    ConflictError,
    Event,
    EventType,
    KeyValue,
    ListResult,
    NotFoundError,
    StoreError,
    UnavailableError,
    Watch,
)

__all__ = [
    "AlreadyExistsError",
    "Backend",
    "CompactedError",
    "ConflictError",
    "Event",
    "EventType",
    "KeyValue",
    "ListResult",
    "NotFoundError",
    "StoreError",
    "UnavailableError",
    "Watch",
]
