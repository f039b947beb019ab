"""What a Job's pods are and should be: pure functions over a Job and its pods.

How many should run (:func:`want_active`), which to delete first (:func:`pods_for_removal`),
the pod a Job creates (:func:`pod_from_template`, with its index, environment and
failure counts), when limits are reached, which indexes succeeded or failed, and the
counters of ``status.uncountedTerminatedPods`` (:func:`clean_uncounted`).
"""

from __future__ import annotations

import copy
from typing import Any

from kybernetes.api.meta import controller_of, parse_time
from kybernetes.controllers import podutil
from kybernetes.controllers.jobpolicy import (
    COMPLETION_INDEX,
    COMPLETION_INDEX_ENV,
    INDEX_FAILURE_COUNT,
    INDEX_IGNORED_FAILURE_COUNT,
    TRACKING_FINALIZER,
    Intervals,
    completion_index,
    has_tracking_finalizer,
    index_failure_count,
    index_ignored_failure_count,
    is_pod_failed,
    match_pod_failure_policy,
    phase,
)

Obj = dict[str, Any]

MANAGER = "kubernetes.io/job-controller"
_GENERATED_NAME_MAX = 58  # 63 minus the 5 random characters


def job_uid_index(pod: Obj) -> list[str]:
    """Index function: the uid of the Job controlling the pod."""
    ref = controller_of(pod)
    if ref and ref.get("kind") == "Job" and str(ref.get("apiVersion", "")).startswith("batch/"):
        return [str(ref.get("uid", ""))]
    return []


def is_indexed(job: Obj) -> bool:
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


def is_suspended(job: Obj) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def has_backoff_limit_per_index(job: Obj) -> bool:
    return (job.get("spec") or {}).get("backoffLimitPerIndex") is not None


def managed_elsewhere(job: Obj) -> bool:
    by = (job.get("spec") or {}).get("managedBy")
    return by is not None and by != MANAGER


def want_active(job: Obj, *, active: int, succeeded: int) -> int:
    """How many pods should run: without ``completions`` ``parallelism`` until one pod
    succeeded (then whatever still runs); else the remaining completions, at most
    ``parallelism``."""
    spec = job.get("spec") or {}
    parallelism = int(spec.get("parallelism") or 0)
    completions = spec.get("completions")
    if completions is None:
        return active if succeeded > 0 else parallelism
    return max(0, min(int(completions) - succeeded, parallelism))


def past_backoff_limit_on_failure(job: Obj, pods: list[Obj]) -> bool:
    """With ``restartPolicy: OnFailure``, container restarts of running pods count."""
    spec = job.get("spec") or {}
    if ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") != "OnFailure":
        return False
    restarts = sum(int(cs.get("restartCount") or 0)
                   for p in pods if phase(p) in ("Running", "Pending")
                   for key in ("initContainerStatuses", "containerStatuses")
                   for cs in (p.get("status") or {}).get(key) or [])
    limit = int(spec.get("backoffLimit") or 0)
    return restarts > 0 if limit == 0 else restarts >= limit


def past_active_deadline(job: Obj, now: float) -> float | None:
    """Seconds left before ``activeDeadlineSeconds`` (≤ 0: past it); None if none applies."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    deadline = spec.get("activeDeadlineSeconds")
    start = parse_time(status.get("startTime"))
    if deadline is None or start is None or is_suspended(job):
        return None
    return float(start + int(deadline) - now)


def succeeded_indexes(job: Obj, pods: list[Obj]) -> tuple[Intervals, Intervals]:
    """The indexes in ``status.completedIndexes``, and those plus the indexes of
    succeeded pods not counted yet (``calculateSucceededIndexes``)."""
    completions = int((job.get("spec") or {}).get("completions") or 0)
    prev = Intervals.parse((job.get("status") or {}).get("completedIndexes"),
                           completions=completions)
    new = [ix for p in pods if phase(p) == "Succeeded" and has_tracking_finalizer(p)
           and (ix := completion_index(p)) is not None and ix < completions]
    return prev, prev.with_indexes(new)


def is_index_failed(job: Obj, pod: Obj) -> bool:
    """The pod's failure fails its index (``FailIndex``, or ``backoffLimitPerIndex``)."""
    spec = job.get("spec") or {}
    if not is_pod_failed(pod, job):
        return False
    counted = True
    if spec.get("podFailurePolicy") is not None:
        match = match_pod_failure_policy(spec["podFailurePolicy"], pod)
        if match.action == "FailIndex":
            return True
        counted = match.count_failed
    return counted and index_failure_count(pod) >= int(spec.get("backoffLimitPerIndex") or 0)


