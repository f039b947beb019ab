"""Per-device GPU allocation, shown on the node: annotation
``kybernetes.io/gpu-allocation`` lists every device's used milli-GPU and the pods on it, as
the scheduler recorded them (pod annotation ``kybernetes.io/gpu-index``), so that
``kubectl describe node`` tells which device is how full::

    kybernetes.io/gpu-allocation: 0: 1000/1000 (default/a 300, default/b 500, default/c 200); 1: 0/1000

Pods that have ended (Succeeded/Failed) hold nothing. Nodes without GPUs are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api import gpushare
from kybernetes.api.errors import StatusError
from kybernetes.client import Client, Informer, Result, WorkQueue, run_workers, shared_informer
from kybernetes.controllers.replicaset import ensure_index
from kybernetes.controllers.tainteviction import NODE_NAME_INDEX, node_name_index

log = logging.getLogger(__name__)
Obj = dict[str, Any]
ANNOTATION = "kybernetes.io/gpu-allocation"


def _devices(node: Obj) -> int:
    alloc = (node.get("status") or {}).get("allocatable") or {}
    try:
        return int(str(alloc.get(gpushare.NVIDIA_GPU) or 0))
    except ValueError:
        return 0


def allocation(devices: int, pods: list[Obj]) -> str:
    """The annotation's value for a node with ``devices`` GPUs running ``pods``."""
    used = [0] * devices
    holders: list[list[str]] = [[] for _ in range(devices)]
    for pod in sorted(pods, key=lambda p: (p["metadata"].get("namespace", ""),
                                           p["metadata"].get("name", ""))):
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        req = gpushare.gpu_request(pod)
        indexes = gpushare.device_indexes(pod)
        if req is None or indexes is None:
            continue
        md = pod["metadata"]
        for i in indexes:
            if 0 <= i < devices:
                used[i] += req.milli
                holders[i].append(f"{md.get('namespace', '')}/{md.get('name', '')} {req.milli}")
    parts = []
    for i in range(devices):
        who = f" ({', '.join(holders[i])})" if holders[i] else ""
        parts.append(f"{i}: {used[i]}/{gpushare.FULL}{who}")
    return "; ".join(parts)


class GpuAllocationController:
    def __init__(self, client: Client, *, pods: Informer | None = None,
                 nodes: Informer | None = None) -> None:
        self.client = client
        self.pods = pods or shared_informer(client, "v1", "pods")
        self.nodes = nodes or shared_informer(client, "v1", "nodes")
        self._own = [inf for inf, given in ((self.pods, pods), (self.nodes, nodes))
                     if given is None]
        self.queue: WorkQueue[str] = WorkQueue(name="gpuallocation")
        self._tasks: list[asyncio.Task[Any]] = []

    def _pod_changed(self, *pods: Obj) -> None:
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if node and gpushare.device_indexes(pod) is not None:
                self.queue.add(node)

    def _node_changed(self, *nodes: Obj) -> None:
        node = nodes[-1]
        if _devices(node) or ANNOTATION in (node["metadata"].get("annotations") or {}):
            self.queue.add(node["metadata"]["name"])

    async def reconcile(self, name: str) -> Result | None:
        node = self.nodes.get(name)
        if node is None:
            return None
        devices = _devices(node)
        pods = [p for k in self.pods.index_keys(NODE_NAME_INDEX, name)
                if (p := self.pods.get(k)) is not None]
        want = allocation(devices, pods) if devices else None
        have = (node["metadata"].get("annotations") or {}).get(ANNOTATION)
        if want == have:
            return None
        try:
            await self.client.patch("v1", "nodes", name,
                                    {"metadata": {"annotations": {ANNOTATION: want}}})
        except StatusError as e:
            if e.code == 404:
                return None
            raise
        return None

    async def start(self) -> None:
        ensure_index(self.pods, NODE_NAME_INDEX, node_name_index)
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_changed,
                              on_delete=self._pod_changed)
        self.nodes.add_handler(on_add=self._node_changed, on_update=self._node_changed)
        for inf in self._own:
            inf.start()
        self._tasks.append(spawn(self._run(), name="gpuallocation-workers"))

    async def _run(self) -> None:
        for inf in (self.pods, self.nodes):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=1,
                          name="gpuallocation-controller")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
