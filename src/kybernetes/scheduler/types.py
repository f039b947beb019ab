"""What the scheduler knows of pods and nodes, parsed once: a pod's requests, ports,
affinity terms; a node's allocatable, what its pods request, the ports they use.

``PodInfo`` wraps a pod dict; ``NodeInfo`` aggregates a node and the pods on it (bound
or assumed). Both are built by the cache and read by plugins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import orjson

from kybernetes.api import gpushare
from kybernetes.api.meta import parse_time
from kybernetes.api.scheduling import NodeSelector, Resources, pod_requests, resource_list
from kybernetes.api.selectors import LabelSelector, SelectorError, from_label_selector
from kybernetes.api.storage import claims_of

if TYPE_CHECKING:
    from kybernetes.scheduler.nodetable import NodeTable

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A pod (anti-)affinity term, parsed: which pods it selects and over what domain."""

    namespaces: frozenset[str]
    selector: LabelSelector
    topology_key: str
    namespace_selector: LabelSelector | None = None
    weight: int = 0

    def matches(self, pod: PodInfo, ns_labels: Mapping[str, str] | None) -> bool:
        """Whether ``pod`` is one of the pods this term selects."""
        if pod.namespace in self.namespaces or (
                self.namespace_selector is not None and ns_labels is not None
                and self.namespace_selector.matches(ns_labels)):
            return self.selector.matches(pod.labels)
        return False


_TERMS: dict[tuple[str, bytes, int], AffinityTerm] = {}
"""Parsed terms by (namespace, term, weight): the replicas of a workload share one object
(and the affinity plugin decides once per object)."""


def _affinity_term(pod_ns: str, term: Mapping[str, Any], weight: int = 0) -> AffinityTerm:
    key = (pod_ns, orjson.dumps(term, option=orjson.OPT_SORT_KEYS), weight)
    known = _TERMS.get(key)
    if known is None:
        if len(_TERMS) >= 4096:
            _TERMS.clear()
        known = _TERMS[key] = _parse_affinity_term(pod_ns, term, weight)
    return known


def _parse_affinity_term(pod_ns: str, term: Mapping[str, Any], weight: int) -> AffinityTerm:
    namespaces = term.get("namespaces") or []
    ns_sel = term.get("namespaceSelector")
    if not namespaces and ns_sel is None:
        namespaces = [pod_ns]
    selector = from_label_selector(term.get("labelSelector"))
    # matchLabelKeys/mismatchLabelKeys are merged into the selector by the API server
    return AffinityTerm(frozenset(namespaces), selector, str(term.get("topologyKey", "")),
                        from_label_selector(ns_sel) if ns_sel is not None else None, weight)


