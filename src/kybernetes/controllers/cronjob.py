"""The CronJob controller: creates a CronJob's Jobs on its schedule (upstream's v2).

For each CronJob (key ``namespace/name``), looking at the Jobs it controls:

- finished Jobs leave ``status.active`` (``SawCompletedJob``), vanished ones too
  (``MissingJob``); ``status.lastSuccessfulTime`` follows the latest completion;
- beyond ``successfulJobsHistoryLimit`` (3) / ``failedJobsHistoryLimit`` (1), the oldest
  finished Jobs are deleted;
- unless ``suspend``, the most recent missed schedule time (since
  ``lastScheduleTime``, else the creation, and within ``startingDeadlineSeconds``)
  gets a Job named ``<cronjob>-<scheduled time in minutes since the epoch>``, annotated
  ``batch.kubernetes.io/cronjob-scheduled-timestamp``; ``concurrencyPolicy`` Forbid
  skips it while a Job is active, Replace deletes the active ones first. More than 100
  missed times draws a ``TooManyMissedTimes`` warning;
- it then waits (on an injectable clock) until the next schedule time plus 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import functools
import logging
from datetime import UTC, datetime
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import controller_of, object_key, parse_time, rfc3339
from kybernetes.client import Client, Informer, Result, WorkQueue, run_workers, shared_informer
from kybernetes.client.events import EventRecorder
from kybernetes.controllers.cron import Schedule, ScheduleError, location, parse_schedule
from kybernetes.controllers.jobpolicy import condition_true

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "cronjob-controller"
SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
NEXT_SCHEDULE_DELTA = 0.1
CRONJOB_INDEX = "cronjob"
TOO_MANY_MISSED = 100


class Missed(enum.Enum):
    NONE = "none"
    FEW = "few"
    MANY = "many"


# -- schedule arithmetic ------------------------------------------------------------------


def most_recent_schedule_time(cj: Obj, now: float, sched: Schedule, *,
                              include_deadline: bool) -> tuple[float, float | None, Missed]:
    """(earliest time considered, the most recent schedule time at or before ``now``
    (None if none), how many were missed) — upstream's ``mostRecentScheduleTime``.
    Raises :class:`ScheduleError` for a schedule that never fires."""
    md, spec = cj.get("metadata") or {}, cj.get("spec") or {}
    earliest = parse_time((cj.get("status") or {}).get("lastScheduleTime")) or \
        parse_time(md.get("creationTimestamp")) or now
    deadline = spec.get("startingDeadlineSeconds")
    if include_deadline and deadline is not None:
        earliest = max(earliest, now - int(deadline))
    t1 = sched.next(earliest)
    t2 = sched.next(t1) if t1 is not None else None
    if t1 is not None and now < t1:
        return earliest, None, Missed.NONE
    if t1 is not None and t2 is not None and now < t2:
        return earliest, t1, Missed.NONE
    between = round(t2 - t1) if t1 is not None and t2 is not None else 0
    if between < 1:
        raise ScheduleError("time difference between two schedules is less than 1 second")
    assert t1 is not None
    missed_count = int(now - t1) // between + 1
    # start two intervals before the estimate and let the schedule find the exact time
    most_recent: float | None = None
    t = sched.next(t1 + (missed_count - 2) * between)
    while t is not None and t <= now:
        most_recent = t
        t = sched.next(t)
    missed = Missed.MANY if missed_count > TOO_MANY_MISSED else \
        Missed.FEW if missed_count > 1 else Missed.NONE
    return earliest, most_recent, missed


def next_schedule_delay(cj: Obj, now: float, sched: Schedule) -> float | None:
    """Seconds until the next schedule time plus 100 ms (``nextScheduleTimeDuration``)."""
    try:
        earliest, recent, missed = most_recent_schedule_time(cj, now, sched,
                                                             include_deadline=False)
    except ScheduleError:
        recent = now
    else:
        if recent is None:
            recent = earliest if missed is Missed.NONE else now
    nxt = sched.next(recent)
    return None if nxt is None else nxt + NEXT_SCHEDULE_DELTA - now


def job_name(cj: Obj, scheduled: float) -> str:
    """``<cronjob>-<scheduled time in minutes since the epoch>``."""
    return f"{cj['metadata']['name']}-{int(scheduled) // 60}"


def go_rfc3339(t: float, tz_name: str | None) -> str:
    """Go's ``Format(time.RFC3339)`` in a zone: ``2024-01-02T03:04:05Z`` or ``...+01:00``."""
    text = datetime.fromtimestamp(t, location(tz_name)).isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def job_from_template(cj: Obj, scheduled: float) -> Obj:
    """The Job for one schedule time (``getJobFromTemplate2``)."""
    md, spec = cj["metadata"], cj.get("spec") or {}
    template = copy.deepcopy(spec.get("jobTemplate") or {})
    tmd = template.get("metadata") or {}
    annotations = dict(tmd.get("annotations") or {})
    annotations[SCHEDULED_TIMESTAMP] = go_rfc3339(scheduled, spec.get("timeZone"))
    job_md: Obj = {"name": job_name(cj, scheduled), "namespace": md.get("namespace"),
                   "annotations": annotations,
                   "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                        "name": md["name"], "uid": md["uid"],
                                        "controller": True, "blockOwnerDeletion": True}]}
    if tmd.get("labels"):
        job_md["labels"] = dict(tmd["labels"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_md,
            "spec": template.get("spec") or {}}


def finished_type(job: Obj) -> str | None:
    """``Complete`` or ``Failed`` when the Job has finished."""
    for type_ in ("Complete", "Failed"):
        if condition_true(job, type_):
            return type_
    return None


def _by_start_time(a: Obj, b: Obj) -> int:
    sa = parse_time((a.get("status") or {}).get("startTime"))
    sb = parse_time((b.get("status") or {}).get("startTime"))
    if sa is None and sb is not None:
        return 1
    if sa is not None and sb is None:
        return -1
    if sa is None or sb is None or sa == sb:
        na, nb = str(a["metadata"]["name"]), str(b["metadata"]["name"])
        return (na > nb) - (na < nb)
    return -1 if sa < sb else 1


def jobs_to_remove(jobs: list[Obj], limit: int) -> list[Obj]:
    """The oldest (by start time) of ``jobs`` beyond ``limit``."""
    extra = len(jobs) - limit
    if extra <= 0:
        return []
    return sorted(jobs, key=functools.cmp_to_key(_by_start_time))[:extra]


def rfc1123z(t: float) -> str:
    """Go's ``time.RFC1123Z`` in UTC: ``Mon, 02 Jan 2006 15:04:05 +0000``."""
    return datetime.fromtimestamp(t, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def cronjob_index(job: Obj) -> list[str]:
    """Index function: ``namespace/name`` of the CronJob controlling a Job."""
    ref = controller_of(job)
    if ref is None or ref.get("kind") != "CronJob":
        return []
    return [f"{job['metadata'].get('namespace')}/{ref.get('name')}"]


# -- the controller --------------------------------------------------------------------------


class CronJobController:
    def __init__(self, client: Client, *, workers: int = 2, clock: Clock = SYSTEM_CLOCK,
                 jobs: Informer | None = None, cronjobs: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.clock = clock
        self.jobs = jobs or shared_informer(client, "batch/v1", "jobs")
        self.cronjobs = cronjobs or shared_informer(client, "batch/v1", "cronjobs")
        self._own = [inf for inf, given in ((self.jobs, jobs), (self.cronjobs, cronjobs))
                     if given is None]
        self.jobs.add_index(CRONJOB_INDEX, cronjob_index)
        self.queue: WorkQueue[str] = WorkQueue(clock=clock, name="cronjob")
        self.events = EventRecorder(client, COMPONENT)
        self._tasks: list[asyncio.Task[Any]] = []

    def _job_changed(self, job: Obj) -> None:
        for key in cronjob_index(job):
            self.queue.add(key)

    async def reconcile(self, key: str) -> Result | None:
        cached = self.cronjobs.get(key)
        if cached is None:
            return None
        cj = copy.deepcopy(cached)
        cj.setdefault("apiVersion", "batch/v1")
        cj.setdefault("kind", "CronJob")
        cj.setdefault("status", {})
        jobs = self.jobs.by_index(CRONJOB_INDEX, key)
        changed = await self._cleanup_finished(cj, jobs)
        try:
            delay, synced_changed = await self.sync(cj, jobs)
        except StatusError as e:
            if changed:
                await self._write_status(cj)
            if e.code == 409:
                return Result(requeue=True)
            raise
        if changed or synced_changed:
            await self._write_status(cj)
        if delay is not None:
            return Result(requeue_after=max(delay, 0.001))
        return None

    async def sync(self, cj: Obj, jobs: list[Obj]) -> tuple[float | None, bool]:
        """One step (``syncCronJob``): (seconds until the next look, status changed)."""
        md, spec, status = cj["metadata"], cj.get("spec") or {}, cj["status"]
        now = self.clock.now()
        changed = False
        children = {j["metadata"].get("uid") for j in jobs}
        for j in jobs:
            uid, name = j["metadata"].get("uid"), j["metadata"]["name"]
            found = any(r.get("uid") == uid for r in status.get("active") or [])
            finished = finished_type(j)
            if not found and finished is None:
                if await self._fresh_active(cj, uid):
                    md, spec = cj["metadata"], cj.get("spec") or {}
                    status = cj.setdefault("status", {})
                    continue
                await self._event(cj, "Warning", "UnexpectedJob",
                                  f"Saw a job that the controller did not create or forgot: "
                                  f"{name}")
            elif found and finished is not None:
                self._drop_active(cj, uid)
                await self._event(cj, "Normal", "SawCompletedJob",
                                  f"Saw completed job: {name}, condition: {finished}")
                changed = True
            if finished == "Complete":
                done = (j.get("status") or {}).get("completionTime")
                last = status.get("lastSuccessfulTime")
                if done and (last is None or (parse_time(done) or 0) > (parse_time(last) or 0)):
                    status["lastSuccessfulTime"] = done
                    changed = True
        for ref in list(status.get("active") or []):
            if ref.get("uid") in children:
                continue
            try:
                await self.client.get("batch/v1", "jobs", ref.get("name", ""),
                                      namespace=ref.get("namespace") or md.get("namespace"))
            except StatusError as e:
                if e.code != 404:
                    raise
                await self._event(cj, "Normal", "MissingJob",
                                  f"Active job went missing: {ref.get('name')}")
                self._drop_active(cj, ref.get("uid"))
                changed = True
        if md.get("deletionTimestamp"):
            return None, changed
        tz_name = spec.get("timeZone")
        if tz_name is not None:
            try:
                location(tz_name)
            except ScheduleError as e:
                await self._event(cj, "Warning", "UnknownTimeZone",
                                  f'invalid timeZone: "{tz_name}": {e}')
                return None, changed
        if spec.get("suspend"):
            return None, changed
        schedule = str(spec.get("schedule") or "")
        if "TZ=" in schedule:
            await self._event(cj, "Warning", "UnsupportedSchedule",
                              f'CRON_TZ or TZ used in schedule "{schedule}" is not officially '
                              "supported, see https://kubernetes.io/docs/concepts/workloads/"
                              "controllers/cron-jobs/ for more details")
        try:
            sched = parse_schedule(schedule, tz_name)
        except ScheduleError as e:
            await self._event(cj, "Warning", "UnparseableSchedule",
                              f'unparseable schedule: "{schedule}" : {e}')
            return None, changed
        try:
            _, scheduled, missed = most_recent_schedule_time(cj, now, sched,
                                                             include_deadline=True)
        except ScheduleError as e:
            await self._event(cj, "Warning", "InvalidSchedule",
                              f"invalid schedule: {schedule} : {e}")
            return None, changed
        if scheduled is not None and missed is Missed.MANY:
            await self._event(cj, "Warning", "TooManyMissedTimes",
                              "too many missed start times. Set or decrease "
                              ".spec.startingDeadlineSeconds or check clock skew")
        if scheduled is None:
            return next_schedule_delay(cj, now, sched), changed
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and scheduled + int(deadline) < now:
            await self._event(cj, "Warning", "MissSchedule",
                              f"Missed scheduled time to start a job: {rfc1123z(scheduled)}")
            return next_schedule_delay(cj, now, sched), changed
        name = job_name(cj, scheduled)
        if any(r.get("name") == name for r in status.get("active") or []) or \
                parse_time(status.get("lastScheduleTime")) == scheduled:
            return next_schedule_delay(cj, now, sched), changed
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and status.get("active"):
            await self._event(cj, "Normal", "JobAlreadyActive",
                              "Not starting job because prior execution is running and "
                              "concurrency policy is Forbid")
            return next_schedule_delay(cj, now, sched), changed
        if policy == "Replace":
            for ref in list(status.get("active") or []):
                try:
                    job = await self.client.get("batch/v1", "jobs", ref.get("name", ""),
                                                namespace=md.get("namespace"))
                except StatusError as e:
                    await self._event(cj, "Warning", "FailedGet", f"Get job: {e.message}")
                    raise
                if not await self._delete_job(cj, job):
                    raise RuntimeError(f"could not replace job {md.get('namespace')}/"
                                       f"{ref.get('name')}")
                changed = True
        created = await self._create_job(cj, scheduled)
        if created is None:
            return None, changed
        status.setdefault("active", []).append(
            {"apiVersion": "batch/v1", "kind": "Job", "name": created["metadata"]["name"],
             "namespace": created["metadata"].get("namespace"),
             "uid": created["metadata"].get("uid"),
             "resourceVersion": created["metadata"].get("resourceVersion")})
        status["lastScheduleTime"] = rfc3339(scheduled)
        return next_schedule_delay(cj, now, sched), True

    async def _fresh_active(self, cj: Obj, uid: Any) -> bool:
        """Whether the CronJob as the API server has it lists the Job ``uid`` as active
        (the cache may not show our last status write yet); if so ``cj`` becomes it."""
        md = cj["metadata"]
        try:
            fresh = await self.client.get("batch/v1", "cronjobs", md["name"],
                                          namespace=md.get("namespace"))
        except StatusError as e:
            if e.code == 404:
                return False
            raise
        if not any(r.get("uid") == uid for r in (fresh.get("status") or {}).get("active")
                   or []):
            return False
        fresh.setdefault("apiVersion", "batch/v1")
        fresh.setdefault("kind", "CronJob")
        cj.clear()
        cj.update(fresh)
        return True

    async def _create_job(self, cj: Obj, scheduled: float) -> Obj | None:
        """Create the Job for ``scheduled``; None when there is nothing to record."""
        md = cj["metadata"]
        request = job_from_template(cj, scheduled)
        try:
            created = await self.client.create("batch/v1", "jobs", request,
                                               namespace=md.get("namespace"))
        except StatusError as e:
            if e.code == 403 and "being terminated" in e.message:
                return None
            if e.code != 409:
                await self._event(cj, "Warning", "FailedCreate",
                                  f"Error creating job: {e.message}")
                raise
            existing = await self.client.get("batch/v1", "jobs", request["metadata"]["name"],
                                             namespace=md.get("namespace"))
            ref = controller_of(existing)
            if ref is None or ref.get("uid") != md.get("uid"):
                return None  # created by someone else, who keeps the status
            if any(r.get("uid") == existing["metadata"].get("uid")
                   for r in cj["status"].get("active") or []):
                return None
            return existing
        await self._event(cj, "Normal", "SuccessfulCreate",
                          f"Created job {created['metadata']['name']}")
        return created

    async def _cleanup_finished(self, cj: Obj, jobs: list[Obj]) -> bool:
        spec = cj.get("spec") or {}
        changed = False
        for type_, limit in (("Complete", spec.get("successfulJobsHistoryLimit")),
                             ("Failed", spec.get("failedJobsHistoryLimit"))):
            if limit is None:
                continue
            for job in jobs_to_remove([j for j in jobs if finished_type(j) == type_],
                                      int(limit)):
                if await self._delete_job(cj, job):
                    changed = True
        return changed

    async def _delete_job(self, cj: Obj, job: Obj) -> bool:
        md = job["metadata"]
        try:
            await self.client.delete("batch/v1", "jobs", md["name"],
                                     namespace=md.get("namespace"),
                                     propagation_policy="Background")
        except StatusError as e:
            if e.code != 404:
                await self._event(cj, "Warning", "FailedDelete", f"Deleted job: {e.message}")
                return False
        self._drop_active(cj, md.get("uid"))
        await self._event(cj, "Normal", "SuccessfulDelete", f"Deleted job {md['name']}")
        return True

    @staticmethod
    def _drop_active(cj: Obj, uid: Any) -> None:
        status = cj["status"]
        active = [r for r in status.get("active") or [] if r.get("uid") != uid]
        if active:
            status["active"] = active
        else:
            status.pop("active", None)

    async def _write_status(self, cj: Obj) -> None:
        try:
            await self.client.update_status("batch/v1", "cronjobs", cj)
        except StatusError as e:
            if e.code != 404:
                raise

    async def _event(self, cj: Obj, typ: str, reason: str, message: str) -> None:
        obj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": cj["metadata"]}
        await self.events.emit(obj, typ, reason, message)

    # -- running -------------------------------------------------------------------------

    async def start(self) -> None:
        self.add_handlers()
        for inf in self._own:
            inf.start()
        self._tasks.append(spawn(self._run(), name="cronjob-workers"))

    def add_handlers(self) -> None:
        """Feed the queue from the informers (:meth:`start` does; tests call it alone)."""
        self.cronjobs.add_handler(on_add=lambda cj: self.queue.add(object_key(cj)),
                                  on_update=lambda old, new: self.queue.add(object_key(new)))
        self.jobs.add_handler(on_add=self._job_changed,
                              on_update=lambda old, new: self._job_changed(new),
                              on_delete=self._job_changed)

    async def _run(self) -> None:
        for inf in (self.jobs, self.cronjobs):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers, name="cronjob")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
