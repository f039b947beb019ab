"""The node lifecycle controller: notices nodes whose kubelet went silent (upstream's
``pkg/controller/nodelifecycle``), and runs the taint eviction controller beside it.

A node is heard from when its Lease in ``kube-node-lease`` is renewed or its Ready
condition's ``lastHeartbeatTime`` moves. Once nothing was heard for the grace period
(``--node-monitor-grace-period``, 40 s; 60 s for a node that never posted a Ready
condition), its Ready, MemoryPressure, DiskPressure and PIDPressure conditions become
Unknown (``NodeStatusUnknown``: "Kubelet stopped posting node status."). From the Ready
condition follow the taints ``node.kubernetes.io/unreachable`` (Unknown) or
``node.kubernetes.io/not-ready`` (False), both NoSchedule and NoExecute, removed again
when the kubelet reports Ready; the pods of a node that is not Ready are marked not Ready.

>>> ctl = NodeLifecycleController(client, grace_period=40.0)  # doctest: +SKIP
>>> await ctl.start()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import rfc3339
from kybernetes.client import Client, Informer, Result, WorkQueue, run_workers, shared_informer
from kybernetes.client.events import EventRecorder
from kybernetes.controllers.replicaset import ensure_index
from kybernetes.controllers.tainteviction import (
    NODE_NAME_INDEX,
    TaintEvictionController,
    node_name_index,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "node-controller"
LEASE_NAMESPACE = "kube-node-lease"
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
DEFAULT_GRACE_PERIOD = 40.0
DEFAULT_STARTUP_GRACE_PERIOD = 60.0
UNKNOWN_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
_EFFECTS = ("NoSchedule", "NoExecute")


def find_condition(obj: Mapping[str, Any] | None, type_: str) -> Obj | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return dict(c)
    return None


def unknown_conditions(node: Obj, now: str) -> list[Obj] | None:
    """The conditions of a node whose kubelet stopped posting; None when already so."""
    conds = [dict(c) for c in (node.get("status") or {}).get("conditions") or ()]
    by_type = {c.get("type"): c for c in conds}
    changed = False
    for type_ in UNKNOWN_CONDITIONS:
        c = by_type.get(type_)
        if c is None:
            conds.append({"type": type_, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                          "message": "Kubelet never posted node status.",
                          "lastHeartbeatTime": node["metadata"].get("creationTimestamp"),
                          "lastTransitionTime": now})
            changed = True
        elif c.get("status") != "Unknown":
            c.update(status="Unknown", reason="NodeStatusUnknown",
                     message="Kubelet stopped posting node status.", lastTransitionTime=now)
            changed = True
    return conds if changed else None


def desired_taints(node: Obj, now: str) -> list[Obj] | None:
    """The node's taints with the not-ready/unreachable ones its Ready condition calls for
    (NoSchedule and NoExecute; NoExecute ones carry ``timeAdded``); None when unchanged.
    A node without a Ready condition keeps what it has."""
    ready = find_condition(node, "Ready")
    if ready is None:
        return None
    want = {"False": NOT_READY, "Unknown": UNREACHABLE}.get(str(ready.get("status")))
    old = list((node.get("spec") or {}).get("taints") or ())
    new = [t for t in old if t.get("key") not in (NOT_READY, UNREACHABLE)
           or t.get("effect") not in _EFFECTS or t.get("key") == want]
    for effect in _EFFECTS if want else ():
        if not any(t.get("key") == want and t.get("effect") == effect for t in new):
            taint: Obj = {"key": want, "effect": effect}
            if effect == "NoExecute":
                taint["timeAdded"] = now
            new.append(taint)
    return new if new != old else None


def not_ready_condition(pod: Obj, now: str) -> Obj | None:
    """The pod's Ready condition turned False (MarkPodsNotReady); None if nothing to do."""
    ready = find_condition(pod, "Ready")
    if ready is None or ready.get("status") == "False":
        return None
    ready.update(status="False", lastTransitionTime=now)
    return ready


