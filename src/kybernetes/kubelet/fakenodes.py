"""Simulated nodes (kwok-style): Nodes, Leases and Running pods without any machine behind.

For scale tests and capacity planning. Each fake node is a Node object that looks like a
real one (capacity, conditions, nodeInfo, addresses) with a Lease in ``kube-node-lease``
that is kept fresh; a pod bound to a fake node is reported Running and Ready at once and
runs forever, and a pod deleted gracefully is deleted for real at once. No process,
network namespace, cgroup or route is ever created: pod IPs are only written in statuses.

::

    nodes = build_nodes(count=5000, template=FakeNodeSpec("", gpus=8))
    fake = FakeNodes(client, nodes)
    await fake.start()          # returns at once; registration goes on in the background
    await fake.registered.wait()
    ...
    await fake.stop()

One background task does everything: it registers the nodes (bounded concurrency), then
runs a single pod informer (no field selector: pods are matched on ``spec.nodeName`` in
a dict), a few workers that write pod statuses, and one loop that renews every Lease in
small batches spread over the renewal interval.
"""

from __future__ import annotations

import asyncio
import csv
import ipaddress
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kybernetes import __version__
from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_all, cancel_and_wait, spawn
from kybernetes.api import quantity
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import rfc3339, rfc3339_micro
from kybernetes.api.validation.common import (
    is_dns1123_subdomain,
    is_label_value,
    is_qualified_name,
)
from kybernetes.client import Client, Informer, WorkQueue, object_key, run_workers, shared_informer
from kybernetes.kubelet.node import MAX_PODS, conditions, parse_taints

log = logging.getLogger(__name__)
Obj = dict[str, Any]
T = TypeVar("T")

FAKE_NODE_LABEL = "kybernetes.io/fake-node"
LEASE_API = "coordination.k8s.io/v1"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40
LEASE_RENEW_INTERVAL = 30.0
"""Every Lease is renewed this often (kubelet: 10 s; 5,000 nodes make ~170 writes/s)."""
STATUS_REPORT_INTERVAL = 300.0
"""Node status is rewritten this often although nothing changes (kubelet's default)."""
KUBELET_PORT = 10250
POD_NETWORK = ipaddress.IPv4Network("10.128.0.0/9")
"""Fake pod addresses: node ``i`` has the ``i``-th /24. Never routed: no route, bridge or
namespace is created for them."""
NODE_ADDRESSES = ipaddress.IPv4Address("127.16.0.0")
"""Node ``i``'s InternalIP is this + i + 1: loopback, so that anything the API server
sends to a fake node's "kubelet" (logs, exec) never leaves the machine."""
MAX_NODES = POD_NETWORK.num_addresses // 256
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_YAML_KEYS = {"name", "cpu", "memory", "gpus", "pods", "labels", "taints"}
_CSV_COLUMNS = {"name", "cpu", "memory", "gpus", "pods", "labels"}


class NodeListError(ValueError):
    """The fake node options or list file are invalid (the message says where)."""


@dataclass
class FakeNodeSpec:
    """One simulated node: its name and what it declares."""

    name: str
    cpu: str = "32"
    memory: str = "256Gi"
    gpus: int = 0
    pods: int = MAX_PODS
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Obj] = field(default_factory=list)


# -- building the list of nodes ----------------------------------------------------------


def parse_labels(specs: Iterable[str], *, sep: str = ",") -> dict[str, str]:
    """``k=v,k2=v2`` (several specs allowed) as a dict; ``sep`` splits pairs."""
    out: dict[str, str] = {}
    for spec in specs:
        for item in spec.split(sep):
            item = item.strip()
            if not item:
                continue
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise NodeListError(f"invalid label {item!r}: want key=value")
            out[key.strip()] = value.strip()
    return out


