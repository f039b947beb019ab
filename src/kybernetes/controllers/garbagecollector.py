"""The garbage collector: deletes dependents whose owners are gone, and carries out
foreground and orphan deletion (the ``foregroundDeletion`` and ``orphan`` finalizers).

It watches every deletable resource the server serves (re-discovering as CRDs come and
go), indexes objects by uid and by the uids of their owners, and reconciles one object
at a time:

- an object whose owners no longer exist is deleted (background propagation); one that
  still has a live owner only loses the references to the missing ones;
- an owner being deleted in the foreground has its dependents deleted, and its
  finalizer removed once no dependent blocks it;
- an owner being deleted with orphan propagation has its dependents' references to it
  removed, then its finalizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any, NamedTuple

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.client import Client, Informer, WorkQueue, run_workers
from kybernetes.client.discovery import APIResource, discover

log = logging.getLogger(__name__)
Obj = dict[str, Any]

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
_IGNORED = {("", "events"), ("events.k8s.io", "events")}
_OWNER_INDEX = "owner-uid"
_REDISCOVER_SECONDS = 10.0


class Ref(NamedTuple):
    """Where an object lives: its resource, namespace and name."""

    resource: APIResource
    namespace: str
    name: str


_KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "ownerReferences",
                  "finalizers", "deletionTimestamp")


def metadata_only(obj: Obj) -> Obj:
    """What the collector keeps of an object: the metadata it reasons about. Caching
    whole objects of every kind would cost memory and garbage-collection pauses."""
    md = obj.get("metadata") or {}
    return {"metadata": {k: md[k] for k in _KEPT_METADATA if k in md}}


def _owner_uids(obj: Obj) -> list[str]:
    return [r["uid"] for r in (obj.get("metadata") or {}).get("ownerReferences") or []
            if r.get("uid")]


class GarbageCollector:
    def __init__(self, client: Client, *, workers: int = 2) -> None:
        self.client = client
        self.workers = workers
        self.informers: dict[APIResource, Informer] = {}
        self.by_kind: dict[tuple[str, str], APIResource] = {}
        self.by_group_kind: dict[tuple[str, str], APIResource] = {}
        self.by_uid: dict[str, tuple[str, str, str]] = {}
        """uid -> (resource id, namespace, name), plain tuples (see _where)."""
        self.resource_ids: dict[str, APIResource] = {}
        self.queue: WorkQueue[str] = WorkQueue()
        self._tasks: list[asyncio.Task[Any]] = []

    # -- informers ---------------------------------------------------------------------

    async def sync_resources(self) -> None:
        resources = [r for r in await discover(self.client)
                     if {"list", "watch", "delete", "patch"} <= r.verbs
                     and (r.group, r.plural) not in _IGNORED]
        wanted = set(resources)
        for r in resources:
            self.by_kind[(r.api_version, r.kind)] = r
            self.by_group_kind[(r.group, r.kind)] = r
            if r in self.informers:
                continue
            inf = Informer(self.client, r.api_version, r.plural, transform=metadata_only)
            inf.add_index(_OWNER_INDEX, _owner_uids)
            inf.add_handler(on_add=functools.partial(self._on_add, r),
                            on_update=functools.partial(self._on_update, r),
                            on_delete=self._gone)
            inf.start()
            self.informers[r] = inf
        for r in list(self.informers):
            if r not in wanted:
                await self.informers.pop(r).stop()

    def _on_add(self, res: APIResource, obj: Obj) -> None:
        self._seen(res, obj)

    def _on_update(self, res: APIResource, old: Obj, new: Obj) -> None:
        self._seen(res, new, old)

    def _key(self, obj: Obj) -> str:
        return str((obj.get("metadata") or {}).get("uid", ""))

    def _seen(self, res: APIResource, obj: Obj, old: Obj | None = None) -> None:
        md = obj.get("metadata") or {}
        uid = md.get("uid")
        if not uid:
            return
        rid = f"{res.api_version}/{res.plural}"
        self.resource_ids.setdefault(rid, res)
        # plain tuples of strings leave the cyclic GC's books: one per object adds up
        self.by_uid[uid] = (rid, md.get("namespace", ""), md.get("name", ""))
        if md.get("ownerReferences"):
            self.queue.add(uid)
        fins = md.get("finalizers") or []
        if md.get("deletionTimestamp") and (FOREGROUND in fins or ORPHAN in fins):
            self.queue.add(uid)
        if old is not None:
            # an owner that lost its foreground/orphan state or changed may affect dependents
            old_fins = (old.get("metadata") or {}).get("finalizers") or []
            if old_fins != fins:
                for dep in self._dependents(uid):
                    self.queue.add(self._key(dep))

    def _gone(self, obj: Obj) -> None:
        uid = self._key(obj)
        self.by_uid.pop(uid, None)
        for dep in self._dependents(uid):
            self.queue.add(self._key(dep))
        # a dependent that vanished may unblock its foreground owners
        for owner in _owner_uids(obj):
            if owner in self.by_uid:
                self.queue.add(owner)

    def _dependents(self, uid: str) -> list[Obj]:
        out: list[Obj] = []
        for inf in self.informers.values():
            out.extend(inf.by_index(_OWNER_INDEX, uid))
        return out

    def _where(self, uid: str) -> Ref | None:
        entry = self.by_uid.get(uid)
        if entry is None:
            return None
        return Ref(self.resource_ids[entry[0]], entry[1], entry[2])

    def _get(self, uid: str) -> tuple[Ref, Obj] | None:
        ref = self._where(uid)
        if ref is None:
            return None
        inf = self.informers.get(ref.resource)
        if inf is None:
            return None
        obj = inf.get(f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name)
        if obj is None or self._key(obj) != uid:
            return None
        return ref, obj

    # -- reconcile -------------------------------------------------------------------------

    async def reconcile(self, uid: str) -> None:
        found = self._get(uid)
        if found is None:
            return
        ref, obj = found
        md = obj["metadata"]
        fins = md.get("finalizers") or []
        if md.get("deletionTimestamp") and ORPHAN in fins:
            await self._orphan_dependents(ref, obj)
            return
        if md.get("deletionTimestamp") and FOREGROUND in fins:
            await self._delete_dependents(ref, obj)
            return
        await self._check_owners(ref, obj)

    async def _owner_state(self, dependent: Ref, owner: Obj) -> str:
        """"live", "gone" or "foreground" for one owner reference."""
        uid = owner.get("uid", "")
        found = self._get(uid)
        if found is None:
            api_version = owner.get("apiVersion", "")
            res = self.by_kind.get((api_version, owner.get("kind", ""))) or \
                self.by_group_kind.get((api_version.rpartition("/")[0], owner.get("kind", "")))
            if res is None:
                return "live"  # a kind we cannot see: never delete on a guess
            if res in self.informers and not self.informers[res].has_synced:
                return "live"
            try:
                live = await self.client.get(res.api_version, res.plural, owner.get("name", ""),
                                             namespace=dependent.namespace if res.namespaced
                                             else None)
            except StatusError as e:
                if e.code == 404:
                    return "gone"
                raise
            if (live.get("metadata") or {}).get("uid") != uid:
                return "gone"
            found = (Ref(res, dependent.namespace, owner.get("name", "")), live)
        omd = found[1]["metadata"]
        if omd.get("deletionTimestamp") and FOREGROUND in (omd.get("finalizers") or []):
            return "foreground"
        return "live"

    async def _check_owners(self, ref: Ref, obj: Obj) -> None:
        owners = (obj.get("metadata") or {}).get("ownerReferences") or []
        if not owners:
            return
        states = [await self._owner_state(ref, o) for o in owners]
        if any(s == "live" for s in states):
            gone = [o["uid"] for o, s in zip(owners, states, strict=True) if s == "gone"]
            if gone:
                await self._remove_owner_refs(ref, obj, set(gone))
            return
        policy = "Foreground" if "foreground" in states else "Background"
        if policy == "Foreground" and not any(
                o.get("blockOwnerDeletion") for o, s in zip(owners, states, strict=True)
                if s == "foreground"):
            policy = "Background"
        await self._delete(ref, obj, policy)

    async def _delete(self, ref: Ref, obj: Obj, policy: str) -> None:
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return
        try:
            await self.client.delete(ref.resource.api_version, ref.resource.plural, ref.name,
                                     namespace=ref.namespace or None,
                                     propagation_policy=policy,
                                     preconditions={"uid": self._key(obj)})
        except StatusError as e:
            if e.code not in (404, 409):
                raise

    async def _remove_owner_refs(self, ref: Ref, obj: Obj, uids: set[str]) -> None:
        md = obj["metadata"]
        keep = [o for o in md.get("ownerReferences") or [] if o.get("uid") not in uids]
        patch: Obj = {"metadata": {"ownerReferences": keep or None,
                                   "uid": md.get("uid")}}
        try:
            await self.client.patch(ref.resource.api_version, ref.resource.plural, ref.name,
                                    patch, patch_type="merge", namespace=ref.namespace or None)
        except StatusError as e:
            if e.code not in (404, 409):
                raise

    async def _remove_finalizer(self, ref: Ref, obj: Obj, finalizer: str) -> None:
        md = obj["metadata"]
        fins = [f for f in md.get("finalizers") or [] if f != finalizer]
        patch: Obj = {"metadata": {"finalizers": fins or None,
                                   "resourceVersion": md.get("resourceVersion")}}
        try:
            await self.client.patch(ref.resource.api_version, ref.resource.plural, ref.name,
                                    patch, patch_type="merge", namespace=ref.namespace or None)
        except StatusError as e:
            if e.code == 409:
                self.queue.add_rate_limited(self._key(obj))
            elif e.code != 404:
                raise

    async def _orphan_dependents(self, ref: Ref, owner: Obj) -> None:
        uid = self._key(owner)
        for dep in self._dependents(uid):
            dref = self._where(self._key(dep))
            if dref is not None:
                await self._remove_owner_refs(dref, dep, {uid})
        await self._remove_finalizer(ref, owner, ORPHAN)

    async def _delete_dependents(self, ref: Ref, owner: Obj) -> None:
        uid = self._key(owner)
        blocking = 0
        for dep in self._dependents(uid):
            dref = self._where(self._key(dep))
            if dref is None:
                continue
            refs = [o for o in dep["metadata"].get("ownerReferences") or []
                    if o.get("uid") == uid]
            if any(o.get("blockOwnerDeletion") for o in refs):
                blocking += 1
            await self._delete(dref, dep, "Foreground")
        if blocking == 0:
            await self._remove_finalizer(ref, owner, FOREGROUND)

    # -- lifecycle -----------------------------------------------------------------------

    async def _rediscover(self) -> None:
        while True:
            await asyncio.sleep(_REDISCOVER_SECONDS)
            try:
                await self.sync_resources()
            except Exception as e:
                log.warning("garbage collector: discovery failed: %s", e)

    async def start(self) -> None:
        await self.sync_resources()
        self._tasks.append(spawn(run_workers(self.queue, self.reconcile, workers=self.workers),
                                 name="gc-workers"))
        self._tasks.append(spawn(self._rediscover(), name="gc-rediscover"))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self.informers.values():
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
