"""The objects a fresh cluster has, kept present by the API server itself: system
namespaces, the ``kubernetes`` Service and its endpoints, the default RBAC roles and
bindings, and in every namespace the ``kube-root-ca.crt`` ConfigMap and the ``default``
ServiceAccount."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from kybernetes.api import certificates, rbac, storage
from kybernetes.api.errors import StatusError
from kybernetes.api.registry import Resource
from kybernetes.apiserver import certs
from kybernetes.apiserver.context import Options
from kybernetes.store import StoreError

if TYPE_CHECKING:
    from kybernetes.apiserver.app import APIServer

log = logging.getLogger(__name__)
Obj = dict[str, Any]

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_MANAGER = Options(field_manager="kube-apiserver", field_validation="Ignore")


class Bootstrap:
    def __init__(self, server: APIServer, *, ca_pem: bytes, advertise_address: str,
                 port: int) -> None:
        self.server = server
        self.ca_pem = ca_pem.decode()
        self.address = advertise_address
        self.port = port
        server.after_write_hooks = [*getattr(server, "after_write_hooks", []),
                                    self.after_write]

    def _res(self, group: str, version: str, plural: str) -> Resource:
        res = self.server.ctx.registry.get(group, version, plural)
        assert res is not None
        return res

    async def _ensure(self, res: Resource, ns: str, obj: Obj) -> None:
        store = self.server.store(res)
        name = obj["metadata"]["name"]
        if await self.server.ctx.backend.get(res.key(ns, name)) is not None:
            return
        try:
            await store.create(ns, obj, Options(field_manager="kube-apiserver",
                                                field_validation="Ignore"))
        except StatusError as e:
            if e.code not in (409, 403, 404):
                raise

    async def ensure_namespace_objects(self, ns: str) -> None:
        await self._ensure(self._res("", "v1", "configmaps"), ns, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                         "annotations": {"kubernetes.io/description": (
                             "Contains a CA bundle that can be used to verify the "
                             "kube-apiserver when using internal endpoints such as the "
                             "internal service IP or kubernetes.default.svc. No other usage "
                             "is guaranteed across distributions of Kubernetes clusters.")}},
            "data": {"ca.crt": self.ca_pem}})
        await self._ensure(self._res("", "v1", "serviceaccounts"), ns, {
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": ns}})

    async def run(self) -> None:
        namespaces = self._res("", "v1", "namespaces")
        for ns in SYSTEM_NAMESPACES:
            await self._ensure(namespaces, "", {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": ns}})
        svc_ip = self.server.ctx.ips.first()
        await self._ensure(self._res("", "v1", "services"), "default", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": svc_ip, "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": self.port}]}})
        # upstream's bootstrap policy: cluster-admin for system:masters, discovery and
        # self reviews for everyone, and the admin/edit/view roles to bind
        for role in rbac.default_cluster_roles():
            await self._ensure(self._res(rbac.GROUP, "v1", "clusterroles"), "", role)
        for binding in rbac.default_cluster_role_bindings():
            await self._ensure(self._res(rbac.GROUP, "v1", "clusterrolebindings"), "", binding)
        # the node agents provision its volumes (a directory under their data dir)
        await self._ensure(self._res("storage.k8s.io", "v1", "storageclasses"), "", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": storage.DEFAULT_CLASS,
                         "annotations": {storage.ANN_DEFAULT_CLASS: "true"}},
            "provisioner": storage.LOCAL_PATH, "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"})
        if ipaddress.ip_address(self.address).is_loopback:
            # Endpoints may not name loopback addresses; pods could not use them anyway.
            log.info("advertise address %s is loopback: no endpoints for the kubernetes "
                     "Service", self.address)
        else:
            await self._ensure_endpoints()
        page = await self.server.ctx.backend.list(namespaces.key_prefix())
        for kv in page.items:
            if b'"deletionTimestamp"' not in kv.value:
                await self.ensure_namespace_objects(kv.key.rsplit("/", 1)[-1])

    async def ensure_join_token(self, path: Path) -> str:
        """The join token of a new cluster: on the first start, a bootstrap token (a
        kube-system Secret, no expiry) whose group may ask for node client certificates,
        written to ``path`` (mode 0600). Later starts read the file again and never
        recreate the Secret: deleting it revokes the token."""
        if path.exists():
            return path.read_text().strip()
        token = certificates.new_bootstrap_token()
        secret = certificates.bootstrap_token_secret(
            token, description="kyb agent join token, made by kyb server on its first start",
            extra_groups=[certificates.DEFAULT_NODE_TOKEN_GROUP])
        await self.server.store(self._res("", "v1", "secrets")).create(
            "kube-system", secret, _MANAGER)
        certs.write_private(path, token.encode() + b"\n")
        log.info("join token written to %s", path)
        return token

    async def _ensure_endpoints(self) -> None:
        """This server in the ``kubernetes`` Service's endpoints, now (then kept by
        :class:`APIServerEndpoints`)."""
        await APIServerEndpoints(self).sync()

    async def after_write(self, res: Resource, obj: Obj) -> None:
        if res.group == "" and res.kind == "Namespace" and \
                not obj["metadata"].get("deletionTimestamp"):
            await self.ensure_namespace_objects(obj["metadata"]["name"])


MEMBER_KEYS = "/kybernetes.io/apiservers/"
"""One key per live API server (``address:port``), rewritten every MEMBER_INTERVAL."""
MEMBER_INTERVAL = 5.0
MEMBER_TTL = 15.0
"""A server not heard of for this long is dropped from the ``kubernetes`` endpoints."""


class APIServerEndpoints:
    """The ``kubernetes`` Service's endpoints list every live API server of the cluster,
    as upstream's lease endpoint reconciler keeps them: each server renews a key of its
    own in the store and rewrites the endpoints when the set of live servers changed; a
    server stopped cleanly removes itself at once, a dead one is dropped after
    MEMBER_TTL."""

    def __init__(self, bootstrap: Bootstrap, *, clock: Callable[[], float] = time.time) -> None:
        self.server = bootstrap.server
        self.bootstrap = bootstrap
        self.me = f"{bootstrap.address}:{bootstrap.port}"
        self.now = clock

    async def heartbeat(self) -> None:
        backend = self.server.ctx.backend
        key = MEMBER_KEYS + self.me
        value = orjson.dumps({"address": self.bootstrap.address, "port": self.bootstrap.port,
                              "time": self.now()})
        kv = await backend.get(key)
        try:
            if kv is None:
                await backend.create(key, value)
            else:
                await backend.update(key, value, expected_revision=kv.mod_revision)
        except StoreError:
            pass  # another write raced this one: the next beat writes again

    async def live(self) -> list[tuple[str, int]]:
        """(address, port) of the servers heard of within MEMBER_TTL; forgets the others."""
        backend = self.server.ctx.backend
        out = []
        for kv in (await backend.list(MEMBER_KEYS)).items:
            try:
                doc = orjson.loads(kv.value)
                member = (str(doc["address"]), int(doc["port"]))
                fresh = self.now() - float(doc["time"]) <= MEMBER_TTL
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                member, fresh = ("", 0), False
            if fresh:
                out.append(member)
            else:
                with contextlib.suppress(StoreError):
                    await backend.delete(kv.key, expected_revision=kv.mod_revision)
        return sorted(out)

    async def sync(self) -> None:
        await self.heartbeat()
        await self.write(await self.live())

    async def write(self, members: list[tuple[str, int]]) -> None:
        """Make the Endpoints (one subset per port) and the EndpointSlice (the port most
        servers use) name ``members``."""
        by_port: dict[int, list[str]] = {}
        for address, port in members:
            by_port.setdefault(port, []).append(address)
        subsets = [{"addresses": [{"ip": a} for a in addrs],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
                   for port, addrs in sorted(by_port.items())]
        ep_res = self.bootstrap._res("", "v1", "endpoints")
        await self.bootstrap._ensure(ep_res, "default", {
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": subsets})
        await self._update(ep_res, "subsets", subsets)
        port, addrs = max(sorted(by_port.items()), key=lambda kv: len(kv[1])) \
            if by_port else (self.bootstrap.port, [])
        es_res = self.bootstrap._res("discovery.k8s.io", "v1", "endpointslices")
        endpoints = [{"addresses": [a], "conditions": {"ready": True}} for a in addrs]
        ports = [{"name": "https", "port": port, "protocol": "TCP"}]
        await self.bootstrap._ensure(es_res, "default", {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes",
                                    "endpointslice.kubernetes.io/managed-by":
                                        "endpointslicemirroring-controller.k8s.io"}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports})
        await self._update(es_res, "endpoints", endpoints, ports=ports)

    async def _update(self, res: Resource, field: str, value: Any, **more: Any) -> None:
        want = {field: value, **more}

        def change(obj: Obj) -> Obj | None:
            if all(obj.get(k) == v for k, v in want.items()):
                return None
            obj.update(want)
            return obj

        with contextlib.suppress(StatusError):
            await self.server.store(res).guaranteed_update("default", "kubernetes", change,
                                                           _MANAGER)

    async def run(self) -> None:
        """Keep this server in the endpoints (until cancelled)."""
        while True:
            await asyncio.sleep(MEMBER_INTERVAL)
            try:
                await self.sync()
            except Exception as e:  # the store may be away a while
                log.warning("the kubernetes Service's endpoints: %s", e)

    async def leave(self) -> None:
        """A clean stop: out of the endpoints now rather than after MEMBER_TTL."""
        backend = self.server.ctx.backend
        kv = await backend.get(MEMBER_KEYS + self.me)
        if kv is not None:
            with contextlib.suppress(StoreError):
                await backend.delete(kv.key, expected_revision=kv.mod_revision)
        members = [m for m in await self.live() if f"{m[0]}:{m[1]}" != self.me]
        if members:  # the last one leaves the endpoints as they were, as upstream
            await self.write(members)
