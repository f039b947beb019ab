"""The resource quota controller: ``status.hard`` and ``status.used`` of ResourceQuotas.

For each ResourceQuota (a key ``namespace/name``) it copies ``spec.hard`` to
``status.hard`` and recomputes ``status.used`` from what exists in the namespace: pods
(terminal ones count only for ``count/pods``), services, configmaps, secrets and claims
from informer caches, any other ``count/<resource>.<group>`` by listing. As upstream,
the API server's quota admission charges new objects; this controller *replenishes*:
it recomputes a namespace's quotas when a quota is added or its ``spec.hard`` changes,
when an object is deleted or a pod becomes terminal, and every :data:`RESYNC` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api import quota as q
from kybernetes.api.errors import StatusError
from kybernetes.client import (
    NAMESPACE_INDEX,
    Client,
    Informer,
    Result,
    WorkQueue,
    namespace_index,
    object_key,
    run_workers,
    shared_informer,
)
from kybernetes.controllers.replicaset import ensure_index

log = logging.getLogger(__name__)
Obj = dict[str, Any]

RESYNC = 300.0
"""Full recalculation period (upstream's 5 minutes)."""
_CACHED = ("services", "configmaps", "secrets", "persistentvolumeclaims")


def quota_status(quota: Obj, used: q.Usage) -> Obj:
    hard = dict((quota.get("spec") or {}).get("hard") or {})
    return {"hard": q.to_list(q.parse_list(hard)), "used": q.to_list(used)}


def status_changed(quota: Obj, status: Obj) -> bool:
    old = quota.get("status") or {}
    return bool(q.to_list(q.parse_list(old.get("hard"))) != status["hard"]
            or q.to_list(q.parse_list(old.get("used"))) != status["used"])


class ResourceQuotaController:
    def __init__(self, client: Client, *, workers: int = 1,
                 pods: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.pods = pods or shared_informer(client, "v1", "pods")
        self.quotas = shared_informer(client, "v1", "resourcequotas")
        self.others: dict[str, Informer] = {}
        """Caches of the kinds some quota limits, started when first needed (a ConfigMap
        cache costs every ConfigMap write a decode: only pay for it when it counts)."""
        self._own = [self.quotas]
        if pods is None:
            self._own.append(self.pods)
        self.queue: WorkQueue[str] = WorkQueue(name="resourcequota")
        self._tasks: list[asyncio.Task[Any]] = []

    # -- events in ---------------------------------------------------------------------

    def _namespace_changed(self, obj: Obj) -> None:
        ns = (obj.get("metadata") or {}).get("namespace") or ""
        for quota in self.quotas.by_index(NAMESPACE_INDEX, ns):
            self.queue.add(object_key(quota))

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if q.pod_counts(old) and not q.pod_counts(new):
            self._namespace_changed(new)

    def _quota_updated(self, old: Obj, new: Obj) -> None:
        hard = (new.get("spec") or {}).get("hard")
        if (old.get("spec") or {}).get("hard") != hard or \
                (new.get("status") or {}).get("hard") is None:
            self.queue.add(object_key(new))

    # -- reconcile ---------------------------------------------------------------------

    async def _objects(self, plural: str, group: str, ns: str) -> list[Obj]:
        if group == "" and plural == "pods":
            return self.pods.by_index(NAMESPACE_INDEX, ns)
        if group == "" and plural in _CACHED:
            return (await self._cache(plural)).by_index(NAMESPACE_INDEX, ns)
        if group == "" and plural == "resourcequotas":
            return self.quotas.by_index(NAMESPACE_INDEX, ns)
        api_version = await self._api_version(plural, group)
        if api_version is None:
            return []
        try:
            out = await self.client.list(api_version, plural, namespace=ns)
        except StatusError:
            return []
        return list(out.get("items") or [])

    async def _cache(self, plural: str) -> Informer:
        inf = self.others.get(plural)
        if inf is None:
            inf = self.others[plural] = shared_informer(self.client, "v1", plural)
            ensure_index(inf, NAMESPACE_INDEX, namespace_index)
            inf.add_handler(on_delete=self._namespace_changed)
            self._own.append(inf)
            inf.start()
        await inf.wait_synced()
        return inf

    async def _api_version(self, plural: str, group: str) -> str | None:
        if group == "":
            return "v1"
        try:
            g = await self.client.request("GET", f"/apis/{group}")
        except StatusError:
            return None
        version = ((g or {}).get("preferredVersion") or {}).get("groupVersion")
        return str(version) if version else None

    async def used(self, quota: Obj) -> q.Usage:
        ns = quota["metadata"].get("namespace") or ""
        hard = list(((quota.get("spec") or {}).get("hard") or {}).keys())
        kinds = {r for r in (q.resource_of(n) for n in hard) if r is not None}
        usages: list[q.Usage] = []
        for plural, group in sorted(kinds):
            for obj in await self._objects(plural, group, ns):
                if (obj.get("metadata") or {}).get("deletionTimestamp") and plural == "pods":
                    continue
                usages.append(q.object_usage(plural, group, obj))
        return q.used_by(hard, usages)

    async def reconcile(self, key: str) -> Result | None:
        quota = self.quotas.get(key)
        if quota is None:
            return None
        status = quota_status(quota, await self.used(quota))
        if status_changed(quota, status):
            body = {**quota, "apiVersion": "v1", "kind": "ResourceQuota", "status": status}
            try:
                await self.client.update_status("v1", "resourcequotas", body)
            except StatusError as e:
                if e.code == 404:
                    return None
                if e.code == 409:  # admission charged it meanwhile: recompute
                    return Result(requeue=True)
                raise
        return Result(requeue_after=RESYNC)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        ensure_index(self.pods, NAMESPACE_INDEX, namespace_index)
        ensure_index(self.quotas, NAMESPACE_INDEX, namespace_index)
        self.quotas.add_handler(on_add=lambda o: self.queue.add(object_key(o)),
                                on_update=self._quota_updated)
        self.pods.add_handler(on_update=self._pod_updated, on_delete=self._namespace_changed)
        for inf in self._own:
            inf.start()
        self._tasks.append(spawn(self._run(), name="resourcequota-workers"))

    async def _run(self) -> None:
        for inf in (self.pods, *self._own):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="resourcequota-controller")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
