"""An in-process copy of one small kind, kept current by a store watch.

Admission asks on every create whether the namespace has ResourceQuotas or LimitRanges;
almost always it has none. A store list per create costs more than the answer is worth,
so those kinds are mirrored here, the way kube-apiserver's admission plugins read from
informers. Unlike an informer, a lookup first takes every event the store has already
delivered (``Watch.poll``): a write acknowledged to a client before the lookup began is
always seen, because the store hands its events to watchers before it acknowledges.
"""

from __future__ import annotations

import asyncio

from kybernetes.store import Backend, EventType, KeyValue, Watch


class KindCache:
    """Every object under ``prefix`` (e.g. ``/registry/resourcequotas/``), by key."""

    def __init__(self, backend: Backend, prefix: str) -> None:
        self.backend = backend
        self.prefix = prefix
        self._watch: Watch | None = None
        self._by_ns: dict[str, dict[str, KeyValue]] = {}
        self._lock = asyncio.Lock()
        self.generation = 0
        """Counts changes: equal between two lookups, nothing changed between them."""

    async def items(self, namespace: str) -> list[KeyValue]:
        """The namespace's objects, in key order, as of every acknowledged write."""
        await self.refresh()
        objs = self._by_ns.get(namespace)
        return [objs[k] for k in sorted(objs)] if objs else []

    async def all(self) -> list[KeyValue]:
        """Every object (of every namespace, or of a cluster-scoped kind), in key order."""
        await self.refresh()
        return sorted((kv for objs in self._by_ns.values() for kv in objs.values()),
                      key=lambda kv: kv.key)

    async def refresh(self) -> None:
        """Take every change the store has delivered (or list again)."""
        if self._watch is None or not self._catch_up(self._watch):
            async with self._lock:
                if self._watch is None or not self._catch_up(self._watch):
                    await self._relist()

    def _catch_up(self, watch: Watch) -> bool:
        events = watch.poll()
        if events is None or watch.overflowed:
            return False
        if events:
            self.generation += 1
        for e in events:
            ns = e.kv.key[len(self.prefix):].partition("/")[0]
            if e.type == EventType.DELETE:
                objs = self._by_ns.get(ns)
                if objs is not None:
                    objs.pop(e.kv.key, None)
                    if not objs:
                        del self._by_ns[ns]
            else:
                self._by_ns.setdefault(ns, {})[e.kv.key] = e.kv
        return True

    async def _relist(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        page = await self.backend.list(self.prefix)
        by_ns: dict[str, dict[str, KeyValue]] = {}
        for kv in page.items:
            by_ns.setdefault(kv.key[len(self.prefix):].partition("/")[0], {})[kv.key] = kv
        self._by_ns = by_ns
        self.generation += 1
        self._watch = await self.backend.watch(self.prefix, after_revision=page.revision)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