def failed_indexes(job: Obj, pods: list[Obj]) -> Intervals:
    completions = int((job.get("spec") or {}).get("completions") or 0)
    prev = Intervals.parse((job.get("status") or {}).get("failedIndexes"),
                           completions=completions)
    return prev.with_indexes(ix for p in pods if is_index_failed(job, p)
                             and (ix := completion_index(p)) is not None and ix < completions)


def new_index_failure_counts(job: Obj, replaced: Obj | None) -> tuple[int, int]:
    """(failures, ignored failures) a replacement of ``replaced`` carries."""
    if replaced is None:
        return 0, 0
    failures, ignored = index_failure_count(replaced), index_ignored_failure_count(replaced)
    policy = (job.get("spec") or {}).get("podFailurePolicy")
    if policy is not None and not match_pod_failure_policy(policy, replaced).count_failed:
        return failures, ignored + 1
    return failures + 1, ignored


def pods_for_removal(job: Obj, pods: list[Obj], at_least: int) -> list[Obj]:
    """Active pods to delete: for Indexed Jobs those without a valid index and extra pods
    of one index first, then the least useful (``activePodsForRemoval``)."""
    rm: list[Obj] = []
    left = pods
    if is_indexed(job):
        completions = int((job.get("spec") or {}).get("completions") or 0)
        by_index: dict[int, list[Obj]] = {}
        left = []
        for p in pods:
            ix = completion_index(p)
            if ix is None or ix >= completions:
                rm.append(p)
            else:
                by_index.setdefault(ix, []).append(p)
        for group in by_index.values():
            ranked = podutil.rank_for_deletion(group)
            rm.extend(ranked[:-1])
            left.append(ranked[-1])
    if len(rm) < at_least:
        rm.extend(podutil.rank_for_deletion(left)[:at_least - len(rm)])
    return rm


def generate_name(job_name: str, index: int | None) -> str:
    """``<job>-`` or ``<job>-<index>-``, the job name cut so that 5 characters fit."""
    appendix = "-" if index is None else f"-{index}-"
    if len(job_name) + len(appendix) > _GENERATED_NAME_MAX:
        job_name = job_name[:_GENERATED_NAME_MAX - len(appendix)]
    return job_name + appendix


def pod_from_template(job: Obj, *, index: int | None = None,
                      replaced: Obj | None = None) -> Obj:
    """A new pod of ``job`` (an index for Indexed Jobs; ``replaced``: the failed pod of
    that index it replaces, whose failure counts it carries)."""
    md = job["metadata"]
    template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
    tmd, spec = template.get("metadata") or {}, template.get("spec") or {}
    labels = dict(tmd.get("labels") or {})
    annotations = dict(tmd.get("annotations") or {})
    finalizers = list(tmd.get("finalizers") or [])
    if TRACKING_FINALIZER not in finalizers:
        finalizers.append(TRACKING_FINALIZER)
    if index is not None:
        annotations[COMPLETION_INDEX] = str(index)
        labels[COMPLETION_INDEX] = str(index)
        spec["hostname"] = f"{md['name']}-{index}"
        for key in ("initContainers", "containers"):
            for c in spec.get(key) or []:
                env = c.setdefault("env", [])
                if not any(e.get("name") == COMPLETION_INDEX_ENV for e in env):
                    env.append({"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
                        "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}})
        if has_backoff_limit_per_index(job):
            failures, ignored = new_index_failure_counts(job, replaced)
            annotations[INDEX_FAILURE_COUNT] = str(failures)
            if ignored:
                annotations[INDEX_IGNORED_FAILURE_COUNT] = str(ignored)
    pod_md: Obj = {"generateName": generate_name(md["name"], index),
                   "namespace": md.get("namespace"), "finalizers": finalizers,
                   "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                        "name": md["name"], "uid": md["uid"],
                                        "controller": True, "blockOwnerDeletion": True}]}
    if labels:
        pod_md["labels"] = labels
    if annotations:
        pod_md["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_md, "spec": spec}


def clean_uncounted(status: Obj, with_finalizer: set[str]) -> bool:
    """Move uncounted uids whose pods lost their finalizer into the counters."""
    uncounted = status.setdefault("uncountedTerminatedPods", {})
    changed = False
    for key, counter in (("succeeded", "succeeded"), ("failed", "failed")):
        uids = list(uncounted.get(key) or [])
        keep = [u for u in uids if u in with_finalizer]
        if len(keep) != len(uids):
            changed = True
            status[counter] = int(status.get(counter) or 0) + len(uids) - len(keep)
            if keep:
                uncounted[key] = keep
            else:
                uncounted.pop(key, None)
    return changed
