"""The PodGroup controller: the status of coscheduling PodGroups
(``scheduling.x-k8s.io/v1alpha1``), as scheduler-plugins' ``podgroup_controller.go`` in
the releases with the ``PreScheduling`` and ``Scheduled`` phases.

For each PodGroup (key ``namespace/name``) it reads the pods labelled
``scheduling.x-k8s.io/pod-group: <name>`` in its namespace and writes ``running``,
``succeeded``, ``failed`` (pods in that phase), ``scheduled`` (pods bound to a node) and
the phase:

- ``""`` → ``Pending``;
- ``Pending`` → ``PreScheduling`` once the group has ``minMember`` pods (``occupiedBy``
  then names the owners of its first pod, ``<ns>/<owner>`` sorted and comma-joined, and
  ``scheduleStartTime`` is set);
- afterwards: no pods → ``Pending``; ``PreScheduling`` → ``Scheduling`` once a pod is
  bound (scheduler-plugins' plugin did this at PostBind); ``Scheduling`` → ``Scheduled``
  once ``minMember`` are; ``Scheduled`` → ``Running`` once ``running + succeeded ≥
  minMember``; ``Failed`` when a pod failed and ``failed + running + succeeded ≥
  minMember``; ``Finished`` when ``succeeded ≥ minMember``.

``Finished`` and ``Failed`` are final: such a group is not touched again. Steps that
follow from one another are taken in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import object_key, rfc3339
from kybernetes.api.podgroup import (
    API_VERSION,
    FAILED,
    FINISHED,
    KIND,
    PENDING,
    PLURAL,
    POD_GROUP_INDEX,
    PRE_SCHEDULING,
    RUNNING,
    SCHEDULED,
    SCHEDULING,
    min_member,
    pod_group_index,
)
from kybernetes.client import Client, Informer, Result, WorkQueue, run_workers, shared_informer
from kybernetes.controllers.replicaset import ensure_index

log = logging.getLogger(__name__)
Obj = dict[str, Any]

_FINAL = (FINISHED, FAILED)


def occupied_by(pod: Obj) -> str:
    """``<ns>/<owner name>`` of each owner of ``pod``, sorted, comma-joined."""
    md = pod.get("metadata") or {}
    refs = sorted(f"{md.get('namespace') or ''}/{ref.get('name', '')}"
                  for ref in md.get("ownerReferences") or ())
    return ",".join(refs)


def pod_group_status(pg: Obj, pods: list[Obj], now: float) -> Obj:
    """The status ``pg`` should have, given its pods."""
    status: Obj = dict(pg.get("status") or {})
    phase = str(status.get("phase") or "")
    if phase in _FINAL:
        return status
    need = min_member(pg)
    counts = {"running": 0, "succeeded": 0, "failed": 0}
    scheduled = 0
    for pod in pods:
        pod_phase = (pod.get("status") or {}).get("phase")
        if pod_phase == "Running":
            counts["running"] += 1
        elif pod_phase == "Succeeded":
            counts["succeeded"] += 1
        elif pod_phase == "Failed":
            counts["failed"] += 1
        if (pod.get("spec") or {}).get("nodeName"):
            scheduled += 1
    running, succeeded, failed = counts["running"], counts["succeeded"], counts["failed"]
    seen: set[str] = set()
    while phase not in seen and phase not in _FINAL:
        seen.add(phase)
        if phase == "":
            new = PENDING
        elif phase == PENDING:
            if not pods or len(pods) < need:
                break
            new = PRE_SCHEDULING
            first = min(pods, key=lambda p: str((p.get("metadata") or {}).get("name", "")))
            owners = occupied_by(first)
            if owners:
                status["occupiedBy"] = owners
            if not status.get("scheduleStartTime"):
                status["scheduleStartTime"] = rfc3339(now)
        elif not pods:
            new = PENDING
        else:
            new = phase
            if new == PRE_SCHEDULING and scheduled > 0:
                new = SCHEDULING
            if new == SCHEDULING and scheduled >= need:
                new = SCHEDULED
            if new == SCHEDULED and running + succeeded >= need:
                new = RUNNING
            if failed and failed + running + succeeded >= need:
                new = FAILED
            if succeeded >= need:
                new = FINISHED
        if new == phase:
            break
        phase = new
    status["phase"] = phase
    status.update(counts, scheduled=scheduled)
    return status


class PodGroupController:
    def __init__(self, client: Client, *, workers: int = 1, clock: Clock = SYSTEM_CLOCK,
                 pods: Informer | None = None, pod_groups: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.clock = clock
        self.pods = pods or shared_informer(client, "v1", "pods")
        self.pod_groups = pod_groups or shared_informer(client, API_VERSION, PLURAL)
        self._own = [inf for inf, given in ((self.pods, pods), (self.pod_groups, pod_groups))
                     if given is None]
        self.queue: WorkQueue[str] = WorkQueue(clock=clock, name="podgroup")
        self._tasks: list[asyncio.Task[Any]] = []

    # -- events in ---------------------------------------------------------------------

    def _pod_changed(self, *pods: Obj) -> None:
        for pod in pods:
            for key in pod_group_index(pod):
                self.queue.add(key)

    def _group_changed(self, *groups: Obj) -> None:
        self.queue.add(object_key(groups[-1]))

    # -- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result | None:
        pg = self.pod_groups.get(key)
        if pg is None:
            return None
        pods = [p for k in self.pods.index_keys(POD_GROUP_INDEX, key)
                if (p := self.pods.get(k)) is not None]
        status = pod_group_status(pg, pods, self.clock.now())
        if status == (pg.get("status") or {}):
            return None
        body = {**pg, "apiVersion": API_VERSION, "kind": KIND, "status": status}
        try:
            await self.client.update_status(API_VERSION, PLURAL, body)
        except StatusError as e:
            if e.code == 404:
                return None
            if e.code == 409:  # a stale cache: the informer brings the fresh one back
                return Result(requeue=True)
            raise
        return None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        ensure_index(self.pods, POD_GROUP_INDEX, pod_group_index)
        self.pod_groups.add_handler(on_add=self._group_changed,
                                    on_update=self._group_changed)
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_changed,
                              on_delete=self._pod_changed)
        for inf in self._own:
            inf.start()
        self._tasks.append(spawn(self._run(), name="podgroup-workers"))

    async def _run(self) -> None:
        for inf in (self.pods, self.pod_groups):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="podgroup-controller")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
