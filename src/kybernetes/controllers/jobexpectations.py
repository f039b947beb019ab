"""What the Job controller has asked of the API and not yet seen in its informer cache.

A controller that creates or deletes pods must not act again on a stale cache (it would
create the same pods twice). Per Job key this records the pod names it created, the uids
it deleted and the uids whose tracking finalizer it removed (upstream's expectations and
finalizer expectations); the pod informer's handlers call :meth:`observe`;
:meth:`satisfied` says when the cache has caught up with the creations and deletions (or
five minutes have passed, in case an event was lost)::

    exp = PodExpectations("batch.kubernetes.io/job-tracking")
    exp.expect_creations("ns/job", ["ns/job-abcde"])
    exp.satisfied("ns/job")          # False until the pod shows up
    exp.observe(pod)                 # from the pod informer's handlers
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock

Obj = dict[str, Any]

TIMEOUT = 300.0


@dataclass
class _Pending:
    since: float
    creates: set[str] = field(default_factory=set)
    deletes: set[str] = field(default_factory=set)
    finalizers: set[str] = field(default_factory=set)


def _pod_key(pod: Obj) -> str:
    md = pod.get("metadata") or {}
    return f"{md.get('namespace')}/{md.get('name')}"


class PodExpectations:
    def __init__(self, finalizer: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.finalizer = finalizer
        self._clock = clock
        self._items: dict[str, _Pending] = {}
        self._owner_of: dict[str, str] = {}
        """pod key or uid -> owner key, for :meth:`observe`."""

    def _pending(self, key: str, idents: list[str]) -> _Pending:
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = _Pending(self._clock.monotonic())
        item.since = self._clock.monotonic()
        self._owner_of.update(dict.fromkeys(idents, key))
        return item

    def expect_creations(self, key: str, pod_keys: list[str]) -> None:
        """Pods ``namespace/name`` just created (leave out those already in the cache)."""
        if pod_keys:
            self._pending(key, pod_keys).creates.update(pod_keys)

    def expect_deletions(self, key: str, uids: list[str]) -> None:
        """Pods just deleted (leave out those the cache already shows deleting)."""
        if uids:
            self._pending(key, uids).deletes.update(uids)

    def expect_finalizer_removals(self, key: str, uids: list[str]) -> None:
        """Pods whose finalizer was just removed (leave out those the cache shows so)."""
        if uids:
            self._pending(key, uids).finalizers.update(uids)

    def observe(self, pod: Obj, *, gone: bool = False) -> None:
        """A pod as the informer now has it (``gone``: deleted)."""
        md = pod.get("metadata") or {}
        pkey, uid = _pod_key(pod), str(md.get("uid") or "")
        for ident in (pkey, uid):
            owner = self._owner_of.get(ident)
            item = self._items.get(owner) if owner is not None else None
            if owner is None or item is None:
                continue
            item.creates.discard(pkey)
            if gone or md.get("deletionTimestamp"):
                item.deletes.discard(uid)
            if gone or self.finalizer not in (md.get("finalizers") or []):
                item.finalizers.discard(uid)
            if pkey not in item.creates:
                self._owner_of.pop(pkey, None)
            if uid not in item.deletes and uid not in item.finalizers:
                self._owner_of.pop(uid, None)
            if not (item.creates or item.deletes or item.finalizers):
                self.forget(owner)

    def satisfied(self, key: str) -> bool:
        """Whether every expected creation and deletion has been seen (or timed out)."""
        item = self._items.get(key)
        if item is None or not (item.creates or item.deletes):
            return True
        if self._clock.monotonic() - item.since > TIMEOUT:
            item.creates.clear()
            item.deletes.clear()
            return True
        return False

    def finalizer_removals(self, key: str) -> set[str]:
        """Uids whose finalizer was removed while the cache still shows it."""
        item = self._items.get(key)
        return set(item.finalizers) if item is not None else set()

    def forget(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            for ident in (*item.creates, *item.deletes, *item.finalizers):
                if self._owner_of.get(ident) == key:
                    del self._owner_of[ident]