def build_nodes(*, count: int = 0, template: FakeNodeSpec | None = None,
                list_file: Path | None = None) -> list[FakeNodeSpec]:
    """The nodes of ``list_file`` (if any) followed by ``count`` more like ``template``.

    Unnamed nodes are called ``fake-node-<i>``, ``i`` being the node's position; the
    template's resources and labels are the defaults of every entry of the list.
    """
    template = template or FakeNodeSpec("")
    if count < 0:
        raise NodeListError(f"--fake-nodes must not be negative, not {count}")
    nodes = load_node_list(list_file, template) if list_file is not None else []
    for i in range(len(nodes), len(nodes) + count):
        nodes.append(_with_name(template, f"fake-node-{i}"))
    names: set[str] = set()
    for n in nodes:
        if n.name in names:
            raise NodeListError(f"fake node {n.name!r} is given twice")
        names.add(n.name)
        _validate(n)
    if len(nodes) > MAX_NODES:
        raise NodeListError(f"at most {MAX_NODES} fake nodes, not {len(nodes)}")
    return nodes


def load_node_list(path: Path, template: FakeNodeSpec) -> list[FakeNodeSpec]:
    """Nodes from a ``.csv`` file (header ``name,cpu,memory,gpus,labels``) or YAML list."""
    try:
        text = path.read_text()
    except OSError as e:
        raise NodeListError(f"cannot read {path}: {e.strerror}") from None
    if path.suffix.lower() == ".csv":
        return parse_csv(text, template, source=str(path))
    return parse_yaml(text, template, source=str(path))