class NodeLifecycleController:
    def __init__(self, client: Client, *, grace_period: float = DEFAULT_GRACE_PERIOD,
                 startup_grace_period: float = DEFAULT_STARTUP_GRACE_PERIOD,
                 pods: Informer | None = None, workers: int = 2,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.client = client
        self.grace_period = grace_period
        self.startup_grace_period = startup_grace_period
        self.workers = workers
        self.clock = clock
        self.nodes = shared_informer(client, "v1", "nodes")
        self.leases = Informer(client, "coordination.k8s.io/v1", "leases",
                               namespace=LEASE_NAMESPACE)
        self.pods = pods or shared_informer(client, "v1", "pods")
        self._own_pods = pods is None
        self.queue: WorkQueue[str] = WorkQueue(clock=clock, name="node-lifecycle")
        self.recorder = EventRecorder(client, COMPONENT)
        self.eviction = TaintEvictionController(client, nodes=self.nodes, pods=self.pods,
                                                clock=clock)
        self._heard: dict[str, tuple[tuple[str, str], float]] = {}
        """node -> (last heartbeat and lease renewal seen, monotonic time they changed)."""
        self._tasks: list[asyncio.Task[Any]] = []

    def _pod_changed(self, pod: Obj) -> None:
        name = (pod.get("spec") or {}).get("nodeName") or ""
        ready = find_condition(self.nodes.get(name), "Ready")
        if ready is not None and ready.get("status") != "True" \
                and not_ready_condition(pod, "") is not None:
            self.queue.add(name)

    def _last_heard(self, name: str, node: Obj) -> float:
        ready = find_condition(node, "Ready") or {}
        lease = self.leases.get(f"{LEASE_NAMESPACE}/{name}") or {}
        seen = (str(ready.get("lastHeartbeatTime") or ""),
                str((lease.get("spec") or {}).get("renewTime") or ""))
        heard = self._heard.get(name)
        if heard is None or heard[0] != seen:
            heard = self._heard[name] = (seen, self.clock.monotonic())
        return heard[1]

    async def reconcile(self, name: str) -> Result | None:
        node = self.nodes.get(name)
        if node is None:
            self._heard.pop(name, None)
            return None
        grace = self.grace_period if find_condition(node, "Ready") else \
            self.startup_grace_period
        left = self._last_heard(name, node) + grace - self.clock.monotonic()
        now = rfc3339(self.clock.now())
        rv = node["metadata"].get("resourceVersion")
        try:
            if left <= 0 and (conds := unknown_conditions(node, now)) is not None:
                await self.client.patch("v1", "nodes", name,
                                        {"metadata": {"resourceVersion": rv},
                                         "status": {"conditions": conds}},
                                        patch_type="merge", subresource="status")
                log.info("node %s: kubelet stopped posting node status", name)
                await self.recorder.emit(node, "Normal", "NodeNotReady",
                                         f"Node {name} status is now: NodeNotReady")
                return None  # the update brings the node back here
            if (taints := desired_taints(node, now)) is not None:
                await self.client.patch("v1", "nodes", name,
                                        {"metadata": {"resourceVersion": rv},
                                         "spec": {"taints": taints}}, patch_type="merge")
                return None
        except StatusError as e:
            if e.code == 404:
                return None
            if e.code == 409:
                return Result(requeue_after=0.2)
            raise
        ready = find_condition(node, "Ready")
        if ready is not None and ready.get("status") != "True":
            await self._mark_pods_not_ready(name, now)
        return Result(requeue_after=left + 0.05) if left > 0 else None

    async def _mark_pods_not_ready(self, name: str, now: str) -> None:
        for pod in self.pods.by_index(NODE_NAME_INDEX, name):
            if (cond := not_ready_condition(pod, now)) is None:
                continue
            md = pod["metadata"]
            try:
                await self.client.patch("v1", "pods", md["name"],
                                        {"status": {"conditions": [cond]}},
                                        patch_type="strategic", namespace=md["namespace"],
                                        subresource="status")
            except StatusError as e:
                if e.code != 404:
                    raise
                continue
            await self.recorder.emit(pod, "Warning", "NodeNotReady", "Node is not ready")

    async def start(self) -> None:
        ensure_index(self.pods, NODE_NAME_INDEX, node_name_index)
        self.nodes.add_handler(on_add=lambda n: self.queue.add(n["metadata"]["name"]),
                               on_update=lambda old, n: self.queue.add(n["metadata"]["name"]),
                               on_delete=lambda n: self.queue.add(n["metadata"]["name"]))
        self.leases.add_handler(on_add=lambda x: self.queue.add(x["metadata"]["name"]),
                                on_update=lambda old, x: self.queue.add(x["metadata"]["name"]))
        self.pods.add_handler(on_add=self._pod_changed,
                              on_update=lambda old, new: self._pod_changed(new))
        await self.eviction.start()
        self.nodes.start()
        self.leases.start()
        if self._own_pods:
            self.pods.start()
        self._tasks.append(spawn(self._run(), name="node-lifecycle-workers"))

    async def _run(self) -> None:
        for informer in (self.nodes, self.leases, self.pods):
            await informer.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="node-lifecycle")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.eviction.stop()
        for informer in (self.nodes, self.leases, *((self.pods,) if self._own_pods else ())):
            await informer.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
