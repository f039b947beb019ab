"""The TTL-after-finished controller: deletes Jobs ``ttlSecondsAfterFinished`` after they
finished (upstream's ``ttlafterfinished`` controller).

A Job is finished when its Complete or Failed condition is True; it expires at its
``completionTime`` (else the condition's ``lastTransitionTime``) plus the TTL. Before
deleting, the Job is read fresh from the API server (the TTL may have been changed), then
deleted in the foreground with a uid precondition, so that its pods go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import object_key, parse_time
from kybernetes.client import Client, Informer, Result, WorkQueue, run_workers, shared_informer
from kybernetes.controllers.jobpolicy import find_condition, is_finished

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def expires_at(job: Obj) -> float | None:
    """When a finished Job with a TTL may be deleted; None if it may not (yet) be."""
    md, spec = job.get("metadata") or {}, job.get("spec") or {}
    ttl = spec.get("ttlSecondsAfterFinished")
    if ttl is None or md.get("deletionTimestamp") or not is_finished(job):
        return None
    finished = parse_time((job.get("status") or {}).get("completionTime"))
    if finished is None:
        for type_ in ("Complete", "Failed"):
            cond = find_condition(job, type_)
            if cond is not None and cond.get("status") == "True":
                finished = parse_time(cond.get("lastTransitionTime"))
                break
    if finished is None:
        return None
    return finished + int(ttl)


class TTLAfterFinishedController:
    def __init__(self, client: Client, *, workers: int = 1, clock: Clock = SYSTEM_CLOCK,
                 jobs: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.clock = clock
        self.jobs = jobs or shared_informer(client, "batch/v1", "jobs")
        self._own = jobs is None
        self.queue: WorkQueue[str] = WorkQueue(clock=clock, name="ttl-after-finished")
        self._tasks: list[asyncio.Task[Any]] = []

    def _changed(self, job: Obj) -> None:
        if expires_at(job) is not None:
            self.queue.add(object_key(job))

    async def reconcile(self, key: str) -> Result | None:
        job = self.jobs.get(key)
        if job is None or (at := expires_at(job)) is None:
            return None
        if at > self.clock.now():
            return Result(requeue_after=at - self.clock.now())
        ns, _, name = key.partition("/")
        try:
            fresh = await self.client.get("batch/v1", "jobs", name, namespace=ns)
        except StatusError as e:
            if e.code == 404:
                return None
            raise
        at = expires_at(fresh)
        if at is None:
            return None
        if at > self.clock.now():
            return Result(requeue_after=at - self.clock.now())
        try:
            await self.client.delete("batch/v1", "jobs", name, namespace=ns,
                                     propagation_policy="Foreground",
                                     preconditions={"uid": fresh["metadata"]["uid"]})
        except StatusError as e:
            if e.code not in (404, 409):
                raise
        return None

    async def start(self) -> None:
        self.jobs.add_handler(on_add=self._changed,
                              on_update=lambda old, new: self._changed(new))
        if self._own:
            self.jobs.start()
        self._tasks.append(spawn(self._run(), name="ttl-after-finished-workers"))

    async def _run(self) -> None:
        await self.jobs.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="ttl-after-finished")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        if self._own:
            await self.jobs.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
