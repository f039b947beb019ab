"""The Endpoints controller: one ``v1`` Endpoints per Service with a selector.

For each Service (a key ``namespace/name``) it lists the pods the selector matches that
have an IP and are not terminal or being deleted, resolves every Service port's
``targetPort`` on each pod (a number, or a named container port), and writes the
Endpoints of the same name: ready pods under ``addresses``, the others under
``notReadyAddresses`` (all under ``addresses`` with ``publishNotReadyAddresses``),
grouped into subsets by port set (upstream's ``RepackSubsets``). The Endpoints carries
the Service's labels, ``endpoints.kubernetes.io/managed-by: endpoint-controller`` and the
``endpoints.kubernetes.io/last-change-trigger-time`` annotation. Services without a
selector are left alone (their Endpoints are the user's); a deleted Service's Endpoints
is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
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
from kybernetes.controllers import endpointutil as eu
from kybernetes.controllers import podutil
from kybernetes.controllers.replicaset import ensure_index

log = logging.getLogger(__name__)
Obj = dict[str, Any]

CONTROLLER_NAME = "endpoint-controller"
MANAGED_BY = "endpoints.kubernetes.io/managed-by"
PortKey = tuple[str, int, str]


def _endpoint_port(svc_port: Obj, number: int) -> Obj:
    out: Obj = {"port": number, "protocol": svc_port.get("protocol") or "TCP"}
    if svc_port.get("name"):
        out["name"] = svc_port["name"]
    if svc_port.get("appProtocol"):
        out["appProtocol"] = svc_port["appProtocol"]
    return out


def _address(pod: Obj, service: Obj) -> Obj:
    addr: Obj = {"ip": eu.pod_ip(pod), "targetRef": eu.target_ref(pod)}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        addr["nodeName"] = node
    if eu.should_set_hostname(pod, service):
        addr["hostname"] = pod["spec"]["hostname"]
    return addr


def _port_key(port: Obj) -> PortKey:
    return str(port.get("name") or ""), int(port.get("port") or 0), str(port.get("protocol"))


def endpoint_subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    """The subsets of the Service's Endpoints, given the pods its selector matches:
    addresses with the same resolved ports share a subset (upstream's ``RepackSubsets``)."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    svc_ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    port_objs: dict[PortKey, Obj] = {}
    # (ip, pod uid) -> (address, its ports, ready)
    found: dict[tuple[str, str], tuple[Obj, set[PortKey], bool]] = {}
    for pod in pods:
        if not eu.should_be_in_endpoints(pod, include_terminating=publish):
            continue
        ports: set[PortKey] = set()
        for svc_port in svc_ports:
            number = eu.find_port(pod, svc_port)
            if number is not None:
                ep_port = _endpoint_port(svc_port, number)
                port_objs[_port_key(ep_port)] = ep_port
                ports.add(_port_key(ep_port))
        if not ports and (svc_ports or not headless):  # only headless Services go portless
            continue
        addr = _address(pod, service)
        found[(addr["ip"], str(addr["targetRef"].get("uid") or ""))] = (
            addr, ports, publish or podutil.is_ready(pod))
    groups: dict[tuple[PortKey, ...], list[tuple[Obj, bool]]] = {}
    for key in sorted(found):
        addr, ports, ready = found[key]
        groups.setdefault(tuple(sorted(ports)), []).append((addr, ready))
    subsets: list[Obj] = []
    for ports_key in sorted(groups):
        subset: Obj = {}
        ready_addrs = [a for a, r in groups[ports_key] if r]
        not_ready = [a for a, r in groups[ports_key] if not r]
        if ready_addrs:
            subset["addresses"] = ready_addrs
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if ports_key:
            subset["ports"] = [port_objs[k] for k in ports_key]
        subsets.append(subset)
    return subsets


def desired_labels(service: Obj) -> dict[str, str]:
    return {**eu.service_labels(service), MANAGED_BY: CONTROLLER_NAME}


class EndpointsController:
    def __init__(self, client: Client, *, workers: int = 2, pods: Informer | None = None,
                 services: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.pods = pods or shared_informer(client, "v1", "pods")
        self.services = services or shared_informer(client, "v1", "services")
        self.endpoints = shared_informer(client, "v1", "endpoints")
        self._own = [inf for inf, given in ((self.pods, pods), (self.services, services))
                     if given is None] + [self.endpoints]
        self.queue: WorkQueue[str] = WorkQueue(name="endpoints")
        self._tasks: list[asyncio.Task[Any]] = []

    # -- events in ---------------------------------------------------------------------

    def _pod_changed(self, *pods: Obj) -> None:
        keys: set[str] = set()
        for pod in pods:
            keys |= eu.services_for_pod(self.services, pod)
        for key in keys:
            self.queue.add(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if old["metadata"].get("resourceVersion") != new["metadata"].get("resourceVersion"):
            self._pod_changed(old, new)

    # -- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result | None:
        try:
            return await self._reconcile(key)
        except StatusError as e:
            if e.code == 409:  # a stale cache: look again
                return Result(requeue=True)
            if e.code == 403 and "being terminated" in e.message:
                return None
            raise

    async def _reconcile(self, key: str) -> Result | None:
        ns, _, name = key.partition("/")
        service = self.services.get(key)
        if service is None:
            if self.endpoints.get(key) is not None:
                with contextlib.suppress(StatusError):
                    await self.client.delete("v1", "endpoints", name, namespace=ns)
            return None
        if not (service.get("spec") or {}).get("selector"):
            return None
        pods = eu.selected_pods(self.pods, service)
        subsets = endpoint_subsets(service, pods)
        labels = desired_labels(service)
        current = self.endpoints.get(key)
        if current is not None and (current.get("subsets") or []) == subsets and \
                (current["metadata"].get("labels") or {}) == labels:
            return None
        md: Obj = {"name": name, "namespace": ns, "labels": labels}
        annotations = dict((current or {}).get("metadata", {}).get("annotations") or {})
        annotations.pop(eu.TRIGGER_TIME, None)
        trigger = eu.trigger_time(service, pods)
        if trigger is not None:
            annotations[eu.TRIGGER_TIME] = trigger
        if annotations:
            md["annotations"] = annotations
        body: Obj = {"apiVersion": "v1", "kind": "Endpoints", "metadata": md,
                     "subsets": subsets}
        if current is None:
            await self.client.create("v1", "endpoints", body, namespace=ns)
        else:
            md["resourceVersion"] = current["metadata"].get("resourceVersion")
            await self.client.update("v1", "endpoints", body, namespace=ns)
        return None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        ensure_index(self.pods, NAMESPACE_INDEX, namespace_index)
        ensure_index(self.services, NAMESPACE_INDEX, namespace_index)
        self.services.add_handler(on_add=lambda s: self.queue.add(object_key(s)),
                                  on_update=lambda old, new: self.queue.add(object_key(new)),
                                  on_delete=lambda s: self.queue.add(object_key(s)))
        self.endpoints.add_handler(on_delete=lambda ep: self.queue.add(object_key(ep)))
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated,
                              on_delete=self._pod_changed)
        for inf in self._own:
            inf.start()
        self._tasks.append(spawn(self._run(), name="endpoints-workers"))

    async def _run(self) -> None:
        for inf in (self.pods, self.services, self.endpoints):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="endpoints-controller")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