class PodInfo:
    """A pod as the scheduler sees it; heavy parts are parsed on first use."""

    __slots__ = (
        "__dict__",
        "key",
        "labels",
        "name",
        "namespace",
        "node_name",
        "non_zero_cpu",
        "non_zero_memory",
        "pod",
        "priority",
        "requests",
        "scheduler_name",
        "spec",
        "uid",
    )

    def __init__(self, pod: Obj) -> None:
        self.update(pod)

    def update(self, pod: Obj) -> None:
        md = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.spec: Obj = spec
        self.namespace: str = md.get("namespace", "")
        self.name: str = md.get("name", "")
        self.key = f"{self.namespace}/{self.name}"
        self.uid: str = md.get("uid", "")
        self.labels: dict[str, str] = md.get("labels") or {}
        self.priority: int = int(spec.get("priority") or 0)
        self.node_name: str = spec.get("nodeName") or ""
        self.scheduler_name: str = spec.get("schedulerName") or "default-scheduler"
        self.requests: Resources = pod_requests(pod)
        nz = pod_requests(pod, non_zero=True)
        self.non_zero_cpu: int = nz.get("cpu", 0)
        self.non_zero_memory: int = nz.get("memory", 0)
        self.__dict__.clear()  # forget what was parsed of the previous version

    def __repr__(self) -> str:
        return f"PodInfo({self.key})"

    def on_node(self, node_name: str) -> PodInfo:
        """A copy placed on ``node_name`` (the pod dict copied shallowly), without parsing
        the pod again."""
        c = PodInfo.__new__(PodInfo)
        for slot in PodInfo.__slots__:
            if slot != "__dict__":
                setattr(c, slot, getattr(self, slot))
        c.__dict__.update(self.__dict__)
        c.spec = {**self.spec, "nodeName": node_name}
        c.pod = {**self.pod, "spec": c.spec}
        c.node_name = node_name
        return c

    @property
    def affinity(self) -> Obj:
        return self.spec.get("affinity") or {}

    @cached_property
    def host_ports(self) -> list[tuple[str, str, int]]:
        """(hostIP, protocol, hostPort) of every container port with a hostPort."""
        out = []
        for c in self.spec.get("containers") or ():
            for p in c.get("ports") or ():
                if p.get("hostPort"):
                    out.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP",
                                int(p["hostPort"])))
        return out

    @cached_property
    def tolerations(self) -> list[Obj]:
        return list(self.spec.get("tolerations") or ())

    @cached_property
    def required_node_affinity(self) -> NodeSelector | None:
        req = ((self.affinity.get("nodeAffinity") or {})
               .get("requiredDuringSchedulingIgnoredDuringExecution"))
        return NodeSelector.parse(req) if req is not None else None

    def _terms(self, kind: str, which: str) -> list[AffinityTerm]:
        raw = (self.affinity.get(kind) or {}).get(which) or []
        try:
            if which.startswith("required"):
                return [_affinity_term(self.namespace, t) for t in raw]
            return [_affinity_term(self.namespace, t.get("podAffinityTerm") or {},
                                   int(t.get("weight") or 0)) for t in raw]
        except SelectorError:
            return []  # validation rejects bad selectors; nothing to match with here

    @cached_property
    def required_affinity_terms(self) -> list[AffinityTerm]:
        return self._terms("podAffinity", "requiredDuringSchedulingIgnoredDuringExecution")

    @cached_property
    def required_anti_affinity_terms(self) -> list[AffinityTerm]:
        return self._terms("podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution")

    @cached_property
    def preferred_affinity_terms(self) -> list[AffinityTerm]:
        return self._terms("podAffinity", "preferredDuringSchedulingIgnoredDuringExecution")

    @cached_property
    def preferred_anti_affinity_terms(self) -> list[AffinityTerm]:
        return self._terms("podAntiAffinity",
                           "preferredDuringSchedulingIgnoredDuringExecution")

    @cached_property
    def has_affinity(self) -> bool:
        """Whether the pod's terms can add to other pods' scores (InterPodAffinity's
        PreScore): required affinity, preferred affinity or anti-affinity. Required
        anti-affinity alone only filters (``has_required_anti_affinity``)."""
        return bool(self.required_affinity_terms or self.preferred_affinity_terms
                    or self.preferred_anti_affinity_terms)

    @cached_property
    def has_required_anti_affinity(self) -> bool:
        return bool(self.required_anti_affinity_terms)

    @cached_property
    def claims(self) -> list[str]:
        return claims_of(self.pod)

    @cached_property
    def start_time(self) -> float:
        """``status.startTime`` in epoch seconds (infinity before the pod started)."""
        return parse_time((self.pod.get("status") or {}).get("startTime")) or float("inf")

    def swap(self, pod: Obj) -> None:
        """Take ``pod``, a new version that places exactly as this one (same spec,
        labels, annotations): keep what was parsed, forget what reads its status."""
        self.pod, self.spec = pod, pod["spec"]
        self.__dict__.pop("start_time", None)

    @property
    def terminating(self) -> bool:
        return bool((self.pod.get("metadata") or {}).get("deletionTimestamp"))

    @cached_property
    def gpu(self) -> gpushare.GpuRequest | None:
        """What the pod asks of a node's GPU devices (None: nothing)."""
        return gpushare.gpu_request(self.pod)

    @cached_property
    def gpu_devices(self) -> list[int] | None:
        """The devices the pod holds (annotation ``kybernetes.io/gpu-index``, or what the
        node accounted for it); None until known."""
        return gpushare.device_indexes(self.pod)


