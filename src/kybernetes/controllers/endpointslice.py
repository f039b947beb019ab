"""The EndpointSlice controller: ``discovery.k8s.io/v1`` EndpointSlices per Service.

For each Service with a selector (not ExternalName) it turns every matching pod with an
IP of the Service's address family (the first of ``ipFamilies``, IPv4 by default) and
not terminal into an endpoint: its address, conditions (``serving`` = pod ready,
``terminating`` = being deleted, ``ready`` = serving and not terminating, or always with
``publishNotReadyAddresses``), nodeName, zone (the node's
``topology.kubernetes.io/zone``), hostname and targetRef. Endpoints with the same
resolved ports share slices of at most :data:`MAX_ENDPOINTS_PER_SLICE`, named by the
server from ``<service>-``, labelled ``kubernetes.io/service-name`` and
``endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`` and owned by
the Service (the garbage collector removes them with it). Existing slices keep their
endpoints where they can, new endpoints fill free room before a new slice is made, and
a Service with no endpoints gets one empty placeholder slice, as upstream.

Writes are remembered until the slice informer has seen them, so a stale cache never
makes a second slice for the same endpoints (upstream's ``EndpointSliceTracker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
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

API_VERSION = "discovery.k8s.io/v1"
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
ZONE = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
SERVICE_INDEX = "service-name"
_MISSING_NODE_RETRY = 1.0
_STALE_CACHE_RETRY = 0.2
_STALE_CACHE_GIVE_UP = 10.0
PortsKey = tuple[tuple[str, int, str, str], ...]


def address_type(service: Obj) -> str:
    families = (service.get("spec") or {}).get("ipFamilies") or ["IPv4"]
    return str(families[0])


def _pod_address(pod: Obj, family: str) -> str | None:
    status = pod.get("status") or {}
    ips = [str(i.get("ip")) for i in status.get("podIPs") or [] if i.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    for ip in ips:
        if (":" in ip) == (family == "IPv6"):
            return ip
    return None


def endpoint_ports(service: Obj, pod: Obj) -> list[Obj]:
    """The Service's ports resolved on the pod, in the Service's order."""
    out: list[Obj] = []
    for svc_port in (service.get("spec") or {}).get("ports") or []:
        number = eu.find_port(pod, svc_port)
        if number is None:
            continue
        port: Obj = {"name": svc_port.get("name") or "", "port": number,
                     "protocol": svc_port.get("protocol") or "TCP"}
        if svc_port.get("appProtocol"):
            port["appProtocol"] = svc_port["appProtocol"]
        out.append(port)
    return out


def ports_key(ports: list[Obj]) -> PortsKey:
    return tuple(sorted((str(p.get("name") or ""), int(p.get("port") or 0),
                         str(p.get("protocol") or "TCP"), str(p.get("appProtocol") or ""))
                        for p in ports))


def pod_endpoint(service: Obj, pod: Obj, ip: str, node: Obj | None) -> Obj:
    """Upstream's ``podToEndpoint``."""
    serving = podutil.is_ready(pod)
    terminating = bool(pod["metadata"].get("deletionTimestamp"))
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    ep: Obj = {"addresses": [ip],
               "conditions": {"ready": publish or (serving and not terminating),
                              "serving": serving, "terminating": terminating}}
    if eu.should_set_hostname(pod, service):
        ep["hostname"] = pod["spec"]["hostname"]
    ep["targetRef"] = eu.target_ref(pod)
    node_name = (pod.get("spec") or {}).get("nodeName")
    if node_name:
        ep["nodeName"] = node_name
    zone = ((node or {}).get("metadata") or {}).get("labels", {}).get(ZONE)
    if zone:
        ep["zone"] = zone
    return ep


@dataclass
class Desired:
    """What one Service's pods make: endpoints grouped by their ports."""

    ports: dict[PortsKey, list[Obj]] = field(default_factory=dict)
    endpoints: dict[PortsKey, list[Obj]] = field(default_factory=dict)
    missing_node: bool = False


def desired_endpoints(service: Obj, pods: list[Obj], nodes: dict[str, Obj]) -> Desired:
    """The endpoints the pods make; a pod on a node not (yet) known is left out and
    ``missing_node`` set, so the Service is looked at again."""
    out = Desired()
    family = address_type(service)
    for pod in pods:
        if not eu.should_be_in_endpoints(pod, include_terminating=True):
            continue
        ip = _pod_address(pod, family)
        if ip is None:
            continue
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = nodes.get(node_name) if node_name else None
        if node_name and node is None:
            out.missing_node = True
            continue
        ports = endpoint_ports(service, pod)
        key = ports_key(ports)
        out.ports.setdefault(key, ports)
        out.endpoints.setdefault(key, []).append(pod_endpoint(service, pod, ip, node))
    return out


