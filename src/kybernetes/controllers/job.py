"""The Job controller: runs a Job's pods to completion, as upstream's (1.32) does.

For each Job (key ``namespace/name``) it keeps ``parallelism`` pods running until
``completions`` pods have succeeded (without ``completions``: until one succeeds and the
rest have ended), from the pod template, with a controller reference to the Job and the
``batch.kubernetes.io/job-tracking`` finalizer. Finished pods are counted by uid first
(``status.uncountedTerminatedPods``), then their finalizer is removed, then they move to
``status.succeeded`` / ``failed``: a pod is counted once even if the controller restarts.

- Failures: each failed pod counts towards ``backoffLimit``; pods are recreated after a
  back-off of ``10 s * 2**(failures-1)`` (6 min at most, reset by a success);
  ``activeDeadlineSeconds`` fails the Job with ``DeadlineExceeded``;
  ``podFailurePolicy`` rules may fail the Job at once (``FailJob``), not count a failure
  (``Ignore``), count it (``Count``) or fail one index (``FailIndex``).
- ``completionMode: Indexed``: each pod gets an index (annotation and label
  ``batch.kubernetes.io/job-completion-index``, env ``JOB_COMPLETION_INDEX``, hostname
  ``<job>-<index>``); ``status.completedIndexes`` lists the succeeded ones (``"0-2,5"``);
  ``backoffLimitPerIndex`` / ``maxFailedIndexes`` limit failures per index;
  ``successPolicy`` may declare success before every index succeeded.
- ``suspend`` deletes the active pods (condition ``Suspended``); resuming starts afresh.
- Termination follows upstream: ``FailureTarget`` / ``SuccessCriteriaMet`` first, the
  remaining pods are deleted, then ``Failed`` / ``Complete`` once none is terminating.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import controller_of, object_key, rfc3339
from kybernetes.client import Client, Informer, Result, WorkQueue, run_workers, shared_informer
from kybernetes.client.events import EventRecorder
from kybernetes.controllers.jobexpectations import PodExpectations
from kybernetes.controllers.jobpods import (
    clean_uncounted,
    failed_indexes,
    has_backoff_limit_per_index,
    is_indexed,
    is_suspended,
    job_uid_index,
    managed_elsewhere,
    past_active_deadline,
    past_backoff_limit_on_failure,
    pod_from_template,
    pods_for_removal,
    succeeded_indexes,
    want_active,
)
from kybernetes.controllers.jobpolicy import (
    DEFAULT_BACKOFF,
    MAX_BACKOFF,
    TRACKING_FINALIZER,
    BackoffRecord,
    BackoffStore,
    Intervals,
    backoff_delay,
    completion_index,
    ensure_condition,
    fail_job_message,
    find_condition,
    finished_time,
    first_pending_indexes,
    has_tracking_finalizer,
    index_failure_count,
    index_ignored_failure_count,
    is_active,
    is_finished,
    is_pod_failed,
    is_ready,
    is_terminating,
    match_pod_failure_policy,
    match_success_policy,
    new_condition,
    only_replace_failed_pods,
    phase,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "job-controller"
JOB_INDEX = "job-uid"
MAX_UNCOUNTED = 500
MAX_PER_SYNC = 500

# -- the controller ----------------------------------------------------------------------


@dataclass
class _Sync:
    """What one sync of one Job knows and has decided so far (upstream's syncJobCtx)."""

    key: str
    job: Obj
    pods: list[Obj]
    now: float
    record: BackoffRecord
    expected_rm: set[str]
    active_pods: list[Obj] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0
    ready: int = 0
    terminating: int = 0
    finished: Obj | None = None
    prev_succeeded: Intervals = field(default_factory=Intervals)
    succeeded_idx: Intervals = field(default_factory=Intervals)
    failed_idx: Intervals | None = None
    delayed: dict[int, Obj] = field(default_factory=dict)
    requeue: list[float] = field(default_factory=list)

    @property
    def status(self) -> Obj:
        status: Obj = self.job.setdefault("status", {})
        return status

    @property
    def stamp(self) -> str:
        return rfc3339(self.now)


class JobController:
    def __init__(self, client: Client, *, workers: int = 4, clock: Clock = SYSTEM_CLOCK,
                 backoff_base: float = DEFAULT_BACKOFF, backoff_cap: float = MAX_BACKOFF,
                 jobs: Informer | None = None, pods: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.clock = clock
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.jobs = jobs or shared_informer(client, "batch/v1", "jobs")
        self.pods = pods or shared_informer(client, "v1", "pods")
        self._own = [inf for inf, given in ((self.jobs, jobs), (self.pods, pods))
                     if given is None]
        self.pods.add_index(JOB_INDEX, job_uid_index)
        self.queue: WorkQueue[str] = WorkQueue(clock=clock, name="job")
        self.events = EventRecorder(client, COMPONENT)
        self.backoff = BackoffStore()
        self.expectations = PodExpectations(TRACKING_FINALIZER, clock=clock)
        self._tasks: list[asyncio.Task[Any]] = []

    # -- events in ---------------------------------------------------------------------

    def _job_of(self, pod: Obj) -> Obj | None:
        ref = controller_of(pod)
        if not job_uid_index(pod) or ref is None:
            return None
        job = self.jobs.get(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")
        if job is None or job["metadata"].get("uid") != ref.get("uid"):
            return None
        return job

    def _pod_changed(self, pod: Obj, *, gone: bool = False) -> None:
        self.expectations.observe(pod, gone=gone)
        job = self._job_of(pod)
        if job is not None and not is_finished(job):
            self.queue.add(object_key(job))
        elif has_tracking_finalizer(pod) and not gone:
            self.queue.add("pod:" + object_key(pod))

    def _job_changed(self, job: Obj) -> None:
        self.queue.add(object_key(job))
        if is_finished(job):
            self._orphans_of(job)

    def _job_deleted(self, job: Obj) -> None:
        self.queue.add(object_key(job))
        self._orphans_of(job)

    def _orphans_of(self, job: Obj) -> None:
        for pod in self.pods.by_index(JOB_INDEX, job["metadata"].get("uid", "")):
            if has_tracking_finalizer(pod):
                self.queue.add("pod:" + object_key(pod))

    # -- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result | None:
        try:
            if key.startswith("pod:"):
                await self.sync_orphan_pod(key[4:])
                return None
            return await self.sync_job(key)
        except StatusError as e:
            if e.code == 409:
                return Result(requeue=True)
            if e.code == 404:
                return None
            raise

    async def sync_orphan_pod(self, key: str) -> None:
        """Remove the finalizer of a pod whose Job is gone or finished."""
        pod = self.pods.get(key)
        if pod is None or not has_tracking_finalizer(pod):
            return
        ref = controller_of(pod)
        if ref is not None:
            if not job_uid_index(pod):
                return  # controlled by something else: not ours to touch
            job = self._job_of(pod)
            if job is not None and (managed_elsewhere(job) or not is_finished(job)):
                return
        await self._remove_finalizer(pod)

    async def sync_job(self, key: str) -> Result | None:
        cached = self.jobs.get(key)
        if cached is None:
            self.backoff.remove(key)
            self.expectations.forget(key)
            return None
        if managed_elsewhere(cached):
            return None
        if is_finished(cached):
            self.backoff.remove(key)
            self._orphans_of(cached)
            return None
        job = copy.deepcopy(cached)
        job.setdefault("apiVersion", "batch/v1")
        job.setdefault("kind", "Job")
        spec = job.setdefault("spec", {})
        pods = self.pods.by_index(JOB_INDEX, job["metadata"]["uid"])
        pods.sort(key=lambda p: (completion_index(p) is None, completion_index(p) or 0))
        satisfied = self.expectations.satisfied(key)
        ctx = _Sync(key=key, job=job, pods=pods, now=self.clock.now(),
                    record=self.backoff.get(key),
                    expected_rm=self.expectations.finalizer_removals(key))
        status = ctx.status
        status.setdefault("uncountedTerminatedPods", {})
        uncounted = status["uncountedTerminatedPods"]
        unc_succeeded = set(uncounted.get("succeeded") or [])
        unc_failed = set(uncounted.get("failed") or [])
        ctx.active_pods = [p for p in pods if is_active(p)]
        active = len(ctx.active_pods)
        new_succeeded = self._new_finished(ctx, unc_succeeded, lambda p: phase(p) == "Succeeded")
        new_failed = self._new_finished(ctx, unc_failed, lambda p: is_pod_failed(p, job))
        policy = spec.get("podFailurePolicy")
        counted_failed = [p for p in new_failed
                          if match_pod_failure_policy(policy, p).count_failed]
        ctx.succeeded = int(status.get("succeeded") or 0) + len(new_succeeded) + \
            len(unc_succeeded)
        ctx.failed = int(status.get("failed") or 0) + len(counted_failed) + len(unc_failed)
        ctx.ready = sum(1 for p in ctx.active_pods if is_ready(p))
        ctx.terminating = sum(1 for p in pods if is_terminating(p))
        if not status.get("startTime") and not is_suspended(job):
            status["startTime"] = ctx.stamp
        ctx.record = ctx.record.updated(new_succeeded, new_failed)

        ctx.finished = self._finish_condition(ctx)
        if is_indexed(job):
            self._index_state(ctx)

        suspend_changed = False
        manage_error: Exception | None = None
        if ctx.finished is not None:
            deleted_ready, deleted = await self._delete_active_pods(ctx, ctx.active_pods)
            if deleted != active or not satisfied:
                ctx.finished = None  # pods may remain that the cache does not show yet
            active -= deleted
            ctx.ready -= deleted_ready
            ctx.terminating += deleted
        else:
            managed = False
            if satisfied and not job["metadata"].get("deletionTimestamp"):
                try:
                    active = await self._manage(ctx)
                except StatusError as e:
                    manage_error = e
                    active = len(ctx.active_pods)
                managed = True
            if spec.get("completions") is None:
                complete = ctx.succeeded > 0 and active == 0
            elif is_indexed(job):
                complete = ctx.succeeded_idx.total() >= int(spec["completions"]) and active == 0
            else:
                complete = ctx.succeeded >= int(spec["completions"]) and active == 0
            if complete:
                ctx.finished = new_condition("SuccessCriteriaMet", "True", "CompletionsReached",
                                             "Reached expected number of succeeded pods",
                                             ctx.stamp)
            elif managed:
                suspend_changed = await self._suspend_condition(ctx)

        needs_update = suspend_changed or any(
            status.get(k) != v for k, v in (("active", active), ("ready", ctx.ready),
                                            ("terminating", ctx.terminating)))
        status.update(active=active, ready=ctx.ready, terminating=ctx.terminating)
        await self._track(ctx, needs_update)
        if manage_error is not None:
            raise manage_error
        waits = [w for w in ctx.requeue if w > 0]
        return Result(requeue_after=min(waits)) if waits else None

    def _new_finished(self, ctx: _Sync, uncounted: set[str],
                      test: Callable[[Obj], bool]) -> list[Obj]:
        """Finished pods not counted yet: with the finalizer, not in ``uncounted``."""
        completions = (ctx.job.get("spec") or {}).get("completions")
        out = []
        for p in ctx.pods:
            uid = p["metadata"].get("uid")
            if uid in uncounted or not has_tracking_finalizer(p) or uid in ctx.expected_rm:
                continue
            if is_indexed(ctx.job):
                ix = completion_index(p)
                if ix is None or ix >= int(completions or 0):
                    continue
            if test(p):
                out.append(p)
        return out

    def _finish_condition(self, ctx: _Sync) -> Obj | None:
        """The interim condition that ends the Job, if one applies (not for Indexed
        Jobs' index limits and success policy: :meth:`_index_state`)."""
        job, spec = ctx.job, ctx.job.get("spec") or {}
        met = find_condition(job, "SuccessCriteriaMet")
        if met is not None and met.get("status") == "True":
            return dict(met)
        target = find_condition(job, "FailureTarget")
        if target is not None and target.get("status") == "True":
            return new_condition("Failed", "True", target.get("reason", ""),
                                 target.get("message", ""), ctx.stamp)
        message = fail_job_message(job, ctx.pods)
        if message is not None:
            return new_condition("FailureTarget", "True", "PodFailurePolicy", message,
                                 ctx.stamp)
        if ctx.failed > int(spec.get("backoffLimit") or 0) or \
                past_backoff_limit_on_failure(job, ctx.pods):
            return new_condition("FailureTarget", "True", "BackoffLimitExceeded",
                                 "Job has reached the specified backoff limit", ctx.stamp)
        left = past_active_deadline(job, ctx.now)
        if left is not None and left <= 0:
            return new_condition("FailureTarget", "True", "DeadlineExceeded",
                                 "Job was active longer than specified deadline", ctx.stamp)
        if left is not None:
            ctx.requeue.append(left)
        return None

    def _index_state(self, ctx: _Sync) -> None:
        job, spec = ctx.job, ctx.job.get("spec") or {}
        completions = int(spec.get("completions") or 0)
        ctx.prev_succeeded, ctx.succeeded_idx = succeeded_indexes(job, ctx.pods)
        if has_backoff_limit_per_index(job):
            ctx.failed_idx = failed_indexes(job, ctx.pods)
            ctx.delayed = self._delayed_deletions(ctx)
            if ctx.finished is None:
                max_failed = spec.get("maxFailedIndexes")
                total = ctx.failed_idx.total()
                if max_failed is not None and total > int(max_failed):
                    ctx.finished = new_condition(
                        "FailureTarget", "True", "MaxFailedIndexesExceeded",
                        "Job has exceeded the specified maximal number of failed indexes",
                        ctx.stamp)
                elif total > 0 and total + ctx.succeeded_idx.total() >= completions:
                    ctx.finished = new_condition("FailureTarget", "True", "FailedIndexes",
                                                 "Job has failed indexes", ctx.stamp)
        if ctx.finished is None:
            message = match_success_policy(spec.get("successPolicy"), completions,
                                           ctx.succeeded_idx)
            if message is not None:
                ctx.finished = new_condition("SuccessCriteriaMet", "True", "SuccessPolicy",
                                             message, ctx.stamp)

    def _delayed_deletions(self, ctx: _Sync) -> dict[int, Obj]:
        """Per index not yet done and without a running pod, its last failed pod: its
        finalizer stays until a replacement (carrying its failure count) is created."""
        assert ctx.failed_idx is not None
        running = {completion_index(p) for p in ctx.pods if not is_pod_failed(p, ctx.job)
                   and phase(p) != "Succeeded"}
        out: dict[int, Obj] = {}
        for p in ctx.pods:
            ix = completion_index(p)
            if ix is None or ix in running or not is_pod_failed(p, ctx.job):
                continue
            if ctx.succeeded_idx.has(ix) or ctx.failed_idx.has(ix):
                continue
            if has_tracking_finalizer(p) or p["metadata"].get("uid") in ctx.expected_rm:
                last = out.get(ix)
                if last is None or finished_time(last) < finished_time(p):
                    out[ix] = p
        return out

    async def _suspend_condition(self, ctx: _Sync) -> bool:
        conditions = ctx.status.setdefault("conditions", [])
        if is_suspended(ctx.job):
            if ensure_condition(conditions, "Suspended", "True", "JobSuspended",
                                "Job suspended", ctx.stamp):
                await self._event(ctx.job, "Normal", "Suspended", "Job suspended")
                return True
            return False
        if ensure_condition(conditions, "Suspended", "False", "JobResumed", "Job resumed",
                            ctx.stamp):
            await self._event(ctx.job, "Normal", "Resumed", "Job resumed")
            # activeDeadlineSeconds counts the time the Job is continuously active
            ctx.status["startTime"] = ctx.stamp
            return True
        return False

    # -- pods --------------------------------------------------------------------------

    async def _manage(self, ctx: _Sync) -> int:
        """Create or delete pods towards ``want_active``; returns the active count."""
        job, spec = ctx.job, ctx.job.get("spec") or {}
        active = len(ctx.active_pods)
        if is_suspended(job):
            to_delete = pods_for_removal(job, ctx.active_pods, active)
            ready, removed = await self._delete_job_pods(ctx, to_delete)
            ctx.terminating += removed
            ctx.ready -= ready
            return active - removed
        want = want_active(job, active=active, succeeded=ctx.succeeded)
        to_delete = pods_for_removal(job, ctx.active_pods, max(0, active - want))
        if to_delete:
            ready, removed = await self._delete_job_pods(ctx, to_delete[:MAX_PER_SYNC])
            ctx.terminating += removed
            ctx.ready -= ready
            return active - removed
        waiting = ctx.terminating if only_replace_failed_pods(job) else 0
        diff = min(want - waiting - active, MAX_PER_SYNC)
        if diff <= 0:
            return active
        if not has_backoff_limit_per_index(job):
            wait = ctx.record.remaining(ctx.now, base=self.backoff_base, cap=self.backoff_cap)
            if wait > 0:
                ctx.requeue.append(wait)
                return active
        indexes: list[int | None] = [None] * diff
        if is_indexed(job):
            non_pending = ctx.succeeded_idx.with_indexes(
                ix for p in ctx.active_pods if (ix := completion_index(p)) is not None)
            if ctx.failed_idx is not None:
                non_pending = non_pending.merge(ctx.failed_idx)
            if only_replace_failed_pods(job):
                non_pending = non_pending.with_indexes(
                    ix for p in ctx.pods if is_terminating(p)
                    and (ix := completion_index(p)) is not None)
            pending = first_pending_indexes(non_pending, diff, int(spec.get("completions") or 0))
            if has_backoff_limit_per_index(job):
                pending = self._indexes_past_backoff(ctx, pending)
            indexes = list(pending)
        created = await self._create_pods(ctx, indexes)
        return active + created

    def _indexes_past_backoff(self, ctx: _Sync, indexes: list[int]) -> list[int]:
        """Indexes whose own back-off (from their last failed pod) has passed."""
        out, waits = [], []
        for ix in indexes:
            last = ctx.delayed.get(ix)
            if last is None:
                out.append(ix)
                continue
            failures = index_failure_count(last) + index_ignored_failure_count(last) + 1
            left = backoff_delay(failures, base=self.backoff_base, cap=self.backoff_cap) - \
                (ctx.now - finished_time(last))
            if left > 0:
                waits.append(left)
            else:
                out.append(ix)
        if waits:
            ctx.requeue.append(min(waits))
        return out

    async def _create_pods(self, ctx: _Sync, indexes: list[int | None]) -> int:
        """Create pods in batches of 1, 2, 4, ... stopping at a failed batch."""
        created, batch, pos = 0, 1, 0
        ns = ctx.job["metadata"].get("namespace")
        while pos < len(indexes):
            chunk = indexes[pos:pos + batch]
            pos += len(chunk)
            results = await asyncio.gather(
                *(self.client.create("v1", "pods", pod_from_template(
                    ctx.job, index=ix, replaced=ctx.delayed.get(ix) if ix is not None
                    else None), namespace=ns) for ix in chunk),
                return_exceptions=True)
            names: list[str] = []
            error: BaseException | None = None
            for r in results:
                if isinstance(r, StatusError):
                    if r.code == 403 and "being terminated" in r.message:
                        continue  # the namespace goes away, and its Jobs with it
                    await self._event(ctx.job, "Warning", "FailedCreate",
                                      f"Error creating: {r.message}")
                    error = r
                elif isinstance(r, BaseException):
                    error = r
                else:
                    names.append(r["metadata"]["name"])
                    await self._event(ctx.job, "Normal", "SuccessfulCreate",
                                      f"Created pod: {r['metadata']['name']}")
            self.expectations.expect_creations(
                ctx.key, [f"{ns}/{n}" for n in names if self.pods.get(f"{ns}/{n}") is None])
            created += len(names)
            if error is not None:
                raise error
            batch *= 2
        return created

    async def _delete_job_pods(self, ctx: _Sync, pods: list[Obj]) -> tuple[int, int]:
        """Delete pods the Job no longer wants, their finalizer first: they do not count
        as failures. Returns (ready deleted, deleted)."""
        results = await asyncio.gather(*(self._delete_pod(ctx, p, keep_finalizer=False)
                                         for p in pods), return_exceptions=True)
        return self._deleted(pods, results)

    async def _delete_active_pods(self, ctx: _Sync, pods: list[Obj]) -> tuple[int, int]:
        """Delete the pods of a Job that is ending, keeping the finalizer so that they are
        counted (as failed) when tracked."""
        results = await asyncio.gather(*(self._delete_pod(ctx, p, keep_finalizer=True)
                                         for p in pods), return_exceptions=True)
        return self._deleted(pods, results)

    @staticmethod
    def _deleted(pods: list[Obj], results: list[Any]) -> tuple[int, int]:
        errors = [r for r in results if isinstance(r, BaseException)]
        ready = sum(1 for p, r in zip(pods, results, strict=True)
                    if r is True and is_ready(p))
        if errors:
            raise errors[0]
        return ready, sum(1 for r in results if r is True)

    async def _delete_pod(self, ctx: _Sync, pod: Obj, *, keep_finalizer: bool) -> bool:
        md = pod["metadata"]
        try:
            if not keep_finalizer and has_tracking_finalizer(pod):
                await self._remove_finalizer(pod, key=ctx.key)
            await self.client.delete("v1", "pods", md["name"], namespace=md.get("namespace"))
        except StatusError as e:
            if e.code == 404:
                return False
            await self._event(ctx.job, "Warning", "FailedDelete", f"Error deleting: {e.message}")
            raise
        cached = self.pods.get(object_key(pod))
        if cached is not None and not cached["metadata"].get("deletionTimestamp"):
            self.expectations.expect_deletions(ctx.key, [md["uid"]])
        await self._event(ctx.job, "Normal", "SuccessfulDelete", f"Deleted pod: {md['name']}")
        return True

    async def _remove_finalizer(self, pod: Obj, *, key: str | None = None) -> bool:
        md = pod["metadata"]
        try:
            await self.client.patch("v1", "pods", md["name"], {"metadata": {
                "$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}},
                patch_type="strategic", namespace=md.get("namespace"))
        except StatusError as e:
            if e.code != 404:
                raise
            return True
        if key is not None:
            cached = self.pods.get(object_key(pod))
            if cached is not None and has_tracking_finalizer(cached):
                self.expectations.expect_finalizer_removals(key, [md["uid"]])
        return True

    # -- status --------------------------------------------------------------------------

    def _can_remove_finalizer(self, ctx: _Sync, pod: Obj, failed: bool) -> bool:
        if ctx.job["metadata"].get("deletionTimestamp") or ctx.finished is not None or \
                phase(pod) == "Succeeded":
            return True
        if not failed:
            return False
        ix = completion_index(pod)
        delayed = ctx.delayed.get(ix) if ix is not None else None
        return not (delayed is not None and delayed["metadata"].get("uid") ==
                    pod["metadata"].get("uid"))

    async def _track(self, ctx: _Sync, needs_flush: bool) -> None:
        """Count finished pods (uids first), remove their finalizers, then move them to
        the counters and, once nothing is left running, finish the Job
        (``trackJobStatusAndRemoveFinalizers``)."""
        job, spec, status = ctx.job, ctx.job.get("spec") or {}, ctx.status
        indexed = is_indexed(job)
        completions = int(spec.get("completions") or 0)
        with_finalizer = {p["metadata"]["uid"] for p in ctx.pods
                          if has_tracking_finalizer(p)
                          and p["metadata"]["uid"] not in ctx.expected_rm}
        if clean_uncounted(status, with_finalizer):
            needs_flush = True
        uncounted = status["uncountedTerminatedPods"]
        unc_succeeded = list(uncounted.get("succeeded") or [])
        unc_failed = list(uncounted.get("failed") or [])
        to_remove: list[Obj] = []
        new_indexes: list[int] = []
        reached_max = False
        ending = ctx.finished is not None and ctx.finished.get("type") != "SuccessCriteriaMet"
        for pod in ctx.pods:
            uid = pod["metadata"]["uid"]
            if not has_tracking_finalizer(pod) or uid in ctx.expected_rm:
                continue
            failed = is_pod_failed(pod, job)
            if not self._can_remove_finalizer(ctx, pod, failed):
                continue
            to_remove.append(pod)
            ix = completion_index(pod)
            if phase(pod) == "Succeeded" and uid not in unc_failed:
                if indexed:
                    if ix is not None and ix < completions and not ctx.prev_succeeded.has(ix):
                        new_indexes.append(ix)
                        needs_flush = True
                elif uid not in unc_succeeded:
                    unc_succeeded.append(uid)
                    needs_flush = True
            elif failed or ending:
                if uid not in unc_failed and (not indexed or (ix is not None and
                                                              ix < completions)):
                    policy = spec.get("podFailurePolicy")
                    if match_pod_failure_policy(policy, pod).count_failed:
                        unc_failed.append(uid)
                        needs_flush = True
            if len(new_indexes) + len(unc_succeeded) + len(unc_failed) >= MAX_UNCOUNTED:
                reached_max = True
                break
        for name, uids in (("succeeded", unc_succeeded), ("failed", unc_failed)):
            if uids:
                uncounted[name] = uids
        if indexed:
            ctx.succeeded_idx = ctx.succeeded_idx.with_indexes(new_indexes)
            text = str(ctx.succeeded_idx)
            if text != (status.get("completedIndexes") or ""):
                needs_flush = True
            status["succeeded"] = ctx.succeeded_idx.total()
            status["completedIndexes"] = text
            if ctx.failed_idx is not None and status.get("failedIndexes") != str(ctx.failed_idx):
                status["failedIndexes"] = str(ctx.failed_idx)
                needs_flush = True
        conditions = status.setdefault("conditions", [])
        if ctx.finished is not None and ctx.finished["type"] == "FailureTarget":
            conditions.append(ctx.finished)
            needs_flush = True
            ctx.finished = new_condition("Failed", "True", ctx.finished["reason"],
                                         ctx.finished["message"], ctx.stamp)
        if ctx.finished is not None and ctx.finished["type"] == "SuccessCriteriaMet":
            if find_condition(job, "SuccessCriteriaMet") is None:
                conditions.append(ctx.finished)
                needs_flush = True
            ctx.finished = new_condition("Complete", "True", ctx.finished["reason"],
                                         ctx.finished["message"], ctx.stamp)
        if not conditions:
            status.pop("conditions")
        needs_flush = await self._flush(ctx, to_remove, with_finalizer, needs_flush)
        finished = not reached_max and self._enact_finished(ctx)
        if finished or needs_flush:
            ctx.job = await self._write_status(ctx.job)
        if finished and ctx.finished is not None:
            await self._record_finished(ctx.job, ctx.finished)

    async def _flush(self, ctx: _Sync, to_remove: list[Obj], with_finalizer: set[str],
                     needs_flush: bool) -> bool:
        """Write the uncounted uids, remove the finalizers, move what was removed into
        the counters; returns whether the status still needs writing."""
        if needs_flush:
            ctx.job = await self._write_status(ctx.job)
            self.backoff.put(ctx.key, ctx.record)
            needs_flush = False
        results = await asyncio.gather(*(self._remove_finalizer(p, key=ctx.key)
                                         for p in to_remove), return_exceptions=True)
        for p, r in zip(to_remove, results, strict=True):
            if r is True:
                with_finalizer.discard(p["metadata"]["uid"])
        if clean_uncounted(ctx.status, with_finalizer):
            needs_flush = True
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            if needs_flush:
                ctx.job = await self._write_status(ctx.job)
            raise errors[0]
        return needs_flush

    def _enact_finished(self, ctx: _Sync) -> bool:
        if ctx.finished is None:
            return False
        uncounted = ctx.status.get("uncountedTerminatedPods") or {}
        if uncounted.get("succeeded") or uncounted.get("failed") or ctx.terminating > 0:
            return False
        fin = ctx.finished
        ensure_condition(ctx.status.setdefault("conditions", []), fin["type"], fin["status"],
                         fin["reason"], fin["message"], ctx.stamp)
        if fin["type"] == "Complete":
            ctx.status["completionTime"] = fin["lastTransitionTime"]
        return True

    async def _write_status(self, job: Obj) -> Obj:
        status = job.get("status") or {}
        status["uncountedTerminatedPods"] = {
            k: v for k, v in (status.get("uncountedTerminatedPods") or {}).items() if v}
        written = await self.client.update_status("batch/v1", "jobs", job)
        written.setdefault("apiVersion", "batch/v1")
        written.setdefault("kind", "Job")
        written.setdefault("status", {}).setdefault("uncountedTerminatedPods", {})
        return written

    async def _record_finished(self, job: Obj, cond: Obj) -> None:
        if cond["type"] == "Complete":
            await self._event(job, "Normal", "Completed", "Job completed")
        else:
            await self._event(job, "Warning", cond["reason"], cond["message"])

    async def _event(self, job: Obj, typ: str, reason: str, message: str) -> None:
        obj = {"apiVersion": "batch/v1", "kind": "Job", "metadata": job["metadata"]}
        await self.events.emit(obj, typ, reason, message)

    # -- running ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.add_handlers()
        for inf in self._own:
            inf.start()
        self._tasks.append(spawn(self._run(), name="job-workers"))

    def add_handlers(self) -> None:
        """Feed the queue from the informers (:meth:`start` does; tests call it alone)."""
        self.jobs.add_handler(on_add=self._job_changed,
                              on_update=lambda old, new: self._job_changed(new),
                              on_delete=self._job_deleted)
        self.pods.add_handler(on_add=self._pod_changed,
                              on_update=lambda old, new: self._pod_changed(new),
                              on_delete=lambda pod: self._pod_changed(pod, gone=True))

    async def _run(self) -> None:
        for inf in (self.jobs, self.pods):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers, name="job")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
