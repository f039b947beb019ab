"""The training-job controller: Kubeflow ``kubeflow.org/v1`` PyTorchJob and TFJob run as
the training operator runs them, with gang scheduling built in and two training-aware
additions.

Each reconcile of a job (key ``<plural>/<namespace>/<name>``):

1. a finished job (``Succeeded`` or ``Failed``) has its pods cleaned up by
   ``runPolicy.cleanPodPolicy`` (``None`` by default: kept, for their logs; ``Running``:
   the unfinished ones; ``All``), its PodGroup deleted, and is deleted itself
   ``ttlSecondsAfterFinished`` after its ``completionTime``;
2. ``runPolicy.suspend`` deletes its pods, Services and PodGroup (condition
   ``Suspended``); resuming starts it afresh (``startTime`` reset);
3. ``activeDeadlineSeconds`` past ``startTime``, or the restart budget spent, fails it
   (every pod and Service deleted);
4. otherwise its PodGroup (``scheduling.x-k8s.io/v1alpha1``, named after the job,
   ``minMember`` = all replicas unless ``schedulingPolicy.minAvailable``), one pod and one
   headless Service per replica (:mod:`.kinds`) are created; a failed pod is replaced as
   its ``restartPolicy`` says (``OnFailure``/``Always``: the node agent restarts it in
   place; ``ExitCode``: exit codes from 128 are retried, 1–127 fail the job; ``Never``:
   the job fails), and the status follows the pods (:mod:`.status`).

Beyond upstream:

- ``runPolicy.restartScope: Job``: when any replica fails (and its policy allows a
  restart), every replica is deleted and, once all are gone, recreated together, so a
  collective (all-reduce) never waits on a peer that restarted alone.
- ``runPolicy.backoffLimit`` is a budget of restarts across replicas: container restarts
  in place, replaced pods and whole-job restarts all count; the failure that would need
  one restart more than the budget fails the job, saying how many it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import controller_of, parse_time, rfc3339
from kybernetes.client import Client, Informer, Result, WorkQueue, run_workers, shared_informer
from kybernetes.client.events import EventRecorder
from kybernetes.controllers.ownership import CONTROLLER_INDEX, controller_uid_index
from kybernetes.controllers.training.kinds import (
    GROUP_VERSION,
    JOB_RESTARTS_ANNOTATION,
    KINDS,
    RESTARTS_ANNOTATION,
    JobKind,
    build_pod,
    build_service,
    gang_shortfall,
    pod_group,
    pod_name,
    replicas,
    restart_scope,
    run_policy,
)
from kybernetes.controllers.training.status import (
    CREATED,
    FAILED,
    RESTARTING,
    RUNNING,
    SUCCEEDED,
    SUSPENDED,
    Replicas,
    count,
    exit_code,
    has,
    is_finished,
    phase,
    replica_statuses,
    restarts,
    set_condition,
    should_restart,
    verdict,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "training-operator"
POD_GROUPS = ("scheduling.x-k8s.io/v1alpha1", "podgroups")


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _job_key(pod: Obj) -> str | None:
    ref = controller_of(pod)
    if not ref or ref.get("apiVersion") != GROUP_VERSION:
        return None
    kind = next((k for k in KINDS.values() if k.kind == ref.get("kind")), None)
    if kind is None:
        return None
    return f"{kind.plural}/{(pod.get('metadata') or {}).get('namespace', '')}/{ref.get('name')}"


class TrainingJobController:
    def __init__(self, client: Client, *, pods: Informer | None = None, workers: int = 2,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.client = client
        self.workers = workers
        self.clock = clock
        self.jobs = {plural: shared_informer(client, GROUP_VERSION, plural)
                     for plural in KINDS}
        self.pods = pods or shared_informer(client, "v1", "pods")
        self.services = shared_informer(client, "v1", "services")
        self.nodes = shared_informer(client, "v1", "nodes")
        self._own_pods = pods is None
        self.recorder = EventRecorder(client, COMPONENT)
        self.queue: WorkQueue[str] = WorkQueue(clock=clock, name="training-jobs")
        self._tasks: list[asyncio.Task[Any]] = []
        self._replaced: dict[tuple[str, str], int] = {}
        """(job uid, pod name) -> restarts of that replica, for its replacement pod."""
        self._job_restarts: dict[str, int] = {}
        """job uid -> whole-job restarts so far (``restartScope: Job``)."""
        self._groups: set[str] = set()
        """Uids of the jobs whose PodGroup was made."""
        self._groups_gone: set[str] = set()
        """Uids of the finished or suspended jobs whose PodGroup was deleted."""
        self._ungrouped: set[str] = set()
        """Uids of the jobs scheduled without a PodGroup (a gang that could never fit)."""

    # -- watching ----------------------------------------------------------------------

    def _enqueue_owner(self, obj: Obj) -> None:
        key = _job_key(obj)
        if key is not None:
            self.queue.add(key)

    async def start(self) -> None:
        for plural, inf in self.jobs.items():
            def changed(job: Obj, plural: str = plural) -> None:
                md = job.get("metadata") or {}
                self.queue.add(f"{plural}/{md.get('namespace', '')}/{md.get('name', '')}")

            def updated(_old: Obj, new: Obj, changed: Any = changed) -> None:
                changed(new)

            def deleted(job: Obj) -> None:
                uid = (job.get("metadata") or {}).get("uid", "")
                self._job_restarts.pop(uid, None)
                self._groups.discard(uid)
                self._groups_gone.discard(uid)
                self._ungrouped.discard(uid)
                for k in [k for k in self._replaced if k[0] == uid]:
                    del self._replaced[k]

            inf.add_handler(on_add=changed, on_update=updated, on_delete=deleted)
            inf.start()
        for inf in (self.pods, self.services):
            inf.add_index(CONTROLLER_INDEX, controller_uid_index)
            inf.add_handler(on_add=self._enqueue_owner,
                            on_update=lambda _o, n: self._enqueue_owner(n),
                            on_delete=self._enqueue_owner)
        if self._own_pods:
            self.pods.start()
        self.services.start()
        self.nodes.start()
        self._tasks.append(spawn(self._run(), name="training-jobs-workers"))

    async def _run(self) -> None:
        for inf in (*self.jobs.values(), self.pods, self.services, self.nodes):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="training-jobs")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self.jobs.values():
            await inf.stop()
        if self._own_pods:
            await self.pods.stop()
        await self.services.stop()
        await self.nodes.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
        await self.recorder.aclose()

    # -- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result | None:
        plural, _, rest = key.partition("/")
        kind = KINDS[plural]
        cached = self.jobs[plural].get(rest)
        if cached is None or (cached.get("metadata") or {}).get("deletionTimestamp"):
            return None
        job = copy.deepcopy(cached)
        md = job["metadata"]
        uid, name = md["uid"], md["name"]
        status: Obj = job.setdefault("status", {})
        before = copy.deepcopy(status)
        now = self.clock.now()
        stamp = rfc3339(now)
        pods = self.pods.by_index(CONTROLLER_INDEX, uid)
        services = self.services.by_index(CONTROLLER_INDEX, uid)
        requeue: float | None = None
        if not status.get("conditions"):
            set_condition(status, CREATED, f"{kind.kind}Created",
                          f"{kind.kind} {name} is created.", stamp)
        policy = run_policy(job)
        if is_finished(job):
            await self._finished_cleanup(kind, job, pods, services)
            if has(job, SUCCEEDED):
                for rs in (status.get("replicaStatuses") or {}).values():
                    rs["succeeded"] = _int(rs.get("succeeded")) + _int(rs.get("active"))
                    rs["active"] = 0
            requeue = await self._expire(kind, job, now)
            if requeue == 0:
                return None  # deleted
        elif policy.get("suspend"):
            await self._delete_all(kind, job, pods, services)
            for rs in (status.get("replicaStatuses") or {}).values():
                rs["active"] = 0
            message = f"{kind.kind} {name} is suspended."
            if has(job, RUNNING):
                set_condition(status, RUNNING, f"{kind.kind}Suspended", message, stamp,
                              value="False")
            if not has(job, SUSPENDED):
                set_condition(status, SUSPENDED, f"{kind.kind}Suspended", message, stamp)
                self.recorder.post(job, "Normal", f"{kind.kind}Suspended", message)
        else:
            if has(job, SUSPENDED):
                message = f"{kind.kind} {name} is resumed."
                set_condition(status, SUSPENDED, f"{kind.kind}Resumed", message, stamp,
                              value="False")
                status["startTime"] = stamp
                self.recorder.post(job, "Normal", f"{kind.kind}Resumed", message)
            status.setdefault("startTime", stamp)
            failure = self._past_limits(kind, job, pods, now)
            if failure:
                status.setdefault("completionTime", stamp)
                await self._delete_all(kind, job, pods, services)
                set_condition(status, FAILED, f"{kind.kind}Failed", failure, stamp)
                self.recorder.post(job, "Normal", f"{kind.kind}Failed", failure)
            else:
                gang = await self._ensure_pod_group(kind, job)
                await self._sync(kind, job, pods, services, stamp, gang=gang)
            deadline = policy.get("activeDeadlineSeconds")
            started = parse_time(status.get("startTime"))
            if deadline is not None and started is not None and not is_finished(job):
                requeue = max(0.1, started + int(deadline) - now)
        if status != before:
            await self.client.update_status(GROUP_VERSION, kind.plural, job)
        return Result(requeue_after=requeue) if requeue else None

    # -- limits ------------------------------------------------------------------------

    def _restarts_used(self, job: Obj, pods: list[Obj]) -> int:
        """Restarts spent from the budget: whole-job restarts, replaced pods (those
        replaced and those waiting for their replacement) and restarts in place."""
        uid = job["metadata"]["uid"]
        names = set()
        used = self._job_restarts_of(job, pods)
        for p in pods:
            pmd = p.get("metadata") or {}
            names.add(pmd.get("name"))
            used += _int((pmd.get("annotations") or {}).get(RESTARTS_ANNOTATION)) + restarts(p)
        used += sum(n for (u, pod), n in self._replaced.items() if u == uid and pod not in names)
        return used

    def _job_restarts_of(self, job: Obj, pods: list[Obj]) -> int:
        seen = [_int((p.get("metadata") or {}).get("annotations", {}).get(
            JOB_RESTARTS_ANNOTATION)) for p in pods]
        return max([self._job_restarts.get(job["metadata"]["uid"], 0), *seen])

    def _past_limits(self, kind: JobKind, job: Obj, pods: list[Obj], now: float) -> str:
        """Why the job fails now (deadline, restart budget), or ''."""
        policy = run_policy(job)
        name = job["metadata"]["name"]
        started = parse_time((job.get("status") or {}).get("startTime"))
        deadline = policy.get("activeDeadlineSeconds")
        limit = policy.get("backoffLimit")
        if limit is not None:
            used = self._restarts_used(job, pods)
            specs = kind.specs(job)
            failing = [p for p in pods if phase(p) == "Failed" and not (
                p.get("metadata") or {}).get("deletionTimestamp") and should_restart(
                kind, specs.get(_rtype_of(kind, job, p), {}), p)]
            wanted = used + (min(1, len(failing)) if restart_scope(job) == "Job"
                             else len(failing))
            if used > int(limit) or wanted > int(limit):
                return (f"Job {name} has failed because it has reached the specified "
                        f"backoff limit: {used} restart(s) of at most {int(limit)} across "
                        "its replicas")
        if deadline is not None and started is not None and now - started >= int(deadline):
            return f"Job {name} has failed because it was active longer than specified deadline"
        return ""

    # -- pods and services -------------------------------------------------------------

    async def _sync(self, kind: JobKind, job: Obj, pods: list[Obj], services: list[Obj],
                    stamp: str, *, gang: bool = True) -> None:
        md = job["metadata"]
        uid, name = md["uid"], md["name"]
        status = job["status"]
        specs = kind.specs(job)
        by_name = {(p.get("metadata") or {}).get("name"): p for p in pods}
        job_scope = restart_scope(job) == "Job"
        job_restarts = self._job_restarts_of(job, pods)
        failed = [p for p in pods if phase(p) == "Failed"
                  and not (p.get("metadata") or {}).get("deletionTimestamp")]
        restart_types: list[str] = []
        permanent: tuple[str, int] | None = None
        for p in failed:
            rtype = _rtype_of(kind, job, p)
            spec = specs.get(rtype)
            if spec is None:
                continue
            if should_restart(kind, spec, p):
                restart_types.append(rtype)
            elif (spec.get("restartPolicy") or kind.default_restart) == "ExitCode":
                permanent = (rtype, exit_code(kind, p) or 0)
        if permanent is not None:
            rtype, code = permanent
            message = f'job "{name}" is failing because "{rtype}" replica(s) failed ' \
                      f"with exit code {code} (not retryable)."
            status.setdefault("completionTime", stamp)
            set_condition(status, FAILED, f"{kind.kind}Failed", message, stamp)
            self.recorder.post(job, "Warning", f"{kind.kind}Failed", message)
            self._count(kind, job, pods)
            return
        if restart_types:
            types = ", ".join(sorted(set(restart_types)))
            message = f"{kind.kind} {name} is restarting because {len(restart_types)} " \
                      f"{types} replica(s) failed."
            if job_scope:
                self._job_restarts[uid] = job_restarts + 1
                message += " Restarting every replica (restartScope: Job)."
                await self._delete_pods(kind, job, [p for p in pods if not (
                    p.get("metadata") or {}).get("deletionTimestamp")])
            else:
                for p in failed:
                    if _rtype_of(kind, job, p) in restart_types:
                        pname = p["metadata"]["name"]
                        self._replaced[(uid, pname)] = _int(
                            (p["metadata"].get("annotations") or {}).get(
                                RESTARTS_ANNOTATION)) + restarts(p) + 1
                await self._delete_pods(kind, job, [
                    p for p in failed if _rtype_of(kind, job, p) in restart_types])
            set_condition(status, RESTARTING, f"{kind.kind}Restarting", message, stamp)
            self.recorder.post(job, "Warning", f"{kind.kind}Restarting", message)
            self._count(kind, job, pods)
            return
        if job_scope and any((p.get("metadata") or {}).get("deletionTimestamp") for p in pods):
            self._count(kind, job, pods)
            return  # the whole job restarts once every old pod is gone
        job_restarts = self._job_restarts_of(job, pods)
        have_services = {(s.get("metadata") or {}).get("name") for s in services}
        for rtype in kind.ordered_types(job):
            want = replicas(specs[rtype])
            for index in range(want):
                pname = pod_name(job, rtype, index)
                if pname not in by_name:
                    pod = build_pod(kind, job, rtype, index,
                                    replica_restarts=self._replaced.get((uid, pname), 0),
                                    job_restarts=job_restarts, gang=gang)
                    if await self._create(job, "v1", "pods", pod, "Pod"):
                        self._replaced.pop((uid, pname), None)
                if pname not in have_services:
                    await self._create(job, "v1", "services",
                                       build_service(kind, job, rtype, index), "Service")
        # replicas scaled down: pods and Services past the wanted index go
        extra = [p for p in pods if _index_of(p) >= replicas(
            specs.get(_rtype_of(kind, job, p)) or {"replicas": 0})]
        await self._delete_pods(kind, job, extra, services)
        self._count(kind, job, pods)
        counted = {t: count(kind, job, t, _of_type(kind, job, pods, t))
                   for t in kind.ordered_types(job)}
        for v in verdict(kind, job, counted, {(p.get("metadata") or {}).get("name", ""): p
                                              for p in pods}):
            changed = set_condition(status, v.condition, f"{kind.kind}{v.condition}",
                                    v.message, stamp)
            if v.condition in (SUCCEEDED, FAILED):
                status.setdefault("completionTime", stamp)
                if changed:
                    self.recorder.post(job, v.event_type, f"{kind.kind}{v.condition}",
                                       v.message)

    def _count(self, kind: JobKind, job: Obj, pods: list[Obj]) -> None:
        counted: dict[str, Replicas] = {
            t: count(kind, job, t, _of_type(kind, job, pods, t))
            for t in kind.ordered_types(job)}
        job["status"]["replicaStatuses"] = replica_statuses(kind, job, counted)

    async def _create(self, job: Obj, api_version: str, plural: str, obj: Obj,
                      what: str) -> bool:
        name = obj["metadata"]["name"]
        try:
            await self.client.create(api_version, plural, obj)
        except StatusError as e:
            if e.code == 409:
                return False  # the old one is still going, or our cache is behind
            self.recorder.post(job, "Warning", f"FailedCreate{what}", f"Error creating: {e}")
            raise
        self.recorder.post(job, "Normal", f"SuccessfulCreate{what}", f"Created {what.lower()}: "
                           f"{name}")
        return True

    async def _delete(self, job: Obj, plural: str, name: str, what: str) -> None:
        ns = job["metadata"].get("namespace")
        try:
            await self.client.delete("v1", plural, name, namespace=ns)
        except StatusError as e:
            if e.code == 404:
                return
            self.recorder.post(job, "Warning", f"FailedDelete{what}", f"Error deleting: {e}")
            raise
        self.recorder.post(job, "Normal", f"SuccessfulDelete{what}",
                           f"Deleted {what.lower()}: {name}")

    async def _delete_pods(self, kind: JobKind, job: Obj, pods: list[Obj],
                           services: list[Obj] | None = None) -> None:
        """Delete ``pods`` (those not already going) and, from ``services``, each one's
        Service of the same name."""
        service_names = {(s.get("metadata") or {}).get("name") for s in services or []}
        for p in pods:
            pmd = p.get("metadata") or {}
            if not pmd.get("deletionTimestamp"):
                await self._delete(job, "pods", pmd["name"], "Pod")
            if pmd.get("name") in service_names:
                await self._delete(job, "services", pmd["name"], "Service")

    async def _delete_all(self, kind: JobKind, job: Obj, pods: list[Obj],
                          services: list[Obj]) -> None:
        await self._delete_pods(kind, job, pods)
        for s in services:
            await self._delete(job, "services", s["metadata"]["name"], "Service")
        await self._delete_pod_group(job)

    async def _finished_cleanup(self, kind: JobKind, job: Obj, pods: list[Obj],
                                services: list[Obj]) -> None:
        clean = run_policy(job).get("cleanPodPolicy") or "None"
        if clean == "All":
            await self._delete_pods(kind, job, pods, services)
        elif clean == "Running":
            await self._delete_pods(kind, job, [p for p in pods if phase(p) in
                                                ("Running", "Pending")], services)
        await self._delete_pod_group(job)

    async def _expire(self, kind: JobKind, job: Obj, now: float) -> float | None:
        """``ttlSecondsAfterFinished``: delete the job when its time is up (returns 0),
        else the seconds left (None: no TTL)."""
        ttl = run_policy(job).get("ttlSecondsAfterFinished")
        finished = parse_time((job.get("status") or {}).get("completionTime"))
        if ttl is None or finished is None:
            return None
        left = finished + int(ttl) - now
        if left > 0:
            return left
        md = job["metadata"]
        try:
            await self.client.delete(GROUP_VERSION, kind.plural, md["name"],
                                     namespace=md.get("namespace"),
                                     propagation_policy="Background",
                                     preconditions={"uid": md["uid"]})
        except StatusError as e:
            if e.code not in (404, 409):
                raise
        self.recorder.post(job, "Normal", "SuccessfulDeleteJob", f"Deleted job: {md['name']}")
        return 0

    # -- the gang ----------------------------------------------------------------------

    async def _ensure_pod_group(self, kind: JobKind, job: Obj) -> bool:
        """Make the job's PodGroup; returns whether its pods are to be gang scheduled."""
        uid = job["metadata"]["uid"]
        if uid in self._groups:
            return True
        if uid in self._ungrouped:
            return False
        short = gang_shortfall(kind, job, self.nodes.list())
        if short:
            self._ungrouped.add(uid)
            self.recorder.post(job, "Warning", "GangNeverFits", short)
            return False
        self._groups_gone.discard(uid)
        try:
            await self.client.create(*POD_GROUPS, pod_group(kind, job))
        except StatusError as e:
            if e.code != 409:
                log.warning("cannot create the PodGroup of %s: %s", job["metadata"]["name"], e)
                return False
        self._groups.add(uid)
        return True

    async def _delete_pod_group(self, job: Obj) -> None:
        md = job["metadata"]
        if md["uid"] in self._groups_gone:
            return
        self._groups.discard(md["uid"])
        try:
            await self.client.delete(*POD_GROUPS, md["name"], namespace=md.get("namespace"))
        except StatusError as e:
            if e.code not in (404, 409):
                log.warning("cannot delete the PodGroup of %s: %s", md["name"], e)
                return
        self._groups_gone.add(md["uid"])


def _rtype_of(kind: JobKind, job: Obj, pod: Obj) -> str:
    label = ((pod.get("metadata") or {}).get("labels") or {}).get(
        "training.kubeflow.org/replica-type", "")
    return next((t for t in kind.specs(job) if t.lower() == label), label)


def _index_of(pod: Obj) -> int:
    return _int(((pod.get("metadata") or {}).get("labels") or {}).get(
        "training.kubeflow.org/replica-index"))


def _of_type(kind: JobKind, job: Obj, pods: list[Obj], rtype: str) -> list[Obj]:
    return [p for p in pods if _rtype_of(kind, job, p) == rtype]
