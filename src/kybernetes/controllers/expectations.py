"""Expectations: what a controller has asked for and not yet seen in its informer cache.

A controller that creates five pods would, without this, see the same cache at its next
sync (the watch events not in yet) and create five more. client-go's
``UIDTrackingControllerExpectations`` records the creates and deletes it expects per
controller key; the informer's handlers lower them as the events arrive, and the
controller changes nothing until they are met or, after five minutes, given up on::

    exp = Expectations()
    exp.expect_creations("ns/web-abc", 5)
    exp.satisfied("ns/web-abc")            # False until five pod adds were observed
    exp.creation_observed("ns/web-abc")    # from the pod informer's add handler

(The ReplicaSet controller's; the Job controller keeps its own in ``jobexpectations``.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock

EXPECTATIONS_TTL = 300.0
"""Seconds after which unmet expectations are given up on (upstream's 5 minutes)."""


@dataclass
class _Record:
    adds: int
    deletes: int
    at: float
    deleting: set[str] = field(default_factory=set)


class Expectations:
    """Per controller key: creations and deletions (by object key) still to be observed."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, ttl: float = EXPECTATIONS_TTL) -> None:
        self._clock = clock
        self._ttl = ttl
        self._records: dict[str, _Record] = {}

    def satisfied(self, key: str) -> bool:
        """Whether the controller may act on ``key``: nothing pending, or it expired."""
        rec = self._records.get(key)
        if rec is None:
            return True
        if rec.adds <= 0 and rec.deletes <= 0:
            return True
        return self._clock.monotonic() - rec.at > self._ttl

    def pending(self, key: str) -> tuple[int, int]:
        """(creations, deletions) still expected for ``key``."""
        rec = self._records.get(key)
        return (max(rec.adds, 0), max(rec.deletes, 0)) if rec else (0, 0)

    def expect_creations(self, key: str, count: int) -> None:
        """Replace ``key``'s expectations with ``count`` creations."""
        self._records[key] = _Record(count, 0, self._clock.monotonic())

    def expect_deletions(self, key: str, object_keys: Iterable[str]) -> None:
        """Replace ``key``'s expectations with the deletion of these objects."""
        keys = set(object_keys)
        self._records[key] = _Record(0, len(keys), self._clock.monotonic(), keys)

    def creation_observed(self, key: str) -> None:
        """One expected object appeared (or its creation failed and will not)."""
        rec = self._records.get(key)
        if rec is not None:
            rec.adds -= 1

    def deletion_observed(self, key: str, object_key: str) -> None:
        """``object_key`` was seen going (counted once, however many events say so)."""
        rec = self._records.get(key)
        if rec is not None and object_key in rec.deleting:
            rec.deleting.discard(object_key)
            rec.deletes -= 1

    def delete(self, key: str) -> None:
        """Forget ``key`` (its controller object is gone)."""
        self._records.pop(key, None)
