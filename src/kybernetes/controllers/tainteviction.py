"""The taint eviction controller: deletes pods from nodes with ``NoExecute`` taints they do
not tolerate (upstream's ``pkg/controller/tainteviction``).

A pod that does not tolerate one of its node's ``NoExecute`` taints is deleted at once; one
that tolerates them all for a while (``tolerationSeconds``, the smallest of the matching
tolerations) is deleted that long after the controller first saw it so, unless the taints
go or the tolerations grow first. Before deleting, the pod gets the ``DisruptionTarget``
condition (reason ``DeletionByTaintManager``) and a ``TaintManagerEviction`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import object_key, rfc3339
from kybernetes.api.scheduling import tolerates
from kybernetes.client import Client, Informer, Result, WorkQueue, run_workers
from kybernetes.client.events import EventRecorder
from kybernetes.controllers.replicaset import ensure_index

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "taint-eviction-controller"
NODE_NAME_INDEX = "spec.nodeName"


def node_name_index(pod: Obj) -> list[str]:
    """Index pods by the node they are bound to."""
    name = (pod.get("spec") or {}).get("nodeName")
    return [name] if name else []


def no_execute_taints(node: Mapping[str, Any] | None) -> list[Obj]:
    return [t for t in ((node or {}).get("spec") or {}).get("taints") or ()
            if t.get("effect") == "NoExecute"]


def eviction_delay(taints: Sequence[Mapping[str, Any]],
                   tolerations: Sequence[Mapping[str, Any]]) -> float | None:
    """Seconds a pod may stay on a node with these ``NoExecute`` taints; None: for ever.

    0 when some taint is not tolerated; otherwise the smallest ``tolerationSeconds`` of
    the tolerations that match (negative counts as 0; ones without it last for ever).

    >>> eviction_delay([{"key": "k", "effect": "NoExecute"}], [])
    0.0
    """
    if not taints:
        return None
    used: list[Mapping[str, Any]] = []
    for taint in taints:
        matching = [t for t in tolerations if tolerates(t, taint)]
        if not matching:
            return 0.0
        used += matching
    seconds = [int(t["tolerationSeconds"]) for t in used if t.get("tolerationSeconds") is not None]
    if not seconds:
        return None
    return float(max(0, min(seconds)))


class TaintEvictionController:
    def __init__(self, client: Client, *, nodes: Informer, pods: Informer, workers: int = 2,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.client = client
        self.nodes = nodes
        self.pods = pods
        self.workers = workers
        self.clock = clock
        self.queue: WorkQueue[str] = WorkQueue(clock=clock, name="taint-eviction")
        self.recorder = EventRecorder(client, COMPONENT)
        self._since: dict[str, tuple[str, float]] = {}
        """pod key -> (uid, when it was first seen due for eviction): upstream's timed queue."""
        self._tasks: list[asyncio.Task[Any]] = []

    def _pod_changed(self, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName"):
            self.queue.add(object_key(pod))

    def _pod_deleted(self, pod: Obj) -> None:
        self._since.pop(object_key(pod), None)

    def _node_changed(self, old: Obj | None, new: Obj) -> None:
        if old is not None and no_execute_taints(old) == no_execute_taints(new):
            return
        for key in self.pods.index_keys(NODE_NAME_INDEX, new["metadata"]["name"]):
            self.queue.add(key)

    async def reconcile(self, key: str) -> Result | None:
        pod = self.pods.get(key)
        node_name = ((pod or {}).get("spec") or {}).get("nodeName")
        if pod is None or not node_name or pod["metadata"].get("deletionTimestamp"):
            self._since.pop(key, None)
            return None
        delay = eviction_delay(no_execute_taints(self.nodes.get(node_name)),
                               (pod.get("spec") or {}).get("tolerations") or [])
        uid = pod["metadata"].get("uid", "")
        if delay is None:
            if self._since.pop(key, None) is not None:
                await self.recorder.emit(pod, "Normal", "TaintManagerEviction",
                                         f"Cancelling deletion of Pod {key}")
            return None
        since = self._since.get(key)
        if since is None or since[0] != uid:
            since = self._since[key] = (uid, self.clock.now())
        left = since[1] + delay - self.clock.now()
        if left > 0:
            return Result(requeue_after=left)
        await self._evict(pod, key)
        self._since.pop(key, None)
        return None

    async def _evict(self, pod: Obj, key: str) -> None:
        ns, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]
        await self.recorder.emit(pod, "Normal", "TaintManagerEviction",
                                 f"Marking for deletion Pod {key}")
        cond = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint",
                "lastTransitionTime": rfc3339(self.clock.now())}
        old = next((c for c in (pod.get("status") or {}).get("conditions") or ()
                    if c.get("type") == "DisruptionTarget"), None)
        try:
            if old is None or any(old.get(k) != cond[k] for k in ("status", "reason", "message")):
                if old is not None and old.get("status") == "True":
                    cond["lastTransitionTime"] = old.get("lastTransitionTime", "")
                await self.client.patch("v1", "pods", name,
                                        {"metadata": {"uid": uid},
                                         "status": {"conditions": [cond]}},
                                        patch_type="strategic", namespace=ns,
                                        subresource="status")
            await self.client.delete("v1", "pods", name, namespace=ns,
                                     preconditions={"uid": uid})
        except StatusError as e:
            if e.code not in (404, 409):
                raise
        log.info("taint eviction: deleted pod %s from node %s", key, pod["spec"]["nodeName"])

    async def start(self) -> None:
        """Register handlers on the shared informers (their owner starts them)."""
        ensure_index(self.pods, NODE_NAME_INDEX, node_name_index)
        self.pods.add_handler(on_add=self._pod_changed,
                              on_update=lambda old, new: self._pod_changed(new),
                              on_delete=self._pod_deleted)
        self.nodes.add_handler(on_add=lambda node: self._node_changed(None, node),
                               on_update=self._node_changed)
        self._tasks.append(spawn(self._run(), name="taint-eviction-workers"))

    async def _run(self) -> None:
        await self.pods.wait_synced()
        await self.nodes.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="taint-eviction")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        with contextlib.suppress(Exception):
            await self.queue.aclose()