class NodeInfo:
    """A node and what its pods (bound and assumed) take of it."""

    __slots__ = (
        "allocatable",
        "allowed_pods",
        "generation",
        "gpu_free",
        "gpu_model",
        "gpu_pods",
        "index",
        "labels",
        "name",
        "node",
        "non_zero_cpu",
        "non_zero_memory",
        "pods",
        "pods_with_affinity",
        "pods_with_required_anti_affinity",
        "pvc_refs",
        "requested",
        "start_generation",
        "table",
        "taints",
        "unschedulable",
        "used_ports",
    )

    def __init__(self, node: Obj | None = None, name: str = "") -> None:
        self.node: Obj | None = None
        self.name = name
        self.labels: dict[str, str] = {}
        self.taints: list[Obj] = []
        self.unschedulable = False
        self.allocatable: Resources = {}
        self.allowed_pods = 0
        self.requested: Resources = {}
        self.non_zero_cpu = 0
        self.non_zero_memory = 0
        self.pods: dict[str, PodInfo] = {}
        self.pods_with_affinity: dict[str, PodInfo] = {}
        self.pods_with_required_anti_affinity: dict[str, PodInfo] = {}
        self.used_ports: dict[tuple[str, str, int], int] = {}
        self.pvc_refs: dict[str, int] = {}
        self.gpu_free: list[int] = []
        """Free milli-GPU of each device (1000 each on an idle node)."""
        self.gpu_model = ""
        self.gpu_pods = [0, 0]
        """How many of its pods share one GPU, and how many hold whole GPUs."""
        self.generation = 0
        self.start_generation = 0
        """Bumped when one of its pods gets a new start time in place (a status update,
        which leaves ``generation`` alone): what orders preemption's victims."""
        self.table: NodeTable | None = None
        """The node table this node is a row of (its ``index``), kept in step."""
        self.index = -1
        if node is not None:
            self.set_node(node)

    def __repr__(self) -> str:
        return f"NodeInfo({self.name}, {len(self.pods)} pods)"

    def set_node(self, node: Obj) -> None:
        self.node = node
        md = node.get("metadata") or {}
        spec = node.get("spec") or {}
        self.name = md.get("name", "")
        self.labels = md.get("labels") or {}
        self.taints = list(spec.get("taints") or ())
        self.unschedulable = bool(spec.get("unschedulable"))
        alloc = resource_list((node.get("status") or {}).get("allocatable"))
        self.allowed_pods = alloc.pop("pods", 0)
        self.allocatable = alloc
        devices = alloc.get(gpushare.NVIDIA_GPU, 0)
        self.gpu_model = self.labels.get(gpushare.GPU_MODEL_LABEL, "")
        if devices != len(self.gpu_free):
            self._count_gpus(devices)
        self.generation += 1
        if self.table is not None:
            self.table.sync(self)

    def add_pod(self, pi: PodInfo) -> None:
        self.pods[pi.uid] = pi
        req = self.requested
        for k, v in pi.requests.items():
            req[k] = req.get(k, 0) + v
        self.non_zero_cpu += pi.non_zero_cpu
        self.non_zero_memory += pi.non_zero_memory
        if pi.has_affinity:
            self.pods_with_affinity[pi.uid] = pi
        if pi.has_required_anti_affinity:
            self.pods_with_required_anti_affinity[pi.uid] = pi
        for port in pi.host_ports:
            self.used_ports[port] = self.used_ports.get(port, 0) + 1
        for claim in pi.claims:
            ref = f"{pi.namespace}/{claim}"
            self.pvc_refs[ref] = self.pvc_refs.get(ref, 0) + 1
        if pi.gpu is not None:
            self._hold_gpus(pi, pi.gpu, +1)
        self.generation += 1
        if self.table is not None:
            self.table.sync(self)

    def remove_pod(self, pi: PodInfo) -> bool:
        old = self.pods.pop(pi.uid, None)
        if old is None:
            return False
        req = self.requested
        for k, v in old.requests.items():
            req[k] = req.get(k, 0) - v
        self.non_zero_cpu -= old.non_zero_cpu
        self.non_zero_memory -= old.non_zero_memory
        self.pods_with_affinity.pop(old.uid, None)
        self.pods_with_required_anti_affinity.pop(old.uid, None)
        for port in old.host_ports:
            n = self.used_ports.get(port, 0) - 1
            if n > 0:
                self.used_ports[port] = n
            else:
                self.used_ports.pop(port, None)
        for claim in old.claims:
            ref = f"{old.namespace}/{claim}"
            n = self.pvc_refs.get(ref, 0) - 1
            if n > 0:
                self.pvc_refs[ref] = n
            else:
                self.pvc_refs.pop(ref, None)
        if old.gpu is not None:
            self._hold_gpus(old, old.gpu, -1)
        self.generation += 1
        if self.table is not None:
            self.table.sync(self)
        return True

    # -- GPU devices ------------------------------------------------------------------------

    def _hold_gpus(self, pi: PodInfo, req: gpushare.GpuRequest, sign: int) -> None:
        """Take (+1) or give back (-1) the devices ``pi`` holds. A pod placed without a
        device (bound by name, or assumed before Reserve) is given the devices the
        default choice picks, which Reserve may then move (:meth:`move_gpus`)."""
        devices = pi.gpu_devices
        if sign > 0 and devices is None:
            devices = gpushare.choose_devices(self.gpu_free, req) or []
            pi.gpu_devices = devices
        free = self.gpu_free
        for d in devices or ():
            if 0 <= d < len(free):
                free[d] -= sign * req.milli
        self.gpu_pods[0 if req.shared else 1] += sign

    def move_gpus(self, pi: PodInfo, devices: list[int]) -> None:
        """Give the pod ``pi`` (placed here) ``devices`` instead of those it holds."""
        req = pi.gpu
        if req is None or pi.uid not in self.pods or pi.gpu_devices == devices:
            return
        self._hold_gpus(pi, req, -1)
        pi.gpu_devices = devices
        self._hold_gpus(pi, req, +1)
        self.generation += 1
        if self.table is not None:
            self.table.sync(self)

    def _count_gpus(self, devices: int) -> None:
        self.gpu_free = [gpushare.FULL] * devices
        self.gpu_pods = [0, 0]
        for pi in self.pods.values():
            if pi.gpu is not None:
                self._hold_gpus(pi, pi.gpu, +1)

    def clone(self) -> NodeInfo:
        c = NodeInfo(name=self.name)
        c.node = self.node
        c.labels = self.labels
        c.taints = self.taints
        c.unschedulable = self.unschedulable
        c.allocatable = self.allocatable
        c.allowed_pods = self.allowed_pods
        c.requested = dict(self.requested)
        c.non_zero_cpu = self.non_zero_cpu
        c.non_zero_memory = self.non_zero_memory
        c.pods = dict(self.pods)
        c.pods_with_affinity = dict(self.pods_with_affinity)
        c.pods_with_required_anti_affinity = dict(self.pods_with_required_anti_affinity)
        c.used_ports = dict(self.used_ports)
        c.pvc_refs = dict(self.pvc_refs)
        c.gpu_free = list(self.gpu_free)
        c.gpu_model = self.gpu_model
        c.gpu_pods = list(self.gpu_pods)
        c.generation = self.generation
        c.start_generation = self.start_generation
        return c