def _ep_key(ep: Obj) -> tuple[str, str]:
    return (str((ep.get("addresses") or [""])[0]),
            str((ep.get("targetRef") or {}).get("uid") or ""))


@dataclass
class Plan:
    """Slices to create (ports, endpoints), to update (slice, endpoints), to delete."""

    create: list[tuple[list[Obj], list[Obj]]] = field(default_factory=list)
    update: list[tuple[Obj, list[Obj]]] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)
    keep: list[Obj] = field(default_factory=list)


def plan_slices(existing: list[Obj], desired: Desired, *,
                max_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> Plan:
    """How to turn ``existing`` slices into ``desired``, moving as few endpoints as
    possible: endpoints stay in the slice that holds them, new ones fill free room
    first, and empty slices go (but for one placeholder when nothing is desired)."""
    plan = Plan()
    by_ports: dict[PortsKey, list[Obj]] = {}
    for es in sorted(existing, key=lambda s: str(s["metadata"]["name"])):
        by_ports.setdefault(ports_key(es.get("ports") or []), []).append(es)
    for key, slices in by_ports.items():
        if key not in desired.endpoints:
            plan.delete += slices
    for key, endpoints in sorted(desired.endpoints.items()):
        wanted = {_ep_key(ep): ep for ep in endpoints}
        placed: set[tuple[str, str]] = set()
        kept: list[tuple[Obj, list[Obj]]] = []
        for es in by_ports.get(key, []):
            stay: list[Obj] = []
            for ep in es.get("endpoints") or []:
                k = _ep_key(ep)
                if k in wanted and k not in placed and len(stay) < max_per_slice:
                    placed.add(k)
                    stay.append(wanted[k])
            if stay:
                kept.append((es, stay))
            else:
                plan.delete.append(es)
        rest = [wanted[k] for k in sorted(wanted) if k not in placed]
        for es, stay in kept:
            room = max_per_slice - len(stay)
            if room > 0 and rest:
                stay += rest[:room]
                rest = rest[room:]
            if stay == (es.get("endpoints") or []):
                plan.keep.append(es)
            else:
                plan.update.append((es, stay))
        for i in range(0, len(rest), max_per_slice):
            plan.create.append((desired.ports[key], rest[i:i + max_per_slice]))
    if not desired.endpoints:
        placeholder = next((es for es in plan.delete if not es.get("endpoints")
                            and not es.get("ports")), None)
        if placeholder is not None:
            plan.delete.remove(placeholder)
            plan.keep.append(placeholder)
        else:
            plan.create.append(([], []))
    return plan


def service_index(es: Obj) -> list[str]:
    """``namespace/service`` of the slices this controller manages."""
    labels = (es.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY) != CONTROLLER_NAME or not labels.get(SERVICE_NAME):
        return []
    return [f"{es['metadata'].get('namespace')}/{labels[SERVICE_NAME]}"]


def _rv(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class EndpointSliceController:
    def __init__(self, client: Client, *, workers: int = 2, clock: Clock = SYSTEM_CLOCK,
                 pods: Informer | None = None, services: Informer | None = None,
                 nodes: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.clock = clock
        self.pods = pods or shared_informer(client, "v1", "pods")
        self.services = services or shared_informer(client, "v1", "services")
        self.nodes = nodes or shared_informer(client, "v1", "nodes")
        self.slices = Informer(client, API_VERSION, "endpointslices")
        self._own = [inf for inf, given in ((self.pods, pods), (self.services, services),
                                            (self.nodes, nodes)) if given is None]
        self._own.append(self.slices)
        self.queue: WorkQueue[str] = WorkQueue(name="endpointslice")
        # service key -> (when, {slice name: resourceVersion written, 0 for deleted})
        self._written: dict[str, tuple[float, dict[str, int]]] = {}
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

    def _slice_changed(self, es: Obj) -> None:
        for key in service_index(es):
            self.queue.add(key)

    # -- reconcile ---------------------------------------------------------------------

    def _cache_fresh(self, key: str) -> bool:
        """Whether the slice informer has seen this controller's last writes for ``key``."""
        entry = self._written.get(key)
        if entry is None:
            return True
        when, written = entry
        ns = key.partition("/")[0]
        for name, rv in written.items():
            cached = self.slices.get(f"{ns}/{name}")
            seen = cached is None if rv == 0 else \
                cached is not None and _rv(cached["metadata"].get("resourceVersion")) >= rv
            if not seen and self.clock.now() - when < _STALE_CACHE_GIVE_UP:
                return False
        del self._written[key]
        return True

    async def reconcile(self, key: str) -> Result | None:
        try:
            return await self._reconcile(key)
        except StatusError as e:
            if e.code == 409:
                return Result(requeue=True)
            if e.code == 403 and "being terminated" in e.message:
                return None
            raise

    async def _reconcile(self, key: str) -> Result | None:
        service = self.services.get(key)
        if service is None:
            self._written.pop(key, None)
            return None  # the garbage collector deletes the slices it owns
        spec = service.get("spec") or {}
        if not spec.get("selector"):
            return None
        if not self._cache_fresh(key):
            return Result(requeue_after=_STALE_CACHE_RETRY)
        existing = self.slices.by_index(SERVICE_INDEX, key)
        if spec.get("type") == "ExternalName":
            for es in existing:
                await self._delete(key, es)
            return None
        family = address_type(service)
        existing = [es for es in existing if es.get("addressType") == family]
        pods = eu.selected_pods(self.pods, service)
        nodes = {n["metadata"]["name"]: n for n in self.nodes.list()}
        desired = desired_endpoints(service, pods, nodes)
        plan = plan_slices(existing, desired)
        labels = self._labels(service)
        trigger = eu.trigger_time(service, pods)
        for es in plan.delete:
            await self._delete(key, es)
        for es, endpoints in plan.update:
            await self._write(key, service, es, es.get("ports") or [], endpoints, labels,
                              trigger)
        for es in plan.keep:
            if (es["metadata"].get("labels") or {}) != labels:
                await self._write(key, service, es, es.get("ports") or [],
                                  es.get("endpoints") or [], labels, trigger)
        for ports, endpoints in plan.create:
            await self._write(key, service, None, ports, endpoints, labels, trigger)
        if desired.missing_node:
            return Result(requeue_after=_MISSING_NODE_RETRY)
        return None

    def _labels(self, service: Obj) -> dict[str, str]:
        return {**eu.service_labels(service), SERVICE_NAME: service["metadata"]["name"],
                MANAGED_BY: CONTROLLER_NAME}

    def _remember(self, key: str, name: str, rv: int) -> None:
        _, written = self._written.get(key, (0.0, {}))
        written[name] = rv
        self._written[key] = (self.clock.now(), written)

    async def _delete(self, key: str, es: Obj) -> None:
        md = es["metadata"]
        try:
            await self.client.delete(API_VERSION, "endpointslices", md["name"],
                                     namespace=md.get("namespace"))
        except StatusError as e:
            if e.code != 404:
                raise
        self._remember(key, md["name"], 0)

    async def _write(self, key: str, service: Obj, es: Obj | None, ports: list[Obj],
                     endpoints: list[Obj], labels: dict[str, str], trigger: str | None
                     ) -> None:
        smd = service["metadata"]
        md: Obj = {"namespace": smd.get("namespace"), "labels": labels,
                   "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                                        "name": smd["name"], "uid": smd.get("uid"),
                                        "controller": True, "blockOwnerDeletion": True}]}
        annotations = dict(((es or {}).get("metadata") or {}).get("annotations") or {})
        annotations.pop(eu.TRIGGER_TIME, None)
        if trigger is not None:
            annotations[eu.TRIGGER_TIME] = trigger
        if annotations:
            md["annotations"] = annotations
        body: Obj = {"apiVersion": API_VERSION, "kind": "EndpointSlice", "metadata": md,
                     "addressType": address_type(service), "endpoints": endpoints,
                     "ports": ports}
        if es is None:
            md["generateName"] = f"{smd['name'][:62]}-"
            out = await self.client.create(API_VERSION, "endpointslices", body,
                                           namespace=smd.get("namespace"))
        else:
            md["name"] = es["metadata"]["name"]
            md["resourceVersion"] = es["metadata"].get("resourceVersion")
            out = await self.client.update(API_VERSION, "endpointslices", body,
                                           namespace=smd.get("namespace"))
        self._remember(key, out["metadata"]["name"],
                       max(1, _rv(out["metadata"].get("resourceVersion"))))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        ensure_index(self.pods, NAMESPACE_INDEX, namespace_index)
        ensure_index(self.services, NAMESPACE_INDEX, namespace_index)
        ensure_index(self.slices, SERVICE_INDEX, service_index)
        self.services.add_handler(on_add=lambda s: self.queue.add(object_key(s)),
                                  on_update=lambda old, new: self.queue.add(object_key(new)),
                                  on_delete=lambda s: self.queue.add(object_key(s)))
        self.slices.add_handler(on_delete=self._slice_changed)
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated,
                              on_delete=self._pod_changed)
        for inf in self._own:
            inf.start()
        self._tasks.append(spawn(self._run(), name="endpointslice-workers"))

    async def _run(self) -> None:
        for inf in (self.pods, self.services, self.nodes, self.slices):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="endpointslice-controller")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
