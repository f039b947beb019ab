"""A training job's status: conditions as the training operator keeps them, replica
counts, and what the pods say about the job (running, succeeded, failed, restarting).
Pure functions over the job and its pods.

Condition rules (upstream's ``setCondition``): once ``Failed`` is True nothing changes; a
condition with the same status and reason is left alone; ``Running`` and ``Restarting``
replace each other; ``Succeeded``/``Failed`` turn ``Running`` False.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kybernetes.controllers.training.kinds import (
    PYTORCH,
    TENSORFLOW,
    JobKind,
    pod_name,
    replica_selector,
    replicas,
    restart_policy,
)

Obj = dict[str, Any]

CREATED, RUNNING, RESTARTING, SUCCEEDED, FAILED, SUSPENDED = (
    "Created", "Running", "Restarting", "Succeeded", "Failed", "Suspended")
RETRYABLE_FROM = 128
"""Exit codes from 128 (killed by a signal) are retryable under ``ExitCode``; 1–127 are
the program's own verdict and permanent."""


def conditions(job: Obj) -> list[Obj]:
    return list((job.get("status") or {}).get("conditions") or [])


def has(job: Obj, ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True" for c in conditions(job))


def is_finished(job: Obj) -> bool:
    return has(job, SUCCEEDED) or has(job, FAILED)


def set_condition(status: Obj, ctype: str, reason: str, message: str, stamp: str, *,
                  value: str = "True") -> bool:
    """Set a condition in ``status`` by upstream's rules; returns whether it changed."""
    conds: list[Obj] = list(status.get("conditions") or [])
    if any(c.get("type") == FAILED and c.get("status") == "True" for c in conds):
        return False
    old = next((c for c in conds if c.get("type") == ctype), None)
    if old is not None and old.get("status") == value and old.get("reason") == reason:
        return False
    new = {"type": ctype, "status": value, "reason": reason, "message": message,
           "lastUpdateTime": stamp,
           "lastTransitionTime": old["lastTransitionTime"]
           if old is not None and old.get("status") == value and old.get("lastTransitionTime")
           else stamp}
    out = []
    for c in conds:
        if c.get("type") == ctype:
            continue
        if value == "True" and {ctype, c.get("type")} == {RUNNING, RESTARTING}:
            continue
        if value == "True" and ctype in (SUCCEEDED, FAILED) and c.get("type") == RUNNING:
            c = {**c, "status": "False"}
        out.append(c)
    out.append(new)
    status["conditions"] = out
    return True


def exit_code(kind: JobKind, pod: Obj) -> int | None:
    """The default container's exit code, if it terminated."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == kind.container:
            term = (cs.get("state") or {}).get("terminated") or {}
            if "exitCode" in term:
                return int(term["exitCode"])
    return None


def phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def restarts(pod: Obj) -> int:
    """Container restarts the node agent made in place (``OnFailure``/``Always``)."""
    st = pod.get("status") or {}
    return sum(int(cs.get("restartCount") or 0)
               for cs in (st.get("containerStatuses") or []) +
               (st.get("initContainerStatuses") or []))


def should_restart(kind: JobKind, spec: Obj, pod: Obj) -> bool:
    """Whether a Failed pod of this replica type is to be replaced (else it fails the
    job, or, under ``restartPolicy: Never``, stays failed)."""
    policy = restart_policy(kind, spec)
    if policy in ("OnFailure", "Always"):
        return True
    if policy == "ExitCode":
        code = exit_code(kind, pod)
        return code is None or code >= RETRYABLE_FROM
    return False


@dataclass
class Replicas:
    """One replica type's pods, counted as upstream counts them."""

    want: int
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    pods: dict[int, Obj] = field(default_factory=dict)


def count(kind: JobKind, job: Obj, rtype: str, pods: list[Obj]) -> Replicas:
    spec = kind.specs(job)[rtype]
    out = Replicas(replicas(spec))
    for p in pods:
        ph = phase(p)
        if ph == "Running":
            if (p.get("metadata") or {}).get("deletionTimestamp"):
                out.failed += 1
            else:
                out.active += 1
        elif ph == "Succeeded":
            out.succeeded += 1
        elif ph == "Failed":
            out.failed += 1
    return out


def replica_statuses(kind: JobKind, job: Obj, counted: dict[str, Replicas]) -> Obj:
    out = {}
    for rtype, r in counted.items():
        entry: Obj = {"active": r.active, "succeeded": r.succeeded, "failed": r.failed}
        if kind is PYTORCH:
            entry["selector"] = replica_selector(kind, job, rtype)
        out[rtype] = entry
    return out


@dataclass
class Verdict:
    """What the pods say: a condition to set, and an event to go with it."""

    condition: str
    message: str
    event_type: str = "Normal"


def verdict(kind: JobKind, job: Obj, counted: dict[str, Replicas],
            pods: dict[str, Obj]) -> list[Verdict]:
    """Conditions the replicas' counts call for, in upstream's order (a Succeeded or
    Failed verdict ends the list)."""
    md = job.get("metadata") or {}
    name, ns = md.get("name", ""), md.get("namespace", "")
    specs = kind.specs(job)
    out: list[Verdict] = []
    if kind is PYTORCH:
        for rtype in kind.ordered_types(job):
            r = counted[rtype]
            expected, running = r.want - r.succeeded, r.active
            if "Master" in specs:
                if rtype == "Master":
                    if running > 0:
                        out.append(Verdict(RUNNING, f"PyTorchJob {name} is running."))
                    if expected == 0:
                        out.append(Verdict(SUCCEEDED,
                                           f"PyTorchJob {name} is successfully completed."))
                        return out
            elif rtype == "Worker":
                elastic = (job.get("spec") or {}).get("elasticPolicy")
                if expected == 0 or (elastic and r.succeeded > 0):
                    out.append(Verdict(SUCCEEDED, f"PyTorchJob {ns}/{name} successfully "
                                                  "completed."))
                    return out
                if running > 0:
                    out.append(Verdict(RUNNING, f"PyTorchJob {ns}/{name} is running."))
            if r.failed > 0 and r.want > r.succeeded + r.active:
                if restart_policy(kind, specs[rtype]) == "Never":
                    out.append(Verdict(FAILED, f"PyTorchJob {name} is failed because "
                                               f"{r.failed} {rtype} replica(s) failed."))
                    return out
        return out
    chief = next((t for t in ("Chief", "Master") if t in specs), None)
    for rtype in kind.ordered_types(job):
        r = counted[rtype]
        expected, running = r.want - r.succeeded, r.active
        if chief is not None:
            if rtype == chief:
                if running > 0:
                    out.append(Verdict(RUNNING, f"TFJob {ns}/{name} is running."))
                if expected == 0:
                    out.append(Verdict(SUCCEEDED, f"TFJob {ns}/{name} successfully completed."))
                    return out
        elif rtype == "Worker":
            worker0 = pods.get(pod_name(job, "Worker", 0))
            worker0_done = worker0 is not None and phase(worker0) == "Succeeded" and \
                exit_code(TENSORFLOW, worker0) == 0
            all_workers = (job.get("spec") or {}).get("successPolicy") == "AllWorkers"
            if expected == 0 or (worker0_done and not all_workers):
                out.append(Verdict(SUCCEEDED, f"TFJob {ns}/{name} successfully completed."))
                return out
            if running > 0:
                out.append(Verdict(RUNNING, f"TFJob {ns}/{name} is running."))
        if r.failed > 0 and restart_policy(kind, specs[rtype]) == "Never":
            out.append(Verdict(FAILED, f"TFJob {ns}/{name} has failed because {r.failed} "
                                       f"{rtype} replica(s) failed."))
            return out
    return out
