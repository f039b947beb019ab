"""The service load balancer controller: addresses for ``type: LoadBalancer`` Services on
machines without a cloud, the way k3s's ServiceLB (klipper-lb) gives them.

A LoadBalancer Service (without ``spec.loadBalancerClass``) gets the addresses of the
Ready nodes that run a service proxy (the fake nodes of ``--fake-nodes`` do not) as
``status.loadBalancer.ingress``; every such node's proxy then serves the Service's
ports on each of its local addresses. A port is one Service's: a Service that asks for
a protocol and port an older LoadBalancer Service already holds gets no address (it
stays ``<pending>``, with an event saying why) until that port is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.client import Client, Informer, Result, WorkQueue, run_workers, shared_informer
from kybernetes.client.events import EventRecorder

log = logging.getLogger(__name__)
Obj = dict[str, Any]

FAKE_NODE_LABEL = "kybernetes.io/fake-node"
_ALL = "all"


def node_addresses(nodes: list[Obj]) -> list[str]:
    """The addresses load balancers answer on: each Ready real node's ExternalIP, else
    its InternalIP."""
    out: list[str] = []
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        if FAKE_NODE_LABEL in (node["metadata"].get("labels") or {}):
            continue
        conds = (node.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
            continue
        addrs = (node.get("status") or {}).get("addresses") or []
        for kind in ("ExternalIP", "InternalIP"):
            ip = next((a["address"] for a in addrs if a.get("type") == kind), "")
            if ip:
                out.append(ip)
                break
    return list(dict.fromkeys(out))


def _is_load_balancer(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("type") == "LoadBalancer"


def wanted_ingress(services: list[Obj], addresses: list[str]
                   ) -> dict[str, tuple[list[Obj], str]]:
    """``namespace/name`` of each LoadBalancer Service -> (its ingress, why it has none)."""
    lbs = [s for s in services if (s.get("spec") or {}).get("type") == "LoadBalancer"
           and not s["spec"].get("loadBalancerClass")]
    lbs.sort(key=lambda s: (s["metadata"].get("creationTimestamp") or "",
                            s["metadata"].get("namespace", ""), s["metadata"]["name"]))
    held: dict[tuple[str, int], str] = {}
    out: dict[str, tuple[list[Obj], str]] = {}
    for svc in lbs:
        key = f"{svc['metadata'].get('namespace', '')}/{svc['metadata']['name']}"
        ports = {(p.get("protocol") or "TCP", int(p.get("port") or 0))
                 for p in svc["spec"].get("ports") or []}
        taken = sorted(f"{port}/{proto}" for proto, port in ports if (proto, port) in held)
        if taken:
            owner = held[next((proto, port) for proto, port in sorted(ports)
                              if (proto, port) in held)]
            out[key] = ([], f"port {', '.join(taken)} is already used by LoadBalancer "
                            f"Service {owner}")
            continue
        for p in ports:
            held[p] = key
        out[key] = ([{"ip": ip} for ip in addresses],
                    "" if addresses else "no Ready node runs a service proxy")
    return out


class ServiceLBController:
    def __init__(self, client: Client, *, services: Informer | None = None) -> None:
        self.client = client
        self.services = services or shared_informer(client, "v1", "services")
        self._own = services is None
        self.nodes = shared_informer(client, "v1", "nodes")
        self.queue: WorkQueue[str] = WorkQueue(name="service-lb")
        self.recorder = EventRecorder(client, "service-lb-controller")
        self._tasks: list[asyncio.Task[Any]] = []
        self._pending: dict[str, str] = {}

    def _service_changed(self, *objs: Obj) -> None:
        """Only LoadBalancer Services (before or after the change) matter."""
        if any(_is_load_balancer(o) for o in objs):
            self.queue.add(_ALL)

    def _node_added_or_deleted(self, node: Obj) -> None:
        if node_addresses([node]):
            self.queue.add(_ALL)

    def _node_updated(self, old: Obj, new: Obj) -> None:
        """Only a change of the address a node offers (Ready, real, its IP) matters: not
        the status a node posts every few minutes (5,000 fake nodes: ~17 a second)."""
        if node_addresses([old]) != node_addresses([new]):
            self.queue.add(_ALL)

    async def reconcile(self, _key: str) -> Result | None:
        services = self.services.list()
        if not any(_is_load_balancer(s) for s in services):
            return None
        wanted = wanted_ingress(services, node_addresses(self.nodes.list()))
        for key, (ingress, why) in wanted.items():
            svc = self.services.get(key)
            if svc is None:
                continue
            current = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if why and self._pending.get(key) != why:
                self.recorder.post(svc, "Warning", "LoadBalancerPending", why)
            self._pending[key] = why
            if current == ingress:
                continue
            ns, _, name = key.partition("/")
            try:
                await self.client.patch("v1", "services", name, namespace=ns,
                                        subresource="status",
                                        patch={"status": {"loadBalancer": {"ingress":
                                                                           ingress or None}}})
            except StatusError as e:
                if e.code != 404:
                    raise
        return None

    async def start(self) -> None:
        self.services.add_handler(on_add=self._service_changed,
                                  on_update=self._service_changed,
                                  on_delete=self._service_changed)
        self.nodes.add_handler(on_add=self._node_added_or_deleted, on_update=self._node_updated,
                               on_delete=self._node_added_or_deleted)
        if self._own:
            self.services.start()
        self.nodes.start()
        self._tasks.append(spawn(self._run(), name="service-lb-workers"))

    async def _run(self) -> None:
        await self.services.wait_synced()
        await self.nodes.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=1, name="service-lb")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        if self._own:
            await self.services.stop()
        await self.nodes.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
