"""The namespace controller: empties a namespace being deleted, then finalizes it.

When a Namespace has a ``deletionTimestamp``, every namespaced resource the server
serves is deleted in it (``deletecollection``); once nothing is left the ``kubernetes``
finalizer is removed through ``/finalize`` and the API server removes the Namespace.
Objects that take time to go (graceful pods, finalizers) make it try again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import rfc3339
from kybernetes.client import Client, Result, WorkQueue, run_workers, shared_informer
from kybernetes.client.discovery import discover

log = logging.getLogger(__name__)
Obj = dict[str, Any]

FINALIZER = "kubernetes"
_RETRY_SECONDS = 2.0


class NamespaceController:
    def __init__(self, client: Client, *, workers: int = 2) -> None:
        self.client = client
        self.workers = workers
        self.informer = shared_informer(client, "v1", "namespaces")
        self.queue: WorkQueue[str] = WorkQueue()
        self._tasks: list[asyncio.Task[Any]] = []

    def _enqueue(self, obj: Obj) -> None:
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            self.queue.add(obj["metadata"]["name"])

    async def reconcile(self, name: str) -> Result | None:
        ns = self.informer.get(name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return None
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return None
        remaining = 0
        failures: list[str] = []
        for r in await discover(self.client):
            if not r.namespaced or not {"list", "deletecollection"} <= r.verbs:
                continue
            try:
                await self.client.request(
                    "DELETE", f"/{'api' if not r.group else 'apis/' + r.group}/{r.version}"
                    f"/namespaces/{name}/{r.plural}", body={"kind": "DeleteOptions",
                                                             "apiVersion": "v1",
                                                             "propagationPolicy": "Background"})
                left = await self.client.list(r.api_version, r.plural, namespace=name,
                                              limit=1)
            except StatusError as e:
                if e.code in (404, 405):
                    continue
                failures.append(f"{r.plural}.{r.group}: {e.message}")
                continue
            if left.get("items"):
                remaining += 1
        await self._set_conditions(ns, remaining, failures)
        if remaining or failures:
            return Result(requeue_after=_RETRY_SECONDS)
        spec = dict(ns.get("spec") or {})
        spec["finalizers"] = [f for f in spec.get("finalizers") or [] if f != FINALIZER]
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name,
                             "resourceVersion": ns["metadata"].get("resourceVersion")},
                "spec": spec}
        try:
            await self.client.request("PUT", f"/api/v1/namespaces/{name}/finalize", body=body)
        except StatusError as e:
            if e.code == 404:
                return None
            if e.code == 409:
                return Result(requeue_after=0.2)
            raise
        return None

    async def _set_conditions(self, ns: Obj, remaining: int, failures: list[str]) -> None:
        now = rfc3339()
        conds = [
            {"type": "NamespaceDeletionDiscoveryFailure", "status": "False",
             "lastTransitionTime": now, "reason": "ResourcesDiscovered",
             "message": "All resources successfully discovered"},
            {"type": "NamespaceDeletionContentFailure",
             "status": "True" if failures else "False", "lastTransitionTime": now,
             "reason": "ContentDeletionFailed" if failures else "ContentDeleted",
             "message": "; ".join(failures) if failures else
             "All content successfully deleted, may be waiting on finalization"},
            {"type": "NamespaceContentRemaining", "status": "True" if remaining else "False",
             "lastTransitionTime": now,
             "reason": "SomeResourcesRemain" if remaining else "ContentRemoved",
             "message": f"Some resources are remaining: {remaining} resource types have "
                        "objects left" if remaining else "All content successfully removed"},
        ]
        old = {c.get("type"): c for c in (ns.get("status") or {}).get("conditions") or []}
        if all(old.get(c["type"], {}).get("status") == c["status"] for c in conds):
            return
        with contextlib.suppress(StatusError):
            await self.client.patch("v1", "namespaces", ns["metadata"]["name"],
                                    {"status": {"phase": "Terminating", "conditions": conds}},
                                    patch_type="merge", subresource="status")

    async def start(self) -> None:
        self.informer.add_handler(on_add=self._enqueue,
                                  on_update=lambda old, new: self._enqueue(new))
        self.informer.start()
        self._tasks.append(spawn(run_workers(self.queue, self.reconcile, workers=self.workers),
                                 name="namespace-workers"))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.informer.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
