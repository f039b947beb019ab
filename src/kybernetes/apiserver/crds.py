"""Serving CustomResourceDefinitions: register their APIs, set their conditions, and on
deletion remove their objects (the ``customresourcecleanup`` finalizer) and their API."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from kybernetes.aio.tasks import spawn
from kybernetes.api import crd as crdapi
from kybernetes.api.errors import StatusError
from kybernetes.api.registry import Resource
from kybernetes.apiserver.context import Options

if TYPE_CHECKING:
    from kybernetes.apiserver.app import APIServer

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class CRDManager:
    def __init__(self, server: APIServer) -> None:
        self.server = server
        self.ctx = server.ctx
        self.served: dict[str, list[Resource]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        res = self.ctx.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert res is not None
        self.crd_res = res
        server.after_write_hooks = [*getattr(server, "after_write_hooks", []), self.after_write]
        server.after_delete_hooks = [*getattr(server, "after_delete_hooks", []),
                                     self.after_delete]

    async def start(self) -> None:
        """Serve every stored CRD (at start-up)."""
        page = await self.ctx.backend.list("/registry/apiextensions.k8s.io/"
                                           "customresourcedefinitions/")
        for kv in page.items:
            obj = orjson.loads(kv.value)
            obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
            await self.after_write(self.crd_res, obj)

    def conflict(self, crd: Obj) -> str:
        spec = crd.get("spec") or {}
        group = spec.get("group", "")
        names = spec.get("names") or {}
        mine = {r for r in self.served.get(crd["metadata"]["name"], [])}
        for r in self.ctx.registry.resources(group):
            if r in mine:
                continue
            if r.plural == names.get("plural"):
                return f'"{r.plural}" is already in use'
            if r.kind == names.get("kind") and r.crd:
                return f'"{r.kind}" is already in use'
        return ""

    def register(self, crd: Obj) -> None:
        name = crd["metadata"]["name"]
        self.unregister(name)
        resources = crdapi.resources_for(crd, self.ctx.compiler)
        stored = crdapi.storage_version(crd)
        for r in resources:
            self.ctx.registry.add(r, preferred=r.version == stored)
        self.served[name] = resources

    def unregister(self, name: str) -> None:
        for r in self.served.pop(name, []):
            self.ctx.registry.remove(r.group, r.version, r.plural)
            self.server.forget(r)

    async def after_write(self, res: Resource, obj: Obj) -> None:
        if res.group != "apiextensions.k8s.io" or res.kind != "CustomResourceDefinition":
            return
        conflict = self.conflict(obj)
        if not conflict:
            self.register(obj)
        if obj["metadata"].get("deletionTimestamp"):
            self._spawn(self.cleanup(obj), f"crd-cleanup-{obj['metadata']['name']}")
            return
        want = crdapi.established_status(obj, self.ctx.clock.now(), conflict=conflict)
        if (obj.get("status") or {}) != want or \
                crdapi.CLEANUP_FINALIZER not in (obj["metadata"].get("finalizers") or []):
            self._spawn(self.set_status(obj["metadata"]["name"], conflict),
                        f"crd-status-{obj['metadata']['name']}")

    async def after_delete(self, res: Resource, obj: Obj) -> None:
        if res.group == "apiextensions.k8s.io" and res.kind == "CustomResourceDefinition":
            if obj["metadata"].get("deletionTimestamp") and \
                    obj["metadata"].get("finalizers"):
                await self.after_write(res, obj)
            else:
                self.unregister(obj["metadata"]["name"])

    def _spawn(self, coro: Any, name: str) -> None:
        task = spawn(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def set_status(self, name: str, conflict: str) -> None:
        store = self.server.store(self.crd_res)
        opts = Options(field_manager="kube-apiserver")

        def update(crd: Obj) -> Obj | None:
            fins = crd["metadata"].setdefault("finalizers", [])
            if crdapi.CLEANUP_FINALIZER not in fins and not crd["metadata"].get(
                    "deletionTimestamp"):
                fins.append(crdapi.CLEANUP_FINALIZER)
            return crd

        def status(crd: Obj) -> Obj | None:
            want = crdapi.established_status(crd, self.ctx.clock.now(), conflict=conflict)
            if crd.get("status") == want:
                return None
            crd["status"] = want
            return crd

        try:
            await store.guaranteed_update("", name, update, opts)
            await store.guaranteed_update("", name, status, opts, subresource="status")
        except StatusError as e:
            if e.code != 404:
                log.warning("could not update CRD %s status: %s", name, e.message)

    async def cleanup(self, crd: Obj) -> None:
        """Delete every object of the CRD, then drop the finalizer (and the API)."""
        name = crd["metadata"]["name"]
        spec = crd.get("spec") or {}
        prefix = f"/registry/{spec.get('group')}/{spec.get('names', {}).get('plural')}/"
        backend = self.ctx.backend
        while True:
            page = await backend.list(prefix, limit=500)
            for kv in page.items:
                try:
                    await backend.delete(kv.key)
                except Exception:
                    continue
            if not page.more and not page.items:
                break
        store = self.server.store(self.crd_res)

        def drop(obj: Obj) -> Obj | None:
            fins = [f for f in obj["metadata"].get("finalizers") or []
                    if f != crdapi.CLEANUP_FINALIZER]
            if fins == (obj["metadata"].get("finalizers") or []):
                return None
            obj["metadata"]["finalizers"] = fins
            return obj

        try:
            await store.guaranteed_update("", name, drop, Options(field_manager="kube-apiserver"))
        except StatusError as e:
            if e.code != 404:
                raise
        if await backend.get(self.crd_res.key("", name)) is None:
            self.unregister(name)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
