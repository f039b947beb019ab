"""The store's contract: a revisioned key-value log, etcd's model.

One revision counter for the whole cluster; it is the ``resourceVersion`` clients see.
Every write creates a new revision. Updates and deletes are compare-and-swap on the
key's last revision. Watches replay every revision after the one asked for and then
stream live events, never skipping one. History below the compacted revision is gone:
reads and watches there raise :class:`CompactedError`.

Values are opaque bytes; the API server decides their encoding.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol


class StoreError(Exception):
    """Base class of store failures."""


class NotFoundError(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key}")
        self.key = key


class AlreadyExistsError(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key already exists: {key}")
        self.key = key


class ConflictError(StoreError):
    """The key's revision was not the one expected (compare-and-swap failed)."""

    def __init__(self, key: str, *, expected: int, actual: int) -> None:
        super().__init__(f"conflict on {key}: expected revision {expected}, found {actual}")
        self.key = key
        self.expected = expected
        self.actual = actual


class UnavailableError(StoreError):
    """The datastore did not answer (an etcd cluster none of whose endpoints is up): the
    request was not done; the API answers 503 with Retry-After."""


class CompactedError(StoreError):
    """The revision asked for is older than the compacted revision."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(f"revision {requested} is compacted (oldest kept is {compacted})")
        self.requested = requested
        self.compacted = compacted


class KeyValue(NamedTuple):
    """One key's value at one revision. A tuple of atoms, so Python's cyclic garbage
    collector stops tracking it: many of these are held in memory."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int


class EventType(enum.IntEnum):
    CREATE = 0
    UPDATE = 1
    DELETE = 2


@dataclass(slots=True)
class Event:
    """One revision of one key.

    For ``DELETE`` events ``kv.value`` is the last value the key had and
    ``kv.mod_revision`` is the revision of the deletion. ``prev`` is the value before
    this revision when known (always for live events; replayed events may lose it to
    compaction). ``memo`` lets consumers that fan out one event to many watchers cache
    work (decoding, encoding) on the shared event.
    """

    type: EventType
    kv: KeyValue
    prev: KeyValue | None = None
    memo: dict[Any, Any] = field(default_factory=dict)

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[KeyValue]
    revision: int
    """The revision the list was read at."""
    more: bool
    """True when ``limit`` cut the list; continue after ``items[-1].key``."""


class Watch(Protocol):
    """A stream of events in revision order. Iterate it; close it when done.

    Iteration ends when the watch is closed or the consumer fell too far behind
    (``overflowed`` is then true and the consumer must re-list).
    """

    overflowed: bool

    def __aiter__(self) -> AsyncIterator[list[Event]]: ...

    async def next(self, timeout: float | None = None) -> list[Event] | None:
        """The next batch; [] when ``timeout`` passed first; None once the watch ended."""
        ...

    def poll(self) -> list[Event] | None:
        """Every event delivered so far, without waiting: [] when none is; None once the
        watch ended."""
        ...

    def close(self) -> None: ...


async def batches(watch: Watch) -> AsyncIterator[list[Event]]:
    """A watch's batches until it ends (what ``async for`` over a watch gives)."""
    while True:
        batch = await watch.next()
        if batch is None:
            return
        yield batch


class Backend(Protocol):
    """What every store driver implements. Keys are ``/registry/...`` paths."""

    async def get(self, key: str) -> KeyValue | None: ...

    async def list(
        self, prefix: str, *, start_after: str = "", limit: int = 0, revision: int = 0
    ) -> ListResult:
        """Keys under ``prefix`` in key order, after ``start_after``.

        ``revision`` 0 reads the newest state; otherwise the state at that revision
        (CompactedError when it is older than the compacted revision).
        """
        ...

    async def count(self, prefix: str) -> int: ...

    async def create(self, key: str, value: bytes) -> KeyValue: ...

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        """Replace the value if the key's revision is still ``expected_revision``."""
        ...

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        """Delete the key (checking its revision unless 0); returns the deletion's kv."""
        ...

    async def watch(self, prefix: str, *, after_revision: int) -> Watch:
        """Events for keys under ``prefix`` with revisions greater than ``after_revision``."""
        ...

    async def current_revision(self) -> int: ...

    def compacted_revision(self) -> int: ...

    async def compact(self, revision: int) -> None: ...

    async def close(self) -> None: ...