def parse_yaml(text: str, template: FakeNodeSpec, *, source: str = "<yaml>"
               ) -> list[FakeNodeSpec]:
    """A YAML list of ``{name, cpu, memory, gpus, pods, labels, taints}`` (all optional)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise NodeListError(f"{source}: not valid YAML: {e}") from None
    if isinstance(data, dict) and set(data) == {"nodes"}:
        data = data["nodes"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise NodeListError(f"{source}: want a list of nodes")
    out = []
    for i, entry in enumerate(data):
        where = f"{source}: entry {i}"
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise NodeListError(f"{where}: want a mapping, not {entry!r}")
        unknown = set(entry) - _YAML_KEYS
        if unknown:
            raise NodeListError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}"
                                f" (known: {', '.join(sorted(_YAML_KEYS))})")
        labels = entry.get("labels") or {}
        if isinstance(labels, str):
            labels = parse_labels([labels])
        if not isinstance(labels, dict):
            raise NodeListError(f"{where}: labels must be a mapping")
        node = FakeNodeSpec(
            name=_str(entry.get("name")) or f"fake-node-{i}",
            cpu=_str(entry.get("cpu")) or template.cpu,
            memory=_str(entry.get("memory")) or template.memory,
            gpus=_int(entry.get("gpus"), template.gpus, f"{where}: gpus"),
            pods=_int(entry.get("pods"), template.pods, f"{where}: pods"),
            labels={**template.labels, **{str(k): _str(v) for k, v in labels.items()}},
            taints=_taints(entry.get("taints"), where) or list(template.taints))
        out.append(node)
    return out


def parse_csv(text: str, template: FakeNodeSpec, *, source: str = "<csv>"
              ) -> list[FakeNodeSpec]:
    """CSV with a header naming some of ``name,cpu,memory,gpus,pods,labels``; labels are
    ``k=v;k2=v2``; an empty cell takes the default."""
    reader = csv.DictReader(text.splitlines(), skipinitialspace=True)
    columns = {(c or "").strip() for c in reader.fieldnames or []}
    if not columns:
        raise NodeListError(f"{source}: no header line (want name,cpu,memory,gpus,labels)")
    unknown = columns - _CSV_COLUMNS
    if unknown:
        raise NodeListError(f"{source}: unknown column(s) {sorted(unknown)} in the header "
                            f"(known: {','.join(sorted(_CSV_COLUMNS))})")
    out: list[FakeNodeSpec] = []
    for raw in reader:
        where = f"{source}: line {reader.line_num}"
        if None in raw:
            raise NodeListError(f"{where}: more cells than columns")
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        try:
            labels = parse_labels([row.get("labels", "")], sep=";")
        except NodeListError as e:
            raise NodeListError(f"{where}: {e}") from None
        out.append(FakeNodeSpec(
            name=row.get("name") or f"fake-node-{len(out)}",
            cpu=row.get("cpu") or template.cpu,
            memory=row.get("memory") or template.memory,
            gpus=_int(row.get("gpus"), template.gpus, f"{where}: gpus"),
            pods=_int(row.get("pods"), template.pods, f"{where}: pods"),
            labels={**template.labels, **labels},
            taints=list(template.taints)))
    return out


def _with_name(template: FakeNodeSpec, name: str) -> FakeNodeSpec:
    return FakeNodeSpec(name=name, cpu=template.cpu, memory=template.memory,
                        gpus=template.gpus, pods=template.pods, labels=dict(template.labels),
                        taints=list(template.taints))


def _str(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _int(value: Any, default: int, where: str) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise NodeListError(f"{where}: want a whole number, not {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise NodeListError(f"{where}: want a whole number, not {value!r}") from None


def _taints(value: Any, where: str) -> list[Obj]:
    if not value:
        return []
    if not isinstance(value, list):
        raise NodeListError(f"{where}: taints must be a list")
    out: list[Obj] = []
    for t in value:
        if isinstance(t, str):
            try:
                out += parse_taints([t])
            except ValueError as e:
                raise NodeListError(f"{where}: {e}") from None
        elif isinstance(t, dict) and set(t) <= {"key", "value", "effect"}:
            taint: Obj = {"key": _str(t.get("key")), "effect": _str(t.get("effect"))}
            if t.get("value") not in (None, ""):
                taint["value"] = _str(t["value"])
            out.append(taint)
        else:
            raise NodeListError(f"{where}: invalid taint {t!r}: want key=value:Effect or "
                                "{key, value, effect}")
    return out


def _validate(n: FakeNodeSpec) -> None:
    where = f"fake node {n.name!r}"
    msgs = is_dns1123_subdomain(n.name)
    if msgs:
        raise NodeListError(f"invalid fake node name {n.name!r}: {'; '.join(msgs)}")
    for what, q in (("cpu", n.cpu), ("memory", n.memory)):
        try:
            value = quantity.parse(q)
        except (ValueError, ArithmeticError):
            raise NodeListError(f"{where}: invalid {what} {q!r}: want a quantity such as "
                                f"{'32 or 500m' if what == 'cpu' else '256Gi'}") from None
        if value <= 0:
            raise NodeListError(f"{where}: {what} must be positive, not {q!r}")
    if n.gpus < 0:
        raise NodeListError(f"{where}: gpus must not be negative, not {n.gpus}")
    if n.pods <= 0:
        raise NodeListError(f"{where}: pods must be positive, not {n.pods}")
    for k, v in n.labels.items():
        msgs = is_qualified_name(k) + is_label_value(v)
        if msgs:
            raise NodeListError(f"{where}: invalid label {k}={v}: {'; '.join(msgs)}")
    seen = set()
    for t in n.taints:
        if t.get("effect") not in _TAINT_EFFECTS or is_qualified_name(t.get("key", "")):
            raise NodeListError(f"{where}: invalid taint {t}: want a key and an effect of "
                                f"{', '.join(_TAINT_EFFECTS)}")
        if (t["key"], t["effect"]) in seen:
            raise NodeListError(f"{where}: taint {t['key']}:{t['effect']} is given twice")
        seen.add((t["key"], t["effect"]))


# -- the objects -----------------------------------------------------------------------


def pod_cidr(index: int) -> str:
    """Node ``index``'s pod range: the ``index``-th /24 of :data:`POD_NETWORK`."""
    return str(ipaddress.IPv4Network((int(POD_NETWORK.network_address) + 256 * index, 24)))


