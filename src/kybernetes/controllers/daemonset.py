"""The DaemonSet controller: one pod on every node the template may run on.

A node is eligible when the template's ``nodeSelector`` and required node affinity match
it and its ``NoSchedule``/``NoExecute`` taints are tolerated (the controller adds
upstream's default tolerations for not-ready, unreachable, pressure and unschedulable
nodes). Pods are placed as upstream places them, through the scheduler: each new pod
requires node affinity ``matchFields metadata.name In [<node>]``. The controller creates
the missing pods, deletes pods on nodes no longer eligible, duplicates and failed pods,
and with ``RollingUpdate`` replaces old-template pods node by node within
``maxUnavailable`` (or, with ``maxSurge``, starts the new pod before deleting the old).
Pods carry ``controller-revision-hash``; the templates are kept as ControllerRevisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import controller_of
from kybernetes.api.scheduling import NodeSelector, untolerated_taint
from kybernetes.client import (
    Client,
    Informer,
    Result,
    WorkQueue,
    object_key,
    run_workers,
    shared_informer,
)
from kybernetes.client.events import EventRecorder
from kybernetes.controllers import history, podutil
from kybernetes.controllers.ownership import (
    CONTROLLER_INDEX,
    ORPHAN_INDEX,
    claim_pods,
    controller_reference,
    controller_uid_index,
    labels_of,
    orphan_namespace_index,
)
from kybernetes.controllers.replicaset import ensure_index

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "daemonset-controller"
API_VERSION = "apps/v1"
KIND = "DaemonSet"
HASH_LABEL = history.REVISION_HASH_LABEL
DEFAULT_HISTORY_LIMIT = 10
DEFAULT_TOLERATIONS: tuple[Obj, ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists",
     "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
     "effect": "NoSchedule"},
)


def with_default_tolerations(tolerations: list[Obj]) -> list[Obj]:
    out = list(tolerations)
    for t in DEFAULT_TOLERATIONS:
        if not any(o.get("key") == t["key"] and o.get("effect") == t["effect"] for o in out):
            out.append(dict(t))
    return out


def node_affinity_for(affinity: Obj | None, node: str) -> Obj:
    """The pod's affinity with its required node affinity replaced by ``matchFields
    metadata.name In [node]`` (upstream's ``ReplaceDaemonSetPodNodeNameNodeAffinity``)."""
    out = copy.deepcopy(affinity or {})
    out.setdefault("nodeAffinity", {})["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [node]}]}]}
    return out


def target_node(pod: Obj) -> str | None:
    """The node a daemon pod is on, or is pinned to by its node affinity."""
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        return str(node)
    required = ((((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or []:
        for f in term.get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("operator") == "In" \
                    and len(f.get("values") or []) == 1:
                return str(f["values"][0])
    return None


def node_fits(template: Obj, node: Obj) -> tuple[bool, bool]:
    """(should run, should continue running) of a daemon pod on ``node``: selector,
    required node affinity and taints; an untolerated NoSchedule taint only stops new
    pods, an untolerated NoExecute one evicts."""
    spec = template.get("spec") or {}
    md = node.get("metadata") or {}
    labels: Mapping[str, str] = md.get("labels") or {}
    name = str(md.get("name", ""))
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False, False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required and not NodeSelector.parse(required).matches(labels, name):
        return False, False
    taints = (node.get("spec") or {}).get("taints") or []
    tolerations = with_default_tolerations(list(spec.get("tolerations") or []))
    if untolerated_taint(taints, tolerations, ("NoExecute",)) is not None:
        return False, False
    if untolerated_taint(taints, tolerations, ("NoSchedule",)) is not None:
        return False, True
    return True, True


def new_pod(ds: Obj, node: str, hash_: str) -> Obj:
    md = ds["metadata"]
    template = (ds.get("spec") or {}).get("template") or {}
    tmd = template.get("metadata") or {}
    labels = {**(tmd.get("labels") or {}), HASH_LABEL: hash_}
    pmd: Obj = {"generateName": f"{md['name']}-", "namespace": md.get("namespace"),
                "labels": labels,
                "ownerReferences": [controller_reference(ds, API_VERSION, KIND)]}
    if tmd.get("annotations"):
        pmd["annotations"] = dict(tmd["annotations"])
    spec = copy.deepcopy(template.get("spec") or {})
    spec["tolerations"] = with_default_tolerations(list(spec.get("tolerations") or []))
    spec["affinity"] = node_affinity_for(spec.get("affinity"), node)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pmd, "spec": spec}


def int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def rolling_limits(ds: Obj, desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable); both zero would stall, so maxUnavailable is then 1."""
    ru = (((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {})
    surge = int_or_percent(ru.get("maxSurge", 0), desired, round_up=True)
    unavailable = int_or_percent(ru.get("maxUnavailable", 1), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


@dataclass
class Plan:
    create: list[str] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)


def _oldest_first(pods: list[Obj]) -> list[Obj]:
    return sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "",
                                       p["metadata"].get("name", "")))


def plan(ds: Obj, nodes: list[Obj], pods: list[Obj], hash_: str, *, now: float) -> Plan:
    """Pods to create (by node) and delete: manage, then one rolling update step."""
    spec = ds.get("spec") or {}
    template = spec.get("template") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    rolling = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
    by_node: dict[str, list[Obj]] = {}
    for p in pods:
        if p["metadata"].get("deletionTimestamp"):
            continue
        target = target_node(p)
        if target is not None:
            by_node.setdefault(target, []).append(p)
    out = Plan()
    wanted: dict[str, list[Obj]] = {}
    for node in nodes:
        name = node["metadata"]["name"]
        run, keep = node_fits(template, node)
        here = _oldest_first(by_node.pop(name, []))
        failed = [p for p in here if (p.get("status") or {}).get("phase") == "Failed"]
        out.delete += failed
        here = [p for p in here if p not in failed]
        if not keep or (not run and not here):
            out.delete += here
            continue
        if not here:
            if not failed:
                out.create.append(name)
            continue
        new = [p for p in here if labels_of(p).get(HASH_LABEL) == hash_]
        old = [p for p in here if p not in new]
        # one pod per node: the oldest new one, else the oldest old one; with surge an
        # old one may stay next to a new one until the new one is available
        keep_pods = new[:1] if new else old[:1]
        if new and old and rolling and not any(podutil.is_available(p, min_ready, now)
                                               for p in new[:1]):
            keep_pods = [*new[:1], *old[:1]]
        out.delete += [p for p in here if p not in keep_pods]
        wanted[name] = keep_pods
    for rest in by_node.values():  # pods on nodes that are gone
        out.delete += rest
    if rolling:
        _rolling_step(ds, wanted, hash_, out, min_ready=min_ready, now=now)
    return out


def _rolling_step(ds: Obj, wanted: dict[str, list[Obj]], hash_: str, out: Plan, *,
                  min_ready: int, now: float) -> None:
    surge, max_unavailable = rolling_limits(ds, len(wanted) + len(out.create))
    unavailable = len(out.create) + sum(
        1 for ps in wanted.values() if not any(podutil.is_available(p, min_ready, now)
                                               for p in ps))
    surging = sum(1 for ps in wanted.values() if len(ps) > 1)
    for node in sorted(wanted):
        pods = wanted[node]
        if any(labels_of(p).get(HASH_LABEL) == hash_ for p in pods):
            continue
        old = pods[0]
        if not podutil.is_available(old, min_ready, now):
            out.delete.append(old)  # not serving anyway
        elif surge > 0:
            if surging < surge:
                surging += 1
                out.create.append(node)
        elif unavailable < max_unavailable:
            unavailable += 1
            out.delete.append(old)


def calculate_status(ds: Obj, nodes: list[Obj], pods: list[Obj], hash_: str, *,
                     now: float) -> Obj:
    spec = ds.get("spec") or {}
    template = spec.get("template") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    by_node: dict[str, list[Obj]] = {}
    for p in pods:
        target = target_node(p)
        if target is not None and not p["metadata"].get("deletionTimestamp"):
            by_node.setdefault(target, []).append(p)
    desired = current = ready = available = updated = misscheduled = 0
    for node in nodes:
        name = node["metadata"]["name"]
        run, _ = node_fits(template, node)
        here = by_node.get(name, [])
        scheduled = [p for p in here if (p.get("spec") or {}).get("nodeName")]
        if run:
            desired += 1
            if here:
                current += 1
                newest = sorted(here, key=lambda p: labels_of(p).get(HASH_LABEL) == hash_)[-1]
                if podutil.is_ready(newest):
                    ready += 1
                    if podutil.is_available(newest, min_ready, now):
                        available += 1
                if any(labels_of(p).get(HASH_LABEL) == hash_ for p in here):
                    updated += 1
        elif scheduled:
            misscheduled += 1
    status: Obj = {"desiredNumberScheduled": desired, "currentNumberScheduled": current,
                   "numberReady": ready, "numberAvailable": available,
                   "numberUnavailable": max(0, desired - available),
                   "updatedNumberScheduled": updated, "numberMisscheduled": misscheduled}
    return status


def status_changed(ds: Obj, status: Obj) -> bool:
    old = ds.get("status") or {}
    if any(int(old.get(k) or 0) != int(v or 0) for k, v in status.items()):
        return True
    return int(old.get("observedGeneration") or 0) != int(ds["metadata"].get("generation") or 0)


class DaemonSetController:
    def __init__(self, client: Client, *, workers: int = 2, clock: Clock = SYSTEM_CLOCK,
                 pods: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.clock = clock
        self.pods = pods or shared_informer(client, "v1", "pods")
        self.nodes = shared_informer(client, "v1", "nodes")
        self.sets = Informer(client, API_VERSION, "daemonsets")
        self.revisions = shared_informer(client, API_VERSION, history.PLURAL)
        self._own = [self.sets, self.nodes, self.revisions] + \
            ([self.pods] if pods is None else [])
        self.queue: WorkQueue[str] = WorkQueue(name="daemonset")
        self.events = EventRecorder(client, COMPONENT)
        self._tasks: list[asyncio.Task[Any]] = []

    def _pod_changed(self, pod: Obj) -> None:
        ref = controller_of(pod)
        if ref is not None and ref.get("kind") == KIND:
            self.queue.add(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")

    def _all(self, *_: Obj) -> None:
        for ds in self.sets.list():
            self.queue.add(object_key(ds))

    async def reconcile(self, key: str) -> Result | None:
        ds = self.sets.get(key)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            return None
        ds = {**ds, "apiVersion": API_VERSION, "kind": KIND}
        md = ds["metadata"]
        claimed = await claim_pods(self.client, ds, self.pods, api_version=API_VERSION,
                                   kind=KIND, plural="daemonsets")
        if claimed is None:
            return None
        pods = claimed
        revisions = self.revisions.by_index(CONTROLLER_INDEX, md["uid"])
        current = await history.ensure_revision(self.client, ds, revisions,
                                                api_version=API_VERSION, kind=KIND)
        hash_ = history.hash_of(current)
        nodes = self.nodes.list()
        now = self.clock.now()
        step = plan(ds, nodes, pods, hash_, now=now)
        await asyncio.gather(*(self._create(ds, n, hash_) for n in step.create))
        await asyncio.gather(*(self._delete(ds, p) for p in step.delete))
        status = calculate_status(ds, nodes, pods, hash_, now=now)
        await self._write_status(ds, status)
        live = {current["metadata"]["name"]} | {
            f"{md['name']}-{labels_of(p).get(HASH_LABEL)}" for p in pods}
        limit = (ds.get("spec") or {}).get("revisionHistoryLimit")
        await history.truncate(self.client, revisions, live,
                               limit=DEFAULT_HISTORY_LIMIT if limit is None else int(limit))
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        if min_ready:
            times = [t for p in pods if (t := podutil.available_at(p, min_ready)) is not None
                     and t >= now]
            if times:
                return Result(requeue_after=min(times) - now + 1.0)
        return None

    async def _create(self, ds: Obj, node: str, hash_: str) -> None:
        try:
            created = await self.client.create("v1", "pods", new_pod(ds, node, hash_),
                                               namespace=ds["metadata"].get("namespace"))
        except StatusError as e:
            await self.events.emit(ds, "Warning", "FailedCreate", f"Error creating: {e.message}")
            raise
        await self.events.emit(ds, "Normal", "SuccessfulCreate",
                               f"Created pod: {created['metadata']['name']}")

    async def _delete(self, ds: Obj, pod: Obj) -> None:
        md = pod["metadata"]
        try:
            await self.client.delete("v1", "pods", md["name"], namespace=md.get("namespace"))
        except StatusError as e:
            if e.code == 404:
                return
            raise
        await self.events.emit(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {md['name']}")

    async def _write_status(self, ds: Obj, status: Obj) -> None:
        if not status_changed(ds, status):
            return
        generation = ds["metadata"].get("generation")
        body = {**ds, "status": {**(ds.get("status") or {}), **status,
                                 **({"observedGeneration": generation} if generation else {})}}
        try:
            await self.client.update_status(API_VERSION, "daemonsets", body)
        except StatusError as e:
            if e.code != 404:
                raise

    async def start(self) -> None:
        ensure_index(self.pods, CONTROLLER_INDEX, controller_uid_index)
        ensure_index(self.pods, ORPHAN_INDEX, orphan_namespace_index)
        ensure_index(self.revisions, CONTROLLER_INDEX, controller_uid_index)
        self.sets.add_handler(on_add=lambda s: self.queue.add(object_key(s)),
                              on_update=lambda old, new: self.queue.add(object_key(new)),
                              on_delete=lambda s: self.queue.add(object_key(s)))
        self.pods.add_handler(on_add=self._pod_changed,
                              on_update=lambda old, new: self._pod_changed(new),
                              on_delete=self._pod_changed)
        self.nodes.add_handler(on_add=self._all, on_update=self._all, on_delete=self._all)
        for inf in self._own:
            inf.start()
        self._tasks.append(spawn(self._run(), name="daemonset-workers"))

    async def _run(self) -> None:
        for inf in (self.pods, self.nodes, self.sets, self.revisions):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="daemonset-controller")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