class Room:
    """A node's resource counts with pods added or taken away, without touching the node:
    what a Filter plugin that judges by counts alone (``filter_room``) reads. Preemption's
    dry runs and the checks with nominated pods use it instead of a copy of the node."""

    __slots__ = ("node", "pods", "requested")

    def __init__(self, node: NodeInfo) -> None:
        self.node = node
        self.pods = len(node.pods)
        self.requested = dict(node.requested)

    def copy(self) -> Room:
        c = Room.__new__(Room)
        c.node, c.pods, c.requested = self.node, self.pods, dict(self.requested)
        return c

    def add(self, pod: PodInfo) -> None:
        self.pods += 1
        req = self.requested
        for k, v in pod.requests.items():
            req[k] = req.get(k, 0) + v

    def remove(self, pod: PodInfo) -> None:
        self.pods -= 1
        req = self.requested
        for k, v in pod.requests.items():
            req[k] = req.get(k, 0) - v


def make_pod(name: str = "p", namespace: str = "default", *, uid: str = "",
             requests: Mapping[str, str] | None = None, **spec: Any) -> Obj:
    """A minimal pod dict, for tests and simulations."""
    containers = [{"name": "c", "image": "busybox",
                   "resources": {"requests": dict(requests or {})}}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}",
                         "labels": spec.pop("labels", {})},
            "spec": {"containers": containers, **spec}}


def make_node(name: str, *, cpu: str = "4", memory: str = "32Gi", pods: int = 110,
              labels: Mapping[str, str] | None = None, taints: list[Obj] | None = None,
              extra: Mapping[str, str] | None = None, unschedulable: bool = False) -> Obj:
    """A minimal Ready node dict, for tests and simulations."""
    alloc = {"cpu": cpu, "memory": memory, "pods": str(pods), **(extra or {})}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  **(labels or {})}},
            "spec": {"taints": list(taints or []), "unschedulable": unschedulable},
            "status": {"capacity": alloc, "allocatable": alloc,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


TermCounts = list[tuple[AffinityTerm, dict[tuple[str, str], int]]]


def required_anti_affinity_counts(nodes: Iterable[NodeInfo]) -> TermCounts:
    """Every distinct required anti-affinity term of the pods on ``nodes`` (known nodes),
    with how many of those pods carry it per topology pair (``(key, value)`` of their
    node's label): what InterPodAffinity's PreFilter counts for each incoming pod. The
    scheduler's cache keeps this up to date as pods come and go; this computes it."""
    out: dict[int, tuple[AffinityTerm, dict[tuple[str, str], int]]] = {}
    for node in nodes:
        labels = node.labels
        for pod in node.pods_with_required_anti_affinity.values():
            for at in pod.required_anti_affinity_terms:
                entry = out.get(id(at))
                if entry is None:
                    entry = out[id(at)] = (at, {})
                value = labels.get(at.topology_key)
                if value is not None:
                    pair = (at.topology_key, value)
                    entry[1][pair] = entry[1].get(pair, 0) + 1
    return [e for e in out.values() if e[1]]