def node_address(index: int) -> str:
    return str(NODE_ADDRESSES + index + 1)


def node_labels(spec: FakeNodeSpec) -> dict[str, str]:
    out = {
        FAKE_NODE_LABEL: "true",
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    }
    if spec.gpus:
        out["nvidia.com/gpu.present"] = "true"
        out["nvidia.com/gpu.product"] = "Fake-GPU"
        out["nvidia.com/gpu.count"] = str(spec.gpus)
    out.update(spec.labels)
    return out


def resources(spec: FakeNodeSpec) -> Obj:
    """Capacity (= allocatable) of the node."""
    out: Obj = {"cpu": quantity.canonical(spec.cpu), "memory": quantity.canonical(spec.memory),
                "ephemeral-storage": "1Ti", "pods": str(spec.pods)}
    if spec.gpus:
        out["nvidia.com/gpu"] = str(spec.gpus)
        out["kybernetes.io/gpu-milli"] = str(1000 * spec.gpus)
    return out


def node_info(name: str) -> Obj:
    machine = uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.fake-node.kybernetes.io")
    return {
        "machineID": machine.hex, "systemUUID": str(machine),
        "bootID": str(uuid.uuid5(machine, "boot")),
        "kernelVersion": "6.1.0-fake", "osImage": "kybernetes fake node",
        "containerRuntimeVersion": f"fake://{__version__}",
        "kubeletVersion": "v1.32.0-kybernetes", "kubeProxyVersion": "v1.32.0-kybernetes",
        "operatingSystem": "linux", "architecture": "amd64",
    }


def node_status(spec: FakeNodeSpec, *, address: str, now: float,
                previous: Obj | None = None) -> Obj:
    return {
        "capacity": resources(spec),
        "allocatable": resources(spec),
        "conditions": conditions((previous or {}).get("conditions"), now),
        "addresses": [{"type": "InternalIP", "address": address},
                      {"type": "Hostname", "address": spec.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": node_info(spec.name),
        "images": [],
    }


def node_object(spec: FakeNodeSpec, *, index: int, now: float) -> Obj:
    """The Node registered for fake node ``index`` (status included)."""
    cidr = pod_cidr(index)
    node_spec: Obj = {"podCIDR": cidr, "podCIDRs": [cidr]}
    if spec.taints:
        node_spec["taints"] = spec.taints
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": spec.name, "labels": node_labels(spec),
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": node_spec,
        "status": node_status(spec, address=node_address(index), now=now),
    }


def lease_object(name: str, node_uid: str, now: float) -> Obj:
    return {
        "apiVersion": LEASE_API, "kind": "Lease",
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                          "uid": node_uid}]},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION,
                 "renewTime": rfc3339_micro(now)},
    }


def running_status(pod: Obj, *, pod_ip: str | None, host_ip: str, now: float) -> Obj:
    """The one status write that makes ``pod`` Running and Ready (a merge patch body)."""
    spec = pod.get("spec") or {}
    old = pod.get("status") or {}
    stamp = rfc3339(now)
    uid = (pod.get("metadata") or {}).get("uid", "")
    old_conds: dict[str, Obj] = {c.get("type"): c for c in old.get("conditions") or []}

    def cond(typ: str) -> Obj:
        prev = old_conds.get(typ)
        if prev is not None and prev.get("status") == "True":
            return prev
        return {"type": typ, "status": "True", "lastProbeTime": None,
                "lastTransitionTime": stamp}

    def container(c: Obj, state: Obj, *, ready: bool) -> Obj:
        image = c.get("image", "")
        return {"name": c.get("name", ""), "image": image, "imageID": f"fake://{image}",
                "containerID": f"fake://{uid}/{c.get('name', '')}", "ready": ready,
                "started": "running" in state, "restartCount": 0, "state": state}

    running = {"running": {"startedAt": stamp}}
    inits = []
    for c in spec.get("initContainers") or []:
        if c.get("restartPolicy") == "Always":  # a sidecar: runs beside the others
            inits.append(container(c, running, ready=True))
        else:
            inits.append(container(c, {"terminated": {
                "exitCode": 0, "reason": "Completed", "startedAt": stamp,
                "finishedAt": stamp}}, ready=False))
    status: Obj = {
        "phase": "Running",
        "conditions": [cond(t) for t in ("PodReadyToStartContainers", "Initialized", "Ready",
                                         "ContainersReady", "PodScheduled")],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": old.get("startTime") or stamp,
        "containerStatuses": [container(c, running, ready=True)
                              for c in spec.get("containers") or []],
    }
    if inits:
        status["initContainerStatuses"] = inits
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status


def needs_sync(pod: Obj) -> bool:
    """Whether a pod on a fake node needs a write: not yet Running, or being deleted."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return True
    status = pod.get("status") or {}
    return status.get("phase") not in ("Running", "Succeeded", "Failed")


# -- the component ---------------------------------------------------------------------


@dataclass
class _Node:
    spec: FakeNodeSpec
    index: int
    address: str
    pod_cidr: str
    uid: str = ""
    lease: Obj | None = None
    """The last Lease written (its resourceVersion makes the next renewal one PUT)."""
    status: Obj | None = None
    status_at: float = -math.inf
    renewed_at: float = -math.inf
    """When the Lease was last renewed (monotonic)."""
    gone: bool = False
    """Deleted by someone: no more renewals until the next start."""
    ips: dict[str, str] = field(default_factory=dict)
    """Pod key -> pod IP."""
    used: set[str] = field(default_factory=set)
    next_host: int = 2

    def allocate(self, key: str) -> str | None:
        """The pod's IP: the one it has, or the next free one of the node's range."""
        ip = self.ips.get(key)
        if ip is not None:
            return ip
        net = ipaddress.IPv4Network(self.pod_cidr, strict=False)
        hosts = net.num_addresses - 3  # network, gateway (.1), broadcast
        for _ in range(max(hosts, 0)):
            candidate = str(net.network_address + self.next_host)
            self.next_host = self.next_host + 1 if self.next_host < net.num_addresses - 2 else 2
            if candidate not in self.used:
                self.remember(key, candidate)
                return candidate
        return None

    def remember(self, key: str, ip: str) -> None:
        old = self.ips.get(key)
        if old == ip:
            return
        if old is not None:
            self.used.discard(old)
        self.ips[key] = ip
        self.used.add(ip)

    def release(self, key: str) -> None:
        ip = self.ips.pop(key, None)
        if ip is not None:
            self.used.discard(ip)


class FakeNodes:
    """Registers the fake nodes, renews their Leases and plays kubelet for their pods."""

    def __init__(self, client: Client, nodes: Sequence[FakeNodeSpec], *,
                 clock: Clock = SYSTEM_CLOCK, concurrency: int = 32, workers: int = 8,
                 lease_interval: float = LEASE_RENEW_INTERVAL,
                 status_interval: float = STATUS_REPORT_INTERVAL,
                 tick: float = 1.0) -> None:
        self.client = client
        self.clock = clock
        self.concurrency = concurrency
        self.workers = workers
        self.lease_interval = lease_interval
        self.status_interval = status_interval
        self.tick = tick
        """Lease renewals are written in batches this many seconds apart."""
        self.nodes = {n.name: _Node(n, i, node_address(i), pod_cidr(i))
                      for i, n in enumerate(nodes)}
        self.registered = asyncio.Event()
        """Set once every node has been registered (or has failed to)."""
        self.pods = shared_informer(client, "v1", "pods") if clock is SYSTEM_CLOCK \
            else Informer(client, "v1", "pods", clock=clock)
        self.pods.add_handler(on_add=self._on_pod, on_update=lambda _, p: self._on_pod(p),
                              on_delete=self._on_pod_deleted)
        self.queue: WorkQueue[str] = WorkQueue(clock=clock, name="fake-nodes")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start in the background; returns at once (see :attr:`registered`)."""
        if self._task is None:
            self._task = spawn(self._run(), name="fake-nodes")

    async def stop(self) -> None:
        """Stop every task; the Nodes, Leases and pods stay (and are adopted on restart)."""
        self.queue.shutdown()
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self.pods.stop()
        await self.queue.aclose()

    async def _run(self) -> None:
        await self.register()
        self.pods.start()
        tasks = [spawn(run_workers(self.queue, self.sync_pod, workers=self.workers,
                                   name="fake-nodes"), name="fake-nodes:pods"),
                 spawn(self._lease_loop(), name="fake-nodes:leases")]
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_all(tasks)

    # -- registration --------------------------------------------------------------------

    async def register(self) -> None:
        """Create every node (and its Lease), or update the ones already there."""
        t0 = self.clock.monotonic()
        try:
            existing = {n["metadata"]["name"]: n for n in (await self.client.list_all(
                "v1", "nodes", label_selector=f"{FAKE_NODE_LABEL}=true")).get("items") or []}
            leases = {lease["metadata"]["name"]: lease for lease in (await self.client.list_all(
                LEASE_API, "leases", namespace=LEASE_NAMESPACE)).get("items") or []}
        except StatusError as e:
            log.warning("cannot list nodes and leases (%s); registering blindly", e.message)
            existing, leases = {}, {}

        async def one(node: _Node) -> None:
            await self._register_one(node, existing.get(node.spec.name))
            await self._first_lease(node, leases.get(node.spec.name))

        failed = await bounded(list(self.nodes.values()), one, limit=self.concurrency,
                               what="registering fake node")
        self.registered.set()
        updated = sum(1 for n in self.nodes if n in existing)
        log.info("%d fake node(s) registered (%d created, %d updated, %d failed) in %.1fs",
                 len(self.nodes) - failed, len(self.nodes) - updated - failed, updated, failed,
                 self.clock.monotonic() - t0)

    async def _register_one(self, node: _Node, old: Obj | None) -> None:
        want = node_object(node.spec, index=node.index, now=self.clock.now())
        if old is None:
            try:
                created = await self.client.create("v1", "nodes", want)
                self._registered(node, created)
                return
            except StatusError as e:
                if e.code != 409:
                    raise
            old = await self.client.get("v1", "nodes", node.spec.name)
            if (old["metadata"].get("labels") or {}).get(FAKE_NODE_LABEL) != "true":
                node.gone = True
                raise RuntimeError("a node of that name exists and is not a fake node; "
                                   "leaving it alone")
        # a restart: labels and taints we were given win; podCIDR is immutable once set
        old_labels = old["metadata"].get("labels") or {}
        labels: dict[str, str | None] = {k: v for k, v in want["metadata"]["labels"].items()
                                         if old_labels.get(k) != v}
        for k in ("nvidia.com/gpu.present", "nvidia.com/gpu.product", "nvidia.com/gpu.count"):
            if k not in want["metadata"]["labels"] and k in old_labels:
                labels[k] = None
        patch: Obj = {"metadata": {"labels": labels}} if labels else {}
        spec = old.get("spec") or {}
        if node.spec.taints and spec.get("taints") != node.spec.taints:
            patch["spec"] = {"taints": node.spec.taints}
        if spec.get("podCIDR"):
            node.pod_cidr = spec["podCIDR"]
        else:
            patch.setdefault("spec", {}).update(podCIDR=node.pod_cidr, podCIDRs=[node.pod_cidr])
        if patch:  # most restarts change nothing here: spare the write
            await self.client.patch("v1", "nodes", node.spec.name, patch)
        old_status = old.get("status") or {}
        node.address = next((a["address"] for a in old_status.get("addresses") or []
                             if a.get("type") == "InternalIP"), node.address)
        status = node_status(node.spec, address=node.address, now=self.clock.now(),
                             previous=old_status)
        for what in ("capacity", "allocatable"):  # a merge patch keeps keys not named
            for k in old_status.get(what) or {}:
                status[what].setdefault(k, None)
        updated = await self.client.patch("v1", "nodes", node.spec.name, {"status": status},
                                          subresource="status")
        self._registered(node, updated)

    def _registered(self, node: _Node, obj: Obj) -> None:
        node.uid = obj["metadata"]["uid"]
        node.status = obj.get("status")
        node.status_at = self.clock.monotonic()

    async def _first_lease(self, node: _Node, lease: Obj | None) -> None:
        now = self.clock.now()
        fresh = lease_object(node.spec.name, node.uid, now)
        if lease is None:
            try:
                node.lease = await self.client.create(LEASE_API, "leases", fresh)
                return
            except StatusError as e:
                if e.code != 409:
                    raise
            lease = await self.client.get(LEASE_API, "leases", node.spec.name,
                                          namespace=LEASE_NAMESPACE)
        lease = {**lease, "spec": {**(lease.get("spec") or {}), **fresh["spec"]},
                 "metadata": {**lease["metadata"],
                              "ownerReferences": fresh["metadata"]["ownerReferences"]}}
        node.lease = await self.client.update(LEASE_API, "leases", lease,
                                              namespace=LEASE_NAMESPACE)

    # -- heartbeats ----------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Renew every Lease once per interval, in batches spread over it."""
        nodes = list(self.nodes.values())
        batches = max(1, min(len(nodes), round(self.lease_interval / self.tick)))
        size = math.ceil(len(nodes) / batches)
        step = self.lease_interval / batches
        next_at = self.clock.monotonic()
        while True:
            for b in range(0, len(nodes), size):
                next_at += step
                delay = next_at - self.clock.monotonic()
                if delay > 0:
                    await self.clock.sleep(delay)
                elif delay < -self.lease_interval:
                    next_at = self.clock.monotonic()  # far behind: do not burst to catch up
                batch = [n for n in nodes[b:b + size] if not n.gone]
                await bounded(batch, self.heartbeat, limit=self.concurrency,
                              what="heartbeat of fake node")

    async def heartbeat(self, node: _Node) -> None:
        """Renew the node's Lease (one PUT), and its status when that is due.

        A node that failed to register is registered again; one deleted by someone is
        left alone (until the next start).
        """
        if not node.uid:
            await self._register_one(node, None)
            await self._first_lease(node, None)
            return
        now = self.clock.now()
        # a renewal this late may already have made the node lifecycle controller mark the
        # node Unknown: post Ready again at once, as a kubelet back from a pause does
        late = math.isfinite(node.renewed_at) and \
            self.clock.monotonic() - node.renewed_at > LEASE_DURATION - 5
        try:
            if await self._renew(node, now) and not await self._exists(node):
                self._gone(node)
                return
            node.renewed_at = self.clock.monotonic()
            if late or self.clock.monotonic() - node.status_at >= self.status_interval:
                out = await self.client.patch(
                    "v1", "nodes", node.spec.name,
                    {"status": node_status(node.spec, address=node.address, now=now,
                                           previous=node.status)}, subresource="status")
                node.status, node.status_at = out.get("status"), self.clock.monotonic()
        except StatusError as e:
            if e.code != 404:
                raise
            if not await self._exists(node):
                self._gone(node)
                return
            node.lease = await self.client.create(
                LEASE_API, "leases", lease_object(node.spec.name, node.uid, now))

    def _gone(self, node: _Node) -> None:
        log.info("fake node %s was deleted: it stays gone until the next start", node.spec.name)
        node.gone = True

    async def _exists(self, node: _Node) -> bool:
        try:
            obj = await self.client.get("v1", "nodes", node.spec.name)
        except StatusError as e:
            if e.code != 404:
                raise
            return False
        return bool(obj["metadata"].get("uid") == node.uid)

    async def _renew(self, node: _Node, now: float) -> bool:
        """One PUT of the Lease; True if it was missing (a PUT creates a Lease anew)."""
        lease = node.lease
        if lease is None:
            lease = await self.client.get(LEASE_API, "leases", node.spec.name,
                                          namespace=LEASE_NAMESPACE)
        spec = {**lease["spec"], "renewTime": rfc3339_micro(now),
                "holderIdentity": node.spec.name}
        try:
            node.lease = await self.client.update(LEASE_API, "leases", {**lease, "spec": spec},
                                                  namespace=LEASE_NAMESPACE)
        except StatusError as e:
            if e.code != 409:
                raise
            node.lease = None  # someone else wrote it: take theirs and renew that
            current = await self.client.get(LEASE_API, "leases", node.spec.name,
                                            namespace=LEASE_NAMESPACE)
            node.lease = await self.client.update(
                LEASE_API, "leases", {**current, "spec": {**current["spec"], **spec}},
                namespace=LEASE_NAMESPACE)
            return False
        return bool(node.lease["metadata"].get("uid") != lease["metadata"].get("uid"))

    # -- pods ----------------------------------------------------------------------------

    def _on_pod(self, pod: Obj) -> None:
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is None:
            return
        key = object_key(pod)
        ip = (pod.get("status") or {}).get("podIP")
        if ip and not (pod.get("spec") or {}).get("hostNetwork"):
            node.remember(key, ip)
        if needs_sync(pod):
            self.queue.add(key)

    def _on_pod_deleted(self, pod: Obj) -> None:
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is not None:
            node.release(object_key(pod))

    async def sync_pod(self, key: str) -> None:
        """Make a pod of a fake node Running, or finish its deletion."""
        pod = self.pods.get(key)
        if pod is None:
            return
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is None or not needs_sync(pod):
            return
        meta = pod["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        if meta.get("deletionTimestamp"):
            try:
                await self.client.delete("v1", "pods", name, namespace=ns,
                                         grace_period_seconds=0,
                                         preconditions={"uid": meta.get("uid", "")})
            except StatusError as e:
                if e.code not in (404, 409):
                    raise
            return
        if (pod.get("spec") or {}).get("hostNetwork"):
            ip: str | None = node.address
        else:
            ip = node.allocate(key)
            if ip is None:
                log.warning("fake node %s has no pod address left for %s", node.spec.name, key)
        status = running_status(pod, pod_ip=ip, host_ip=node.address, now=self.clock.now())
        try:
            await self.client.patch("v1", "pods", name, {"status": status}, namespace=ns,
                                    subresource="status")
        except StatusError as e:
            if e.code != 404:
                raise


async def bounded(items: Sequence[T], fn: Callable[[T], Awaitable[None]], *, limit: int,
                  what: str) -> int:
    """Run ``fn`` on every item, at most ``limit`` at once; returns how many failed.

    Failures are logged, the first one in full and the rest as a count.
    """
    it = iter(items)
    failures: list[tuple[T, BaseException]] = []

    async def worker() -> None:
        for item in it:
            try:
                await fn(item)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures.append((item, e))

    tasks = [spawn(worker(), name=f"{what}:{i}") for i in range(min(limit, len(items)))]
    try:
        await asyncio.gather(*tasks)
    finally:
        await cancel_all(tasks)
    if failures:
        item, e = failures[0]
        name = getattr(getattr(item, "spec", None), "name", item)
        log.warning("%s %s failed: %s%s", what, name, getattr(e, "message", e),
                    f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
    return len(failures)
